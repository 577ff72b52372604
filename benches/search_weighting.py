"""Hard assignment by the plain and by the activation-weighted distance, side by side.

    .venv/bin/python benches/search_weighting.py --codebook CB [--networks a,b] [--calibration 256]
        [--out benches/results/search_weighting]

Per network: every compressible weight takes its nearest codeword of the universal codebook
(no training), ranked by the squared distance (`plain`, the paper's) or by the distance weighted
by the mean square of each row position's input on `--calibration` calibration inputs
(`activations`, `vq4all.importance`); the task metric of both next to FP, and the seconds each
took (the weighted one includes its pass over the calibration data). Writes
search_weighting.md and .json under --out.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from vq4all import api, zoo
from vq4all.artifact import load_codebook
from vq4all.evaluate import evaluate_artifact
from vq4all.io import atomic_write_bytes

NETWORKS = ("digits_cnn", "mtcnn_pnet", "crepe_tiny", "efficientnet_lite0", "minilm_l6")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codebook", required=True)
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--calibration", type=int, default=256)
    p.add_argument("--out", default="benches/results/search_weighting")
    args = p.parse_args(argv)
    cb = load_codebook(args.codebook)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in [n for n in args.networks.split(",") if n]:
        net = zoo.load(name)
        for search in ("plain", "activations"):
            start = time.perf_counter()
            art = api.hard_assign(net, cb, search=search, calibration=args.calibration, progress=True)
            seconds = time.perf_counter() - start
            result = evaluate_artifact(net, art, cb)
            extras = {k: v for k, v in result.items() if isinstance(v, float) and k not in ("value", "fp_value")}
            rows.append(
                {
                    "network": name,
                    "search": search,
                    "metric": result["metric"],
                    "value": result["value"],
                    "fp_value": net.fp_value,
                    "bits_per_weight": result["bits_per_weight"],
                    "seconds": seconds,
                    "extras": extras,
                }
            )
            print(f"[search_weighting] {name} {search}: {result['metric']} {result['value']:.4f}", flush=True)
            write(out, rows, cb, args.calibration)
    return 0


def write(out: Path, rows: list, cb, calibration: int) -> None:
    lines = [
        "# Hard assignment: plain vs activation-weighted nearest codewords\n",
        f"Universal codebook {cb.sha256[:16]}... (K={cb.k}, d={cb.d}); no training; activation statistics from "
        f"{calibration} calibration inputs of each network (`vq4all.importance`). "
        "`.venv/bin/python benches/search_weighting.py --codebook CB`\n",
        "| network | search | metric | value | FP | bits/weight | seconds |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['search']} | {r['metric']} | {r['value']:.4f} | {r['fp_value']:.4f} | "
            f"{r['bits_per_weight']:.3f} | {r['seconds']:.0f} |"
        )
    atomic_write_bytes(out / "search_weighting.md", ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(out / "search_weighting.json", json.dumps(rows, indent=1, default=float).encode())


if __name__ == "__main__":
    sys.exit(main())
