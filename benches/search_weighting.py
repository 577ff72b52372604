"""Hard assignment by each candidate search (plain, activation-weighted, hessian), side by side.

    .venv/bin/python benches/search_weighting.py --codebook CB [--networks a,b] [--calibration 256]
        [--searches plain,activations,hessian] [--out benches/results/search_weighting]

Per network: every compressible weight takes its nearest codeword of the universal codebook
(no training), ranked by the squared distance (`plain`, the paper's), by the distance weighted
by the mean square of each row position's input (`activations`, `vq4all.importance`), or under
the layer's input second moments with each row coded left to right and the rest of the row
absorbing each sub-vector's error (`hessian`, `vq4all.hessian`); statistics from `--calibration`
calibration inputs. The task metric of each next to FP, its other measures, and the seconds each
took (including the pass over the calibration data). Writes search_weighting.md and .json under
--out; rows already there for the same codebook are kept (--force re-measures them).
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
from vq4all.rules import SEARCHES

NETWORKS = ("digits_cnn", "mtcnn_pnet", "crepe_tiny", "efficientnet_lite0", "minilm_l6")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codebook", required=True)
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--calibration", type=int, default=256)
    p.add_argument("--searches", default="plain,activations,hessian")
    p.add_argument("--out", default="benches/results/search_weighting")
    p.add_argument("--force", action="store_true", help="re-measure rows already in --out's JSON")
    args = p.parse_args(argv)
    cb = load_codebook(args.codebook)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    saved = out / "search_weighting.json"
    if saved.exists() and not args.force:  # resume: rows of the same codebook are kept
        rows = [r for r in json.loads(saved.read_text()) if r.get("codebook", cb.sha256) == cb.sha256]
    for name in [n for n in args.networks.split(",") if n]:
        net = zoo.load(name)
        for search in [s for s in args.searches.split(",") if s]:
            if any(r["network"] == name and r["search"] == search for r in rows):
                continue
            start = time.perf_counter()
            art = api.hard_assign(net, cb, search=search, calibration=args.calibration, progress=True)
            seconds = time.perf_counter() - start
            result = evaluate_artifact(net, art, cb)
            extras = {k: v for k, v in result.items() if isinstance(v, float) and k not in ("value", "fp_value")}
            rows.append(
                {
                    "network": name,
                    "search": search,
                    "codebook": cb.sha256,
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
    write(out, rows, cb, args.calibration)
    return 0


def write(out: Path, rows: list, cb, calibration: int) -> None:
    lines = [
        "# Hard assignment by candidate search: plain, activation-weighted, hessian\n",
        f"Universal codebook {cb.sha256[:16]}... (K={cb.k}, d={cb.d}); no training; input statistics from "
        f"{calibration} calibration inputs of each network (`vq4all.importance`, `vq4all.hessian`); "
        "measured on 2 CPU cores. `.venv/bin/python benches/search_weighting.py --codebook CB`\n",
        "| network | search | metric | value | FP | also | bits/weight | seconds |",
        "|---|---|---|---:|---:|---|---:|---:|",
    ]
    networks = list(dict.fromkeys(r["network"] for r in rows))  # first-measured order
    order = {s: i for i, s in enumerate(SEARCHES)}
    for r in sorted(rows, key=lambda r: (networks.index(r["network"]), order.get(r["search"], len(order)))):
        lines.append(
            f"| {r['network']} | {r['search']} | {r['metric']} | {r['value']:.4f} | {r['fp_value']:.4f} | "
            f"{also(r.get('extras', {}))} | {r['bits_per_weight']:.3f} | {r['seconds']:.0f} |"
        )
    atomic_write_bytes(out / "search_weighting.md", ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(out / "search_weighting.json", json.dumps(rows, indent=1, default=float).encode())


def also(extras: dict) -> str:
    """The task's other measures, e.g. "top5_agreement 0.188, kl 2.68"."""
    sizes = ("bits_per_weight", "compression_ratio", "compression_ratio_with_codebook", "n", "fp_value")
    shown = {k: v for k, v in extras.items() if k not in sizes}
    return ", ".join(f"{k} {v:.3g}" for k, v in shown.items()) or "-"


if __name__ == "__main__":
    sys.exit(main())
