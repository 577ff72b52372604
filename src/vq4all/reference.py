"""The one slow, obviously correct reference (numpy only).

Every fast path (Triton kernels, the torch CPU path, the RTL) computes one of these functions and
is checked against it: bit for bit where the arithmetic is integer, with a stated tolerance where
it is float.

Conventions (shared with `vq4all.artifact` and `vq4all.subvectors`):
- `codebook`: [k, d], int8 (value = codebook[i] * codebook_scale) or float16 (value = codebook[i]).
- `codebook_scale`: float32 scalar or shape [1]; only with an int8 codebook.
- `codes`: [out_features, m] unsigned integers (uint8 when k <= 256, else uint16), m = ceil(row/d).
  Row o of the weight is the concatenation codebook[codes[o, 0]], ..., codebook[codes[o, m-1]],
  truncated to the true row length `in_features` (the last `pad = m*d - in_features` values are the
  zero padding of a ragged row and are dropped).
- `scales`: [out_features] float16 (or float32): row o is multiplied by scales[o].
"""

from __future__ import annotations

import numpy as np


def codebook_values(codebook: np.ndarray, codebook_scale=None) -> np.ndarray:
    """The real values of the codewords: [k, d] float32.

    int8: float32(codebook) * float32(codebook_scale) (codebook_scale required).
    float16: float32(codebook) (codebook_scale must be None).
    """
    codebook = np.asarray(codebook)
    if codebook.ndim != 2:
        raise ValueError(f"codebook must be [k, d], got shape {codebook.shape}")
    if codebook.dtype == np.int8:
        if codebook_scale is None:
            raise ValueError("an int8 codebook needs its codebook_scale")
        scale = np.float32(np.asarray(codebook_scale, dtype=np.float32).reshape(-1)[0])
        return codebook.astype(np.float32) * scale
    if codebook.dtype == np.float16:
        if codebook_scale is not None:
            raise ValueError("a float16 codebook has no codebook_scale")
        return codebook.astype(np.float32)
    raise ValueError(f"codebook dtype must be int8 or float16, got {codebook.dtype}")


def _check_codes(codes: np.ndarray, k: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.dtype.kind != "u":
        raise ValueError(f"codes must be [out_features, m] unsigned, got {codes.dtype} {codes.shape}")
    if codes.size and int(codes.max()) >= k:
        raise ValueError(f"codes must be < k={k}, found {int(codes.max())}")
    return codes.astype(np.int64)


def decode(codes, codebook, scales, codebook_scale=None, in_features=None) -> np.ndarray:
    """Rebuild a weight matrix: [out_features, in_features] float32.

    weight[o, j*d + e] = float32(scales[o]) * values[codes[o, j], e], values = codebook_values(...),
    for j*d + e < in_features (default m*d: no padding dropped).
    """
    values = codebook_values(codebook, codebook_scale)
    k, d = values.shape
    idx = _check_codes(codes, k)
    out_features, m = idx.shape
    scales = np.asarray(scales).astype(np.float32).reshape(-1)
    if scales.shape != (out_features,):
        raise ValueError(f"scales must be [{out_features}], got {scales.shape}")
    in_features = m * d if in_features is None else int(in_features)
    if not (m - 1) * d < in_features <= m * d:
        raise ValueError(f"in_features={in_features} does not match m={m} sub-vectors of d={d}")
    weight = values[idx].reshape(out_features, m * d)[:, :in_features]
    return weight * scales[:, None]


def lookup_matmul(x, codes, codebook, scales, codebook_scale=None) -> np.ndarray:
    """y = x @ decode(codes, codebook, scales)^T: [M, out_features] float32.

    x: [M, in_features] (any float dtype, computed in float64 then rounded to float32 so the
    reference itself adds no accumulation error worth mentioning).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be [M, in_features], got shape {x.shape}")
    weight = decode(codes, codebook, scales, codebook_scale, in_features=x.shape[1])
    return (x.astype(np.float64) @ weight.astype(np.float64).T).astype(np.float32)


def lookup_matmul_int(x, codes, codebook, acc_bits: int = 32) -> np.ndarray:
    """The exact integer path the RTL computes: [M, out_features] int32 (int64 if acc_bits > 32).

    x: [M, in_features] int8 activations; codebook: [k, d] int8 (its scale is NOT applied, nor are
    the row scales). y[b, o] = sum_j sum_e x[b, j*d + e] * codebook[codes[o, j], e], with x
    zero-padded to m*d. The sum is exact, then wrapped to a two's-complement accumulator of
    `acc_bits` bits, as a hardware accumulator of that width does (real layers never wrap at 32:
    |sum| <= 128*128*in_features reaches 2^31 only at in_features >= 131072).
    """
    x = np.asarray(x)
    codebook = np.asarray(codebook)
    if x.dtype != np.int8 or x.ndim != 2:
        raise ValueError(f"x must be [M, in_features] int8, got {x.dtype} {x.shape}")
    if codebook.dtype != np.int8 or codebook.ndim != 2:
        raise ValueError(f"codebook must be [k, d] int8, got {codebook.dtype} {codebook.shape}")
    if not 2 <= acc_bits <= 64:
        raise ValueError(f"acc_bits must be in 2..64, got {acc_bits}")
    k, d = codebook.shape
    idx = _check_codes(codes, k)
    out_features, m = idx.shape
    in_features = x.shape[1]
    if not (m - 1) * d < in_features <= m * d:
        raise ValueError(
            f"x has {in_features} features; codes of m={m} sub-vectors of d={d} need {(m - 1) * d + 1}..{m * d}"
        )
    xp = np.zeros((x.shape[0], m * d), dtype=np.int64)
    xp[:, :in_features] = x
    weight = codebook.astype(np.int64)[idx].reshape(out_features, m * d)
    exact = xp @ weight.T  # int64: exact for any real layer (|sum| < 2^63)
    return wrap(exact, acc_bits)


def wrap(values: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of int64 values to `bits` bits: int32 when bits <= 32, else int64."""
    values = np.asarray(values, dtype=np.int64)
    if bits < 64:
        mask = (1 << bits) - 1
        half = 1 << (bits - 1)
        values = ((values & mask) ^ half) - half
    return values.astype(np.int32 if bits <= 32 else np.int64)


def rom_words(codebook, width: int | None = None) -> list[int]:
    """One ROM word per codeword: a list of k Python ints, each d*width bits wide.

    Element e of a codeword sits in bits [e*width, (e+1)*width) (element 0 in the least
    significant bits) as a `width`-bit two's-complement integer. int8 codebooks default to
    width 8 (a narrower width is allowed when every value fits, e.g. 4 for values in -8..7);
    float16 codebooks are packed as their raw 16-bit IEEE patterns (width must be 16).
    """
    codebook = np.asarray(codebook)
    if codebook.ndim != 2:
        raise ValueError(f"codebook must be [k, d], got shape {codebook.shape}")
    if codebook.dtype == np.float16:
        if width not in (None, 16):
            raise ValueError("a float16 codebook packs 16-bit words per element")
        width, elements = 16, codebook.view(np.uint16).astype(np.int64)
    elif codebook.dtype == np.int8:
        width = 8 if width is None else int(width)
        if not 1 <= width <= 8:
            raise ValueError(f"width must be in 1..8 for an int8 codebook, got {width}")
        lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
        if codebook.size and (codebook.min() < lo or codebook.max() > hi):
            raise ValueError(f"codebook values outside {lo}..{hi} do not fit {width} bits")
        elements = codebook.astype(np.int64) & ((1 << width) - 1)
    else:
        raise ValueError(f"codebook dtype must be int8 or float16, got {codebook.dtype}")
    words = []
    for row in elements.tolist():
        word = 0
        for e, value in enumerate(row):
            word |= value << (e * width)
        words.append(word)
    return words


def unpack_rom_words(words, d: int, width: int = 8) -> np.ndarray:
    """Inverse of `rom_words` for int8 codebooks: [k, d] int8."""
    mask, half = (1 << width) - 1, 1 << (width - 1)
    out = np.empty((len(words), d), dtype=np.int8)
    for i, word in enumerate(words):
        for e in range(d):
            v = (int(word) >> (e * width)) & mask
            out[i, e] = (v ^ half) - half
    return out


def requantize(acc, multiplier, shift: int, out_bits: int = 8) -> np.ndarray:
    """The engine's optional output stage: each row's accumulator scaled by a fixed-point factor
    and saturated to out_bits: [M, out_features] int8 (int16/int32 for wider out_bits).

    acc: [M, out_features] integers (lookup_matmul_int's result); multiplier: [out_features]
    unsigned integers, the row's real factor in fixed point with `shift` fraction bits
    (real = multiplier / 2^shift; see `requant_parameters`); shift: 1..62, shared by the layer.
      y = clamp(floor((acc * multiplier + 2^(shift-1)) / 2^shift), -2^(out_bits-1), 2^(out_bits-1) - 1)
    i.e. round half up (towards +inf), computed exactly in Python integers (acc * multiplier
    needs acc_bits + multiplier bits), then saturated.
    """
    acc = np.asarray(acc, dtype=np.int64)
    multiplier = np.asarray(multiplier)
    if acc.ndim != 2:
        raise ValueError(f"acc must be [M, out_features], got shape {acc.shape}")
    if multiplier.shape != (acc.shape[1],) or multiplier.dtype.kind not in "ui" or (multiplier < 0).any():
        raise ValueError(
            f"multiplier must be [{acc.shape[1]}] non-negative integers, got {multiplier.dtype} {multiplier.shape}"
        )
    if not 1 <= int(shift) <= 62:
        raise ValueError(f"shift must be in 1..62, got {shift}")
    if not 2 <= out_bits <= 32:
        raise ValueError(f"out_bits must be in 2..32, got {out_bits}")
    shift = int(shift)
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    mult = [int(v) for v in multiplier.tolist()]
    out = [
        [min(hi, max(lo, (a * mlt + (1 << (shift - 1))) >> shift)) for a, mlt in zip(row, mult)] for row in acc.tolist()
    ]
    return np.array(out, dtype=np.int8 if out_bits <= 8 else np.int16 if out_bits <= 16 else np.int32).reshape(
        acc.shape
    )


def requant_parameters(factors, mult_bits: int = 16) -> tuple[np.ndarray, int]:
    """Fixed-point form of per-row real factors ([out_features] float, >= 0) for `requantize`:
    (multiplier [out_features] uint16/uint32 < 2^mult_bits, shift), with the largest shift in
    1..62 that keeps every multiplier within mult_bits, multiplier = round_half_even(f * 2^shift).
    For a layer: factor[o] = scales[o] * codebook_scale * x_scale / y_scale (row scale, codebook
    scale, activation scale, output scale)."""
    factors = np.asarray(factors, dtype=np.float64).reshape(-1)
    if not (np.isfinite(factors).all() and (factors >= 0).all()):
        raise ValueError("requantization factors must be finite and >= 0")
    if not 2 <= mult_bits <= 32:
        raise ValueError(f"mult_bits must be in 2..32, got {mult_bits}")
    top = float(factors.max()) if factors.size else 0.0
    limit = (1 << mult_bits) - 1
    shift = 62
    while shift > 1 and np.rint(top * 2.0**shift) > limit:
        shift -= 1
    mult = np.rint(factors * 2.0**shift)
    if (mult > limit).any():
        raise ValueError(f"a factor of {top} needs more than {mult_bits} bits even with shift=1")
    return mult.astype(np.uint16 if mult_bits <= 16 else np.uint32), shift
