"""Triton lookup GEMV (small M, split-K): y = x @ decode(codes, codebook, scales)^T.

Blocked algorithm (one program per (output-row block, reduction slice)):

    grid = (cdiv(N, BLOCK_N), SPLIT_K)        N = out_features, MC = ceil(IN / D) code columns
    program (pn, ps) owns rows n0 = pn*BLOCK_N .. n0+BLOCK_N and code columns
    [ps*J_PER_SPLIT, min((ps+1)*J_PER_SPLIT, MC)):
      acc[BLOCK_M, BLOCK_N] = 0 (fp32)
      for each step of BLOCK_J code columns j:
        codes tile     [BLOCK_N, BLOCK_J]           uint8/uint16 -> int32 (codes >= 32768 stay positive)
        codeword tile  [BLOCK_N, BLOCK_J, D_PAD]    gathered from codebook[code, 0:D]; D contiguous
                                                    elements per codeword (one vector load when D is a
                                                    power of two), reshaped to [BLOCK_N, BLOCK_J*D_PAD]
        x tile         [BLOCK_M, BLOCK_J, D_PAD]    x[m, j*D + e], zero beyond IN (the padding of a
                                                    ragged row meets zeros) and beyond the slice,
                                                    reshaped to [BLOCK_M, BLOCK_J*D_PAD]
        acc += sum_k x[:, None, k] * w[None, :, k]  (fp32 multiply-reduce on CUDA cores: at M <= 4 a
                                                    tensor-core tile would be mostly padding)
      acc *= scales[n] * codebook_scale              row and codebook scales on the accumulator
      SPLIT_K == 1: store acc in y's dtype;  SPLIT_K > 1: fp32 atomic add into a zeroed buffer

Memory: every code is read once (evict_first: streamed); codeword gathers are random reads of
the codebook, which is 512 KiB (2^16 x 8 int8) and stays resident in L2 (evict_last); x is
small and re-read from L1/L2 by every row block. The arithmetic is fp32 whatever x's dtype,
so bf16 and fp16 inputs need no special case here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .args import LookupArgs
from .triton_support import Launch, interpreting
from .triton_support import split_k as pick_split_k

MAX_M = 4  # beyond this the [BLOCK_M, BLOCK_N, BLOCK_K] product outgrows the registers: use the GEMM


@triton.jit
def _lookup_gemv_kernel(
    x_ptr,
    codes_ptr,
    codebook_ptr,
    scales_ptr,
    codebook_scale_ptr,
    y_ptr,
    M,
    N,
    IN,
    MC,
    J_PER_SPLIT,
    stride_xm,
    stride_ym,
    D: tl.constexpr,
    D_PAD: tl.constexpr,
    HAS_CODEBOOK_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_J: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_ok = rows < N
    bm = tl.arange(0, BLOCK_M)  # [BLOCK_M]
    bm_ok = bm < M
    jj = tl.arange(0, BLOCK_J)  # [BLOCK_J]
    ee = tl.arange(0, D_PAD)  # [D_PAD]
    e_ok = ee < D
    j_begin = pid_s * J_PER_SPLIT
    j_end = tl.minimum(j_begin + J_PER_SPLIT, MC)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for j0 in range(j_begin, j_end, BLOCK_J):
        j = j0 + jj
        j_ok = j < j_end
        codes = tl.load(
            codes_ptr + rows[:, None] * MC + j[None, :],
            mask=row_ok[:, None] & j_ok[None, :],
            other=0,
            eviction_policy="evict_first",
        ).to(tl.int32)  # [BLOCK_N, BLOCK_J]
        w_off = codes[:, :, None] * D + ee[None, None, :]  # [BLOCK_N, BLOCK_J, D_PAD]
        if D == D_PAD:  # each codeword is D contiguous, D-aligned entries: one unmasked vector load
            w_off = tl.max_contiguous(tl.multiple_of(w_off, [1, 1, D]), [1, 1, D])
            w = tl.load(codebook_ptr + w_off, eviction_policy="evict_last").to(tl.float32)
        else:
            w = tl.load(codebook_ptr + w_off, mask=e_ok[None, None, :], other=0, eviction_policy="evict_last").to(
                tl.float32
            )
        w = tl.reshape(w, (BLOCK_N, BLOCK_J * D_PAD))
        feat = j[:, None] * D + ee[None, :]  # [BLOCK_J, D_PAD]
        feat_ok = e_ok[None, :] & j_ok[:, None] & (feat < IN)
        xt = tl.load(
            x_ptr + bm[:, None, None] * stride_xm + feat[None, :, :],
            mask=bm_ok[:, None, None] & feat_ok[None, :, :],
            other=0.0,
        ).to(tl.float32)
        xt = tl.reshape(xt, (BLOCK_M, BLOCK_J * D_PAD))  # [BLOCK_M, BLOCK_J*D_PAD]
        acc += tl.sum(xt[:, None, :] * w[None, :, :], axis=2)
    scale = tl.load(scales_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    if HAS_CODEBOOK_SCALE:
        scale = scale * tl.load(codebook_scale_ptr)
    out = acc * scale[None, :]
    y_off = bm[:, None] * stride_ym + rows[None, :]
    y_ok = bm_ok[:, None] & row_ok[None, :]
    if ATOMIC:
        tl.atomic_add(y_ptr + y_off, out, mask=y_ok)
    else:
        tl.store(y_ptr + y_off, out.to(y_ptr.dtype.element_ty), mask=y_ok)


def config(batch: int, d: int) -> dict:
    """Block sizes, BLOCK_K = BLOCK_J * D_PAD features per step.

    CUDA (untuned starting points): few rows per program and long steps, BLOCK_M * BLOCK_N *
    BLOCK_K = 8192 (64 fp32 products per thread with 4 warps), so a 4096-row layer launches 512
    programs at M = 1 and fills the GPU without split-K; split-K is left to small layers. The
    interpreter gets one config with big blocks: its cost grows with (program x step) iterations.
    """
    d_pad = triton.next_power_of_2(d)
    block_m = triton.next_power_of_2(max(1, batch))
    if interpreting():
        return dict(BLOCK_M=block_m, BLOCK_N=32, BLOCK_J=max(1, 128 // d_pad), num_warps=1)
    block_n = max(2, 8 // block_m)
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_J=max(1, 8192 // (block_m * block_n * d_pad)), num_warps=4)


def plan(args: LookupArgs, split_k: int | None = None, **overrides) -> Launch:
    """The launch for `args` (see `lookup_gemv`), without running it."""
    if args.batch > MAX_M:
        raise ValueError(f"x: the GEMV takes at most {MAX_M} rows, got {args.batch}; use impl='triton_gemm'")
    x = args.x.contiguous()
    codes = args.codes.contiguous()
    codebook = args.codebook.contiguous()
    scales = args.scales.contiguous()
    n, mc, d = args.out_features, args.m_codes, args.d
    cfg = {**config(args.batch, d), **overrides}
    options = {"num_warps": cfg.pop("num_warps")}
    steps = triton.cdiv(mc, cfg["BLOCK_J"])
    tiles = triton.cdiv(n, cfg["BLOCK_N"])
    slices = pick_split_k(tiles, steps, x.device) if split_k is None else max(1, min(int(split_k), steps))
    j_per_split = max(1, triton.cdiv(steps, slices)) * cfg["BLOCK_J"]
    slices = max(1, triton.cdiv(mc, j_per_split))  # no empty slice (but one program column when mc = 0)
    atomic = slices > 1
    y = (torch.zeros if atomic else torch.empty)(
        (args.batch, n), device=x.device, dtype=torch.float32 if atomic else x.dtype
    )
    has_scale = args.codebook_scale is not None
    return Launch(
        grid=(tiles, slices),
        args=(
            x,
            codes,
            codebook,
            scales,
            args.codebook_scale if has_scale else scales,
            y,
            args.batch,
            n,
            args.in_features,
            mc,
            j_per_split,
            x.stride(0),
            y.stride(0),
        ),
        constexprs=dict(D=d, D_PAD=triton.next_power_of_2(d), HAS_CODEBOOK_SCALE=has_scale, ATOMIC=atomic, **cfg),
        options=options,
        y=y,
        out_dtype=x.dtype,
    )


def lookup_gemv(args: LookupArgs, split_k: int | None = None, **overrides) -> torch.Tensor:
    """Launch the GEMV: [M, out_features] in x's dtype. M must be <= MAX_M.

    split_k: reduction slices (default: enough to give ~2 programs per SM); overrides: block
    sizes (BLOCK_N, BLOCK_J, num_warps) for tests and benches.
    """
    return plan(args, split_k, **overrides).run(_lookup_gemv_kernel)
