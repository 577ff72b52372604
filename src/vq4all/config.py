"""Configuration dataclasses: validated on construction, round-tripped through artifact manifests.

CLI flags default to None and fall back to these defaults, so each default lives here only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

from .errors import VQ4AllError
from .rules import (
    BANDWIDTH_RULES,
    CODEBOOK_DTYPES,
    FINISH_RULES,
    GRANULARITIES,
    INITS,
    MAX_CALIBRATION,
    MAX_K,
    MAX_LLOYD_ITERS,
    MAX_N,
    MAX_PER_NETWORK,
    MAX_SEED,
    MAX_STEPS,
    MODES,
    SCHEDULES,
    SEARCHES,
    check_choice,
    check_d,
    check_int,
    check_k,
    shown,
)

# (lo, hi) of every integer setting; the CLI's flags take their ranges from here
CODEBOOK_INT_RANGES = {
    "per_network": (1, MAX_PER_NETWORK),
    "lloyd_iters": (0, MAX_LLOYD_ITERS),
    "seed": (0, MAX_SEED),
}
COMPRESS_INT_RANGES = {
    "n": (1, MAX_N),
    "steps": (1, MAX_STEPS),
    "batch_size": (1, MAX_CALIBRATION),
    "calibration": (1, MAX_CALIBRATION),  # or None: the network's default_calibration
    "checkpoint_every": (0, MAX_STEPS),
    "block_steps": (1, MAX_STEPS),
    "finetune_steps": (0, MAX_STEPS),
    "seed": (0, MAX_SEED),
}


def _real(value) -> float:
    """`value` as a float when it is a real number (not a bool), else NaN (which every range refuses)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int beyond float's range
            return math.inf if value > 0 else -math.inf
    return math.nan


class _Manifested:
    """Round trip through an artifact manifest: to_dict() gives JSON values, from_dict() ignores
    keys this version does not know (written by a newer one)."""

    def to_dict(self) -> dict:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class CodebookConfig(_Manifested):
    """How the universal codebook is built (METHOD.md steps 1-3).

    networks: source networks, pooled with equal counts (`per_network` sub-vectors each, drawn
    with replacement only where a network has fewer). bandwidth: "scott", "silverman" or a
    positive number (a fixed h, in units of the normalised weights). lloyd_iters: optional Lloyd
    refinement of the sampled codewords over the pooled sub-vectors (0 = pure KDE sample).
    """

    networks: tuple[str, ...] = ()
    k: int = MAX_K
    d: int = 8
    per_network: int = 1 << 18
    bandwidth: str | float = "scott"
    dtype: str = "int8"
    scale_granularity: str = "channel"
    lloyd_iters: int = 0
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "networks", tuple(self.networks))
        check_k(self.k)
        check_d(self.d)
        for name, (lo, hi) in CODEBOOK_INT_RANGES.items():
            check_int(name, getattr(self, name), lo, hi)
        bw = self.bandwidth
        if isinstance(bw, str) and bw not in BANDWIDTH_RULES:
            try:
                bw = float(bw)
            except ValueError:
                raise VQ4AllError(f"bandwidth {shown(bw)} must be scott, silverman or a positive number") from None
        if not isinstance(bw, str) and not (_real(bw) > 0 and _real(bw) < math.inf):
            raise VQ4AllError(f"bandwidth {shown(bw)} must be a positive finite number")
        object.__setattr__(self, "bandwidth", bw)
        check_choice("codebook dtype", self.dtype, CODEBOOK_DTYPES)
        check_choice("scale granularity", self.scale_granularity, GRANULARITIES)


@dataclass(frozen=True)
class CompressConfig(_Manifested):
    """How a network is rebuilt from the universal codebook and trained (METHOD.md steps 4-7).

    n candidates per sub-vector, initial ratios "equal" (paper) or "inverse_distance" (VQ4DiT);
    search: how the n candidates are chosen, "plain" (the paper's nearest) or "activations"
    (nearest by the distance weighted by the mean square of each position's input on the
    calibration data, `vq4all.importance`) or "hessian" (the layer's input second moments
    E[x x^T] on the calibration data, each row coded one sub-vector at a time with the rest of the row
    absorbing each sub-vector's error, GPTQ-style: `vq4all.hessian`) or "sequential" (the same,
    each block's moments measured on the network whose earlier blocks are already coded); the
    plain distance where a layer has no such statistic;
    PNC freezes a sub-vector once its largest ratio exceeds alpha (pnc=False: train the same
    budget, then freeze every sub-vector by `finish`). schedule "threshold" is the paper's PNC (alpha alone);
    "linear" also freezes, after each step, the most confident active sub-vectors until the
    frozen fraction reaches step / steps, so a budget too short for the ratios to pass alpha
    still ends with a network the distillation has adapted to. Sub-vectors frozen without
    passing alpha ("forced", by the schedule or at the end) take `finish`: "argmax" (the
    paper's rule) or "nearest" (the candidate nearest to the sub-vector's current mixture). Adam on the logits (lr) and on the FP leftovers and scales
    (lr_fp); loss = distillation + task_weight * task loss (where labels exist) + reg * mean
    over active sub-vectors of sum_i r_i (1 - r_i) + feature_weight * layer-wise feature MSE
    (each compressed layer's output against the teacher's on the same batch, normalised by the
    teacher's mean square; 0 turns it off). `calibration` real inputs (None: the network's
    `default_calibration`, filled in by `for_network` before a run starts), batches of
    `batch_size`, at most `steps` steps, a checkpoint every `checkpoint_every` steps (0: none).
    """

    n: int = 8  # settled by benches/ablations.py: n=8 beat n=4 on digits_cnn and crepe_tiny
    alpha: float = 0.99
    pnc: bool = True
    schedule: str = "threshold"
    finish: str = "argmax"
    init: str = "equal"
    search: str = "plain"  # "activations"/"hessian" candidates matched or trailed it once trained (blockwise table)
    steps: int = 300
    batch_size: int = 32
    calibration: int | None = None
    lr: float = 0.05
    lr_fp: float = 1e-4
    reg: float = 1.0
    task_weight: float = 1.0
    feature_weight: float = 0.0
    temperature: float = 1.0
    scale_granularity: str = "channel"
    checkpoint_every: int = 50
    mode: str = "auto"
    block_steps: int = 200
    finetune_steps: int = 50
    blocks: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.blocks, str) or not all(isinstance(b, str) for b in self.blocks):
            raise VQ4AllError(f"blocks={shown(self.blocks)} must be a list of module names")
        object.__setattr__(self, "blocks", tuple(self.blocks))
        check_choice("mode", self.mode, MODES)
        for name, (lo, hi) in COMPRESS_INT_RANGES.items():
            if not (name == "calibration" and self.calibration is None):
                check_int(name, getattr(self, name), lo, hi)
        if not 0.0 < _real(self.alpha) < 1.0:
            raise VQ4AllError(f"alpha={shown(self.alpha)} must be between 0 and 1 (e.g. --alpha 0.99)")
        check_choice("init", self.init, INITS)
        check_choice("search", self.search, SEARCHES)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("finish", self.finish, FINISH_RULES)
        for name in ("lr", "lr_fp", "reg", "task_weight", "feature_weight", "temperature"):
            value = _real(getattr(self, name))
            if not (value >= 0 and value < math.inf) or (name == "temperature" and value == 0):
                raise VQ4AllError(
                    f"{name}={shown(getattr(self, name))} must be a finite number "
                    f">= 0{' and > 0' if name == 'temperature' else ''}"
                )
        check_choice("scale granularity", self.scale_granularity, GRANULARITIES)
        if not isinstance(self.pnc, bool):
            raise VQ4AllError(f"pnc={self.pnc!r} must be True or False")

    def for_network(self, net) -> CompressConfig:
        """This config with what it leaves to the network filled in: `calibration` None becomes
        `net.default_calibration`. A run records (and a resumed run checks) the filled-in config."""
        if self.calibration is not None:
            return self
        return CompressConfig.from_dict({**self.to_dict(), "calibration": int(net.default_calibration)})
