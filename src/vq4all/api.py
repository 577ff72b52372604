"""The public API: compress any torch model onto the universal codebook, save it, load it back.

    import vq4all
    codebook = vq4all.load_codebook("codebook.safetensors")
    student = vq4all.compress(model, calibration, codebook, loss="kl")   # trained, runnable
    vq4all.save(student, "model.vq4all.safetensors")
    runnable = vq4all.load("model.vq4all.safetensors", codebook, model=model)

`model` is any `torch.nn.Module`; `calibration` a batch of real inputs it takes. The zoo's
networks go through the same functions (`vq4all.load` without `model` builds them by name).
Nothing is written unless asked (`save`, or a `checkpoint=` path).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path

import torch
from torch import nn

from .artifact import Codebook, NetworkArtifact, load_codebook, load_network, save_network
from .config import CompressConfig
from .errors import VQ4AllError
from .network import Network, check_finite

#: the attribute of a student module that carries its artifact and report
RESULT_ATTR = "vq4all_result"


def _codebook(codebook) -> Codebook:
    if isinstance(codebook, Codebook):
        return codebook
    if isinstance(codebook, (str, Path)):
        return load_codebook(codebook)
    raise VQ4AllError(
        f"codebook must be a vq4all Codebook or the path of a codebook file, got {type(codebook).__name__}"
    )


def _say_left_fp(net: Network, d: int) -> None:
    """Warn about the weights of compressible module types left FP (rows shorter than d)."""
    left = net.skipped_keys(d)
    if left:
        warnings.warn(f"left FP, rows shorter than d={d}: {', '.join(left)} (see the report's left_fp)", stacklevel=3)


def _network(model, calibration=None, *, loss=None, keys=None, forward=None, name=None) -> Network:
    if isinstance(model, Network):
        if any(v is not None for v in (calibration, loss, keys, forward, name)):
            raise VQ4AllError(
                "model is already a vq4all Network: give calibration, loss, keys, forward and name "
                "when building it, not here"
            )
        return model
    if not isinstance(model, nn.Module):
        raise VQ4AllError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    # a Network freezes its teacher (eval mode, no gradients, float32): do that to a copy, so the
    # caller's model keeps its mode, dtype and trainable parameters
    return Network(copy.deepcopy(model), name, calibration=calibration, loss=loss, keys=keys, forward=forward)


def compress(
    model,
    calibration,
    codebook,
    config: CompressConfig | None = None,
    *,
    loss=None,
    keys=None,
    forward=None,
    name: str | None = None,
    checkpoint=None,
    resume: bool = False,
    progress: bool = True,
    blocks=None,
    block_cache=None,
) -> nn.Module:
    """Rebuild `model` on the universal `codebook` by distillation with PNC; returns the student.

    Args:
        model: any torch.nn.Module (the teacher; never mutated), or a `vq4all.network.Network`
            (then give calibration=None and set loss/keys/forward on it).
        calibration: real inputs as one batch: a tensor [N, ...] (model(x)), a dict of tensors
            (model(**x)) or a list; at most `config.calibration` of them are used (the first;
            unset: the network's `default_calibration`, 512).
        codebook: a `Codebook` or the path of a codebook file.
        config: `CompressConfig` (n, alpha, steps, lr, schedule, finish, ...); default values
            are the paper's rules.
        loss: None or "mse" (the default: output MSE over the teacher's variance: any output), "kl" (classifier
            logits), "cosine" (embeddings), or a callable (student_out, teacher_out) -> scalar.
        keys: state-dict keys to compress; None picks every Linear/Conv/Embedding/LSTM/GRU
            weight whose rows hold at least d values (the others stay FP: see the report's
            `left_fp`). A key not in the model, or a weight with NaN/Inf, is a VQ4AllError.
        forward: callable (model, inputs) -> the output tensor to distill, if not model(inputs).
        name: stored in the artifact (default: the model's class name).
        checkpoint: a file written every `config.checkpoint_every` steps; resume: start from it.
        progress: show a progress bar.
        blocks: module names of the blocks of block-wise reconstruction (config.mode "blockwise",
            or "auto" on a model above 1M compressible weights); None: the model's top-level
            children, containers (Sequential, ModuleList) and single-child wrappers opened.
        block_cache: folder for the block-wise cache of block inputs/outputs (default: temp).

    Returns:
        The student: a deep copy of `model` whose compressed weights are exactly what the codes
        decode to (eval mode, plain tensors, runnable at once). `vq4all.save(student, path)`
        writes its artifact; `student.vq4all_result` holds `.artifact` (NetworkArtifact) and
        `.report` (steps, frozen/forced counts, final loss, `left_fp`).
    """
    from .train import compress as _compress

    cb = _codebook(codebook)
    net = _network(model, calibration, loss=loss, keys=keys, forward=forward, name=name)
    check_finite(net.model, net.compressible_keys(cb.d))
    _say_left_fp(net, cb.d)
    if blocks is not None:
        names = (blocks,) if isinstance(blocks, str) else tuple(blocks)  # one name, or a list of them
        config = dataclasses.replace(config or CompressConfig(), blocks=names)
    result = _compress(
        net, cb, config, checkpoint=checkpoint, resume=resume, progress=progress, block_cache=block_cache
    )
    student = result.model
    setattr(student, RESULT_ATTR, result)
    return student.eval()


def hard_assign(
    model,
    codebook,
    *,
    keys=None,
    granularity: str = "channel",
    name: str | None = None,
    search: str = "plain",
    calibration: int | None = None,
    progress: bool = False,
) -> NetworkArtifact:
    """Codes by hard assignment (every sub-vector takes its nearest codeword; no training).

    `keys`, `name` as for `compress`; granularity: the weight scales ("channel", "tensor",
    "none"). search: "plain" (nearest by squared distance), "activations" (nearest by the
    distance weighted by each position's input mean square, `vq4all.importance`) or "hessian"
    (each row coded one sub-vector at a time under its inputs' second moments, the rest of the row
    absorbing each sub-vector's error, `vq4all.hessian`) or "sequential" (the same, with each
    block's second moments measured on the network whose earlier blocks are already coded); the
    statistics come from
    `calibration` inputs of the network, default its `default_calibration` (a zoo network
    brings its data, a model of your own needs `vq4all.Network(model, calibration=...)`). Returns the
    NetworkArtifact (codes, scales, FP leftovers) for `save`.
    """
    from .hard import hard_assign as _hard_assign
    from .importance import search_statistics
    from .rules import SEARCHES, check_choice

    check_choice("search", search, SEARCHES)
    cb = _codebook(codebook)
    net = _network(model, keys=keys, name=name)
    compressible = net.compressible_keys(cb.d)
    check_finite(net.model, compressible)
    _say_left_fp(net, cb.d)
    weights = None
    if search != "plain":
        inputs = net.calibration(calibration or net.default_calibration, seed=0)
        weights = search_statistics(
            search, net, compressible, inputs, 32, codebook=cb, granularity=granularity, progress=progress
        )
    state = {k: v.detach().cpu().numpy() for k, v in net.model.state_dict().items()}
    art = _hard_assign(
        net.name, state, compressible, cb, granularity, weights=weights, search=search, progress=progress
    )
    left_fp = net.skipped_keys(cb.d)
    if left_fp:
        art.config["left_fp"] = left_fp
    return art


def codes_of(student_or_codes) -> NetworkArtifact:
    """The NetworkArtifact of what `compress` or `hard_assign` returned."""
    if isinstance(student_or_codes, NetworkArtifact):
        return student_or_codes
    result = getattr(student_or_codes, RESULT_ATTR, None)
    if result is not None:
        return result.artifact
    raise VQ4AllError(
        f"cannot save a {type(student_or_codes).__name__}: pass what vq4all.compress (a student) or "
        "vq4all.hard_assign (codes) returned"
    )


def save(student_or_codes, path) -> None:
    """Write the network artifact of a student (from `compress`) or codes (from `hard_assign`)
    to `path` (safetensors; atomic: an interrupted write leaves the old file)."""
    save_network(path, codes_of(student_or_codes))


def load(artifact, codebook=None, model: nn.Module | None = None, *, impl: str | None = None) -> nn.Module:
    """A runnable torch model (eval mode, CPU; move it with .to()) from a network artifact.

    Args:
        artifact: a network artifact file (or a NetworkArtifact).
        codebook: the codebook (file or Codebook) it was built on; another is refused.
        model: a module of the artifact's architecture (its weights are ignored; it is not
            mutated). None: the artifact must be of a zoo network, which is built by name.
        impl: force one of `vq4all.kernels.IMPLS` in every VQ module (None: dispatch table).

    Compressed Linear/Conv2d layers become `VQLinear`/`VQConv2d` (lookup kernels on CUDA);
    other compressed weights are decoded into their modules. A model whose architecture does
    not match the artifact is a VQ4AllError naming the first differing layer and both shapes.
    """
    from .kernels.loader import build

    if codebook is None:
        raise VQ4AllError("codebook: a network artifact needs the codebook it was built on: pass codebook=<file>")
    cb = _codebook(codebook)
    if isinstance(artifact, NetworkArtifact):
        art = artifact
    else:
        art = load_network(artifact, cb)
    if model is None:
        from . import zoo

        if art.network not in zoo.NAMES:
            raise VQ4AllError(
                f"the artifact is of '{art.network}', not a zoo network: pass model=<a module of its "
                "architecture> (its weights are ignored)"
            )
        model = zoo.load(art.network).model
    elif not isinstance(model, nn.Module):
        raise VQ4AllError(f"model must be a torch.nn.Module of the artifact's architecture, got {type(model).__name__}")
    with torch.no_grad():
        return build(copy.deepcopy(model).float(), art, cb, impl=impl)
