"""The torch implementation: decode rows of the weight, then a dense matmul.

It is the CPU path and the last row of the dispatch table on CUDA (what every anchor falls back
to at large M: decode, then cuBLAS). The decode is the reference's, in float32 torch ops:
    values = float32(codebook) * codebook_scale              [k, d]
    weight[o, :] = concat(values[codes[o, :]])[:in_features] * float32(scales[o])
(codewords gathered before conversion, so a small layer never pays for the whole codebook),
so `decode` is bit-identical to `vq4all.reference.decode`. `lookup_matmul` differs from the
reference's float64 product by its float32 accumulation order and, on CPU, by applying the
scales to the outputs rather than to the weight.

Memory: the weight is decoded `block_rows` output rows at a time (about BLOCK_BYTES of float32)
into reused buffers, so a 28672 x 8192 layer never materialises its 940 MB float32 weight.
"""

from __future__ import annotations

import torch

from .args import LookupArgs

# Decoded float32 weight per block. CPU: cache-sized (the block is decoded, then read by the
# matmul while still in cache). CUDA: large, so that cuBLAS gets big matmuls.
BLOCK_BYTES = {"cpu": 2 << 20, "cuda": 256 << 20}


_WORDS = {2: torch.int16, 4: torch.int32, 8: torch.int64}  # codeword bytes -> one integer word


def decode_into(
    weight: torch.Tensor,
    picked: torch.Tensor,
    codes: torch.Tensor,
    codebook: torch.Tensor,
    scales: torch.Tensor,
    codebook_scale: torch.Tensor | None,
    apply_scales: bool = True,
) -> torch.Tensor:
    """Decode `codes` [n, m] into `weight` [n, m*d] float32 (padding included), in place.

    picked: a [n*m, d] scratch tensor of the codebook's dtype. Gathers the raw codewords, then
    converts and scales them in place: the same float32 products as converting the whole
    codebook (bit for bit), at the cost of the layer rather than of k*d, and without allocating
    (fresh multi-megabyte tensors cost page faults that dominate a CPU decode).
    apply_scales=False leaves the raw codebook entries (for a caller that scales its outputs).
    """
    n, m = codes.shape
    d = codebook.shape[1]
    # int32 indices: index_select takes them, and uint16 codes >= 32768 stay positive
    idx = codes.reshape(-1).to(torch.int32)
    word = _WORDS.get(d * codebook.element_size())
    if word is not None and codebook.is_contiguous():
        # a codeword of 2, 4 or 8 bytes gathered as one integer: 2-4x faster than a row gather
        torch.index_select(codebook.view(word).reshape(-1), 0, idx, out=picked.view(word).reshape(-1))
    else:
        torch.index_select(codebook, 0, idx, out=picked)
    weight.view(n * m, d).copy_(picked)
    if not apply_scales:
        return weight
    if codebook.dtype == torch.int8:
        weight.mul_(codebook_scale)
    return weight.mul_(scales.to(torch.float32)[:, None])


def decode(
    codes: torch.Tensor,
    codebook: torch.Tensor,
    scales: torch.Tensor,
    codebook_scale: torch.Tensor | None = None,
    in_features: int | None = None,
) -> torch.Tensor:
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
    slow and accumulates in lower precision), from the raw codebook entries, and the row scales
    (times the codebook scale) are applied to the [M, out] result instead of the [out, in]
    weight: two passes over the weight fewer, and only the rounding of one more product per
    output. On CUDA the decoded weight is scaled, cast to x's dtype and multiplied by cuBLAS
    (float32 accumulation); scaling afterwards could overflow fp16 there (|entries| up to 127).
    Row blocks of `block_rows` output rows (default: about BLOCK_BYTES[device] of float32) are
    decoded into the same two buffers and multiplied into rows of y^T (contiguous), so memory
    stays O(block) and the block stays in cache.
    """
    x = args.x
    on_cpu = x.device.type == "cpu"
    compute = torch.float32 if on_cpu else x.dtype
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
        w = decode_into(
            weight[: r1 - r0],
            picked[: (r1 - r0) * m],
            args.codes[r0:r1],
            args.codebook,
            args.scales[r0:r1],
            args.codebook_scale,
            apply_scales=not on_cpu,
        )[:, :in_features]
        torch.mm(w.to(compute), xc.T, out=y_t[r0:r1])
    if on_cpu:
        row_scale = args.scales.to(torch.float32)
        if args.codebook.dtype == torch.int8:
            row_scale = row_scale * args.codebook_scale
        y_t.mul_(row_scale[:, None])
    return y_t.T.to(x.dtype).contiguous()
