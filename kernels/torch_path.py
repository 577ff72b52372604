"""The torch implementation: decode rows of the weight, then a dense matmul.

It is the CPU path and the last row of the dispatch table on CUDA (what every anchor falls back
to at large M: decode, then cuBLAS). The decode is the reference's, in float32 torch ops:
    values = float32(codebook) * codebook_scale              [k, d]
    weight[o, :] = concat(values[codes[o, :]])[:in_features] * float32(scales[o])
so a decoded row is bit-identical to `vq4all.reference.decode`; only the matmul's float32
accumulation order differs from the reference's float64 one.

Memory: the weight is decoded `block_rows` output rows at a time (about BLOCK_BYTES of float32),
so a 28672 x 8192 layer never materialises its 940 MB float32 weight at once.
"""

from __future__ import annotations

import torch

from .args import LookupArgs

BLOCK_BYTES = 32 << 20  # decoded float32 weight per block: large enough that matmul dominates


def codebook_values(codebook: torch.Tensor, codebook_scale: torch.Tensor | None) -> torch.Tensor:
    """The codewords' real values: [k, d] float32 (int8 codebook times its [1] float32 scale,
    or a float codebook as is)."""
    values = codebook.to(torch.float32)
    return values * codebook_scale if codebook.dtype == torch.int8 else values


def decode(codes: torch.Tensor, codebook: torch.Tensor, scales: torch.Tensor,
           codebook_scale: torch.Tensor | None = None, in_features: int | None = None) -> torch.Tensor:
    """The weight rows the codes stand for: [out_features, in_features] float32.

    codes: [out_features, m] uint8/uint16; codebook: [k, d]; scales: [out_features];
    in_features defaults to m * d (no padding dropped).
    """
    values = codebook_values(codebook, codebook_scale)
    d = values.shape[1]
    out_features, m = codes.shape
    in_features = m * d if in_features is None else in_features
    # int32 indices: index_select takes them, and uint16 codes >= 32768 stay positive
    rows = values.index_select(0, codes.reshape(-1).to(torch.int32)).reshape(out_features, m * d)
    return rows[:, :in_features] * scales.to(torch.float32)[:, None]


def lookup_matmul(args: LookupArgs, block_rows: int | None = None) -> torch.Tensor:
    """y = x @ decode(codes, codebook, scales)^T: [M, out_features] in x's dtype.

    On CPU the product is computed in float32 whatever x's dtype (CPU half-precision matmul is
    slow and accumulates in lower precision); on CUDA the decoded weight is cast to x's dtype
    and the matmul is cuBLAS's (float32 accumulation).
    """
    x = args.x
    compute = torch.float32 if x.device.type == "cpu" else x.dtype
    xc = x.to(compute)
    if block_rows is None:
        block_rows = max(1, BLOCK_BYTES // (4 * max(1, args.in_features)))
    parts = []
    for r0 in range(0, args.out_features, block_rows):
        r1 = min(r0 + block_rows, args.out_features)
        weight = decode(args.codes[r0:r1], args.codebook, args.scales[r0:r1], args.codebook_scale, args.in_features)
        parts.append(torch.matmul(xc, weight.to(compute).T))
    y = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return y.to(x.dtype)
