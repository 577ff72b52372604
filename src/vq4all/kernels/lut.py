"""Triton lookup-table GEMV for small codebooks (k <= 256, uint8 codes; made for k = 256, d = 4):
y = x @ decode(codes, codebook, scales)^T without decoding a single weight.

With k = 256 codewords of d = 4 entries, a row of x meets each code column j in only 256
possible ways: lut[c, j] = sum_e x[j*d + e] * codebook[c, e]. The kernel computes that table
for a block of code columns (k x BLOCK_J x d FMAs, shared by every row of the program) and then
each weight row needs one table lookup and one add per code, i.e. per d weights:

    grid = (cdiv(N, BLOCK_N), SLICES, M)      one program per (row block, reduction slice, row of x)
    program (pn, ps, m):
      cb[K_PAD, 1, D_PAD] = codebook as fp32, loaded once (k x d x 4 bytes: 4 KiB at 256 x 4)
      acc[BLOCK_N, BLOCK_J] = 0 (fp32 partial sums, one per code slot)
      for each step of BLOCK_J code columns j:
        xt  = x[m, j*D + e]                                   [1, BLOCK_J, D_PAD], zero outside
        lut = sum over e of cb * xt                           [K_PAD, BLOCK_J]
        acc += lut[codes[n, j], j]                            tl.gather along the codeword axis
      part[n] = sum over j of acc                             once, after the loop
      then as the GEMV (gemv.finish): scales, split-K partials summed by the last slice

Cost per weight (M = 1): k / BLOCK_N table FMAs (BLOCK_N = 256 rows: 1 per weight) plus 1/d
lookup and add; the codes are the only weight bytes read (1 byte per 4 weights), and nothing is
gathered from the codebook in the loop. The summation order differs from the decode path only
in grouping (each code's d products first), so integer-exact inputs give identical results.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .args import LookupArgs
from .gemv import MAX_M, device_sms, finish, slices_for
from .triton_support import Launch, interpreting

MAX_K = 256  # the table has k rows: beyond this it outgrows registers and shared memory
MAX_D = 8


def applies(args: LookupArgs) -> bool:
    """Whether the table kernel takes these arguments (k <= MAX_K, d <= MAX_D, M <= MAX_M)."""
    return args.k <= MAX_K and args.d <= MAX_D and args.batch <= MAX_M


@triton.jit
def _lookup_lut_kernel(
    x_ptr,
    codes_ptr,
    codebook_ptr,
    scales_ptr,
    codebook_scale_ptr,
    y_ptr,
    partial_ptr,
    count_ptr,
    M,
    N,
    IN,
    MC,
    K,
    J_PER_SPLIT,
    SLICES,
    stride_xm,
    stride_ym,
    D: tl.constexpr,
    D_PAD: tl.constexpr,
    K_PAD: tl.constexpr,
    HAS_CODEBOOK_SCALE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_J: tl.constexpr,
    SPLIT: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_ok = rows < N
    cc = tl.arange(0, K_PAD)  # [K_PAD] codeword index
    jj = tl.arange(0, BLOCK_J)
    ee = tl.arange(0, D_PAD)
    j_begin = pid_s * J_PER_SPLIT
    j_end = tl.minimum(j_begin + J_PER_SPLIT, MC)
    cb_ok = (cc < K)[:, None, None] & (ee < D)[None, None, :]
    cb = tl.load(codebook_ptr + cc[:, None, None] * D + ee[None, None, :], mask=cb_ok, other=0).to(tl.float32)
    acc = tl.zeros((BLOCK_N, BLOCK_J), dtype=tl.float32)
    for j0 in range(j_begin, j_end, BLOCK_J):
        j = j0 + jj
        j_ok = j < j_end
        feat = j[None, :, None] * D + ee[None, None, :]  # [1, BLOCK_J, D_PAD]
        x_ok = j_ok[None, :, None] & (ee < D)[None, None, :] & (feat < IN)
        xt = tl.load(x_ptr + pid_m * stride_xm + feat, mask=x_ok, other=0.0).to(tl.float32)
        lut = tl.sum(cb * xt, axis=2)  # [K_PAD, BLOCK_J]: column j of x against every codeword
        # code 0 outside the slice or the layer: its table column is 0 there (x was masked)
        codes = tl.load(
            codes_ptr + rows[:, None] * MC + j[None, :],
            mask=row_ok[:, None] & j_ok[None, :],
            other=0,
            eviction_policy="evict_first",
        ).to(tl.int32)  # [BLOCK_N, BLOCK_J]
        acc += tl.gather(lut, codes, axis=0)  # acc[n, j] += lut[codes[n, j], j]
    part = tl.sum(acc, axis=1)[None, :]  # [1, BLOCK_N]
    mm = pid_m + tl.arange(0, 1)
    finish(
        part,
        y_ptr,
        partial_ptr,
        count_ptr,
        scales_ptr,
        codebook_scale_ptr,
        rows,
        row_ok,
        mm,
        M,
        N,
        pid_s,
        pid_m * tl.num_programs(0) + pid_n,
        SLICES,
        stride_ym,
        HAS_CODEBOOK_SCALE,
        SPLIT,
    )


def config(k: int, d: int) -> dict:
    """Block sizes. CUDA (untuned starting points): 256 rows per program, so the table's k x d
    FMAs per code column cost k / 256 per weight, and 8 code columns per step (a k x 8 table:
    16 fp32 values per thread with 4 warps). The interpreter: fewer, bigger steps."""
    if interpreting():
        return dict(BLOCK_N=32, BLOCK_J=16, num_warps=1)
    return dict(BLOCK_N=256, BLOCK_J=8, num_warps=4)


def geometry(args: LookupArgs, split_k: int | None = None, sms: int | None = -1, **overrides) -> dict:
    """Block sizes, grid (row blocks, slices, M) and slice length, as `gemv.geometry`."""
    if not applies(args):
        raise ValueError(
            f"the table kernel takes k <= {MAX_K}, d <= {MAX_D} and at most {MAX_M} rows of x, "
            f"got k={args.k}, d={args.d}, M={args.batch}"
        )
    cfg = {**config(args.k, args.d), **overrides}
    num_warps = cfg.pop("num_warps")
    steps = triton.cdiv(args.m_codes, cfg["BLOCK_J"])
    tiles = triton.cdiv(args.out_features, cfg["BLOCK_N"])
    sms = device_sms(args.device) if sms == -1 else sms
    slices = slices_for(tiles * args.batch, steps, sms) if split_k is None else max(1, min(int(split_k), steps))
    j_per_split = max(1, triton.cdiv(steps, slices)) * cfg["BLOCK_J"]
    slices = max(1, triton.cdiv(args.m_codes, j_per_split))
    return dict(cfg=cfg, num_warps=num_warps, grid=(tiles, slices, max(1, args.batch)), j_per_split=j_per_split)


def workspace(args: LookupArgs, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(partials [slices, M, N] fp32, counters [M x row blocks] int32 zeros), as `gemv.workspace`."""
    tiles, slices, batch = grid
    if slices == 1:
        empty = torch.empty(0, dtype=torch.float32, device=args.device)
        return empty, empty.to(torch.int32)
    partials = torch.empty(slices, args.batch, args.out_features, dtype=torch.float32, device=args.device)
    return partials, torch.zeros(tiles * batch, dtype=torch.int32, device=args.device)


def plan(
    args: LookupArgs,
    split_k: int | None = None,
    work: tuple[torch.Tensor, torch.Tensor] | None = None,
    y: torch.Tensor | None = None,
    sms: int | None = -1,
    geo: dict | None = None,
    **overrides,
) -> Launch:
    """The launch for `args` (see `lookup_lut`), without running it; work and y as `gemv.plan`.
    The codebook is read as it is (int8, float16 or float32): once per program, not per weight."""
    geo = geometry(args, split_k, sms, **overrides) if geo is None else geo
    x = args.x if args.x.stride(1) == 1 else args.x.contiguous()
    partials, counts = workspace(args, geo["grid"]) if work is None else work
    if y is None:
        y = torch.empty(args.batch, args.out_features, device=args.device, dtype=args.x.dtype)
    has_scale = args.codebook_scale is not None
    scales = args.scales.contiguous()
    return Launch(
        grid=geo["grid"],
        args=(
            x,
            args.codes.contiguous(),
            args.codebook.contiguous(),
            scales,
            args.codebook_scale if has_scale else scales,
            y,
            partials,
            counts,
            args.batch,
            args.out_features,
            args.in_features,
            args.m_codes,
            args.k,
            geo["j_per_split"],
            geo["grid"][1],
            x.stride(0),
            y.stride(0),
        ),
        constexprs=dict(
            D=args.d,
            D_PAD=triton.next_power_of_2(args.d),
            K_PAD=triton.next_power_of_2(args.k),
            HAS_CODEBOOK_SCALE=has_scale,
            SPLIT=geo["grid"][1] > 1,
            **geo["cfg"],
        ),
        options={"num_warps": geo["num_warps"]},
        y=y,
        out_dtype=args.x.dtype,
    )


def lookup_lut(args: LookupArgs, split_k: int | None = None, **overrides) -> torch.Tensor:
    """Launch the table GEMV: [M, out_features] in x's dtype (k <= 256, d <= 8, M <= 4).
    split_k and overrides (BLOCK_N, BLOCK_J, num_warps) as `gemv.lookup_gemv`."""
    return plan(args, split_k, **overrides).run(_lookup_lut_kernel)
