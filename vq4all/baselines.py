"""The classic baselines the universal codebook is compared with, at 2 bits per weight.

- `rtn`: per-output-channel asymmetric round-to-nearest scalar quantization (min/max grid of
  2^bits levels per row; the row's fp16 scale and zero point are the overhead).
- `kmeans_layer`: the "top-down" per-layer VQ: k-means on one layer's own normalised sub-vectors
  (k=256, d=4 by default), the layer storing its codes and its own fp16 codebook.
Both return the reconstructed weight and the bits they store, so tables charge them honestly.
"""

from __future__ import annotations

import math

import numpy as np

from .kmeans import lloyd
from .search import nearest
from .subvectors import join, split


def rtn(weight, bits: int = 2) -> tuple[np.ndarray, int]:
    """(reconstructed weight float32, stored bits): bits per value + fp16 scale and zero per row."""
    w = np.asarray(weight, dtype=np.float32)
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    lo, hi = rows.min(1, keepdims=True), rows.max(1, keepdims=True)
    levels = (1 << bits) - 1
    step = np.where(hi > lo, (hi - lo) / levels, 1.0)
    q = np.clip(np.rint((rows - lo) / step), 0, levels)
    stored = rows.size * bits + rows.shape[0] * 2 * 16
    return (q * step + lo).astype(np.float32).reshape(w.shape), stored


def kmeans_layer(weight, k: int = 256, d: int = 4, iters: int = 20, granularity: str = "channel",
                 seed: int = 0) -> tuple[np.ndarray, int]:
    """(reconstructed weight float32, stored bits) of per-layer k-means VQ.

    Codebook: k codewords (fewer if the layer has fewer sub-vectors), initialised from distinct
    random sub-vectors, `iters` Lloyd steps, stored as float16; stored bits = codes at
    ceil(log2 k) + fp16 row scales + the codebook's k*d*16.
    """
    s = split(weight, d, granularity)
    x = s.subvectors.reshape(-1, d).astype(np.float32)
    k = min(k, x.shape[0])
    rng = np.random.Generator(np.random.PCG64(seed))
    codewords = lloyd(x[rng.choice(x.shape[0], size=k, replace=False)], x, iters)
    codebook = codewords.astype(np.float16).astype(np.float32)
    idx = nearest(x, codebook, 1)[0][:, 0]
    rebuilt = join(codebook[idx].reshape(s.subvectors.shape), s.scales, s.shape, s.pad)
    stored = x.shape[0] * max(1, math.ceil(math.log2(k))) + s.scales.size * 16 + k * d * 16
    return rebuilt, stored
