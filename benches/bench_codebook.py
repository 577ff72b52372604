"""Benchmark: building the universal codebook, and the nearest-codeword search.

    .venv/bin/python benches/bench_codebook.py [--networks ...] [--queries 262144] [--out benches/results/bench_codebook]

1. Build time of K=2^16, d=8 from the zoo networks (sub-vector extraction and KDE separately).
2. Search rate of `vq4all.search.nearest` (n=1 and n=8) on real sub-vectors against that
   codebook, in GFLOP/s counting 2*N*K*d, as a ratio to plain `torch.mm` of the same shapes
   measured in the same run at its fastest block height (goal: >= 0.5). torch threads: whatever torch uses here.
Prints a markdown table and writes it with JSON under --out.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vq4all import zoo
from vq4all.codebook import build_from_subvectors, network_subvectors
from vq4all.config import CodebookConfig
from vq4all.io import atomic_write_bytes
from vq4all.search import nearest


def best_of(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--networks", default=",".join(zoo.NAMES))
    p.add_argument("--queries", type=int, default=1 << 18, help="real sub-vectors searched")
    p.add_argument("--out", default="benches/results/bench_codebook")
    args = p.parse_args(argv)
    names = [n for n in args.networks.split(",") if n]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    subvectors = {n: network_subvectors(zoo.load(n).compressible(), 8, "channel") for n in names}
    t_extract = time.perf_counter() - start
    config = CodebookConfig(networks=tuple(names), k=1 << 16, d=8)
    start = time.perf_counter()
    cb = build_from_subvectors(subvectors, config)
    t_kde = time.perf_counter() - start

    rng = np.random.default_rng(0)
    allsv = np.concatenate(list(subvectors.values()))
    x = torch.from_numpy(allsv[rng.choice(allsv.shape[0], min(args.queries, allsv.shape[0]), replace=False)])
    c = torch.from_numpy(cb.values())
    n_q, k, d = x.shape[0], c.shape[0], c.shape[1]
    flops = 2.0 * n_q * k * d
    # The reference GEMM: torch.mm of the same shapes in row blocks, at the fastest of several
    # block heights (small blocks keep the output in cache and run several times faster here).
    mm_rows = []
    for block in (16, 64, 256, 4096):
        buf = torch.empty(block, k)

        def plain_mm(block=block, buf=buf):
            for r in range(0, n_q, block):
                xb = x[r : r + block]
                torch.mm(xb, c.T, out=buf[: xb.shape[0]])

        t = best_of(plain_mm)
        mm_rows.append({"what": f"torch.mm, {block}-row blocks", "seconds": t, "gflops": flops / t / 1e9})
    t_mm = min(r["seconds"] for r in mm_rows)
    for r in mm_rows:
        r["ratio_to_mm"] = t_mm / r["seconds"]
    rows = list(mm_rows)
    for n in (1, 8):
        t = best_of(lambda n=n: nearest(x, c, n, device="cpu"))
        rows.append({"what": f"nearest, n={n}", "seconds": t, "gflops": flops / t / 1e9, "ratio_to_mm": t_mm / t})
    report = {
        "threads": torch.get_num_threads(),
        "queries": n_q,
        "k": k,
        "d": d,
        "build": {
            "networks": names,
            "extract_seconds": t_extract,
            "kde_seconds": t_kde,
            "pooled": cb.manifest["pooled_subvectors"],
            "total_seconds": t_extract + t_kde,
        },
        "search": rows,
    }
    lines = [
        f"# Codebook build and nearest search ({torch.get_num_threads()} torch threads)",
        "",
        f"Build K=65536, d=8 from {len(names)} networks: sub-vector extraction {t_extract:.1f} s, "
        f"pooling + KDE sampling + int8 {t_kde:.1f} s ({cb.manifest['pooled_subvectors']:,} pooled sub-vectors).",
        "",
        f"Search: {n_q:,} real sub-vectors against K={k}, d={d}.",
        "",
        "| what | seconds | GFLOP/s (2NKd) | ratio to the fastest torch.mm |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['what']} | {r['seconds']:.2f} | {r['gflops']:.1f} | {r['ratio_to_mm']:.2f} |" for r in rows]
    text = "\n".join(lines)
    atomic_write_bytes(out / "bench_codebook.md", (text + "\n").encode())
    atomic_write_bytes(out / "bench_codebook.json", json.dumps(report, indent=2).encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
