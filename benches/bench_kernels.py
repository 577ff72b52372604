"""Benchmark: lookup matmul y = x @ decode(codes, codebook, scales)^T against dense matmul.

    .venv/bin/python benches/bench_kernels.py                  # CUDA when present, else CPU
    .venv/bin/python benches/bench_kernels.py --device cpu     # the CPU path vs dense torch.matmul fp32
    .venv/bin/python benches/bench_kernels.py --quick --out /tmp/b   # a few tiny rows (smoke test)

Shapes (out_features x in_features): real zoo layers (MiniLM FFN, EfficientNet-Lite0
classifier, CREPE-full conv2 as im2col rows) and LLM-sized ones (4096 -> 4096, 4096 -> 11008,
11008 -> 4096, 8192 -> 28672); M in {1, 4, 16, 64, 256, 1024}; both codebook configs, 2^16 x 8
(uint16 codes) and 256 x 4 (uint8 codes), int8 with a float32 scale; random codes and x.

CUDA: x float16. Columns: cuBLAS fp16 (`torch.matmul` with a dense fp16 weight), decode-then-matmul
(impl='torch'), the lookup kernel the dispatch table picks; each timed with CUDA events, median
of --reps calls, "warm" (calls back to back: codes and weight may sit in the 60 MiB L2) and
"flushed" (a 256 MiB buffer written before every call, so operands come from HBM). Speedup =
cuBLAS time / lookup time. GB/s counts the bytes that must cross HBM once (codes + scales + x + y
for the lookup, weight + x + y for cuBLAS; the codebook counts as L2-resident), reported against
--hbm-peak-gbs (H200: 4800).
CPU: x float32; dense `torch.matmul` with the decoded float32 weight against the CPU path
(impl='torch': decode in row blocks, then matmul); wall-clock median of --reps calls.
Rel. err: max |y - y_dense| / max |y_dense| against the dense product of the same decoded
weight (a sanity check; correctness proper is tests/test_kernels.py).
Prints a markdown table and writes it with JSON under --out. Timings are never asserted.
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
CONFIGS = {"2^16x8": (1 << 16, 8), "256x4": (256, 4)}
GPU_BATCHES = (1, 4, 16, 64, 256, 1024)
CPU_BATCHES = (1, 16, 256)
FLUSH_BYTES = 256 << 20  # > 4x the H200's 60 MiB L2


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


def time_cuda(fn, reps: int, flush: torch.Tensor | None = None) -> float:
    """Median microseconds of `fn()` by CUDA events; with `flush`, the buffer is written before
    each call (outside the timed interval) so the call finds a cold L2."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        if flush is not None:
            flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


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


def bench_cuda_row(label, config, shape_ops, batch, reps, flush, peak_gbs, impl=None) -> dict:
    codes, codebook, scales, cb_scale, dense = shape_ops
    out_features, in_features = dense.shape
    x = torch.randn(batch, in_features, device="cuda", dtype=torch.float16)
    chosen = impl or choose_impl(x.device, batch)
    vq = lambda: lookup_matmul(x, codes, codebook, scales, codebook_scale=cb_scale, impl=chosen)  # noqa: E731
    dec = lambda: lookup_matmul(x, codes, codebook, scales, codebook_scale=cb_scale, impl="torch")  # noqa: E731
    cublas = lambda: torch.matmul(x, dense.T)  # noqa: E731
    io = 2 * batch * (in_features + out_features)
    vq_bytes = codes.numel() * codes.element_size() + 2 * out_features + io
    dense_bytes = dense.numel() * 2 + io
    row = {
        "config": config,
        "layer": label,
        "out_features": out_features,
        "in_features": in_features,
        "M": batch,
        "impl": chosen,
        "cublas_us_warm": time_cuda(cublas, reps),
        "cublas_us_flushed": time_cuda(cublas, reps, flush),
        "decode_matmul_us_warm": time_cuda(dec, reps),
        "vq_us_warm": time_cuda(vq, reps),
        "vq_us_flushed": time_cuda(vq, reps, flush),
        "vq_bytes": vq_bytes,
        "dense_bytes": dense_bytes,
        "rel_err": rel_err(vq(), dec()),
    }
    row["speedup_warm"] = row["cublas_us_warm"] / row["vq_us_warm"]
    row["speedup_flushed"] = row["cublas_us_flushed"] / row["vq_us_flushed"]
    row["vq_gbs_flushed"] = vq_bytes / row["vq_us_flushed"] / 1e3
    row["cublas_gbs_flushed"] = dense_bytes / row["cublas_us_flushed"] / 1e3
    row["vq_frac_peak"] = row["vq_gbs_flushed"] / peak_gbs
    return row


def bench_cpu_row(label, config, shape_ops, batch, reps) -> dict:
    codes, codebook, scales, cb_scale, dense = shape_ops
    out_features, in_features = dense.shape
    x = torch.randn(batch, in_features)
    vq = lambda: lookup_matmul(x, codes, codebook, scales, codebook_scale=cb_scale, impl="torch")  # noqa: E731
    matmul = lambda: torch.matmul(x, dense.T)  # noqa: E731
    row = {
        "config": config,
        "layer": label,
        "out_features": out_features,
        "in_features": in_features,
        "M": batch,
        "impl": "torch",
        "dense_us": time_cpu(matmul, reps),
        "vq_us": time_cpu(vq, reps),
        "dense_weight_bytes": dense.numel() * 4,
        "vq_bytes": codes.numel() * codes.element_size() + 2 * out_features,
        "rel_err": rel_err(vq(), matmul()),
    }
    row["speedup"] = row["dense_us"] / row["vq_us"]
    return row


def markdown(rows: list[dict], device: str, meta: dict) -> str:
    lines = [f"# Lookup matmul benchmark ({device})", "", ", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    if device == "cuda":
        lines += [
            "| config | layer | out x in | M | impl | cuBLAS fp16 µs warm / flushed | decode+matmul µs warm "
            "| lookup µs warm / flushed | speedup warm / flushed | lookup GB/s flushed (% peak) | rel. err |",
            "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['config']} | {r['layer']} | {r['out_features']}x{r['in_features']} | {r['M']} | {r['impl']} "
                f"| {r['cublas_us_warm']:.1f} / {r['cublas_us_flushed']:.1f} | {r['decode_matmul_us_warm']:.1f} "
                f"| {r['vq_us_warm']:.1f} / {r['vq_us_flushed']:.1f} | {r['speedup_warm']:.2f}x / {r['speedup_flushed']:.2f}x "
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument(
        "--shapes",
        default=None,
        help="zoo, llm or zoo,llm (default: zoo,llm on cuda; zoo + the first three LLM shapes on cpu)",
    )
    p.add_argument("--batches", default=None, help=f"comma-separated M (default cuda {GPU_BATCHES}, cpu {CPU_BATCHES})")
    p.add_argument("--configs", default=",".join(CONFIGS), help="codebook configs: " + ", ".join(CONFIGS))
    p.add_argument("--reps", type=int, default=None, help="timed calls per measurement (default cuda 20, cpu 3)")
    p.add_argument(
        "--all-impls", action="store_true", help="cuda: a row for every applicable impl, not only the dispatched one"
    )
    p.add_argument("--time-cap", type=float, default=300.0, help="seconds; the sweep stops (and says so) once exceeded")
    p.add_argument("--hbm-peak-gbs", type=float, default=4800.0, help="HBM peak for the %% column (H200: 4800)")
    p.add_argument("--threads", type=int, default=None, help="cpu: torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="two tiny shapes, M in {1, 16}, 1 rep: a smoke test")
    p.add_argument("--note", default=None, help="a line recorded with the results (e.g. what else ran on the machine)")
    p.add_argument("--out", default=None, help="folder (default benches/results/bench_kernels_<device>)")
    args = p.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device == "cuda" and not torch.cuda.is_available():
        print("bench_kernels: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.quick:
        shapes, batches, reps = [("tiny", 64, 100), ("tiny ragged", 48, 37)], (1, 16), 1
    else:
        want = (args.shapes or "zoo,llm").split(",")
        shapes = (ZOO_SHAPES if "zoo" in want else []) + (LLM_SHAPES if "llm" in want else [])
        if device == "cpu" and args.shapes is None:
            shapes = ZOO_SHAPES + LLM_SHAPES[:3]  # 8192x28672 in fp32 is 940 MB of dense weight
        batches = (
            tuple(int(b) for b in args.batches.split(","))
            if args.batches
            else (GPU_BATCHES if device == "cuda" else CPU_BATCHES)
        )
        reps = args.reps or (20 if device == "cuda" else 3)
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            print(f"bench_kernels: unknown config '{c}', choose from {', '.join(CONFIGS)}", file=sys.stderr)
            return 2
    out = Path(args.out or f"benches/results/bench_kernels_{device}")
    out.mkdir(parents=True, exist_ok=True)

    meta = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "x dtype": "float16" if device == "cuda" else "float32",
        "reps": reps,
        "codebook": "int8 + float32 scale, random codes",
    }
    if args.note:
        meta["note"] = args.note
    if device == "cpu":  # other processes' load is the main source of noise on a shared CPU
        meta["load average at start"] = round(os.getloadavg()[0], 1)
    if device == "cuda":
        import triton

        meta.update(
            {
                "triton": triton.__version__,
                "HBM peak GB/s": args.hbm_peak_gbs,
                "L2": "warm = back-to-back calls; flushed = 256 MiB written before each call",
            }
        )
    flush = torch.empty(FLUSH_BYTES // 4, device="cuda") if device == "cuda" else None
    rows, start, stopped = [], time.perf_counter(), None

    def write() -> str:
        """Rewrite the table after every row: a run cut short by an outer timeout keeps its rows."""
        meta["seconds"] = round(time.perf_counter() - start, 1)
        if device == "cpu":
            meta["load average now"] = round(os.getloadavg()[0], 1)
        if stopped:
            meta["stopped"] = stopped
        md = markdown(rows, device, meta)
        atomic_write_bytes(out / "bench_kernels.md", md.encode())
        atomic_write_bytes(out / "bench_kernels.json", json.dumps({"meta": meta, "rows": rows}, indent=1).encode())
        return md

    # shape-major order: a time cap cuts whole shapes, never one codebook config of a shape
    for label, out_features, in_features in shapes:
        for config in configs:
            k, d = CONFIGS[config]
            codes, codebook, scales, cb_scale = operands(out_features, in_features, k, d, device)
            dense = decode(codes, codebook, scales, cb_scale, in_features)
            if device == "cuda":
                dense = dense.half()
            shape_ops = (codes, codebook, scales, cb_scale, dense)
            for batch in batches:
                if time.perf_counter() - start > args.time_cap:
                    stopped = f"time cap {args.time_cap:.0f} s reached: stopped before {label} {config} M={batch}"
                    break
                if device == "cuda":
                    impls = [None]
                    if args.all_impls:
                        impls = (["triton_gemv"] if batch <= 4 else []) + ["triton_gemm", "torch"]
                    for impl in impls:
                        rows.append(
                            bench_cuda_row(label, config, shape_ops, batch, reps, flush, args.hbm_peak_gbs, impl)
                        )
                else:
                    rows.append(bench_cpu_row(label, config, shape_ops, batch, reps))
                print(markdown(rows[-1:], device, {}).splitlines()[-1], flush=True)
                write()
            del shape_ops, dense
            if stopped:
                break
        if stopped:
            break
    print(write())
    return 0


if __name__ == "__main__":
    sys.exit(main())
