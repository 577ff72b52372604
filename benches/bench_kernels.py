"""Benchmark: lookup matmul y = x @ decode(codes, codebook, scales)^T against dense matmul.

    python -P benches/bench_kernels.py                  # CUDA when present, else CPU
    python -P benches/bench_kernels.py --device cpu     # the CPU path vs dense torch.matmul fp32
    python -P benches/bench_kernels.py --quick --out /tmp/b   # a few tiny rows (smoke test)
    python -P benches/bench_kernels.py --device cuda --phases gathers,large --out OUT   # what gpu_check.sh runs
    python -P benches/bench_kernels.py --device cuda --phases gathers,large,rest --plan # the plan, no GPU needed

Phases (--phases, run in the order given; without --phases: one sweep over --shapes):
  gathers  random 8-byte gathers from a k x 8 int8 table (k = 4096, 16384, 65536): a Triton kernel
           through L1/L2 (global), and CUDA C through CuPy from global memory and from shared
           memory (the table copied into each block's shared memory first); Ggathers/s from the
           difference of two runs (n and 2n gathers per thread), so launch, table fill and
           the final store cancel. Indices are an LCG per thread (no index traffic).
  large    the layers that decide the design: 4096x4096, 8192x8192, 4096x14336 (out x in),
           M = 1, 16, 256, both codebook configs, the dispatched implementation.
  rest     zoo layers (MiniLM FFN, EfficientNet-Lite0 classifier, CREPE-full conv2 im2col) and
           the other LLM shapes (4096->11008, 11008->4096, 8192->28672), M in --batches.
  impls    the large shapes at M = 1, 4, 16 with a row for every applicable implementation
           (the table GEMV, triton_lut, on the 256 x 4 codebook at M <= 4).
  fused    sibling layers on one input (an LLM's Q, K, V and its MLP's gate and up) as separate
           lookups, one launch each, against one fused lookup over their stacked codes
           (what vq4all.kernels.FusedVQLinear runs), M = 1 and 16, the dispatched impl.
Codebook configs: 2^16 x 8 (uint16 codes) and 256 x 4 (uint8 codes), int8 with a float32 scale;
random codes and x.

CUDA: x float16, cuBLAS fp16 (`torch.matmul` with a dense fp16 weight) against the lookup kernel
the dispatch table picks (and decode-then-matmul), in the same process. "flushed":
`triton.testing.do_bench` (median; it overwrites a 256 MiB buffer before every call, so operands
come from HBM; the buffer write hides the host's launch time). "warm": median of CUDA-graph
replays of back-to-back calls (`triton.testing.do_bench_cudagraph`: no host work or sync
between calls; operands may sit in the 60 MiB L2); where a call cannot be captured, events
around back-to-back calls (the method is recorded per row). Speedup = cuBLAS time / lookup time.
GB/s counts the bytes that must cross HBM once (codes + scales + x + y for the lookup, weight +
x + y for cuBLAS; the codebook counts as L2-resident), reported against --hbm-peak-gbs.
CPU: x float32; dense `torch.matmul` with the decoded float32 weight against the CPU path
(impl='torch': decode in row blocks, then matmul); wall-clock median of --reps calls.
Rel. err: max |y - y_dense| / max |y_dense| against the dense product of the same decoded
weight (a sanity check; correctness proper is tests/test_kernels.py).

Writes bench_kernels.md and bench_kernels.json into --out after every row (a run cut short by a
time cap or an outer timeout keeps every finished row); --append continues the files of an
earlier run. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vq4all.io import atomic_write_bytes
from vq4all.kernels import choose_impl, lookup_matmul
from vq4all.kernels.torch_path import decode

ZOO_SHAPES = [  # (label, out_features, in_features)
    ("minilm_l6 FFN up", 1536, 384),
    ("minilm_l6 FFN down", 384, 1536),
    ("efficientnet_lite0 classifier", 1000, 1280),
    ("crepe_full conv2 (im2col)", 512, 16384),
]
LLM_SHAPES = [
    ("LLM 4096->4096", 4096, 4096),
    ("LLM 4096->11008", 11008, 4096),
    ("LLM 11008->4096", 4096, 11008),
    ("LLM 8192->28672", 28672, 8192),
]
LARGE_SHAPES = [("4096x4096", 4096, 4096), ("8192x8192", 8192, 8192), ("4096x14336", 4096, 14336)]
LARGE_BATCHES = (1, 16, 256)
IMPL_BATCHES = (1, 4, 16)
REST_SHAPES = ZOO_SHAPES + LLM_SHAPES[1:]  # 4096->4096 is a large shape already
CONFIGS = {"2^16x8": (1 << 16, 8), "256x4": (256, 4)}
GPU_BATCHES = (1, 4, 16, 64, 256, 1024)
CPU_BATCHES = (1, 16, 256)
PHASES = ("gathers", "large", "rest", "impls", "fused")
FUSED_SHAPES = [  # (label, out_features of each sibling, in_features)
    ("LLM 4096 Q,K,V (GQA)", (4096, 1024, 1024), 4096),
    ("LLM 4096 gate,up", (14336, 14336), 4096),
]
FUSED_BATCHES = (1, 16)
GATHER_TABLES = (4096, 16384, 65536)  # rows of 8 bytes: 32 KiB, 128 KiB, 512 KiB
SHARED_TABLES = (4096, 16384)  # what fits one block's shared memory (227 KiB on sm_90)
FLUSH_BYTES = 256 << 20  # > 4x the H200's 60 MiB L2


# ----------------------------------------------------------------------------- the plan
def plan(device: str, phases: list[str] | None, args) -> list[dict]:
    """Every measurement in run order: {"phase", ...}; gathers entries carry "path" and
    "table_rows", matmul rows "layer", "out_features", "in_features", "config", "M", "impl"
    (None: the dispatched one)."""
    configs = [c for c in args.configs.split(",") if c]
    if args.quick:
        shapes = [("tiny", 64, 100), ("tiny ragged", 48, 37)]
        rows = _rows("quick", shapes, configs, (1, 16), [None])
        if phases and "fused" in phases:
            rows += _fused_rows([("tiny Q,K,V", (24, 16, 8), 37)], configs, (1, 16))
        return rows
    if phases is None:  # one sweep over --shapes, as before phases existed
        want = (args.shapes or "zoo,llm").split(",")
        shapes = (ZOO_SHAPES if "zoo" in want else []) + (LLM_SHAPES if "llm" in want else [])
        if device == "cpu" and args.shapes is None:
            shapes = ZOO_SHAPES + LLM_SHAPES[:3]  # 8192x28672 in fp32 is 940 MB of dense weight
        batches = _batches(args, GPU_BATCHES if device == "cuda" else CPU_BATCHES)
        impls = [None] if not args.all_impls else "all"
        return _rows("sweep", shapes, configs, batches, impls)
    out = []
    for phase in phases:
        if phase == "gathers":
            out += [{"phase": "gathers", "path": "triton global", "table_rows": k} for k in GATHER_TABLES]
            out += [{"phase": "gathers", "path": "cuda global", "table_rows": k} for k in GATHER_TABLES]
            out += [{"phase": "gathers", "path": "cuda shared", "table_rows": k} for k in SHARED_TABLES]
        elif phase == "large":
            out += _rows("large", LARGE_SHAPES, configs, LARGE_BATCHES, [None])
        elif phase == "rest":
            out += _rows("rest", REST_SHAPES, configs, _batches(args, GPU_BATCHES), [None])
        elif phase == "impls":
            out += _rows("impls", LARGE_SHAPES, configs, IMPL_BATCHES, "all")
        elif phase == "fused":
            out += _fused_rows(FUSED_SHAPES, configs, FUSED_BATCHES)
    return out


def _fused_rows(shapes, configs, batches) -> list[dict]:
    """Fused-sibling entries: "siblings" lists each layer's out_features; out_features is their sum."""
    return [
        {
            "phase": "fused",
            "layer": label,
            "out_features": sum(siblings),
            "in_features": in_features,
            "siblings": list(siblings),
            "config": config,
            "M": batch,
            "impl": None,
        }
        for label, siblings, in_features in shapes
        for config in configs
        for batch in batches
    ]


def all_impls(config: str, batch: int) -> list[str]:
    """Every implementation that takes `batch` rows on `config`'s codebook."""
    small = ["triton_gemv"] + (["triton_lut"] if CONFIGS[config][0] <= 256 else []) if batch <= 4 else []
    return small + ["triton_gemm", "torch"]


def _batches(args, default):
    return tuple(int(b) for b in args.batches.split(",")) if args.batches else default


def _rows(phase, shapes, configs, batches, impls) -> list[dict]:
    """Shape-major: a time cap cuts whole shapes, never one codebook config of a shape."""
    rows = []
    for label, out_features, in_features in shapes:
        for config in configs:
            for batch in batches:
                choices = impls if impls != "all" else all_impls(config, batch)
                for impl in choices:
                    rows.append(
                        {
                            "phase": phase,
                            "layer": label,
                            "out_features": out_features,
                            "in_features": in_features,
                            "config": config,
                            "M": batch,
                            "impl": impl,
                        }
                    )
    return rows


# ----------------------------------------------------------------------------- operands, timing
def operands(out_features: int, in_features: int, k: int, d: int, device: str, seed: int = 0):
    """Random codes [out, ceil(in/d)] (uint16 for k > 256, else uint8), an int8 codebook [k, d]
    with its scale, float16 scales [out]: what an artifact holds, on `device`."""
    rng = np.random.default_rng(seed)
    m = -(-in_features // d)
    codes = rng.integers(0, k, (out_features, m), dtype=np.int32).astype(np.uint16 if k > 256 else np.uint8)
    codebook = rng.integers(-127, 128, (k, d), dtype=np.int8)
    scales = rng.uniform(0.5, 1.5, out_features).astype(np.float16) / np.float16(127 * np.sqrt(in_features))
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return t(codes), t(codebook), t(scales), torch.tensor([1.0], device=device)


def time_flushed(fn, warmup_ms: float, rep_ms: float) -> float:
    """Median microseconds of `fn()` by triton.testing.do_bench: L2 overwritten before each call."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")) * 1e3


def time_back_to_back(fn, calls: int = 20, rounds: int = 5) -> float:
    """Median over `rounds` of (events around `calls` back-to-back calls) / calls, microseconds:
    no sync between calls, but the host's launch time counts where it exceeds the kernel's."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(times)


def time_warm(fn, rep_ms: float) -> tuple[float, str]:
    """(median microseconds, method) of back-to-back calls: CUDA-graph replay, else events."""
    import triton.testing

    try:
        us = float(triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median")) * 1e3
        return us, "graph"
    except Exception as e:  # a call that cannot be captured (host sync, host tensors)
        _settle()
        return time_back_to_back(fn), f"events ({type(e).__name__})"


def _settle() -> None:
    """Wait for the device after a failed measurement; a second error is left to the next one."""
    try:
        torch.cuda.synchronize()
    except Exception:
        pass


def time_cpu(fn, reps: int) -> float:
    """Median wall-clock microseconds of `fn()` after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def rel_err(y: torch.Tensor, want: torch.Tensor) -> float:
    want = want.float()
    return float((y.float() - want).abs().max() / want.abs().max().clamp_min(1e-30))


# ----------------------------------------------------------------------------- gathers
_GATHER_TRITON = None


def triton_gather_kernel():
    """The Triton gather kernel (built on first use, so --plan and the CPU paths never need it).

    table_ptr: the k x 8 int8 table viewed as int64 [k]; out_ptr: int64 [programs * BLOCK * U].
    Every lane runs `iters` steps of U independent gathers at LCG-random rows, XOR-ing the values
    of each stream (so no load is dead), and stores its U results. (No tl.xor_sum: library jit
    functions fail under the interpreter when triton was imported without it.)"""
    global _GATHER_TRITON
    if _GATHER_TRITON is None:
        import triton
        import triton.language as tl

        @triton.jit
        def gather_global(table_ptr, out_ptr, iters, mask, seed, BLOCK: tl.constexpr, U: tl.constexpr):
            lane = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            h = (lane[:, None] * U + tl.arange(0, U)[None, :] + seed).to(tl.uint32) * 747796405  # [BLOCK, U]
            acc = tl.zeros((BLOCK, U), dtype=tl.int64)
            for _ in range(iters):
                h = h * 1664525 + 1013904223
                acc ^= tl.load(table_ptr + ((h >> 9) & mask).to(tl.int32))
            tl.store(out_ptr + lane[:, None] * U + tl.arange(0, U)[None, :], acc)

        _GATHER_TRITON = gather_global
    return _GATHER_TRITON


CUDA_GATHER_SOURCE = r"""
extern "C" __global__ void gather_global(const unsigned long long* __restrict__ table,
        unsigned long long* __restrict__ out, int iters, unsigned int mask, unsigned int seed) {
    unsigned int h = (blockIdx.x * blockDim.x + threadIdx.x + seed) * 747796405u;
    unsigned long long acc = 0;
    for (int it = 0; it < iters; ++it) {
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            h = h * 1664525u + 1013904223u;
            acc ^= __ldg(table + ((h >> 9) & mask));
        }
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

extern "C" __global__ void gather_shared(const unsigned long long* __restrict__ table,
        unsigned long long* __restrict__ out, int iters, unsigned int mask, unsigned int seed) {
    extern __shared__ unsigned long long rows[];
    for (unsigned int i = threadIdx.x; i <= mask; i += blockDim.x) rows[i] = table[i];
    __syncthreads();
    unsigned int h = (blockIdx.x * blockDim.x + threadIdx.x + seed) * 747796405u;
    unsigned long long acc = 0;
    for (int it = 0; it < iters; ++it) {
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            h = h * 1664525u + 1013904223u;
            acc ^= rows[(h >> 9) & mask];
        }
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}
"""


def gather_row(entry: dict, table: torch.Tensor, sms: int) -> dict:
    """One gathers measurement: Ggathers/s of `entry["path"]` over the first table_rows rows."""
    rows = entry["table_rows"]
    row = {**entry, "table_kib": rows * 8 // 1024}
    t64 = table[: rows * 8].view(torch.int64)  # [rows] int64 = rows of 8 int8
    if entry["path"] == "triton global":
        block, unroll, programs = 256, 4, sms * 8
        out = torch.empty(programs * block * unroll, dtype=torch.int64, device="cuda")
        kernel = triton_gather_kernel()

        def run(iters):
            kernel[(programs,)](t64, out, iters, rows - 1, 12345, BLOCK=block, U=unroll, num_warps=8)

        per_iter = programs * block * unroll
    else:
        import cupy

        module = cupy.RawModule(code=CUDA_GATHER_SOURCE, options=("-std=c++17",))
        shared = entry["path"] == "cuda shared"
        kernel = module.get_function("gather_shared" if shared else "gather_global")
        threads, blocks = 1024, sms * 2
        smem = rows * 8 if shared else 0
        if smem > 48 * 1024:
            kernel.max_dynamic_shared_size_bytes = smem
        out = torch.empty(blocks * threads, dtype=torch.int64, device="cuda")
        table_cp, out_cp = cupy.asarray(t64), cupy.asarray(out)
        torch.cuda.synchronize()

        def run(iters):
            kernel(
                (blocks,),
                (threads,),
                (table_cp, out_cp, np.int32(iters), np.uint32(rows - 1), np.uint32(12345)),
                shared_mem=smem,
            )

        per_iter = blocks * threads * 8
    iters = 64
    t1 = time_back_to_back(lambda: run(iters), calls=5, rounds=5)
    t2 = time_back_to_back(lambda: run(2 * iters), calls=5, rounds=5)
    row.update(
        gathers_per_call=per_iter * iters,
        us_n=t1,
        us_2n=t2,
        ggathers_s=per_iter * iters / max(t2 - t1, 1e-9) / 1e3,
        ggathers_s_whole=per_iter * 2 * iters / t2 / 1e3,
        gbs_8byte=8 * per_iter * iters / max(t2 - t1, 1e-9) / 1e3,
    )
    return row


# ----------------------------------------------------------------------------- matmul rows
def bench_cuda_row(entry, shape_ops, flush_timing, peak_gbs) -> dict:
    codes, codebook, scales, cb_scale, dense = shape_ops
    out_features, in_features = dense.shape
    batch = entry["M"]
    x = torch.randn(batch, in_features, device="cuda", dtype=torch.float16)
    chosen = entry["impl"] or choose_impl(x.device, batch)
    vq = lambda: lookup_matmul(x, codes, codebook, scales, codebook_scale=cb_scale, impl=chosen)  # noqa: E731
    dec = lambda: lookup_matmul(x, codes, codebook, scales, codebook_scale=cb_scale, impl="torch")  # noqa: E731
    cublas = lambda: torch.matmul(x, dense.T)  # noqa: E731
    warmup_ms, rep_ms, graph_rep_ms = flush_timing
    io = 2 * batch * (in_features + out_features)
    vq_bytes = codes.numel() * codes.element_size() + 2 * out_features + io
    dense_bytes = dense.numel() * 2 + io
    row = {**entry, "impl": chosen}
    row["rel_err"] = rel_err(vq(), dec())
    row["cublas_us_flushed"] = time_flushed(cublas, warmup_ms, rep_ms)
    row["vq_us_flushed"] = time_flushed(vq, warmup_ms, rep_ms)
    row["cublas_us_warm"], row["cublas_warm_method"] = time_warm(cublas, graph_rep_ms)
    row["vq_us_warm"], row["vq_warm_method"] = time_warm(vq, graph_rep_ms)
    if chosen != "torch":
        row["decode_matmul_us_warm"], _ = time_warm(dec, graph_rep_ms)
    else:
        row["decode_matmul_us_warm"] = row["vq_us_warm"]
    row.update(vq_bytes=vq_bytes, dense_bytes=dense_bytes)
    row["speedup_warm"] = row["cublas_us_warm"] / row["vq_us_warm"]
    row["speedup_flushed"] = row["cublas_us_flushed"] / row["vq_us_flushed"]
    row["vq_gbs_flushed"] = vq_bytes / row["vq_us_flushed"] / 1e3
    row["cublas_gbs_flushed"] = dense_bytes / row["cublas_us_flushed"] / 1e3
    row["vq_frac_peak"] = row["vq_gbs_flushed"] / peak_gbs
    return row


def siblings_of(entry, shape_ops) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(codes, scales) of each sibling: row blocks of the stacked operands (contiguous views)."""
    codes, _, scales, _, _ = shape_ops
    out, start = [], 0
    for n in entry["siblings"]:
        out.append((codes[start : start + n], scales[start : start + n]))
        start += n
    return out


def fused_calls(entry, shape_ops, x, impl):
    """(separate, fused): one lookup per sibling, and one over the stacked codes."""
    codes, codebook, scales, cb_scale, _ = shape_ops
    parts = siblings_of(entry, shape_ops)

    def separate():
        return [lookup_matmul(x, c, codebook, s, codebook_scale=cb_scale, impl=impl) for c, s in parts]

    def fused():
        return lookup_matmul(x, codes, codebook, scales, codebook_scale=cb_scale, impl=impl)

    return separate, fused


def bench_fused_row(entry, shape_ops, device, flush_timing, reps) -> dict:
    """Separate sibling lookups against one fused lookup; rel. err: fused vs the separate outputs."""
    dense = shape_ops[4]
    dtype = torch.float16 if device == "cuda" else torch.float32
    x = torch.randn(entry["M"], dense.shape[1], device=device, dtype=dtype)
    impl = choose_impl(x.device, entry["M"])
    separate, fused = fused_calls(entry, shape_ops, x, impl)
    row = {**entry, "impl": impl, "rel_err": rel_err(fused(), torch.cat(separate(), dim=1))}
    if device == "cuda":
        warmup_ms, rep_ms, graph_rep_ms = flush_timing
        row["separate_us_flushed"] = time_flushed(separate, warmup_ms, rep_ms)
        row["fused_us_flushed"] = time_flushed(fused, warmup_ms, rep_ms)
        row["separate_us_warm"], row["separate_warm_method"] = time_warm(separate, graph_rep_ms)
        row["fused_us_warm"], row["fused_warm_method"] = time_warm(fused, graph_rep_ms)
        row["cublas_us_warm"], _ = time_warm(lambda: torch.matmul(x, dense.T), graph_rep_ms)
        row["speedup_warm"] = row["separate_us_warm"] / row["fused_us_warm"]
        row["speedup_flushed"] = row["separate_us_flushed"] / row["fused_us_flushed"]
    else:
        row["separate_us"] = time_cpu(separate, reps)
        row["fused_us"] = time_cpu(fused, reps)
        row["speedup"] = row["separate_us"] / row["fused_us"]
    return row


def fused_markdown(rows: list[dict], device: str) -> list[str]:
    if not rows:
        return []
    if device == "cuda":
        lines = [
            "## Fused siblings: one launch for layers on one input",
            "",
            "| config | layers | out x in | M | impl | separate µs flushed / warm | fused µs flushed / warm "
            "| fused speedup flushed / warm | cuBLAS fp16 µs warm (stacked) | rel. err |",
            "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            graph = "" if r["fused_warm_method"] == "graph" and r["separate_warm_method"] == "graph" else " (events)"
            lines.append(
                f"| {r['config']} | {r['layer']} | {'+'.join(map(str, r['siblings']))}x{r['in_features']} | {r['M']} "
                f"| {r['impl']} | {r['separate_us_flushed']:.1f} / {r['separate_us_warm']:.1f} "
                f"| {r['fused_us_flushed']:.1f} / {r['fused_us_warm']:.1f}{graph} "
                f"| {r['speedup_flushed']:.2f}x / {r['speedup_warm']:.2f}x | {r['cublas_us_warm']:.1f} "
                f"| {r['rel_err']:.1e} |"
            )
    else:
        lines = [
            "## Fused siblings: one call for layers on one input",
            "",
            "| config | layers | out x in | M | impl | separate µs | fused µs | fused speedup | rel. err |",
            "|---|---|---|---:|---|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['config']} | {r['layer']} | {'+'.join(map(str, r['siblings']))}x{r['in_features']} | {r['M']} "
                f"| {r['impl']} | {r['separate_us']:.0f} | {r['fused_us']:.0f} | {r['speedup']:.2f}x "
                f"| {r['rel_err']:.1e} |"
            )
    return lines + [""]


def bench_cpu_row(entry, shape_ops, reps) -> dict:
    codes, codebook, scales, cb_scale, dense = shape_ops
    out_features, in_features = dense.shape
    x = torch.randn(entry["M"], in_features)
    vq = lambda: lookup_matmul(x, codes, codebook, scales, codebook_scale=cb_scale, impl="torch")  # noqa: E731
    matmul = lambda: torch.matmul(x, dense.T)  # noqa: E731
    row = {
        **entry,
        "impl": "torch",
        "dense_us": time_cpu(matmul, reps),
        "vq_us": time_cpu(vq, reps),
        "dense_weight_bytes": dense.numel() * 4,
        "vq_bytes": codes.numel() * codes.element_size() + 2 * out_features,
        "rel_err": rel_err(vq(), matmul()),
    }
    row["speedup"] = row["dense_us"] / row["vq_us"]
    return row


# ----------------------------------------------------------------------------- tables
def gathers_markdown(rows: list[dict]) -> list[str]:
    lines = [
        "## Random 8-byte gathers",
        "",
        "Ggathers/s = (gathers of the 2n-step run - those of the n-step run) / (time difference): "
        "launch, table fill and store cancel. GB/s: 8 useful bytes per gather.",
        "",
        "| path | table rows | table KiB | Ggathers/s | GB/s (8 B each) | whole-call Ggathers/s | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['path']} | {r['table_rows']} | {r['table_rows'] * 8 // 1024} | – | – | – | {r['error']} |"
            )
        else:
            lines.append(
                f"| {r['path']} | {r['table_rows']} | {r['table_kib']} | {r['ggathers_s']:.1f} | {r['gbs_8byte']:.0f} "
                f"| {r['ggathers_s_whole']:.1f} | |"
            )
    return lines + [""]


def markdown(rows: list[dict], device: str, meta: dict, gathers: list[dict] | None = None) -> str:
    lines = [f"# Lookup matmul benchmark ({device})", "", ", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    if gathers:
        lines += gathers_markdown(gathers)
    lines += fused_markdown([r for r in rows if r["phase"] == "fused"], device)
    rows = [r for r in rows if r["phase"] != "fused"]
    if device == "cuda":
        lines += [
            "| phase | config | layer | out x in | M | impl | cuBLAS fp16 µs flushed / warm | decode+matmul µs warm "
            "| lookup µs flushed / warm | speedup flushed / warm | lookup GB/s flushed (% peak) | rel. err |",
            "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            graph = "" if r["vq_warm_method"] == "graph" and r["cublas_warm_method"] == "graph" else " (events)"
            lines.append(
                f"| {r['phase']} | {r['config']} | {r['layer']} | {r['out_features']}x{r['in_features']} | {r['M']} "
                f"| {r['impl']} | {r['cublas_us_flushed']:.1f} / {r['cublas_us_warm']:.1f} "
                f"| {r['decode_matmul_us_warm']:.1f} | {r['vq_us_flushed']:.1f} / {r['vq_us_warm']:.1f}{graph} "
                f"| {r['speedup_flushed']:.2f}x / {r['speedup_warm']:.2f}x "
                f"| {r['vq_gbs_flushed']:.0f} ({100 * r['vq_frac_peak']:.0f}%) | {r['rel_err']:.1e} |"
            )
    else:
        lines += [
            "| config | layer | out x in | M | dense fp32 matmul µs | CPU path µs | speedup "
            "| weight MB dense / codes+scales | rel. err |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['config']} | {r['layer']} | {r['out_features']}x{r['in_features']} | {r['M']} "
                f"| {r['dense_us']:.0f} | {r['vq_us']:.0f} | {r['speedup']:.2f}x "
                f"| {r['dense_weight_bytes'] / 2**20:.1f} / {r['vq_bytes'] / 2**20:.2f} | {r['rel_err']:.1e} |"
            )
    return "\n".join(lines) + "\n"


def describe(entry: dict) -> str:
    if entry["phase"] == "gathers":
        return f"gathers {entry['path']} table_rows={entry['table_rows']}"
    return (
        f"{entry['phase']} {entry['layer']} {entry['out_features']}x{entry['in_features']} {entry['config']} "
        f"M={entry['M']} impl={entry['impl'] or 'dispatch'}"
    )


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--phases", default=None, help=f"comma-separated, run in this order: {', '.join(PHASES)}")
    p.add_argument(
        "--shapes",
        default=None,
        help="without --phases: zoo, llm or zoo,llm (default: zoo,llm on cuda; zoo + the first three LLM shapes on cpu)",
    )
    p.add_argument("--batches", default=None, help=f"comma-separated M (default cuda {GPU_BATCHES}, cpu {CPU_BATCHES})")
    p.add_argument("--configs", default=",".join(CONFIGS), help="codebook configs: " + ", ".join(CONFIGS))
    p.add_argument("--reps", type=int, default=None, help="cpu: timed calls per measurement (default 3)")
    p.add_argument("--rep-ms", type=float, default=40.0, help="cuda: do_bench's rep (ms) per measurement")
    p.add_argument("--warmup-ms", type=float, default=10.0, help="cuda: do_bench's warmup (ms) per measurement")
    p.add_argument(
        "--graph-rep-ms", type=float, default=20.0, help="cuda: do_bench_cudagraph's rep (ms): calls per graph"
    )
    p.add_argument("--all-impls", action="store_true", help="without --phases: a row for every applicable impl on cuda")
    p.add_argument("--time-cap", type=float, default=300.0, help="seconds; the run stops (and says so) once exceeded")
    p.add_argument("--gather-cap", type=float, default=25.0, help="seconds for the gathers phase")
    p.add_argument("--hbm-peak-gbs", type=float, default=4800.0, help="HBM peak for the %% column (H200: 4800)")
    p.add_argument("--threads", type=int, default=None, help="cpu: torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="two tiny shapes, M in {1, 16}, 1 rep: a smoke test")
    p.add_argument("--note", default=None, help="a line recorded with the results (e.g. what else ran on the machine)")
    p.add_argument("--out", default=None, help="folder (default benches/results/bench_kernels_<device>)")
    p.add_argument("--append", action="store_true", help="continue bench_kernels.json/.md in --out (a later phase)")
    p.add_argument("--plan", action="store_true", help="print the measurements in run order (JSON lines) and exit")
    args = p.parse_args(argv)

    phases = [ph for ph in args.phases.split(",") if ph] if args.phases else None
    for ph in phases or []:
        if ph not in PHASES:
            print(f"bench_kernels: unknown phase '{ph}', choose from {', '.join(PHASES)}", file=sys.stderr)
            return 2
    for c in [c for c in args.configs.split(",") if c]:
        if c not in CONFIGS:
            print(f"bench_kernels: unknown config '{c}', choose from {', '.join(CONFIGS)}", file=sys.stderr)
            return 2
    if args.plan:  # no device touched: what a run would measure, in order
        device = args.device or "cuda"
        for entry in plan(device, phases, args):
            print(json.dumps(entry), flush=True)
        return 0

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device == "cuda" and not torch.cuda.is_available():
        print("bench_kernels: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    if device == "cpu" and phases and "gathers" in phases:
        print("bench_kernels: the gathers phase needs --device cuda", file=sys.stderr)
        return 2
    entries = plan(device, phases, args)
    reps = 1 if args.quick else (args.reps or 3)
    out = Path(args.out or f"benches/results/bench_kernels_{device}")
    out.mkdir(parents=True, exist_ok=True)

    meta = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "x dtype": "float16" if device == "cuda" else "float32",
        "codebook": "int8 + float32 scale, random codes",
    }
    if device == "cuda":
        import triton

        meta.update(
            {
                "triton": triton.__version__,
                "SMs": torch.cuda.get_device_properties(0).multi_processor_count,
                "HBM peak GB/s": args.hbm_peak_gbs,
                "timing": f"flushed: do_bench median (warmup {args.warmup_ms} ms, rep {args.rep_ms} ms, L2 "
                f"overwritten per call); warm: CUDA-graph replay median of back-to-back calls ({args.graph_rep_ms} ms "
                "of calls per graph)",
            }
        )
    else:
        meta["reps"] = reps
        meta["load average at start"] = round(os.getloadavg()[0], 1)  # other processes: the main noise
    if args.note:
        meta["note"] = args.note
    rows: list[dict] = []
    gathers: list[dict] = []
    runs: list[dict] = []
    if args.append and (out / "bench_kernels.json").exists():
        old = json.loads((out / "bench_kernels.json").read_text())
        rows, gathers, runs = old.get("rows", []), old.get("gathers", []), old.get("runs", [])
    run_phases = ["quick", *(phases or [])] if args.quick else (phases or ["sweep"])
    run_info = {"phases": run_phases, "started": time.strftime("%H:%M:%S")}
    runs.append(run_info)
    start = time.perf_counter()

    def write() -> str:
        """Rewrite both files after every measurement: a run cut short keeps its rows."""
        run_info["seconds"] = round(time.perf_counter() - start, 1)
        if device == "cpu":
            meta["load average now"] = round(os.getloadavg()[0], 1)
        md = markdown(rows, device, meta, gathers)
        if runs:
            md += "\nRuns: " + "; ".join(
                f"{', '.join(r['phases'])} at {r['started']} ({r.get('seconds', 0)} s{', ' + r['stopped'] if r.get('stopped') else ''})"
                for r in runs
            )
            md += "\n"
        atomic_write_bytes(out / "bench_kernels.md", md.encode())
        body = {"meta": meta, "runs": runs, "gathers": gathers, "rows": rows}
        atomic_write_bytes(out / "bench_kernels.json", json.dumps(body, indent=1).encode())
        return md

    write()
    flush_timing = (args.warmup_ms, args.rep_ms, args.graph_rep_ms)
    table = None
    current = None  # (layer, out, in, config) whose operands are built
    shape_ops = None
    gather_start = None
    for entry in entries:
        if time.perf_counter() - start > args.time_cap:
            run_info["stopped"] = f"time cap {args.time_cap:.0f} s reached: stopped before {describe(entry)}"
            meta["stopped"] = run_info["stopped"]
            break
        if entry["phase"] == "gathers":
            gather_start = gather_start or time.perf_counter()
            if time.perf_counter() - gather_start > args.gather_cap:
                gathers.append({**entry, "error": f"gather cap {args.gather_cap:.0f} s reached"})
                continue
            if table is None:
                rng = np.random.default_rng(1)
                table = torch.from_numpy(rng.integers(-128, 128, max(GATHER_TABLES) * 8, dtype=np.int8)).cuda()
            try:
                gathers.append(gather_row(entry, table, meta["SMs"]))
            except Exception as e:  # one path failing (no cupy, a compile error) must not cost the rest
                _settle()
                gathers.append(
                    {**entry, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
                )
            g = gathers[-1]
            print(f"[bench] {describe(entry)}: {g.get('ggathers_s', g.get('error'))} Ggathers/s", flush=True)
            write()
            continue
        key = (entry["layer"], entry["out_features"], entry["in_features"], entry["config"])
        if key != current:
            shape_ops = None
            if device == "cuda":
                torch.cuda.empty_cache()
            k, d = CONFIGS[entry["config"]]
            codes, codebook, scales, cb_scale = operands(entry["out_features"], entry["in_features"], k, d, device)
            dense = decode(codes, codebook, scales, cb_scale, entry["in_features"])
            if device == "cuda":
                dense = dense.half()
            shape_ops, current = (codes, codebook, scales, cb_scale, dense), key
        if entry["phase"] == "fused":
            rows.append(bench_fused_row(entry, shape_ops, device, flush_timing, reps))
        elif device == "cuda":
            rows.append(bench_cuda_row(entry, shape_ops, flush_timing, args.hbm_peak_gbs))
        else:
            rows.append(bench_cpu_row(entry, shape_ops, reps))
        print(markdown(rows[-1:], device, {}).rstrip().splitlines()[-1], flush=True)
        write()
    print(write())
    return 0


if __name__ == "__main__":
    sys.exit(main())
