"""The torch implementation: decode rows of the weight, then a dense matmul.

It is the CPU path and the last row of the dispatch table on CUDA (what every anchor falls back
to at large M: decode, then cuBLAS). The decode is the reference's, in float32 torch ops:
    values = float32(codebook) * codebook_scale              [k, d]
    weight[o, :] = concat(values[codes[o, :]])[:in_features] * float32(scales[o])
(codewords gathered before conversion, so a small layer never pays for the whole codebook),
so a decoded row is bit-identical to `vq4all.reference.decode`; only the matmul's float32
accumulation order differs from the reference's float64 one.

Memory: the weight is decoded `block_rows` output rows at a time (about BLOCK_BYTES of float32)
into reused buffers, so a 28672 x 8192 layer never materialises its 940 MB float32 weight.
"""

from __future__ import annotations

import torch

from .args import LookupArgs

# Decoded float32 weight per block. CPU: cache-sized (the block is decoded, then read by the
# matmul while still in cache). CUDA: large, so that cuBLAS gets big matmuls.
BLOCK_BYTES = {"cpu": 2 << 20, "cuda": 256 << 20}


def decode_into(weight: torch.Tensor, picked: torch.Tensor, codes: torch.Tensor, codebook: torch.Tensor,
                scales: torch.Tensor, codebook_scale: torch.Tensor | None) -> torch.Tensor:
    """Decode `codes` [n, m] into `weight` [n, m*d] float32 (padding included), in place.

    picked: a [n*m, d] scratch tensor of the codebook's dtype. Gathers the raw codewords, then
    converts and scales them in place: the same float32 products as converting the whole
    codebook (bit for bit), at the cost of the layer rather than of k*d, and without allocating
    (fresh multi-megabyte tensors cost page faults that dominate a CPU decode).
    """
    n, m = codes.shape
    d = codebook.shape[1]
    # int32 indices: index_select takes them, and uint16 codes >= 32768 stay positive
    torch.index_select(codebook, 0, codes.reshape(-1).to(torch.int32), out=picked)
    weight.view(n * m, d).copy_(picked)
    if codebook.dtype == torch.int8:
        weight.mul_(codebook_scale)
    return weight.mul_(scales.to(torch.float32)[:, None])


def decode(codes: torch.Tensor, codebook: torch.Tensor, scales: torch.Tensor,
           codebook_scale: torch.Tensor | None = None, in_features: int | None = None) -> torch.Tensor:
    """The weight rows the codes stand for: [out_features, in_features] float32.

    codes: [out_features, m] uint8/uint16; codebook: [k, d]; scales: [out_features];
    in_features defaults to m * d (no padding dropped).
    """
    n, m = codes.shape
    d = codebook.shape[1]
    weight = torch.empty(n, m * d, dtype=torch.float32, device=codes.device)
    picked = torch.empty(n * m, d, dtype=codebook.dtype, device=codes.device)
    decode_into(weight, picked, codes, codebook, scales, codebook_scale)
    return weight if in_features is None or in_features == m * d else weight[:, :in_features]


def lookup_matmul(args: LookupArgs, block_rows: int | None = None) -> torch.Tensor:
    """y = x @ decode(codes, codebook, scales)^T: [M, out_features] in x's dtype.

    On CPU the product is computed in float32 whatever x's dtype (CPU half-precision matmul is
    slow and accumulates in lower precision); on CUDA the decoded weight is cast to x's dtype
    and the matmul is cuBLAS's (float32 accumulation). Row blocks of `block_rows` output rows
    (default: about BLOCK_BYTES[device] of float32) are decoded into the same two buffers and multiplied
    into rows of y^T (contiguous), so memory stays O(block) and the block stays in cache.
    """
    x = args.x
    compute = torch.float32 if x.device.type == "cpu" else x.dtype
    xc = x.to(compute)
    n, m, d, in_features = args.out_features, args.m_codes, args.d, args.in_features
    if block_rows is None:
        block_rows = max(1, BLOCK_BYTES.get(x.device.type, BLOCK_BYTES["cuda"]) // (4 * max(1, m * d)))
    block_rows = min(block_rows, max(1, n))
    weight = torch.empty(block_rows, m * d, dtype=torch.float32, device=x.device)
    picked = torch.empty(block_rows * m, d, dtype=args.codebook.dtype, device=x.device)
    y_t = torch.empty(n, args.batch, dtype=compute, device=x.device)
    for r0 in range(0, n, block_rows):
        r1 = min(r0 + block_rows, n)
        w = decode_into(weight[: r1 - r0], picked[: (r1 - r0) * m], args.codes[r0:r1], args.codebook,
                        args.scales[r0:r1], args.codebook_scale)[:, :in_features]
        torch.mm(w.to(compute), xc.T, out=y_t[r0:r1])
    return y_t.T.to(x.dtype).contiguous()
