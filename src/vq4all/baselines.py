"""The classic baselines the universal codebook is compared with, at 2 bits per weight.

- `rtn`: per-output-channel asymmetric round-to-nearest scalar quantization (a grid of 2^bits
  levels per row, its range clipped to minimise the row's error; the row's fp16 scale and zero
  point are the overhead).
- `kmeans_layer`: the "top-down" per-layer VQ: k-means on one layer's own normalised sub-vectors
  (k=256, d=4 by default), the layer storing its codes and its own fp16 codebook.
Both return the reconstructed weight and the bits they store, so tables charge them honestly.
"""

from __future__ import annotations

import math

import numpy as np

from .kmeans import fit
from .search import nearest
from .subvectors import join, split


def rtn(weight, bits: int = 2, clip_steps: int = 20) -> tuple[np.ndarray, int]:
    """(reconstructed weight float32, stored bits): bits per value + fp16 scale and zero per row.

    Each row gets an asymmetric grid of 2^bits levels from r*min to r*max, with the clip ratio r
    chosen per row from `clip_steps` values in (0, 1] to minimise the row's squared error (plain
    min/max, r = 1, wastes most of a 2-bit grid on a row's outliers).
    """
    w = np.asarray(weight, dtype=np.float32)
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    lo, hi = rows.min(1, keepdims=True), rows.max(1, keepdims=True)
    levels = (1 << bits) - 1
    best = np.zeros_like(rows)
    best_err = np.full((rows.shape[0], 1), np.inf)
    for r in np.linspace(1.0, 1.0 / clip_steps, clip_steps):
        rlo, rhi = r * lo, r * hi
        step = np.where(rhi > rlo, (rhi - rlo) / levels, 1.0)
        rebuilt = np.clip(np.rint((rows - rlo) / step), 0, levels) * step + rlo
        err = ((rows - rebuilt) ** 2).sum(1, keepdims=True)
        better = err < best_err
        best = np.where(better, rebuilt, best)
        best_err = np.where(better, err, best_err)
    stored = rows.size * bits + rows.shape[0] * 2 * 16
    return best.astype(np.float32).reshape(w.shape), stored


def kmeans_layer(
    weight, k: int = 256, d: int = 4, iters: int = 20, granularity: str = "channel", seed: int = 0
) -> tuple[np.ndarray, int]:
    """(reconstructed weight float32, stored bits) of per-layer k-means VQ.

    Codebook: k codewords (fewer if the layer has fewer sub-vectors), initialised from distinct
    random sub-vectors, `iters` Lloyd steps, stored as float16; stored bits = codes at
    ceil(log2 k) + fp16 row scales + the codebook's k*d*16.
    """
    s = split(weight, d, granularity)
    x = s.subvectors.reshape(-1, d).astype(np.float32)
    codewords = fit(x, k, iters, np.random.Generator(np.random.PCG64(seed)))
    k = codewords.shape[0]
    codebook = codewords.astype(np.float16).astype(np.float32)
    idx = nearest(x, codebook, 1)[0][:, 0]
    rebuilt = join(codebook[idx].reshape(s.subvectors.shape), s.scales, s.shape, s.pad)
    stored = x.shape[0] * max(1, math.ceil(math.log2(k))) + s.scales.size * 16 + k * d * 16
    return rebuilt, stored
