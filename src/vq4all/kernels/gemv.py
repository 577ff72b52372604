"""Triton lookup GEMV (small M, split-K): y = x @ decode(codes, codebook, scales)^T.

Blocked algorithm (one program per (output-row block, reduction slice)):

    grid = (cdiv(N, BLOCK_N), SLICES)          N = out_features, MC = ceil(IN / D) code columns
    program (pn, ps) owns rows n0 = pn*BLOCK_N .. n0+BLOCK_N and code columns
    [ps*J_PER_SPLIT, min((ps+1)*J_PER_SPLIT, MC)):
      acc[BLOCK_M, BLOCK_N, BLOCK_J, D_PAD] = 0 (fp32, one partial sum per weight slot)
      codes = codes tile of the first step                       [BLOCK_N, BLOCK_J]
      for each step of BLOCK_J code columns j:
        w     = codebook[codes]                                  [BLOCK_N, BLOCK_J, D_PAD] gathered
        codes = codes tile of the next step (prefetch: its load is in flight during this step)
        x     = x[m, j*D + e], zero beyond IN and beyond the slice  [BLOCK_M, BLOCK_J, D_PAD]
        acc  += x * w                                            one fp32 FMA per weight, no reduction
      part[m, n] = sum over (j, e) of acc                        once, after the loop
      SLICES == 1: y = part * scales[n] * codebook_scale, stored in y's dtype
      SLICES > 1: part goes to partials[ps, m, n]; a per-row-block counter counts the slices done,
                  and the program that finishes last sums partials[0..SLICES) in slice order
                  (deterministic), scales, stores y and resets the counter for the next launch

Why this shape (each item is one cost of the earlier GEMV, see docs/gpu.md):
- every tensor of the loop is indexed by the same 4-D shape, so codes, codewords, x and the
  accumulator share one register layout: no layout conversion (shared memory + block barrier)
  and no warp shuffle inside the loop; the only cross-thread reduction is the one after it;
- the codebook arrives pre-converted to float16 (`codebook16`; int8 entries are exact in fp16),
  so the loop has no int->float conversion, only the fast fp16->fp32 one (HADD2.F32 on sm_90);
- the codes tile of step i+1 is loaded during step i;
- split-K is chosen so that a launch has about 8 programs per SM (`MIN_PROGRAMS_PER_SM`), and
  needs neither a zeroed buffer nor a cast kernel: one launch per call, capture-safe.
Memory: codes are streamed once (evict_first); the codebook (1 MiB as fp16 for 2^16 x 8) stays
in L2 (evict_last); x is small and re-read from L1/L2 by every row block.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import triton_support
from .args import LookupArgs
from .triton_support import Launch, interpreting

MAX_M = 4  # beyond this the per-thread accumulators outgrow the registers: use the GEMM
MIN_PROGRAMS_PER_SM = 8  # enough resident programs to keep many gathers in flight per SM
MAX_SLICES = 64  # the last program of a row block sums this many partials at most


@triton.jit
def _codes_tile(codes_ptr, rows, row_ok, j, j_end, MC):
    """codes[rows, j] as int32 [BLOCK_N, BLOCK_J] (uint16 codes >= 32768 stay positive);
    code 0 where the row or column is out of range, which gathers a real codeword that meets
    x = 0 (so the gather needs no mask)."""
    return tl.load(
        codes_ptr + rows[:, None] * MC + j[None, :],
        mask=row_ok[:, None] & (j < j_end)[None, :],
        other=0,
        eviction_policy="evict_first",
    ).to(tl.int32)


@triton.jit
def _lookup_gemv_kernel(
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
    J_PER_SPLIT,
    SLICES,
    stride_xm,
    stride_ym,
    D: tl.constexpr,
    D_PAD: tl.constexpr,
    HAS_CODEBOOK_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_J: tl.constexpr,
    SPLIT: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_ok = rows < N
    mm = tl.arange(0, BLOCK_M)  # [BLOCK_M]
    jj = tl.arange(0, BLOCK_J)  # [BLOCK_J]
    ee = tl.arange(0, D_PAD)  # [D_PAD]
    j_begin = pid_s * J_PER_SPLIT
    j_end = tl.minimum(j_begin + J_PER_SPLIT, MC)
    j_full = tl.minimum(j_end, IN // D)  # columns whose D features all exist
    # x offsets and masks that do not change from step to step, in the loop's 4-D shape
    x_row = mm[:, None, None, None] * stride_xm  # [BLOCK_M, 1, 1, 1]
    m_ok = (mm < M)[:, None, None, None]
    e_ok = (ee < D)[None, None, None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_J, D_PAD), dtype=tl.float32)
    codes = _codes_tile(codes_ptr, rows, row_ok, j_begin + jj, j_end, MC)
    for j0 in range(j_begin, j_end, BLOCK_J):
        w_off = codes[None, :, :, None] * D + ee[None, None, None, :]  # [1, BLOCK_N, BLOCK_J, D_PAD]
        if D == D_PAD:  # each codeword is D contiguous, D-aligned entries: one vector load
            w_off = tl.max_contiguous(tl.multiple_of(w_off, [1, 1, 1, D]), [1, 1, 1, D])
            w = tl.load(codebook_ptr + w_off, eviction_policy="evict_last")
        else:
            w = tl.load(codebook_ptr + w_off, mask=e_ok, other=0.0, eviction_policy="evict_last")
        codes = _codes_tile(codes_ptr, rows, row_ok, j0 + BLOCK_J + jj, j_end, MC)  # the next step's tile
        j = j0 + jj
        feat = (j * D)[None, None, :, None] + ee[None, None, None, :]  # [1, 1, BLOCK_J, D_PAD]
        x_ok = m_ok & e_ok & (j < j_full)[None, None, :, None]  # constant over a codeword: vector loads
        xt = tl.load(x_ptr + x_row + feat, mask=x_ok, other=0.0)  # [BLOCK_M, 1, BLOCK_J, D_PAD]
        acc += xt.to(tl.float32) * w.to(tl.float32)
    part = tl.sum(tl.sum(acc, axis=3), axis=2)  # [BLOCK_M, BLOCK_N]: the one reduction
    if IN % D != 0:  # the ragged last column, masked per feature (outside the loop: the loop's
        jt = IN // D  # x loads stay whole-codeword vector loads)
        if (jt >= j_begin) & (jt < j_end):
            part += _ragged_column(x_ptr, codes_ptr, codebook_ptr, rows, row_ok, mm, M, IN, MC, jt, stride_xm, D, D_PAD)
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
        pid_n,
        SLICES,
        stride_ym,
        HAS_CODEBOOK_SCALE,
        SPLIT,
    )


@triton.jit
def _ragged_column(
    x_ptr, codes_ptr, codebook_ptr, rows, row_ok, mm, M, IN, MC, jt, stride_xm, D: tl.constexpr, D_PAD: tl.constexpr
):
    """sum over e of x[m, jt*D + e] * codebook[codes[n, jt], e] for the column jt that holds the
    last IN - jt*D < D features: [BLOCK_M, BLOCK_N] fp32."""
    ee = tl.arange(0, D_PAD)
    code = tl.load(codes_ptr + rows * MC + jt, mask=row_ok, other=0).to(tl.int32)  # [BLOCK_N]
    w = tl.load(codebook_ptr + code[:, None] * D + ee[None, :], mask=(ee < D)[None, :], other=0.0)
    feat = jt * D + ee
    xt = tl.load(
        x_ptr + mm[:, None] * stride_xm + feat[None, :], mask=(mm < M)[:, None] & (feat < IN)[None, :], other=0.0
    )  # [BLOCK_M, D_PAD]
    return tl.sum(xt.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)


@triton.jit
def finish(
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
    counter,
    SLICES,
    stride_ym,
    HAS_CODEBOOK_SCALE: tl.constexpr,
    SPLIT: tl.constexpr,
):
    """Store y[mm, rows] from this program's fp32 partial sums part [BLOCK_M, BLOCK_N].

    Unsplit: scaled and stored. Split: part goes to partials[pid_s, mm, rows]; counts[counter]
    counts the slices done, and the program that finishes last sums the SLICES partials in slice
    order (the same sum whichever program is last), stores y and puts the counter back to 0."""
    mn_off = mm[:, None] * N + rows[None, :]
    mn_ok = (mm < M)[:, None] & row_ok[None, :]
    if SPLIT:
        tl.store(partial_ptr + pid_s * M * N + mn_off, part, mask=mn_ok)
        tl.debug_barrier()  # every thread's partial is stored before the count says so
        done = tl.atomic_add(count_ptr + counter, 1, sem="acq_rel")
        if done == SLICES - 1:
            total = tl.zeros_like(part)
            for s in range(0, SLICES):  # .cg: read from L2, where the other programs' stores are
                total += tl.load(partial_ptr + s * M * N + mn_off, mask=mn_ok, other=0.0, cache_modifier=".cg")
            _store_scaled(
                total, y_ptr, scales_ptr, codebook_scale_ptr, rows, row_ok, mm, stride_ym, mn_ok, HAS_CODEBOOK_SCALE
            )
            tl.atomic_xchg(count_ptr + counter, 0)  # ready for the next launch: no zeroing kernel
    else:
        _store_scaled(
            part, y_ptr, scales_ptr, codebook_scale_ptr, rows, row_ok, mm, stride_ym, mn_ok, HAS_CODEBOOK_SCALE
        )


@triton.jit
def _store_scaled(
    part, y_ptr, scales_ptr, codebook_scale_ptr, rows, row_ok, mm, stride_ym, mn_ok, HAS_CODEBOOK_SCALE: tl.constexpr
):
    """y[m, rows] = part * scales[rows] (* codebook_scale), in y's dtype: the scales multiply the
    fp32 sum once, as the torch path's CPU product does."""
    scale = tl.load(scales_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    if HAS_CODEBOOK_SCALE:
        scale = scale * tl.load(codebook_scale_ptr)
    out = part * scale[None, :]
    tl.store(y_ptr + mm[:, None] * stride_ym + rows[None, :], out.to(y_ptr.dtype.element_ty), mask=mn_ok)


def config(batch: int, d: int) -> dict:
    """Block sizes: BLOCK_N rows x BLOCK_J code columns x D_PAD entries per step.

    CUDA (untuned starting points): 4 warps, 2048 weight slots per step per row of x, i.e. 16
    fp32 partial sums per thread at M = 1 (64 at M = 4): few enough registers that several
    programs share an SM. The interpreter gets bigger blocks: its cost grows with the number of
    (program x step) iterations, not with the block.
    """
    d_pad = triton.next_power_of_2(d)
    block_m = triton.next_power_of_2(max(1, batch))
    if interpreting():
        return dict(BLOCK_M=block_m, BLOCK_N=32, BLOCK_J=max(1, 64 // d_pad), num_warps=1)
    return dict(BLOCK_M=block_m, BLOCK_N=max(16, 64 // block_m), BLOCK_J=max(1, 64 // d_pad), num_warps=4)


def slices_for(tiles: int, steps: int, sms: int | None) -> int:
    """Reduction slices so that tiles x slices >= MIN_PROGRAMS_PER_SM programs per SM on a GPU of
    `sms` SMs (never more slices than steps, never more than MAX_SLICES); one without a GPU
    (sms None: the interpreter; tests force more)."""
    if not sms:
        return 1
    want = -(-MIN_PROGRAMS_PER_SM * sms // max(1, tiles))
    return max(1, min(want, steps, MAX_SLICES))


def device_sms(device: torch.device) -> int | None:
    """The SM count of a CUDA device, None for any other."""
    return triton_support.num_sms(device.index or 0) if device.type == "cuda" else None


def geometry(args: LookupArgs, split_k: int | None = None, sms: int | None = -1, **overrides) -> dict:
    """Block sizes, grid and slice length for `args`: {"cfg", "num_warps", "grid", "j_per_split"}.

    sms: the SM count split-K plans for (default: args' device's; None: no GPU, one slice)."""
    if args.batch > MAX_M:
        raise ValueError(f"x: the GEMV takes at most {MAX_M} rows, got {args.batch}; use impl='triton_gemm'")
    cfg = {**config(args.batch, args.d), **overrides}
    num_warps = cfg.pop("num_warps")
    steps = triton.cdiv(args.m_codes, cfg["BLOCK_J"])
    tiles = triton.cdiv(args.out_features, cfg["BLOCK_N"])
    sms = device_sms(args.device) if sms == -1 else sms
    slices = slices_for(tiles, steps, sms) if split_k is None else max(1, min(int(split_k), steps))
    j_per_split = max(1, triton.cdiv(steps, slices)) * cfg["BLOCK_J"]
    slices = max(1, triton.cdiv(args.m_codes, j_per_split))  # no empty slice (one when m_codes = 0)
    return dict(cfg=cfg, num_warps=num_warps, grid=(tiles, slices), j_per_split=j_per_split)


def workspace(args: LookupArgs, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(partials [slices, M, N] fp32, counters [row blocks] int32 zeros): what a split launch
    reuses from call to call (a plan allocates them once; the kernel leaves the counters at 0)."""
    tiles, slices = grid
    device = args.device
    if slices == 1:
        empty = torch.empty(0, dtype=torch.float32, device=device)
        return empty, empty.to(torch.int32)
    partials = torch.empty(slices, args.batch, args.out_features, dtype=torch.float32, device=device)
    return partials, torch.zeros(tiles, dtype=torch.int32, device=device)


def plan(
    args: LookupArgs,
    split_k: int | None = None,
    codebook16: torch.Tensor | None = None,
    work: tuple[torch.Tensor, torch.Tensor] | None = None,
    y: torch.Tensor | None = None,
    sms: int | None = -1,
    geo: dict | None = None,
    **overrides,
) -> Launch:
    """The launch for `args` (see `lookup_gemv`), without running it.

    codebook16: the codebook as the kernel reads it ([k, d] float16 for int8/float16 codebooks,
    float32 for float32 ones; see `kernel_codebook`), made here when not given; work: the
    split-K workspace (`workspace`), allocated here when not given; y: the output [M, N] in x's
    dtype, allocated here when not given; sms: see `geometry`.
    """
    geo = geometry(args, split_k, sms, **overrides) if geo is None else geo
    x = args.x if args.x.stride(1) == 1 else args.x.contiguous()
    codes = args.codes.contiguous()
    scales = args.scales.contiguous()
    codebook = kernel_codebook(args.codebook) if codebook16 is None else codebook16
    partials, counts = workspace(args, geo["grid"]) if work is None else work
    if y is None:
        y = torch.empty(args.batch, args.out_features, device=args.device, dtype=args.x.dtype)
    has_scale = args.codebook_scale is not None
    tiles, slices = geo["grid"]
    return Launch(
        grid=geo["grid"],
        args=(
            x,
            codes,
            codebook,
            scales,
            args.codebook_scale if has_scale else scales,
            y,
            partials,
            counts,
            args.batch,
            args.out_features,
            args.in_features,
            args.m_codes,
            geo["j_per_split"],
            slices,
            x.stride(0),
            y.stride(0),
        ),
        constexprs=dict(
            D=args.d, D_PAD=triton.next_power_of_2(args.d), HAS_CODEBOOK_SCALE=has_scale, SPLIT=slices > 1, **geo["cfg"]
        ),
        options={"num_warps": geo["num_warps"]},
        y=y,
        out_dtype=args.x.dtype,
    )


def kernel_codebook(codebook: torch.Tensor) -> torch.Tensor:
    """The codebook as the GEMV reads it: int8 and float16 entries as float16 (exact: |int8| <=
    128 < 2^11), float32 as float32. [k, d], contiguous."""
    if codebook.dtype in (torch.int8, torch.float16):
        return codebook.to(torch.float16).contiguous()
    return codebook.contiguous()


def lookup_gemv(args: LookupArgs, split_k: int | None = None, **overrides) -> torch.Tensor:
    """Launch the GEMV: [M, out_features] in x's dtype. M must be <= MAX_M.

    split_k: reduction slices (default: `slices_for`); overrides: block sizes (BLOCK_N, BLOCK_J,
    num_warps) for tests and benches. Allocates its workspace per call: the cached, allocation-
    free path is `vq4all.kernels.plans`.
    """
    return plan(args, split_k, **overrides).run(_lookup_gemv_kernel)
