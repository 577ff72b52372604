"""The first quality table: hard assignment at ~2 bits/weight for every zoo network.

    .venv/bin/python benches/quality.py [--networks a,b] [--sources a,b] [--out benches/results/quality]

Methods per network: FP; universal K=2^16, d=8 built without the network (leave-one-out) and
from all sources; universal K=256, d=4; per-layer k-means K=256, d=4 (codebook bits charged);
2-bit per-channel RTN; with --lloyd-iters N, the universal codebook refined by N Lloyd steps.
Columns: bits/weight, weight SQNR, the task metric next to FP.
Writes quality.md, quality.json and quality.png under --out.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from vq4all import zoo
from vq4all.evaluate import plot_sqnr, quality_table, rows_to_json, rows_to_markdown
from vq4all.io import atomic_write_bytes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--networks", default=",".join(zoo.NAMES), help="networks evaluated (default: all)")
    p.add_argument(
        "--sources", default=",".join(zoo.NAMES), help="networks pooled into the universal codebooks (default: all)"
    )
    p.add_argument("--per-network", type=int, default=1 << 18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--lloyd-iters", type=int, default=0, help="add a row: the universal 2^16 codebook refined by N Lloyd steps"
    )
    p.add_argument("--out", default="benches/results/quality")
    args = p.parse_args(argv)
    networks = [n for n in args.networks.split(",") if n]
    sources = [n for n in args.sources.split(",") if n]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows, codebooks = quality_table(
        {name: zoo.load(name) for name in {*networks, *sources}},
        networks,
        sources,
        per_network=args.per_network,
        seed=args.seed,
        lloyd_iters=args.lloyd_iters,
    )
    table = rows_to_markdown(rows)
    seconds = time.perf_counter() - start
    header = (
        f"# Hard-assignment quality at ~2 bits/weight\n\nSources of the universal codebooks: "
        f"{', '.join(sources)}; {args.per_network} sub-vectors pooled per network; seed {args.seed}; "
        f"int8 codewords; per-channel RMS scales. Measured in {seconds:.0f} s.\n\n"
    )
    atomic_write_bytes(out / "quality.md", (header + table + "\n").encode())
    report = {
        "sources": sources,
        "per_network": args.per_network,
        "seed": args.seed,
        "seconds": seconds,
        "codebooks": {
            k: {"k": cb.k, "d": cb.d, "sha256": cb.sha256, "bandwidth_h": cb.manifest["bandwidth_h"]}
            for k, cb in codebooks.items()
        },
        "rows": rows_to_json(rows),
    }
    atomic_write_bytes(out / "quality.json", json.dumps(report, indent=2).encode())
    plot_sqnr(rows, out / "quality.png")
    print(table)
    print(f"\nwrote {out}/quality.md, quality.json, quality.png ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
