"""The n nearest codewords (squared L2) for millions of sub-vectors, GEMM-based.

||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2. Ranking needs only s = ||c||^2 - 2 x.c, which one
`torch.addmm` gives for a block of rows against a block of codewords; the block's n smallest are
merged into the running best. ||x||^2 is added to the n winners only.

Memory is bounded: the score block is rows_per_block x codewords_per_block float32, sized from
`block_bytes` (default 4 MiB, small enough to stay in a CPU's L2/L3 between the GEMM that writes it
and the min/top-k that reads it, which is what keeps the search near the GEMM's own rate).
Runs multi-threaded on CPU (torch's intra-op threads) and on CUDA when `device` says so.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import VQ4AllError


def _as_tensor(a, device) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        a = np.asarray(a, dtype=np.float32)
        a = torch.as_tensor(a if a.flags.writeable else a.copy())  # torch wants writable memory
    return a.to(device=device, dtype=torch.float32).contiguous()


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


_GROUP = 64


def smallest(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The min(n, C) smallest of each row of scores [B, C], ascending: (values, columns).

    torch's min/argmin/topk along a row run about 10x slower on CPU than a plain `amin`
    reduction, so when C splits into groups of 64 the work goes in two steps: the minimum of
    every group (one fast pass over the block), then the n groups with the smallest minima, and
    the n smallest among those groups' 64n values. Exact: a group holding one of the n smallest
    values has a minimum no larger than that value, and each group with a smaller minimum holds
    another of the n smallest, so at most n - 1 groups can rank before it.
    """
    b, c = scores.shape
    n = min(n, c)
    if c % _GROUP or c // _GROUP < n:
        return scores.min(dim=1, keepdim=True) if n == 1 else scores.topk(n, dim=1, largest=False, sorted=True)
    grouped = scores.view(b, c // _GROUP, _GROUP)
    minima = grouped.amin(dim=2)
    groups = (
        minima.argmin(dim=1, keepdim=True) if n == 1 else minima.topk(n, dim=1, largest=False, sorted=False).indices
    )
    candidates = grouped.gather(1, groups.unsqueeze(2).expand(-1, -1, _GROUP)).reshape(b, -1)
    if n == 1:
        val, pick = candidates.min(dim=1, keepdim=True)
    else:
        val, pick = candidates.topk(n, dim=1, largest=False, sorted=True)
    return val, groups.gather(1, pick // _GROUP) * _GROUP + pick % _GROUP


def nearest(
    x, codewords, n: int = 1, *, device=None, block_bytes: int = 4 << 20, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and squared distances of the n nearest codewords of every row of x.

    x: [N, d] float (numpy or torch); codewords: [k, d] float (the codebook's real values).
    Returns (indices [N, n] int64, squared distances [N, n] float32), nearest first. Ties go to
    either codeword. Distances are clamped at 0 (the expansion can round slightly below).
    """
    device = torch.device(device) if device is not None else default_device()
    xs, cs = _as_tensor(x, device), _as_tensor(codewords, device)
    if xs.ndim != 2 or cs.ndim != 2 or xs.shape[1] != cs.shape[1]:
        raise VQ4AllError(
            f"nearest: x [N, d] and codewords [k, d] must share d, got {tuple(xs.shape)} and {tuple(cs.shape)}"
        )
    big_n, k = xs.shape[0], cs.shape[0]
    if not 1 <= n <= k:
        raise VQ4AllError(f"n={n} candidates must be between 1 and k={k}")
    c_norm = (cs * cs).sum(1)
    # Block shape: all codewords at once when that still leaves >= 16 rows per block, else
    # 16-row blocks against codeword tiles. Measured on 2 CPU cores at k=65536, d=8: 16-32 rows
    # x 65536 codewords ran 1.7x faster than 256 x 8192 (fewer merges, the block stays in cache).
    elems = max(block_bytes // 4, 16 * n)
    cols = k if k * 16 <= elems else max(n, elems // 16)
    rows = max(1, elems // cols)
    out_idx = torch.empty((big_n, n), dtype=torch.int64, device=device)
    out_dist = torch.empty((big_n, n), dtype=torch.float32, device=device)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=big_n, desc=f"nearest (k={k}, n={n})", unit="vec", unit_scale=True, leave=False)
    scores = torch.empty((rows, cols), dtype=torch.float32, device=device)
    with torch.no_grad():
        for r0 in range(0, big_n, rows):
            xb = xs[r0 : r0 + rows]
            best_val = best_idx = None
            for c0 in range(0, k, cols):
                cb, nb = cs[c0 : c0 + cols], c_norm[c0 : c0 + cols]
                s = scores[: xb.shape[0], : cb.shape[0]]
                torch.addmm(nb.unsqueeze(0), xb, cb.T, beta=1.0, alpha=-2.0, out=s)
                val, idx = smallest(s, n)
                idx = idx + c0
                if best_val is None:
                    best_val, best_idx = val, idx
                elif n == 1:
                    better = val < best_val
                    best_val, best_idx = torch.where(better, val, best_val), torch.where(better, idx, best_idx)
                else:
                    both_val = torch.cat([best_val, val], 1)
                    both_idx = torch.cat([best_idx, idx], 1)
                    best_val, pick = smallest(both_val, n)
                    best_idx = both_idx.gather(1, pick)
            out_idx[r0 : r0 + rows] = best_idx
            out_dist[r0 : r0 + rows] = (best_val + (xb * xb).sum(1, keepdim=True)).clamp_min_(0)
            if bar is not None:
                bar.update(xb.shape[0])
    if bar is not None:
        bar.close()
    return out_idx.cpu().numpy(), out_dist.cpu().numpy()


def candidates(
    splits, codewords: np.ndarray, n: int = 1, *, weights=None, device=None, progress: bool = False
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The n nearest codewords of every sub-vector of several split weights.

    splits: `vq4all.subvectors.Split` objects; codewords: [k, d] float32 real values.
    weights: None, or one entry per split: None (plain squared distance); h [row] float, a
    weight per position of the split's rows (`vq4all.importance`): the distance of codeword c to
    the sub-vector v in row columns [j*d, j*d + d) is then sum_e h[j*d + e] (v_e - c_e)^2,
    with h divided by its mean (the ranking does not depend on it) and floored at 1e-6 of it;
    or H [groups, row, row], the input second moments of `vq4all.hessian`, whose search codes
    each row one sub-vector at a time and lets the rest of the row absorb each sub-vector's error
    (`vq4all.hessian.sequential_candidates`).
    Returns one (indices [out_features * m, n] int64, squared distances float32) per split,
    sub-vectors in row-major order. The last sub-vector of a ragged row holds only d - pad real
    values and the decoder drops the rest, so those tails are matched on their real values only.
    Plain splits share one search; a weighted split searches each column of sub-vectors with the
    codebook scaled by sqrt(h) (the same work, m calls).
    """
    d = codewords.shape[1]
    weights = [None] * len(splits) if weights is None else list(weights)
    if len(weights) != len(splits):
        raise VQ4AllError(f"candidates: {len(weights)} weights for {len(splits)} splits")
    plain = [s for s, w in zip(splits, weights) if w is None]
    flat = np.concatenate([s.subvectors.reshape(-1, d) for s in plain]) if plain else np.zeros((0, d), np.float32)
    idx, dist = nearest(flat, codewords, n, device=device, progress=progress)
    bar = None
    if progress and any(w is not None for w in weights):
        from tqdm import tqdm

        total = sum(s.subvectors.shape[0] * s.subvectors.shape[1] for s, w in zip(splits, weights) if w is not None)
        bar = tqdm(
            total=total, desc=f"weighted nearest (k={len(codewords)}, n={n})", unit="vec", unit_scale=True, leave=False
        )
    out, start = [], 0
    for s, w in zip(splits, weights):
        out_features, m, _ = s.subvectors.shape
        if w is not None:
            if np.ndim(w) == 3:
                from .hessian import sequential_candidates

                out.append(sequential_candidates(s, codewords, n, w, device=device))
            else:
                out.append(_weighted(s, codewords, n, w, device))
            if bar is not None:
                bar.update(out_features * m)
            continue
        cand, cdist = idx[start : start + out_features * m].copy(), dist[start : start + out_features * m].copy()
        start += out_features * m
        if s.pad:
            keep = d - s.pad
            last = np.arange(out_features) * m + m - 1
            cand[last], cdist[last] = nearest(s.subvectors[:, -1, :keep], codewords[:, :keep], n, device=device)
        out.append((cand, cdist))
    if bar is not None:
        bar.close()
    return out


def _weighted(s, codewords: np.ndarray, n: int, h, device) -> tuple[np.ndarray, np.ndarray]:
    """`candidates` for one split whose row positions weigh h [row] (see there)."""
    out_features, m, d = s.subvectors.shape
    h = np.asarray(h, dtype=np.float64).reshape(-1)
    row = m * d - s.pad
    if h.shape != (row,) or not np.isfinite(h).all() or (h < 0).any():
        raise VQ4AllError(f"candidates: position weights must be {row} finite values >= 0, got shape {h.shape}")
    mean = h.mean() if h.size and h.mean() > 0 else 1.0
    r = np.sqrt(np.maximum(h / mean, 1e-6)).astype(np.float32)
    r = np.concatenate([r, np.ones(s.pad, np.float32)])  # padding positions are never matched
    cand = np.empty((out_features, m, n), np.int64)
    cdist = np.empty((out_features, m, n), np.float32)
    for j in range(m):
        keep = d - s.pad if j == m - 1 else d
        rj = r[j * d : j * d + keep]
        cand[:, j], cdist[:, j] = nearest(s.subvectors[:, j, :keep] * rj, codewords[:, :keep] * rj, n, device=device)
    return cand.reshape(-1, n), cdist.reshape(-1, n)
