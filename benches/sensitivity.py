"""Which layers cost the most at ~2 bits/weight: hard assignment, one group of layers at a time.

    .venv/bin/python benches/sensitivity.py --codebook CB [--networks a,b] [--search hessian]
        [--calibration 256] [--out benches/results/sensitivity]

Per network, every compressible weight is hard-assigned once (`--search`, input statistics from
`--calibration` calibration inputs). The weights are grouped by module name with the block
indices replaced by `#` (EfficientNet-Lite0: `_blocks.#._project_conv`, MiniLM:
`encoder.layer.#.intermediate.dense`), and for each group the task metric is measured twice:
with that group alone coded (the rest FP) and with every weight but that group coded. One
assignment serves every row because the plain, activation-weighted and hessian searches code a
layer from the FP model's own statistics, independently of the other layers (the sequential
search does not, and is refused). Writes sensitivity.md, sensitivity.json and sensitivity.png
under --out; a network already there for the same codebook, search and calibration is kept
(--force re-measures it).
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

from vq4all import api, rules, zoo
from vq4all.artifact import load_codebook
from vq4all.decode import decode_weights
from vq4all.evaluate import task_metric
from vq4all.io import atomic_write_bytes, save_figure

NETWORKS = ("efficientnet_lite0", "minilm_l6")
SEARCHES = tuple(s for s in rules.SEARCHES if s != "sequential")  # layer-independent searches only


def group_of(key: str) -> str:
    """'_blocks.3._depthwise_conv.weight' -> '_blocks.#._depthwise_conv': a numeric part of the
    module path followed by more of it is a block index; a last one ('features.3', a layer of a
    Sequential) names the layer itself and stays."""
    module = key.rsplit(".", 1)[0] if key.endswith(".weight") else key
    return re.sub(r"(?:(?<=\.)|^)\d+(?=\.)", "#", module)


def measure(net, cb, search: str, calibration: int) -> dict:
    """One network's rows: {"groups": [{group, layers, weights, share, alone, all_but}], "all", "fp", ...}."""
    start = time.perf_counter()
    art = api.hard_assign(net, cb, search=search, calibration=calibration, progress=True)
    decoded = decode_weights(art, cb)
    seconds = time.perf_counter() - start
    groups: dict[str, list[str]] = {}
    for key in decoded:
        groups.setdefault(group_of(key), []).append(key)
    total = sum(v.size for v in decoded.values())

    def metric(keys) -> dict:
        result = task_metric(net, {k: decoded[k] for k in keys})
        return {k: float(v) for k, v in result.items() if isinstance(v, float)}

    rows = []
    for group, keys in groups.items():
        others = [k for k in decoded if k not in keys]
        weights = int(sum(decoded[k].size for k in keys))
        rows.append(
            {
                "group": group,
                "layers": len(keys),
                "weights": weights,
                "share": weights / total,
                "alone": metric(keys),
                "all_but": metric(others),
            }
        )
        print(
            f"[sensitivity] {net.name} {group}: alone {rows[-1]['alone']['value']:.4f}, "
            f"all but {rows[-1]['all_but']['value']:.4f}",
            flush=True,
        )
    return {
        "network": net.name,
        "metric": net.metric,
        "higher_is_better": net.higher_is_better,
        "fp": float(net.fp_value),
        "all": metric(list(decoded)),
        "assign_seconds": seconds,
        "groups": rows,
    }


def also(values: dict) -> str:
    """The task's other measures of one cell, short: 'top5 0.475, kl 2.02'."""
    short = {"top5_agreement": "top5", "kl": "kl", "retrieval_top1_agreement": "retrieval"}
    return ", ".join(f"{s} {values[k]:.3g}" for k, s in short.items() if k in values)


def write(out: Path, results: list, cb, search: str, calibration: int) -> None:
    lines = [
        "# Layer sensitivity: hard assignment one group of layers at a time\n",
        f"Universal codebook {cb.sha256[:16]}... (K={cb.k}, d={cb.d}), `{search}` search, input statistics "
        f"from {calibration} calibration inputs, no training; measured on 2 CPU cores. A group: the layers "
        "whose module names differ only in block indices (`#`). *Alone*: only that group coded, the rest FP; "
        "*all but*: every weight coded except that group. "
        f"`.venv/bin/python benches/sensitivity.py --codebook CB --search {search}`\n",
        "![sensitivity](sensitivity.png)\n",
    ]
    for res in results:
        lines += [
            f"## {res['network']} ({res['metric']}{'' if res['higher_is_better'] else ', lower is better'})\n",
            f"FP {res['fp']:.4f}; every weight coded: {res['all']['value']:.4f} ({also(res['all']) or '-'}); "
            f"assignment {res['assign_seconds']:.0f} s.\n",
            "| group | layers | weights | share | alone | also | all but | also |",
            "|---|---:|---:|---:|---:|---|---:|---|",
        ]
        for g in res["groups"]:
            lines.append(
                f"| `{g['group']}` | {g['layers']} | {g['weights']:,} | {g['share']:.1%} | {g['alone']['value']:.4f} "
                f"| {also(g['alone']) or '-'} | {g['all_but']['value']:.4f} | {also(g['all_but']) or '-'} |"
            )
        lines.append("")
    atomic_write_bytes(out / "sensitivity.md", ("\n".join(lines)).encode())
    atomic_write_bytes(out / "sensitivity.json", json.dumps(results, indent=1).encode())
    plot(out, results)


def plot(out: Path, results: list) -> None:
    """One panel per network: the metric with each group alone coded and with all but it coded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1,
        len(results),
        figsize=(6.5 * len(results), 0.5 + 0.42 * max(len(r["groups"]) for r in results)),
        squeeze=False,
    )
    for ax, res in zip(axes[0], results):
        names = [g["group"] for g in res["groups"]]
        y = range(len(names))
        ax.barh([i - 0.2 for i in y], [g["alone"]["value"] for g in res["groups"]], height=0.4, label="alone coded")
        ax.barh(
            [i + 0.2 for i in y], [g["all_but"]["value"] for g in res["groups"]], height=0.4, label="all but it coded"
        )
        ax.axvline(res["fp"], color="k", lw=0.8, ls="--", label="FP")
        ax.axvline(res["all"]["value"], color="r", lw=0.8, ls=":", label="all coded")
        ax.set_yticks(list(y), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(res["metric"])
        ax.set_title(res["network"], fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)  # below the panels: no bar hidden
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, out / "sensitivity.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codebook", required=True)
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--search", default="hessian", choices=SEARCHES)
    p.add_argument("--calibration", type=int, default=256)
    p.add_argument("--out", default="benches/results/sensitivity")
    p.add_argument("--force", action="store_true", help="re-measure networks already in --out's JSON")
    args = p.parse_args(argv)
    if not 1 <= args.calibration <= 65536:
        p.error(f"--calibration {args.calibration}: must be an integer in 1..65536")
    cb = load_codebook(args.codebook)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "sensitivity.json"
    same = {"codebook": cb.sha256, "search": args.search, "calibration": args.calibration}
    results = []
    if saved.exists() and not args.force:  # resume: networks measured the same way are kept
        results = [r for r in json.loads(saved.read_text()) if all(r.get(k) == v for k, v in same.items())]
    for name in [n for n in args.networks.split(",") if n]:
        if any(r["network"] == name for r in results):
            continue
        results.append({**measure(zoo.load(name), cb, args.search, args.calibration), **same})
        write(out, results, cb, args.search, args.calibration)
    if results:
        write(out, results, cb, args.search, args.calibration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
