"""Triton fused lookup GEMM (M > 4): y = x @ decode(codes, codebook, scales)^T, the weight
decoded tile by tile into registers and fed to tensor cores; it never exists in memory.

Blocked algorithm (one program per (output tile, reduction slice)):

    grid = (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), SPLIT_K), tiles in GROUP_M-row groups so that
    neighbouring programs share code tiles (and x tiles) in L2
    program (pid, ps) owns y[m0:m0+BLOCK_M, n0:n0+BLOCK_N] and code columns
    [ps*J_PER_SPLIT, min((ps+1)*J_PER_SPLIT, MC)):
      acc[BLOCK_M, BLOCK_N] = 0 (fp32)
      for each step of BLOCK_J code columns j (BLOCK_K = BLOCK_J * D_PAD features):
        codes tile     [BLOCK_N, BLOCK_J]           uint8/uint16 -> int32 (codes >= 32768 stay positive)
        codeword tile  [BLOCK_N, BLOCK_J, D_PAD]    gathered from codebook[code, 0:D] (raw int8 or float
                                                    entries: scales come later), reshaped to
                                                    [BLOCK_N, BLOCK_K], cast to the dot dtype
        x tile         [BLOCK_M, BLOCK_K]           x[m, j*D + e], zero beyond the slice; x comes
                                                    zero-padded to MC*D (a ragged row's padding meets
                                                    zeros), so the mask is per code column
        acc = tl.dot(x tile, codeword tile^T, acc)  [BLOCK_M, BLOCK_K] x [BLOCK_K, BLOCK_N]
      acc *= scales[n] * codebook_scale              row and codebook scales on the accumulator
      SPLIT_K == 1: store acc in y's dtype;  SPLIT_K > 1: fp32 atomic add into a zeroed buffer

Dot dtype (see triton_support.dot_config): fp16 for fp16 x, bf16 for bf16 x with an int8
codebook (int8 entries are exact in both), else fp32 operands; always fp32 under the
interpreter, whose bf16 dot is wrong. With fp16 or bf16 x an int8 codebook is read as a copy in
x's dtype (`copy_dtype`, cached per codebook by plans.py): the gathered codewords go into the
dot as loaded, with no int -> float conversion (in the sm_90 proxy, 6.8 -> 2.9 instructions per
weight at M = 16 with fp16 x). Each weight tile is decoded once per BLOCK_M rows of x,
so at M >= BLOCK_M the gathers cost 1/BLOCK_M of the FLOPs' worth of loads.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import triton_support
from .args import LookupArgs
from .gemv import kernel_codebook
from .triton_support import DOT_BF16, DOT_FP16, Launch, dot_config, interpreting

# jit functions read globals only as tl.constexpr instances
_DOT_FP16 = tl.constexpr(DOT_FP16)
_DOT_BF16 = tl.constexpr(DOT_BF16)


@triton.jit
def _lookup_gemm_kernel(
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
    GROUP_M: tl.constexpr,
    DOT_KIND: tl.constexpr,
    PRECISION: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    in_group = GROUP_M * tiles_n
    first_m = (pid // in_group) * GROUP_M
    group_m = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % group_m
    pid_n = (pid % in_group) // group_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    m_ok = offs_m < M
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_ok = rows < N
    jj = tl.arange(0, BLOCK_J)
    ee = tl.arange(0, D_PAD)
    e_ok = ee < D
    j_begin = pid_s * J_PER_SPLIT
    j_end = tl.minimum(j_begin + J_PER_SPLIT, MC)
    feat_end = tl.minimum(j_end * D, IN)
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
            w = tl.load(codebook_ptr + w_off, eviction_policy="evict_last")
        else:
            w = tl.load(codebook_ptr + w_off, mask=e_ok[None, None, :], other=0, eviction_policy="evict_last")
        w = tl.reshape(w, (BLOCK_N, BLOCK_J * D_PAD))  # [BLOCK_N, BLOCK_K]
        if D == D_PAD:  # features of the step are one contiguous run: a plain 2-D tile
            feat = j0 * D + tl.arange(0, BLOCK_J * D_PAD)  # [BLOCK_K]
            # masked per code column (the wrapper zero-pads ragged rows of x to MC*D), so the
            # mask is constant over each codeword's D features and the load stays vectorized
            xt = tl.load(
                x_ptr + offs_m[:, None] * stride_xm + feat[None, :],
                mask=m_ok[:, None] & (feat // D < j_end)[None, :],
                other=0.0,
            )
        else:  # D_PAD - D dead lanes per codeword: load [BLOCK_M, BLOCK_J, D_PAD], flatten
            feat3 = j[:, None] * D + ee[None, :]  # [BLOCK_J, D_PAD]
            ok3 = e_ok[None, :] & (feat3 < feat_end)
            xt = tl.load(
                x_ptr + offs_m[:, None, None] * stride_xm + feat3[None, :, :],
                mask=m_ok[:, None, None] & ok3[None, :, :],
                other=0.0,
            )
            xt = tl.reshape(xt, (BLOCK_M, BLOCK_J * D_PAD))
        if DOT_KIND == _DOT_FP16:
            acc = tl.dot(xt.to(tl.float16), tl.trans(w.to(tl.float16)), acc)
        elif DOT_KIND == _DOT_BF16:
            acc = tl.dot(xt.to(tl.bfloat16), tl.trans(w.to(tl.bfloat16)), acc)
        else:
            acc = tl.dot(xt.to(tl.float32), tl.trans(w.to(tl.float32)), acc, input_precision=PRECISION)
    scale = tl.load(scales_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    if HAS_CODEBOOK_SCALE:
        scale = scale * tl.load(codebook_scale_ptr)
    out = acc * scale[None, :]
    y_off = offs_m[:, None] * stride_ym + rows[None, :]
    y_ok = m_ok[:, None] & row_ok[None, :]
    if ATOMIC:
        tl.atomic_add(y_ptr + y_off, out, mask=y_ok)
    else:
        tl.store(y_ptr + y_off, out.to(y_ptr.dtype.element_ty), mask=y_ok)


def config(batch: int, d: int) -> dict:
    """Block sizes. CUDA (untuned starting points for an H200): BLOCK_M follows M up to 128 so
    each decoded weight tile serves as many x rows as possible; BLOCK_K = 64 features. The
    interpreter gets one config with few steps (tl.dot needs every dim >= 16)."""
    d_pad = triton.next_power_of_2(d)
    block_m = min(128, max(16, triton.next_power_of_2(batch)))
    if interpreting():
        return dict(
            BLOCK_M=min(block_m, 32), BLOCK_N=32, BLOCK_J=max(1, 64 // d_pad), GROUP_M=4, num_warps=1, num_stages=1
        )
    block_n = 64 if block_m <= 64 else 128
    return dict(
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_J=max(1, 64 // d_pad),
        GROUP_M=8,
        num_warps=8 if block_m * block_n >= 128 * 128 else 4,
        num_stages=3,
    )


def geometry(args: LookupArgs, split_k: int | None = None, sms: int | None = -1, **overrides) -> dict:
    """Block sizes, grid and slice length for `args`: {"cfg", "options", "grid", "j_per_split"}.

    sms: the SM count split-K plans for (default: args' device's; None: no GPU, one slice)."""
    cfg = {**config(args.batch, args.d), **overrides}
    options = {key: cfg.pop(key) for key in ("num_warps", "num_stages")}
    steps = triton.cdiv(args.m_codes, cfg["BLOCK_J"])
    tiles = triton.cdiv(args.batch, cfg["BLOCK_M"]) * triton.cdiv(args.out_features, cfg["BLOCK_N"])
    if sms == -1:
        sms = triton_support.num_sms(args.device.index or 0) if args.device.type == "cuda" else None
    if split_k is not None:
        slices = max(1, min(int(split_k), steps))
    else:
        slices = triton_support.split_k_for(tiles, steps, sms)
    j_per_split = max(1, triton.cdiv(steps, slices)) * cfg["BLOCK_J"]
    slices = max(1, triton.cdiv(args.m_codes, j_per_split))  # no empty slice (but one program column when mc = 0)
    return dict(cfg=cfg, options=options, grid=(tiles, slices), j_per_split=j_per_split)


def copy_dtype(args: LookupArgs) -> torch.dtype | None:
    """The dtype of the codebook copy the GEMM reads: an int8 codebook with float16 or bfloat16
    x is read as a copy in x's dtype (exact: |int8| <= 128 fits both), whose codewords feed the
    tensor-core dot as loaded, with no int -> float conversion; the codebook scale still
    multiplies the accumulator. None: the codebook as it is."""
    if args.codebook.dtype == torch.int8 and args.x.dtype in (torch.float16, torch.bfloat16):
        return args.x.dtype
    return None


def plan(
    args: LookupArgs,
    split_k: int | None = None,
    sms: int | None = -1,
    geo: dict | None = None,
    codebook16: torch.Tensor | None = None,
    **overrides,
) -> Launch:
    """The launch for `args` (see `lookup_gemm`), without running it; geo: a cached `geometry`;
    codebook16: the codebook copy `copy_dtype` asks for (made here if None).

    Per call it allocates only device memory (the output, a zeroed fp32 buffer when split, a
    zero-padded copy of x for a ragged row): nothing made from host data, so it can be captured
    in a CUDA graph."""
    geo = geometry(args, split_k, sms, **overrides) if geo is None else geo
    x = args.x.contiguous()
    if args.in_features != args.m_codes * args.d:  # a ragged row's padding meets zeros, not a mask
        x = torch.nn.functional.pad(x, (0, args.m_codes * args.d - args.in_features))
    codes = args.codes.contiguous()
    codebook = args.codebook.contiguous()
    dtype = copy_dtype(args)
    if dtype is not None:
        codebook = kernel_codebook(codebook, dtype) if codebook16 is None else codebook16
    scales = args.scales.contiguous()
    n, mc, d = args.out_features, args.m_codes, args.d
    atomic = geo["grid"][1] > 1
    y = (torch.zeros if atomic else torch.empty)(
        (args.batch, n), device=x.device, dtype=torch.float32 if atomic else x.dtype
    )
    dot_kind, precision = dot_config(x.dtype, codebook.dtype)
    has_scale = args.codebook_scale is not None
    return Launch(
        grid=geo["grid"],
        args=(
            x,
            codes,
            codebook,
            scales,
            args.codebook_scale if has_scale else scales,
            y,
            args.batch,
            n,
            x.shape[1],
            mc,
            geo["j_per_split"],
            x.stride(0),
            y.stride(0),
        ),
        constexprs=dict(
            D=d,
            D_PAD=triton.next_power_of_2(d),
            HAS_CODEBOOK_SCALE=has_scale,
            DOT_KIND=dot_kind,
            PRECISION=precision,
            ATOMIC=atomic,
            **geo["cfg"],
        ),
        options=dict(geo["options"]),
        y=y,
        out_dtype=x.dtype,
    )


def lookup_gemm(args: LookupArgs, split_k: int | None = None, **overrides) -> torch.Tensor:
    """Launch the fused GEMM: [M, out_features] in x's dtype.

    split_k: reduction slices (default: enough to give ~2 programs per SM, which matters at
    M = 16); overrides: block sizes (BLOCK_M, BLOCK_N, BLOCK_J, GROUP_M, num_warps,
    num_stages) for tests and benches.
    """
    return plan(args, split_k, **overrides).run(_lookup_gemm_kernel)
