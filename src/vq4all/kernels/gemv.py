"""Triton lookup GEMV (small M, split-K): y = x @ decode(codes, codebook, scales)^T.

Blocked algorithm (one program per (output-row block, reduction slice)):

    grid = (cdiv(N, BLOCK_N), SLICES)          N = out_features, MC = ceil(IN / D) code columns
    program (pn, ps) owns rows n0 = pn*BLOCK_N .. n0+BLOCK_N and code columns
    [ps*J_PER_SPLIT, min((ps+1)*J_PER_SPLIT, MC)):
      acc[BLOCK_M, BLOCK_N, J, D_PAD] = 0 (fp32, one partial sum per weight slot)
      codes = the first step's codes (prefetched)
      for each step (BLOCK_J code columns):
        current, codes = codes, the next step's codes      (the next load is in flight now)
        w    = codebook16[current]                         [BLOCK_N, J, D_PAD] gathered, fp16
        x    = x[m, j*D + e], zero beyond the slice        [BLOCK_M, J, D_PAD]
        acc += x * w                                       one fp32 FMA per weight, no reduction
      part[m, n] = sum over (j, e) of acc                  once, after the loop
      (+ the ragged last column, IN % D features, outside the loop with a per-feature mask)
      SLICES == 1: y = part * scales[n] * codebook_scale, stored in y's dtype
      SLICES > 1: part goes to partials[ps, m, n]; a per-row-block counter counts the slices done,
                  and the program that finishes last sums partials[0..SLICES) in slice order
                  (deterministic), scales, stores y and resets the counter for the next launch

Two ways to read the codes, chosen per call by `plan`:
- words (whenever a codes row is a whole number of 8-byte words, 8-byte aligned: every LLM
  shape): a step is two int64 words per row (2 x 4 uint16 or 2 x 8 uint8 codes), unpacked by
  shifts. A [BLOCK_N, 1] word tile has fewer elements than the program has threads, so Triton
  loads it directly in the layout of the gather, and x's [J, D] tile likewise: codes, codewords,
  x and the accumulator are in one register layout, and the loop has no layout conversion
  (shared memory and block barriers) and no warp shuffle;
- tiles (any other codes): a [BLOCK_N, BLOCK_J] codes tile, moved into the gather's layout
  through shared memory once per step (two barriers per step).

Why (each item was a cost of the earlier GEMV, see docs/gpu.md): partial sums stay per thread
(the only cross-thread reduction is after the loop); the codebook arrives as a float16 copy
(`kernel_codebook`; int8 entries are exact in fp16), so the loop converts with the fast
fp16 -> fp32 instruction (HADD2.F32 on sm_90) instead of int -> float; the next codes are
prefetched; split-K gives about MIN_PROGRAMS_PER_SM programs per SM and needs neither a zeroed
buffer nor a cast kernel, so a call is one launch (capture-safe with a cached workspace).
Memory: codes are streamed once (evict_first); the codebook copy (1 MiB for 2^16 x 8) stays in
L2 (evict_last); x is small and re-read from L1/L2 by every row block.
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
def _codeword_fma(acc, codes, codebook_ptr, x_ptr, x_row, j, j_full, ee, D: tl.constexpr, D_PAD: tl.constexpr):
    """acc [BLOCK_M, BLOCK_N, J, D_PAD] += x[m, j*D + e] * codebook[codes[n, j], e] for the code
    columns j [J] of codes [BLOCK_N, J] (int32): one gather per codeword, one FMA per weight."""
    w_off = codes[None, :, :, None] * D + ee[None, None, None, :]  # [1, BLOCK_N, J, D_PAD]
    feat = (j * D)[None, None, :, None] + ee[None, None, None, :]  # [1, 1, J, D_PAD]
    x_ok = (j < j_full)[None, None, :, None]  # constant over a codeword: vector loads
    if D == D_PAD:  # each codeword is D contiguous, D-aligned entries: one vector load
        w_off = tl.max_contiguous(tl.multiple_of(w_off, [1, 1, 1, D]), [1, 1, 1, D])
        w = tl.load(codebook_ptr + w_off, eviction_policy="evict_last")
    else:
        e_ok = (ee < D)[None, None, None, :]
        w = tl.load(codebook_ptr + w_off, mask=e_ok, other=0.0, eviction_policy="evict_last")
        x_ok = x_ok & e_ok
    xt = tl.load(x_ptr + x_row + feat, mask=x_ok, other=0.0)  # [BLOCK_M, 1, J, D_PAD]
    return acc + xt.to(tl.float32) * w.to(tl.float32)


@triton.jit
def _word_codes(words_ptr, rows_in, word, MW):
    """The codes packed in words[rows_in, word] as an int64 [BLOCK_N, 1]. Unmasked: rows_in are
    clamped to the layer and `word` to the row, so every read is in bounds; codes of a word
    beyond the slice meet x = 0 (the x mask is per column)."""
    word = tl.minimum(word, MW - 1)
    return tl.load(
        words_ptr + rows_in[:, None] * MW + word + tl.zeros((1, 1), dtype=tl.int32), eviction_policy="evict_first"
    )


@triton.jit
def _unpack(word, cw, CODE_BITS: tl.constexpr):
    """[BLOCK_N, 1] int64 words -> [BLOCK_N, CPW] int32 codes (little-endian: code c of a word is
    bits [c*CODE_BITS, (c+1)*CODE_BITS); the mask undoes the arithmetic shift's sign)."""
    return ((word >> (cw * CODE_BITS).to(tl.int64)[None, :]) & ((1 << CODE_BITS) - 1)).to(tl.int32)


@triton.jit
def _lookup_gemv_kernel(
    x_ptr,
    codes_ptr,
    words_ptr,
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
    MW,
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
    WORDS: tl.constexpr,
    CODE_BITS: tl.constexpr,
    SPLIT: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_ok = rows < N
    mm = tl.arange(0, BLOCK_M)  # [BLOCK_M]
    ee = tl.arange(0, D_PAD)  # [D_PAD]
    j_begin = pid_s * J_PER_SPLIT
    j_end = tl.minimum(j_begin + J_PER_SPLIT, MC)
    j_full = tl.minimum(j_end, IN // D)  # columns whose D features all exist
    # rows of x in the loop's 4-D shape; rows beyond M (BLOCK_M is a power of two) re-read row
    # M - 1, in bounds and never stored, so the x load needs no row mask
    x_row = tl.minimum(mm, M - 1)[:, None, None, None] * stride_xm  # [BLOCK_M, 1, 1, 1]
    if WORDS:
        # Codes read as int64 words of CPW codes, two words per step. A [BLOCK_N, 1] word tile
        # has fewer elements than the program has threads, so the compiler loads it directly in
        # the layout the gather needs (no shared-memory conversion, no barrier).
        CPW: tl.constexpr = 64 // CODE_BITS
        cw = tl.arange(0, CPW)
        w_begin = j_begin // CPW
        w_end = j_end // CPW
        rows_in = tl.minimum(rows, N - 1)
        acc = tl.zeros((BLOCK_M, BLOCK_N, CPW, D_PAD), dtype=tl.float32)
        word_a = _word_codes(words_ptr, rows_in, w_begin, MW)
        word_b = _word_codes(words_ptr, rows_in, w_begin + 1, MW)
        for w0 in range(w_begin, w_end, 2):
            codes_a = _unpack(word_a, cw, CODE_BITS)
            codes_b = _unpack(word_b, cw, CODE_BITS)
            word_a = _word_codes(words_ptr, rows_in, w0 + 2, MW)  # the next step's words
            word_b = _word_codes(words_ptr, rows_in, w0 + 3, MW)
            acc = _codeword_fma(acc, codes_a, codebook_ptr, x_ptr, x_row, w0 * CPW + cw, j_full, ee, D, D_PAD)
            acc = _codeword_fma(acc, codes_b, codebook_ptr, x_ptr, x_row, (w0 + 1) * CPW + cw, j_full, ee, D, D_PAD)
    else:
        jj = tl.arange(0, BLOCK_J)  # [BLOCK_J]
        acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_J, D_PAD), dtype=tl.float32)
        codes = _codes_tile(codes_ptr, rows, row_ok, j_begin + jj, j_end, MC)
        for j0 in range(j_begin, j_end, BLOCK_J):
            current = codes
            codes = _codes_tile(codes_ptr, rows, row_ok, j0 + BLOCK_J + jj, j_end, MC)  # the next step's tile
            acc = _codeword_fma(acc, current, codebook_ptr, x_ptr, x_row, j0 + jj, j_full, ee, D, D_PAD)
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


def config(batch: int, d: int, code_bytes: int = 2) -> dict:
    """Block sizes: BLOCK_N rows x BLOCK_J code columns x D_PAD entries per step.

    BLOCK_J is two int64 words of codes (8 columns of uint16 codes, 16 of uint8), the step the
    kernel's word path takes. CUDA (untuned starting points): 4 warps, BLOCK_N = 64 / M rows (16
    at least), so the [BLOCK_N, 1] word tile has fewer elements than the program has threads
    (what keeps its load in the gather's layout) and each thread holds 16 fp32 partial sums
    (2048 weight slots per step over 128 threads; 54 registers at M = 1 on sm_90). The
    interpreter: 32 rows, one warp (its cost grows with programs x steps).
    """
    block_m = triton.next_power_of_2(max(1, batch))
    block_j = 2 * (8 // code_bytes)
    if interpreting():
        return dict(BLOCK_M=block_m, BLOCK_N=32, BLOCK_J=block_j, num_warps=1)
    return dict(BLOCK_M=block_m, BLOCK_N=max(16, 64 // block_m), BLOCK_J=block_j, num_warps=4)


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
    cfg = {**config(args.batch, args.d, args.codes.element_size()), **overrides}
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
    use_words: bool | None = None,
    **overrides,
) -> Launch:
    """The launch for `args` (see `lookup_gemv`), without running it.

    codebook16: the codebook as the kernel reads it ([k, d] float16 for int8/float16 codebooks,
    float32 for float32 ones; see `kernel_codebook`), made here when not given; work: the
    split-K workspace (`workspace`), allocated here when not given; y: the output [M, N] in x's
    dtype, allocated here when not given; sms: see `geometry`; geo: a cached `geometry`;
    use_words: read codes as int64 words (None: whenever `codes_as_words` allows, False: code
    tiles, True: words or ValueError).
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
    code_bits = 8 * codes.element_size()
    words = codes_as_words(codes) if use_words is not False and geo["cfg"]["BLOCK_J"] == 2 * (64 // code_bits) else None
    if use_words and words is None:
        raise ValueError("codes: the word path needs rows of a multiple of 8 bytes, 8-byte aligned, BLOCK_J = 2 words")
    return Launch(
        grid=geo["grid"],
        args=(
            x,
            codes,
            codes if words is None else words,
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
            0 if words is None else words.shape[1],
            geo["j_per_split"],
            slices,
            x.stride(0),
            y.stride(0),
        ),
        constexprs=dict(
            D=args.d,
            D_PAD=triton.next_power_of_2(args.d),
            HAS_CODEBOOK_SCALE=has_scale,
            WORDS=words is not None,
            CODE_BITS=code_bits,
            SPLIT=slices > 1,
            **geo["cfg"],
        ),
        options={"num_warps": geo["num_warps"]},
        y=y,
        out_dtype=args.x.dtype,
    )


def codes_as_words(codes: torch.Tensor) -> torch.Tensor | None:
    """codes [N, MC] (contiguous) as int64 words [N, MC * bytes / 8], 8 / bytes codes each, when
    every row starts on an 8-byte boundary; None otherwise (the kernel then loads code tiles)."""
    row_bytes = codes.shape[1] * codes.element_size()
    if codes.numel() == 0 or row_bytes % 8 or codes.data_ptr() % 8 or not codes.is_contiguous():
        return None
    return codes.view(torch.int64)


def kernel_codebook(codebook: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The codebook as a kernel reads it, [k, d] contiguous. dtype None (the GEMV): int8 and
    float16 entries as float16 (exact: |int8| <= 128 < 2^11), float32 as float32; dtype given
    (the GEMM's dot dtype, float16 or bfloat16): int8 entries in it, exact in both."""
    if dtype is None:
        dtype = torch.float16 if codebook.dtype in (torch.int8, torch.float16) else codebook.dtype
    return codebook.to(dtype).contiguous()


def lookup_gemv(args: LookupArgs, split_k: int | None = None, **overrides) -> torch.Tensor:
    """Launch the GEMV: [M, out_features] in x's dtype. M must be <= MAX_M.

    split_k: reduction slices (default: `slices_for`); overrides: block sizes (BLOCK_N, BLOCK_J,
    num_warps) for tests and benches. Allocates its workspace per call: the cached, allocation-
    free path is `vq4all.kernels.plans`.
    """
    return plan(args, split_k, **overrides).run(_lookup_gemv_kernel)
