"""`Network`: any torch model, with what compression needs around it.

    net = Network(model, calibration=x, loss="kl")      # x: a batch of real inputs
    net.compressible_keys(d=8)                           # which weights become codes
    net.forward(student, x)                              # the output that is distilled

The FP model is the teacher: it is put in eval mode, its parameters stop collecting gradients,
and no method here mutates it (students are deep copies). The zoo's networks subclass this and
add a task metric; a user's model needs nothing more than this class.

Which weights are compressible (`find_keys`): the `weight` of every Linear, Conv1d/2d/3d and
Embedding, and the weight matrices (weight_ih*, weight_hh*) of every LSTM/GRU/RNN and their
cells. Never biases, norms or scalars. A weight whose rows hold fewer than d values is left FP:
coding a row of 3 values as one log2(k)-bit code plus a 16-bit scale saves nothing.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .errors import MAX_NAME_CHARS, VQ4AllError, printable
from .rules import DEFAULT_CALIBRATION, DISTILL_LOSSES

_WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
_RECURRENT_MODULES = (nn.RNNBase, nn.RNNCellBase)  # LSTM, GRU, RNN and their cells


def candidate_keys(model: nn.Module) -> list[str]:
    """State-dict keys of every weight of a compressible module type, in state-dict order."""
    wanted = set()
    for prefix, module in model.named_modules():
        dot = prefix + "." if prefix else ""
        if isinstance(module, _WEIGHT_MODULES):
            wanted.add(dot + "weight")
        elif isinstance(module, _RECURRENT_MODULES):
            for pname, _ in module.named_parameters(recurse=False):
                if pname.startswith(("weight_ih", "weight_hh")):
                    wanted.add(dot + pname)
    return [k for k in model.state_dict() if k in wanted]


def row_length(shape) -> int:
    """Values per row of a weight of `shape` ([out_features, ...]; a 1-D tensor has rows of 1)."""
    n = 1
    for s in tuple(shape)[1:]:
        n *= int(s)
    return n


def find_keys(model: nn.Module, d: int, exclude=()) -> tuple[list[str], dict[str, str]]:
    """(keys to compress, {key left FP: why}) for `model` and sub-vector dimension d.

    keys: `candidate_keys` minus `exclude` minus weights whose rows hold fewer than d values.
    """
    state = model.state_dict()
    keys, skipped = [], {}
    for key in candidate_keys(model):
        if key in exclude:
            continue
        row = row_length(state[key].shape)
        if row < d:
            skipped[key] = f"rows of {row} values, fewer than d={d}: a code per row would save nothing"
        else:
            keys.append(key)
    return keys, skipped


def check_keys(model: nn.Module, keys, d: int) -> list[str]:
    """The user's `keys` (state-dict keys), checked: each names a floating-point tensor of the
    model whose rows hold at least d values, each once. Returns them as a list."""
    state = model.state_dict()
    keys = list(keys)
    if not keys:
        raise VQ4AllError("keys is empty: pass keys=None to pick every Linear/Conv/Embedding/LSTM weight")
    seen = set()
    for key in keys:
        if not isinstance(key, str) or key not in state:
            close = difflib.get_close_matches(str(key), list(state), n=3)
            raise VQ4AllError(
                f"key '{printable(key, 200)}' is not in the model's state dict"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
            )
        if key in seen:
            raise VQ4AllError(f"key '{key}' is listed twice")
        seen.add(key)
        tensor = state[key]
        if not tensor.is_floating_point() or tensor.dim() == 0:
            raise VQ4AllError(
                f"key '{key}' is a {tensor.dtype} tensor of shape {list(tensor.shape)}: "
                "only floating-point weights with rows can be coded"
            )
        row = row_length(tensor.shape)
        if row < d:
            raise VQ4AllError(
                f"key '{key}' has rows of {row} values, fewer than d={d}: coding it saves nothing; "
                "leave it out of keys (it stays FP)"
            )
    return keys


def check_finite(model: nn.Module, keys) -> None:
    """VQ4AllError naming the first of `keys` whose tensor holds NaN or Inf."""
    state = model.state_dict()
    for key in keys:
        bad = int((~torch.isfinite(state[key])).sum())
        if bad:
            raise VQ4AllError(
                f"weight '{key}' holds {bad} NaN or Inf values: fix the model (or its checkpoint) before compressing it"
            )


def check_architecture(model: nn.Module, art) -> None:
    """VQ4AllError naming the first state-dict entry where `model` and `art` differ (a missing
    entry on either side, or a shape), with both shapes: the model must have the artifact's
    architecture. Compressed layers are compared by their original weight shape.

    FP leftovers are also checked against the entry they replace: the same kind of number
    (float, integer or bool: a float tensor relabelled I32 is refused) and every value
    representable in the model's dtype (an F64 1e300 would become inf in a float32 model)."""

    def name(text) -> str:
        return printable(text, MAX_NAME_CHARS)

    state = model.state_dict()
    network = name(art.network)
    held = {layer.param: tuple(layer.shape) for layer in art.layers}
    held.update({key: tuple(value.shape) for key, value in art.leftovers.items()})
    for key, tensor in state.items():
        if key not in held:
            raise VQ4AllError(
                f"the model does not match the artifact of '{network}': the model has '{key}' "
                f"{list(tensor.shape)}, the artifact has no such entry"
            )
        if tuple(tensor.shape) != held[key]:
            raise VQ4AllError(
                f"the model does not match the artifact of '{network}': layer '{key}' is "
                f"{printable(list(held[key]), 120)} in the artifact, {list(tensor.shape)} in the model"
            )
    for key, shape in held.items():
        if key not in state:
            raise VQ4AllError(
                f"the model does not match the artifact of '{network}': the artifact has '{name(key)}' "
                f"{printable(list(shape), 120)}, the model has no such entry"
            )
    for key, value in art.leftovers.items():
        check_leftover(key, np.asarray(value), state[key], network)


def _number_kind(dtype) -> str:
    return "bool" if dtype.kind == "b" else "float" if dtype.kind in "fc" else "integer"


def check_leftover(key: str, value: np.ndarray, entry: torch.Tensor, network: str) -> None:
    """VQ4AllError if an artifact's FP leftover `value` cannot stand for the model's state-dict
    `entry`: another kind of number, or a value outside the entry dtype's range."""
    target = torch.empty((), dtype=entry.dtype).numpy().dtype if entry.dtype != torch.bfloat16 else np.dtype("f4")
    if _number_kind(value.dtype) != _number_kind(target):
        raise VQ4AllError(
            f"the artifact of '{network}' stores '{key}' as {value.dtype} ({_number_kind(value.dtype)}), "
            f"the model's entry is {entry.dtype} ({_number_kind(target)}): the file is damaged or not of this model"
        )
    if value.size == 0:
        return
    if target.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            ok = np.isfinite(value.astype(target)).all()
        lo, hi = np.finfo(target).min, np.finfo(target).max
    elif target.kind in "iu":
        lo, hi = np.iinfo(target).min, np.iinfo(target).max
        ok = int(value.min()) >= lo and int(value.max()) <= hi
    else:
        return
    if not ok:
        raise VQ4AllError(
            f"the artifact of '{network}' holds values in '{key}' outside the model's {entry.dtype} "
            f"range [{lo:.6g}, {hi:.6g}]: the file is damaged or not of this model"
        )


class Network:
    """A torch model (the teacher) with what compression needs: a name, its compressible
    weights, real calibration inputs, the output that is distilled and how.

    Args:
        model: the FP model. Put in eval mode, gradients off; never mutated afterwards.
        name: stored in the artifact (default: the model's class name).
        calibration: real inputs as one batch: a tensor [N, ...] (model(x)), a dict of tensors
            with N rows each (model(**x)), or a list of N items; None for subclasses that make
            their own (`calibration(n, seed)` is then overridden).
        loss: how the student's output is distilled from the teacher's: "kl" (logits),
            "cosine" (embeddings), "mse" (divided by the teacher's variance, any output), or a
            callable (student_out, teacher_out) -> scalar tensor.
        keys: the state-dict keys to compress (checked), or None for `find_keys`.
        forward: callable (model, inputs) -> output tensor, when model(inputs) is not it.
        exclude: keys never compressed when keys is None.
    """

    #: state-dict keys never compressed although their module type qualifies
    exclude: tuple[str, ...] = ()
    #: "kl", "cosine", "mse" or a callable (student_out, teacher_out) -> scalar
    distill: str | Callable = "mse"
    #: module names of the blocks of block-wise reconstruction (empty: `vq4all.blocks.find_blocks`)
    blocks: tuple[str, ...] = ()
    #: calibration inputs a compression run uses when its config leaves `calibration` unset
    #: (a user's network: at most this many of the inputs it was given)
    default_calibration: int = DEFAULT_CALIBRATION

    def __init__(
        self,
        model: nn.Module,
        name: str | None = None,
        *,
        calibration=None,
        loss=None,
        keys=None,
        forward: Callable | None = None,
        exclude=(),
    ):
        if not isinstance(model, nn.Module):
            raise VQ4AllError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.name = name or type(model).__name__
        if not isinstance(self.name, str) or not self.name.strip():
            raise VQ4AllError(f"name {name!r} must be a non-empty string")
        self.model = model.float().eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if loss is not None:
            if not callable(loss) and loss not in DISTILL_LOSSES:
                raise VQ4AllError(
                    f"loss {printable(loss, 80)!r} must be one of {', '.join(DISTILL_LOSSES)} or a callable "
                    "(student_out, teacher_out) -> scalar"
                )
            self.distill = loss
        if exclude:
            self.exclude = tuple(exclude)
        self._keys = None if keys is None else list(keys)
        self._calibration = calibration
        self._forward = forward
        if calibration is not None and count_inputs(calibration) < 1:
            raise VQ4AllError("calibration holds no inputs: pass a batch of at least one real input")

    def __repr__(self) -> str:
        return f"<Network {self.name}>"

    # ----------------------------------------------------------------------------- weights
    def compressible_keys(self, d: int | None = None) -> list[str]:
        """State-dict keys of the weights to compress, in state-dict order: the user's `keys`
        (checked against d when given), else every weight of a compressible module type (minus
        `exclude`, minus weights with rows shorter than d when d is given)."""
        if self._keys is not None:
            return check_keys(self.model, self._keys, d or 1)
        if d is None:
            return [k for k in candidate_keys(self.model) if k not in self.exclude]
        return find_keys(self.model, d, self.exclude)[0]

    def skipped_keys(self, d: int) -> dict[str, str]:
        """{key: why} of the weights of compressible module types left FP for sub-vector dim d."""
        if self._keys is not None:
            return {}
        return find_keys(self.model, d, self.exclude)[1]

    def compressible(self, d: int | None = None) -> dict[str, torch.Tensor]:
        """{state-dict key: float32 tensor (detached clone)} of `compressible_keys(d)`."""
        sd = self.model.state_dict()
        return {k: sd[k].detach().clone().float() for k in self.compressible_keys(d)}

    def num_parameters(self) -> int:
        """Number of parameters of the model (each shared tensor counted once)."""
        seen, total = set(), 0
        for p in self.model.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    def num_compressible(self) -> int:
        """Number of scalars in `compressible()`."""
        sd = self.model.state_dict()
        return sum(sd[k].numel() for k in self.compressible_keys())

    def with_weights(self, weights: dict[str, torch.Tensor]) -> nn.Module:
        """A deep copy of `model` (eval mode) with the given state-dict entries replaced.

        Unlike `model` (frozen, requires_grad False so a teacher never collects gradients), the
        copy's parameters have requires_grad True, like a freshly built module.

        Args:
            weights: state-dict key -> tensor of the same shape as the entry it replaces (any
                float dtype; stored in the entry's dtype).
        Raises:
            VQ4AllError: naming the key, if a key is not in the state dict or a shape differs.
        """
        sd = self.model.state_dict()
        for key, value in weights.items():
            if key not in sd:
                raise VQ4AllError(f"{self.name}: weight '{key}' is not in the model's state dict")
            if tuple(value.shape) != tuple(sd[key].shape):
                raise VQ4AllError(
                    f"{self.name}: weight '{key}' has shape {tuple(value.shape)}, "
                    f"the model needs {tuple(sd[key].shape)}"
                )
        model = copy.deepcopy(self.model)
        target = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for key, value in weights.items():
                t = target[key]
                t.data.copy_(value.detach().to(dtype=t.dtype, device=t.device))
        for p in model.parameters():
            p.requires_grad_(True)
        return model.eval()

    # ----------------------------------------------------------------------------- data
    def calibration(self, n: int, seed: int = 0):
        """At most n real calibration inputs as one batch (the first n of the user's)."""
        if self._calibration is None:
            raise VQ4AllError(f"{self.name}: no calibration inputs: pass calibration=<a batch of real inputs>")
        data = self._calibration
        if count_inputs(data) <= n:
            return data
        if isinstance(data, dict):
            return {k: v[:n] for k, v in data.items()}
        return data[:n]

    def calibration_labels(self, n: int, seed: int = 0):
        """Ground-truth labels of `calibration(n, seed)` for a task loss, or None (the default)."""
        return None

    def forward(self, model: nn.Module, inputs) -> torch.Tensor:
        """The output that is distilled; gradients flow (no torch.no_grad here)."""
        if self._forward is not None:
            out = self._forward(model, inputs)
        elif isinstance(inputs, dict):
            out = model(**inputs)
        else:
            out = model(inputs)
        if not isinstance(out, torch.Tensor):
            raise VQ4AllError(
                f"{self.name}: the model returned a {type(out).__name__}, not a tensor: pass "
                "forward=lambda model, inputs: <the output tensor to distill>"
            )
        return out


def count_inputs(inputs) -> int:
    """Rows of a batch: a tensor's first dimension, a dict's first tensor's, a list's length."""
    if isinstance(inputs, dict):
        if not inputs:
            return 0
        return len(next(iter(inputs.values())))
    return len(inputs)


def take_rows(inputs, idx: torch.Tensor):
    """Rows `idx` of a batch: a tensor, a dict of tensors, or a list."""
    if isinstance(inputs, torch.Tensor):
        return inputs[idx]
    if isinstance(inputs, dict):
        return {k: v[idx] for k, v in inputs.items()}
    return [inputs[i] for i in idx.tolist()]


def forward_batches(net, inputs, batch_size: int, progress=None) -> list:
    """The teacher `net.model`'s outputs on `inputs` (a tensor, dict of tensors or list) in
    batches of batch_size, without gradients; `progress`: a tqdm description, or None for no
    bar. A model that fails on the inputs is one line (VQ4AllError), not a traceback: the user's
    calibration inputs do not fit the user's model."""
    from tqdm import tqdm

    count = count_inputs(inputs)
    starts = range(0, count, batch_size)
    outputs = []
    try:
        with torch.no_grad():
            for i in tqdm(starts, desc=progress or "", unit="batch", disable=progress is None, leave=False):
                outputs.append(net.forward(net.model, take_rows(inputs, torch.arange(i, min(i + batch_size, count)))))
    except (RuntimeError, TypeError, ValueError, IndexError) as e:
        detail = printable(" ".join(str(e).split()), 300)
        raise VQ4AllError(
            f"{net.name}: the model fails on its calibration inputs ({type(e).__name__}: {detail}): "
            "give inputs of the shape and dtype its forward takes"
        ) from None
    return outputs
