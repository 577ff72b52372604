"""Lloyd's k-means iterations on top of the GEMM nearest search (used by the per-layer
baseline and by the optional refinement of the universal codebook)."""

from __future__ import annotations

import numpy as np

from .search import nearest


def cluster_means(x: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(sums [k, d] float64, counts [k] int64) of the rows of x [N, d] grouped by idx [N]."""
    counts = np.bincount(idx, minlength=k)
    sums = np.stack([np.bincount(idx, weights=x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)
    return sums, counts


def lloyd(codewords: np.ndarray, x: np.ndarray, iters: int, *, progress: bool = False) -> np.ndarray:
    """`iters` Lloyd steps: each codeword moves to the mean of the rows of x [N, d] nearest to it;
    a codeword that wins no row stays where it is. codewords: [k, d] -> [k, d] float32."""
    codewords = np.array(codewords, dtype=np.float64)
    k = codewords.shape[0]
    for _ in range(iters):
        idx = nearest(x, codewords, 1, progress=progress)[0][:, 0]
        sums, counts = cluster_means(x, idx, k)
        won = counts > 0
        codewords[won] = sums[won] / counts[won, None]
    return codewords.astype(np.float32)


def fit(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means codebook of the rows of x [N, d]: min(k, N) codewords initialised from distinct
    random rows (drawn from `rng`), then `iters` Lloyd steps. Returns [min(k, N), d] float32."""
    k = min(k, x.shape[0])
    return lloyd(x[rng.choice(x.shape[0], size=k, replace=False)], x, iters)
