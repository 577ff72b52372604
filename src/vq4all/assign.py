"""Differentiable candidate assignments (METHOD.md step 4) and their freezing (step 6).

`quantize_(model, keys, codebook, n=8)` replaces, in place, each compressible weight of a
torch model by a `CandidateWeight` parametrization (torch.nn.utils.parametrize), so that the
model's own forward runs unchanged on the rebuilt weight:

    sub-vector j of row o = scales[o] * sum_i r[j, i] * values[cand[j, i]],   r[j] = softmax(logits[j])

over the n nearest codewords of the FP sub-vector (`cand`, from `vq4all.search.candidates`). A frozen
sub-vector uses its chosen codeword alone (`chosen[j]`) and gets no gradient. Memory is
proportional to n x sub-vectors (cand int32 + logits float32 + Adam's two moments), plus the
[S, n, d] gather of one forward.

Scales train as float32 logarithms (so they stay > 0) but the forward uses their float16
rounding (straight-through), so the exported float16 scales give exactly the weights the student
used.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils import parametrize

from .artifact import Codebook, LayerCodes
from .errors import VQ4AllError
from .rules import FINISH_RULES, INITS, code_dtype
from .search import candidates
from .subvectors import split


class CandidateWeight(torch.nn.Module):
    """The weight of one layer as ratios over candidate codewords.

    Buffers: values [k, d] float32 (the codebook's real values, shared by all layers),
    cand [S, n] int32 (S = out_features * m sub-vectors, row-major), frozen [S] bool,
    chosen [S] int64 (the frozen codeword). Parameters: logits [S, n] float32,
    log_scales [out_features] float32 (used as float16(exp(log_scales))).
    """

    def __init__(
        self,
        values: torch.Tensor,
        cand: np.ndarray,
        dist: np.ndarray,
        scales: np.ndarray,
        shape: tuple[int, ...],
        pad: int,
        init: str = "equal",
    ):
        super().__init__()
        out_features = shape[0]
        s, n = cand.shape
        self.shape, self.pad, self.d = tuple(shape), int(pad), int(values.shape[1])
        self.m = s // out_features
        self.register_buffer("values", values, persistent=False)
        self.register_buffer("cand", torch.from_numpy(cand.astype(np.int32)))
        self.register_buffer("frozen", torch.zeros(s, dtype=torch.bool))
        self.register_buffer("chosen", torch.from_numpy(cand[:, 0].astype(np.int64)))
        if init == "equal":
            logits = torch.zeros(s, n)
        elif init == "inverse_distance":
            # r proportional to 1 / distance (VQ4DiT): logits = -log(distance)
            logits = -torch.log(torch.from_numpy(np.sqrt(dist)).clamp_min(1e-6))
        else:
            raise VQ4AllError(f"initial ratios '{init}' must be one of {', '.join(INITS)}")
        self.logits = torch.nn.Parameter(logits.float())
        # scales train in the log domain so they stay > 0 (the artifact's rule: they are row RMS)
        self.log_scales = torch.nn.Parameter(torch.log(torch.from_numpy(scales.astype(np.float32))))

    def ratios(self) -> torch.Tensor:
        """r = softmax(logits): [S, n] float32."""
        return torch.softmax(self.logits, dim=1)

    def _frozen_part(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(active [A] int64 indices of the unfrozen sub-vectors, hard [S, d] float32 with every
        frozen sub-vector's codeword), recomputed only when `frozen` or `chosen` changed (PNC, a
        checkpoint load, a move to another device): between freezes each step reuses them."""
        key = (self.frozen._version, self.chosen._version, self.frozen.data_ptr(), self.values.data_ptr())
        if getattr(self, "_frozen_key", None) != key:
            self._active = torch.nonzero(~self.frozen).squeeze(1)
            self._hard = self.values[self.chosen]
            self._frozen_key = key
        return self._active, self._hard

    def active_ratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(active [A] indices, softmax of their logits [A, n] float32): the only ratios a step needs."""
        active, _ = self._frozen_part()
        if active.numel() == self.frozen.numel():  # nothing frozen yet: no gather of the logits
            return active, torch.softmax(self.logits, dim=1)
        return active, torch.softmax(self.logits[active], dim=1)

    def subvectors(self) -> torch.Tensor:
        """The normalised sub-vectors the layer uses now: [S, d] float32.

        Frozen sub-vectors are their chosen codeword (gathered once per freeze); only the A
        active ones go through the softmax mixture, so a step gets cheaper as PNC freezes."""
        active, hard = self._frozen_part()
        if active.numel() == 0:
            return hard
        active, ratios = self.active_ratios()
        if active.numel() == self.frozen.numel():  # nothing frozen yet: every row is the mixture
            return torch.einsum("sn,snd->sd", ratios, self.values[self.cand.long()])
        soft = torch.einsum("an,and->ad", ratios, self.values[self.cand[active].long()])
        return hard.index_put((active,), soft)

    def used_scales(self) -> torch.Tensor:
        """exp(log_scales) clamped to float16's normal range and rounded to float16, with the
        gradient of the float32 value (straight-through): exactly the scales the artifact stores."""
        scales = torch.exp(self.log_scales).clamp(2.0**-14, 65504.0)
        return scales + (scales.half().float() - scales).detach()

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        out_features = self.shape[0]
        rows = self.subvectors().reshape(out_features, self.m * self.d)[:, : self.m * self.d - self.pad]
        return (rows * self.used_scales().unsqueeze(1)).reshape(self.shape)

    @torch.no_grad()
    def freeze_confident(self, alpha: float) -> int:
        """PNC: freeze every active sub-vector whose largest ratio exceeds alpha to that
        candidate. Returns how many were frozen now."""
        best, arg = self.ratios().max(dim=1)
        newly = (~self.frozen) & (best > alpha)
        self.chosen[newly] = self.cand[newly, arg[newly]].long()
        self.frozen |= newly
        return int(newly.sum())

    @torch.no_grad()
    def confidence(self) -> torch.Tensor:
        """The largest ratio of every sub-vector, -1 where frozen: [S] float32."""
        return torch.where(self.frozen, torch.full((), -1.0), self.ratios().max(dim=1).values)

    @torch.no_grad()
    def freeze_rest(self, rule: str = "argmax", which: torch.Tensor | None = None) -> int:
        """Freeze every remaining sub-vector. Returns how many.

        rule "argmax": the candidate with the largest ratio (the paper's rule). "nearest": the
        candidate nearest (L2) to the sub-vector the student uses now, sum_i r_i c_i: where the
        ratios are still near-uniform the argmax is decided by noise, while the mixture is close
        to the FP sub-vector and its nearest candidate is a sound rounding of it. A sub-vector
        whose logits are still all equal never got a gradient (e.g. the embedding row of a token
        absent from the calibration data): nothing adapted to its mixture, so "nearest" gives it
        candidate 0, the codeword nearest to its FP sub-vector, as hard assignment would.
        which: [S] bool, freeze only these (default: all active ones).
        """
        if rule not in FINISH_RULES:
            raise VQ4AllError(f"final rule '{rule}' must be one of {', '.join(FINISH_RULES)}")
        rest = ~self.frozen if which is None else which & ~self.frozen
        idx = torch.nonzero(rest).squeeze(1)  # only these rows are computed: the quota freezes few per step
        if idx.numel() == 0:
            return 0
        logits = self.logits[idx]
        if rule == "argmax":
            arg = logits.argmax(dim=1)
        else:
            cand_values = self.values[self.cand[idx].long()]  # [R, n, d]
            soft = torch.einsum("rn,rnd->rd", torch.softmax(logits, dim=1), cand_values)
            arg = (cand_values - soft.unsqueeze(1)).pow(2).sum(2).argmin(dim=1)
            arg[logits.amax(dim=1) == logits.amin(dim=1)] = 0  # untouched: the nearest codeword
        self.chosen[idx] = self.cand[idx, arg].long()
        self.frozen[idx] = True
        return int(idx.numel())

    def layer_codes(self, param: str, k: int, granularity: str) -> LayerCodes:
        """The frozen layer as artifact codes (every sub-vector must be frozen)."""
        if not bool(self.frozen.all()):
            raise VQ4AllError(f"{param}: {int((~self.frozen).sum())} sub-vectors are not frozen yet")
        codes = self.chosen.reshape(self.shape[0], self.m).cpu().numpy().astype(code_dtype(k))
        scales = self.used_scales().detach().cpu().numpy().astype(np.float16)
        return LayerCodes(param, self.shape, self.d, self.pad, granularity, codes, scales)


def weight_owner(model: torch.nn.Module, key: str) -> tuple[torch.nn.Module, str]:
    """(module, attribute name) holding the state-dict entry `key` of `model`."""
    module_name, _, attr = key.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def quantize_(
    model: torch.nn.Module,
    keys,
    codebook: Codebook,
    *,
    n: int,
    init: str = "equal",
    granularity: str = "channel",
    weights: dict | None = None,
    device=None,
    progress: bool = False,
) -> dict[str, CandidateWeight]:
    """Rebuild, in place, the weights `keys` (state-dict keys) of `model` from `codebook`.

    Each weight gets a `CandidateWeight` parametrization over its sub-vectors' n nearest
    codewords. The FP weight stays as the parametrization's `original`, frozen and unused.
    weights: {key: statistic or None}, what the candidate search follows: h [row]
    (`vq4all.importance.input_mean_squares`) or H [groups, row, row]
    (`vq4all.hessian.input_moments`); None or a missing key: the plain distance.
    Returns {key: CandidateWeight}.
    """
    if not 1 <= n <= codebook.k:
        raise VQ4AllError(f"n={n} candidates must be between 1 and k={codebook.k}")
    owners = {key: weight_owner(model, key) for key in keys}
    if not owners:
        raise VQ4AllError(
            "the network has no compressible layer (no weight with >= 2 dimensions to code): nothing to compress"
        )
    values = torch.from_numpy(codebook.values().copy())  # read-only cache: torch needs its own
    splits = [
        split(getattr(module, attr).detach().cpu().numpy(), codebook.d, granularity, name=f"weight '{key}'")
        for key, (module, attr) in owners.items()
    ]
    position_weights = [(weights or {}).get(key) for key in owners]
    found = candidates(splits, codebook.values(), n, weights=position_weights, device=device, progress=progress)
    out = {}
    for (key, (module, attr)), s, (cand, dist) in zip(owners.items(), splits, found):
        param = CandidateWeight(values, cand, dist, s.scales, s.shape, s.pad, init)
        getattr(module, attr).requires_grad_(False)
        parametrize.register_parametrization(module, attr, param, unsafe=True)
        out[key] = param
    return out


def unquantize_(model: torch.nn.Module, params: dict[str, CandidateWeight]) -> None:
    """Remove the parametrizations, leaving each weight as the plain tensor it now computes."""
    for key in params:
        module, attr = weight_owner(model, key)
        parametrize.remove_parametrizations(module, attr, leave_parametrized=True)


def ratio_penalty(params: dict[str, CandidateWeight]) -> torch.Tensor:
    """Mean over the active (unfrozen) sub-vectors of sum_i r_i (1 - r_i): 0 when one-hot."""
    total, count = 0.0, 0
    for p in params.values():
        active, r = p.active_ratios()
        if active.numel():
            total = total + (r * (1 - r)).sum()
            count += int(active.numel())
    return total / count if count else torch.zeros(())


@torch.no_grad()
def freeze_quota(params: dict[str, CandidateWeight], target: int, finish: str) -> int:
    """Freeze the most confident active sub-vectors of `params` (largest ratio first, across all
    of them) until `target` are frozen, each by the finish rule. Returns how many."""
    need = target - sum(int(p.frozen.sum()) for p in params.values())
    if need <= 0:
        return 0
    conf = [p.confidence() for p in params.values()]
    cut = torch.topk(torch.cat(conf), need).values[-1]
    # everything above the cut first (fewer than `need` by the choice of cut), then sub-vectors
    # tied at the cut, in layer order, up to the quota
    done = sum(p.freeze_rest(finish, c > cut) for p, c in zip(params.values(), conf))
    for p, c in zip(params.values(), conf):
        tied = c == cut
        tied &= torch.cumsum(tied.int(), 0) <= need - done
        done += p.freeze_rest(finish, tied)
    return done
