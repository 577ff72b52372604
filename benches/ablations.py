"""Ablations of the compression settings on two networks (digits_cnn and a real pretrained one).

    .venv/bin/python benches/ablations.py [--networks digits_cnn,crepe_tiny] [--out benches/results/ablations]

One setting varies at a time around the defaults (CompressConfig): alpha in {0.9, 0.95, 0.99,
0.999}, n in {1, 2, 4, 8, 16}, initial ratios equal vs inverse-distance, and the ratio
regulariser's weight in {0, 0.1, 1} with and without PNC. The universal codebook is
2^16 x 8 from every zoo network. Reports the task metric, steps used, how many sub-vectors PNC
froze and how many were forced, and wall time; writes ablations.md/.json and ablations.png.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from vq4all import zoo
from vq4all.codebook import build_from_subvectors, network_subvectors
from vq4all.config import CodebookConfig, CompressConfig
from vq4all.evaluate import evaluate_artifact
from vq4all.io import atomic_write_bytes, save_figure
from vq4all.train import compress

SWEEPS = {
    "alpha": [0.9, 0.95, 0.99, 0.999],
    "n": [1, 2, 4, 8, 16],
    "init": ["equal", "inverse_distance"],
    "reg": [0.0, 0.1, 1.0],
    "reg_no_pnc": [0.0, 0.1, 1.0],
}


def overrides(setting: str, value) -> dict:
    """The CompressConfig fields one point of a sweep changes."""
    if setting == "reg_no_pnc":
        return {"reg": value, "pnc": False}
    return {setting: value}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--networks", default="digits_cnn,crepe_tiny")
    p.add_argument("--steps", type=int, default=CompressConfig().steps)
    p.add_argument("--sweeps", default=",".join(SWEEPS), help=f"which sweeps (default all: {', '.join(SWEEPS)})")
    p.add_argument("--out", default="benches/results/ablations")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sub8 = {n: network_subvectors(zoo.load(n).compressible(), 8, "channel") for n in zoo.NAMES}
    codebook = build_from_subvectors(sub8, CodebookConfig(networks=zoo.NAMES))
    base = CompressConfig(steps=args.steps)
    rows = []
    for name in [n for n in args.networks.split(",") if n]:
        net = zoo.load(name)
        for setting, values in SWEEPS.items():
            if setting not in args.sweeps.split(","):
                continue
            for value in values:
                config = CompressConfig.from_dict({**base.to_dict(), **overrides(setting, value)})
                start = time.perf_counter()
                result = compress(net, codebook, config)
                info = evaluate_artifact(net, result.artifact, codebook)
                r = {
                    "network": name,
                    "setting": setting,
                    "value_of_setting": value,
                    "metric": net.metric,
                    "value": info["value"],
                    "fp_value": net.fp_value,
                    "steps": result.report["steps"],
                    "frozen_by_pnc": result.report["frozen_by_pnc"],
                    "forced": result.report["forced"],
                    "seconds": time.perf_counter() - start,
                }
                rows.append(r)
                print(
                    f"[ablation] {name:<12} {setting}={value!s:<17} {net.metric} {r['value']:.4f} (FP {net.fp_value:.4f}) "
                    f"steps {r['steps']} frozen {r['frozen_by_pnc']} forced {r['forced']} {r['seconds']:.0f} s",
                    flush=True,
                )
    lines = [
        "| network | setting | value | metric | result | FP | steps | frozen by PNC | forced | seconds |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['network']} | {r['setting']} | {r['value_of_setting']} | {r['metric']} | {r['value']:.4f} | {r['fp_value']:.4f} "
        f"| {r['steps']} | {r['frozen_by_pnc']} | {r['forced']} | {r['seconds']:.0f} |"
        for r in rows
    ]
    header = (
        f"# Ablations\n\nAround the defaults ({base.steps} steps, n={base.n}, alpha={base.alpha}, init={base.init}, "
        f"reg={base.reg}); universal codebook 2^16 x 8 from all zoo networks.\n\n![ablations](ablations.png)\n\n"
    )
    atomic_write_bytes(out / "ablations.md", (header + "\n".join(lines) + "\n").encode())
    atomic_write_bytes(out / "ablations.json", json.dumps(rows, indent=2).encode())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(r["network"] for r in rows))
    swept = list(dict.fromkeys(r["setting"] for r in rows))
    fig, axes = plt.subplots(len(nets), len(swept), figsize=(4 * len(swept), 3 * len(nets)), squeeze=False)
    for i, name in enumerate(nets):
        for j, setting in enumerate(swept):
            pts = [r for r in rows if r["network"] == name and r["setting"] == setting]
            ax = axes[i][j]
            ax.plot([str(r["value_of_setting"]) for r in pts], [r["value"] for r in pts], "o-")
            ax.axhline(pts[0]["fp_value"], color="k", ls="--", lw=0.8, label="FP")
            ax.set_title(f"{name}: {setting}", fontsize=9)
            ax.set_ylabel(pts[0]["metric"], fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "ablations.png", dpi=110)
    plt.close(fig)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
