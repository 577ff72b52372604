"""Cut weight tensors into normalised sub-vectors of d values, and put them back (numpy only).

A weight of shape [out_features, ...] is seen as `out_features` rows of `row = prod(shape[1:])`
values in PyTorch memory order. Each row is divided by its scale, zero-padded to m*d values
(m = ceil(row / d); `pad = m*d - row` is recorded) and cut into m contiguous sub-vectors.

Scales are float16 because that is how the artifact stores them; the division uses exactly the
stored float16 value, so `join(split(w))` reproduces w up to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import VQ4AllError
from .rules import GRANULARITIES, check_choice

# float16's smallest normal and largest finite value: an all-zero row gets scale 1, a tiny one the
# smallest normal, so every stored scale is a finite, non-zero float16.
_SCALE_MIN, _SCALE_MAX = 2.0**-14, 65504.0


@dataclass(frozen=True)
class Split:
    """One tensor as sub-vectors.

    subvectors: [out_features, m, d] float32 (weight / scale, zero-padded)
    scales: [out_features] float16
    shape: the original weight shape; pad: zeros appended to each row (0 <= pad < d).
    """

    subvectors: np.ndarray
    scales: np.ndarray
    shape: tuple[int, ...]
    pad: int

    @property
    def d(self) -> int:
        return self.subvectors.shape[2]

    def full(self) -> np.ndarray:
        """The sub-vectors that hold no padding: [out_features * (m - (pad > 0)), d] float32."""
        m = self.subvectors.shape[1] - (1 if self.pad else 0)
        return self.subvectors[:, :m].reshape(-1, self.d)


def row_count(shape) -> tuple[int, int]:
    """(out_features, row length) of a weight shape; a 1-D shape is one row per element."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        raise VQ4AllError("a scalar cannot be cut into sub-vectors")
    return shape[0], int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1


def row_scales(rows: np.ndarray, granularity: str = "channel") -> np.ndarray:
    """Scales of a [out_features, row] float array: [out_features] float16.

    channel: RMS of each row; tensor: RMS of the whole tensor for every row; none: 1.
    """
    check_choice("scale granularity", granularity, GRANULARITIES)
    rows = np.asarray(rows, dtype=np.float64)
    if granularity == "none":
        rms = np.ones(rows.shape[0])
    elif granularity == "tensor":
        rms = np.full(rows.shape[0], np.sqrt(np.mean(rows**2)) if rows.size else 1.0)
    else:
        rms = np.sqrt(np.mean(rows**2, axis=1))
    rms = np.where(rms > 0, rms, 1.0)
    return np.clip(rms, _SCALE_MIN, _SCALE_MAX).astype(np.float16)


def split(weight, d: int, granularity: str = "channel", name: str = "the weight") -> Split:
    """Cut `weight` ([out_features, ...], any float dtype) into normalised sub-vectors of d values.
    name: the weight's state-dict key, for error messages."""
    if int(d) < 1:
        raise VQ4AllError(f"sub-vector dimension d must be >= 1, got {d}")
    weight = np.asarray(weight, dtype=np.float32)
    if not np.isfinite(weight).all():
        bad = int((~np.isfinite(weight)).sum())
        raise VQ4AllError(
            f"{name} holds {bad} NaN or Inf values: fix the network (or its checkpoint) before compressing it"
        )
    out_features, row = row_count(weight.shape)
    rows = weight.reshape(out_features, row)
    scales = row_scales(rows, granularity)
    m = -(-row // d)
    pad = m * d - row
    padded = np.zeros((out_features, m * d), dtype=np.float32)
    padded[:, :row] = rows / scales.astype(np.float32)[:, None]
    return Split(padded.reshape(out_features, m, d), scales, tuple(weight.shape), pad)


def join(subvectors, scales, shape, pad: int) -> np.ndarray:
    """Inverse of `split`: [out_features, m, d] sub-vectors and [out_features] scales -> weight
    of `shape`, float32 (padding dropped, rows multiplied by float32(scales))."""
    subvectors = np.asarray(subvectors, dtype=np.float32)
    out_features, m, d = subvectors.shape
    rows = subvectors.reshape(out_features, m * d)[:, : m * d - pad]
    rows = rows * np.asarray(scales).astype(np.float32)[:, None]
    return rows.reshape(shape)
