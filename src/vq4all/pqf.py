"""The "top-down" baseline at its best: per-layer k-means codebooks fine-tuned by distillation.

Each compressible weight gets its own codebook (k-means on its normalised sub-vectors, k=256,
d=4 by default: 2 bits/weight), the assignments stay fixed and the codewords train, with the same
distillation loss, data, mode (end to end, or block-wise then end to end) and step budget as
vq4all (PQF-style). Its codebooks are charged in
every bit count: each layer stores codes, fp16 scales and k*d fp16 codewords.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.nn.utils import parametrize

from .config import CompressConfig
from .kmeans import fit
from .search import nearest
from .subvectors import split


class LayerCodebookWeight(torch.nn.Module):
    """One layer as fixed codes into its own trainable codebook.

    Parameter: codebook [k, d] float32 (used through its float16 rounding, as stored).
    Buffers: codes [out_features * m] int64, scales [out_features] float32 (float16 values).
    """

    def __init__(self, codebook: np.ndarray, codes: np.ndarray, scales: np.ndarray, shape, pad: int):
        super().__init__()
        self.shape, self.pad = tuple(shape), int(pad)
        self.codebook = torch.nn.Parameter(torch.from_numpy(codebook.astype(np.float32)))
        self.register_buffer("codes", torch.from_numpy(codes.astype(np.int64)))
        self.register_buffer("scales", torch.from_numpy(scales.astype(np.float32)))

    def used_codebook(self) -> torch.Tensor:
        return self.codebook + (self.codebook.half().float() - self.codebook).detach()

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        rows = self.used_codebook()[self.codes].reshape(self.shape[0], -1)
        return (rows[:, : rows.shape[1] - self.pad] * self.scales.unsqueeze(1)).reshape(self.shape)

    def stored_bits(self) -> int:
        k, d = self.codebook.shape
        return self.codes.numel() * max(1, math.ceil(math.log2(k))) + self.scales.numel() * 16 + k * d * 16


def kmeans_(model: torch.nn.Module, keys, k: int = 256, d: int = 4, iters: int = 20, seed: int = 0) -> dict:
    """Give each weight `keys` of `model` its own k-means codebook, in place (parametrizations).
    Returns {key: LayerCodebookWeight}."""
    from .assign import weight_owner

    out = {}
    rng = np.random.Generator(np.random.PCG64(seed))
    for key in keys:
        module, attr = weight_owner(model, key)
        s = split(getattr(module, attr).detach().cpu().numpy(), d)
        x = s.subvectors.reshape(-1, d)
        codebook = fit(x, k, iters, rng)
        codes = nearest(x, codebook, 1)[0][:, 0]
        param = LayerCodebookWeight(codebook, codes, s.scales.astype(np.float32), s.shape, s.pad)
        getattr(module, attr).requires_grad_(False)
        parametrize.register_parametrization(module, attr, param, unsafe=True)
        out[key] = param
    return out


def finetune_kmeans(
    net, config: CompressConfig | None = None, k: int = 256, d: int = 4, progress: bool = False
) -> tuple[dict[str, np.ndarray], int, dict]:
    """Per-layer k-means VQ fine-tuned by distillation: (the student's whole state dict, its
    compressed weights rebuilt and its FP leftovers trained; stored bits of the compressed layers
    (codes, scales, codebooks); report)."""
    from .assign import unquantize_
    from .blockwise import block_plan, uses_blockwise
    from .train import _Run, distill

    config = CompressConfig.from_dict(
        {**(config or CompressConfig()).to_dict(), "pnc": False, "reg": 0.0, "checkpoint_every": 0}
    )
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    student = net.with_weights({})
    keys = net.compressible_keys()
    plan = block_plan(net, keys, config) if uses_blockwise(net, keys, config) else None
    params = kmeans_(student, keys, k, d, seed=config.seed)
    run = _Run(net, config, student, params, [p.codebook for p in params.values()], f"kmeans-{k}x{d}")
    distill(run, plan=plan, progress=progress)
    stored = sum(p.stored_bits() for p in params.values())
    unquantize_(student, params)
    state = {key: value.detach().cpu().numpy().copy() for key, value in student.state_dict().items()}
    report = {
        "mode": "blockwise" if plan is not None else "end_to_end",
        "steps": run.step,
        "block_steps": sum(b["steps"] for b in run.block_reports),
        "blocks": run.block_reports,  # per block, as in compress's report
        "seconds": time.perf_counter() - start,
        "final_loss": run.history[-1]["distill"] if run.history else math.nan,  # distillation alone
    }
    return state, stored, report
