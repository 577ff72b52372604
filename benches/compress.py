"""The compression results table: every method at ~2 bits/weight on each zoo network.

    .venv/bin/python benches/compress.py [--networks a,b] [--steps 300] [--out benches/results/compress]

Per network: FP; 2-bit RTN; per-layer k-means 256x4 fine-tuned with the same distillation budget
(PQF-style, codebooks charged); universal 2^16x8 hard assignment; vq4all (universal 2^16x8,
PNC); vq4all without PNC; vq4all on the codebook built without the network (leave-one-out);
vq4all on a universal 256x4 codebook. Columns: task metric, its ratio to FP, bits/weight, the
compression ratio without and with the codebook, wall time.

Long: each row is written to OUT/rows/<network>.partial.json as soon as it is measured, and a
network's rows to OUT/rows/<network>.json when all are; a rerun skips networks already there
(--force re-measures) and, inside a network, the methods already measured with the same
configuration, so an interrupted run resumes at its next method. Until then the table shows the
rows that network has so far, marked * (`--networks ""` rewrites the table and plots alone).
Writes compress.md, compress.json and the plots max_ratios.png (largest ratios at the end of
training with and without PNC), codewords.png (distinct codewords per layer), pareto.png
(metric vs compression ratio).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vq4all import zoo
from vq4all.blockwise import uses_blockwise
from vq4all.codebook import build_from_subvectors, network_subvectors
from vq4all.config import CodebookConfig, CompressConfig
from vq4all.evaluate import evaluate_artifact, evaluate_baseline, numpy_weights, task_metric
from vq4all.hard import hard_assign
from vq4all.io import atomic_write_bytes, save_figure
from vq4all.pqf import finetune_kmeans
from vq4all.train import compress

#: task extras shown beside the metric (those a network reports)
EXTRAS = ("top5_agreement", "kl", "retrieval_top1_agreement", "retrieval_recall_at_5", "raw_pitch_accuracy")


def row(net, method, info, seconds, **extra):
    value = float(info["value"])
    return {
        "network": net.name,
        "method": method,
        "metric": net.metric,
        "higher_is_better": net.higher_is_better,
        "value": value,
        "fp_value": net.fp_value,
        "ratio_to_fp": value / net.fp_value if net.fp_value else None,
        "bits_per_weight": info["bits_per_weight"],
        "compression_ratio": info["compression_ratio"],
        "compression_ratio_with_codebook": info["compression_ratio_with_codebook"],
        "seconds": seconds,
        "extras": {k: float(info[k]) for k in EXTRAS if k in info},
        **extra,
    }


def settings_of(cfg: CompressConfig) -> str:
    """The fields of `cfg` that differ from CompressConfig's defaults (steps and pnc have columns)."""
    default = CompressConfig().to_dict()
    return ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items() if k not in ("steps", "pnc") and v != default[k])


def measure(name, codebooks, sources_sub8, config, baseline_config, per_network, log, partial: Path):
    """Every method's row for one network. Each finished row (and what the plots need of it) is
    written to `partial` at once, and a rerun takes the rows already there, so a run interrupted
    in the middle of a large network resumes at its next method. `config` trains the vq4all
    rows, `baseline_config` the per-layer k-means row (each method at its own learning rate)."""
    net = zoo.load(name)
    saved = json.loads(partial.read_text()) if partial.exists() else {}
    # rows measured with another configuration are not this run's: start the network again
    configs = {"config": config.to_dict(), "baseline_config": baseline_config.to_dict()}
    done = saved.get("methods", {}) if all(saved.get(k) == v for k, v in configs.items()) else {}

    def measured(method, fn):
        if method not in done:
            t = time.perf_counter()
            info, extra, more = fn()
            done[method] = {"row": row(net, method, info, time.perf_counter() - t, **more), "extra": extra}
            atomic_write_bytes(partial, json.dumps({**configs, "methods": done}).encode())
        log(done[method]["row"])
        return done[method]

    weights = numpy_weights(net)
    measured("FP32", lambda: (evaluate_baseline(net, "fp"), {}, {}))
    measured("RTN 2-bit per channel", lambda: (evaluate_baseline(net, "rtn2"), {}, {}))

    def kmeans_finetuned():
        state, stored, rep = finetune_kmeans(net, baseline_config)
        count = sum(w.size for w in weights.values())
        left = {k: v for k, v in state.items() if k not in weights}
        left_values = sum(int(np.size(v)) for v in left.values())
        left_bits = sum(int(np.size(v)) * np.asarray(v).itemsize * 8 for v in left.values())
        ratio = 32 * (count + left_values) / (stored + left_bits)
        info = {
            **task_metric(net, state),
            "bits_per_weight": stored / count,
            "compression_ratio": ratio,
            "compression_ratio_with_codebook": ratio,
        }
        return info, {}, {**budget_of(rep), "settings": settings_of(baseline_config)}

    cb = codebooks["u16_all"]

    def hard():
        state_np = {k: v.detach().cpu().numpy() for k, v in net.model.state_dict().items()}
        return evaluate_artifact(net, hard_assign(net.name, state_np, list(weights), cb), cb), {}, {}

    measured("universal 65536x8, hard", hard)

    def trained(method, codebook_of, cfg, plot=None):
        def run():
            codebook = codebook_of()
            result = compress(net, codebook, cfg)
            rep = result.report
            extra = {}
            if plot:  # what the plots need, kept small
                extra[f"max_ratios_{plot}"] = result.max_ratios.tolist()[:200000]
            if plot == "pnc":
                layers = result.artifact.layers
                extra["distinct_codewords"] = {l.param: int(np.unique(l.codes).size) for l in layers}
                extra["codes_per_layer"] = {l.param: int(l.codes.size) for l in layers}
            more = {
                **budget_of(rep),
                "frozen_by_pnc": rep["frozen_by_pnc"],
                "forced": rep["forced"],
                "settings": settings_of(cfg),
            }
            return evaluate_artifact(net, result.artifact, codebook), extra, more

        return measured(method, run)

    def leave_one_out():
        if name in sources_sub8 and len(sources_sub8) > 1:
            others = {n: s for n, s in sources_sub8.items() if n != name}
            return build_from_subvectors(others, CodebookConfig(networks=tuple(others), per_network=per_network))
        return cb  # never a source: the all-sources codebook already leaves it out

    # measured in order of what a reader needs first, so an interrupted run has the main rows
    trained("vq4all 65536x8, PNC", lambda: cb, config, "pnc")
    measured("per-layer k-means 256x4, fine-tuned", kmeans_finetuned)
    if uses_blockwise(net, net.compressible_keys(8), config):
        # block-wise against output-only distillation: the same codebook and settings, end to end
        trained(
            "vq4all 65536x8, PNC, end-to-end",
            lambda: cb,
            CompressConfig.from_dict({**config.to_dict(), "mode": "end_to_end"}),
        )
    trained("vq4all 65536x8, PNC, leave-one-out", leave_one_out, config)
    # the paper's ablation: the same budget without PNC, then every argmax
    trained(
        "vq4all 65536x8, no PNC",
        lambda: cb,
        CompressConfig.from_dict({**config.to_dict(), "pnc": False, "finish": "argmax"}),
        "no_pnc",
    )
    trained("vq4all 256x4, PNC", lambda: codebooks["u256_all"], config)
    rows = [entry["row"] for entry in done.values()]
    extra = {k: v for entry in done.values() for k, v in entry["extra"].items()}
    return rows, extra


def budget_of(report) -> dict:
    """The steps column of a trained row: end-to-end steps, or "B blocks x S + F" block-wise."""
    if report.get("mode") == "blockwise":
        blocks = report.get("blocks") or []
        most = max((b["steps"] for b in blocks), default=0)
        return {"steps": f"{len(blocks)}x{most}+{report['steps']}", "mode": "blockwise"}
    return {"steps": report["steps"], "mode": "end_to_end"}


def forced_share(r) -> str:
    """The share of a trained row's sub-vectors frozen without passing alpha ('' for the others)."""
    if "forced" not in r:
        return ""
    return f"{r['forced'] / max(1, r['forced'] + r['frozen_by_pnc']):.0%}"


def also(r) -> str:
    """The row's task extras, short: top5 0.91, kl 0.52, ..."""
    short = {
        "top5_agreement": "top5",
        "retrieval_top1_agreement": "retrieval top1",
        "retrieval_recall_at_5": "recall@5",
    }
    return ", ".join(f"{short.get(k, k)} {v:.3f}" for k, v in r.get("extras", {}).items())


def to_markdown(rows):
    lines = [
        "| network | method | metric | value | ratio to FP | also | bits/weight | compression | with codebook | steps | forced | settings | seconds |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']}{'*' if r.get('unfinished') else ''} | {r['method']} | {r['metric']}{'' if r['higher_is_better'] else ' (lower is better)'} "
            f"| {r['value']:.4f} | {r['ratio_to_fp']:.3f} | {also(r)} | {r['bits_per_weight']:.3f} | {r['compression_ratio']:.2f} "
            f"| {r['compression_ratio_with_codebook']:.2f} | {r.get('steps', '')} | {forced_share(r)} "
            f"| {r.get('settings', '')} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def plots(results, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(results)
    if not nets:
        return  # nothing measured yet
    cols = min(3, len(nets))
    grid_rows = -(-len(nets) // cols)  # ceil: table rows are something else here

    def panels():
        """One panel per network on a grid of `cols` columns: (figure, flat list of axes)."""
        fig, grid = plt.subplots(grid_rows, cols, figsize=(4.0 * cols, 3.4 * grid_rows), squeeze=False)
        flat = list(grid.flat)
        for ax in flat[len(nets) :]:
            ax.set_visible(False)
        return fig, flat

    def finish(fig, name, rect=(0, 0, 1, 1)):
        fig.tight_layout(rect=rect)
        save_figure(fig, out / name, dpi=110)
        plt.close(fig)

    fig, axes = panels()
    for ax, name in zip(axes, nets):
        extra = results[name]["extra"]
        bins = np.linspace(0, 1, 41)
        ax.hist(extra["max_ratios_no_pnc"], bins=bins, alpha=0.6, label="no PNC", density=True)
        ax.hist(extra["max_ratios_pnc"], bins=bins, alpha=0.6, label="PNC (frozen = 1)", density=True)
        low = float(np.mean(np.asarray(extra["max_ratios_no_pnc"]) < 0.9))
        # frozen sub-vectors count as 1 in the PNC histogram; say how many were forced (frozen
        # by the schedule's quota or at the end without passing alpha)
        pnc = next(r for r in results[name]["rows"] if r["method"] == "vq4all 65536x8, PNC")
        ax.set_title(f"{name}\nno PNC: {low:.0%} below 0.9; PNC: {forced_share(pnc)} forced", fontsize=9)
        ax.set_xlabel("largest ratio at the end")
        ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    finish(fig, "max_ratios.png")

    fig, axes = panels()
    for ax, name in zip(axes, nets):
        extra = results[name]["extra"]
        layers = list(extra["distinct_codewords"])
        ax.bar(range(len(layers)), [extra["distinct_codewords"][l] for l in layers], label="distinct codewords")
        ax.plot(
            range(len(layers)),
            [min(extra["codes_per_layer"][l], 65536) for l in layers],
            "k.",
            label="min(codes, 65536)",
        )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("layer")
        ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    finish(fig, "codewords.png")

    fig, axes = panels()
    # one colour per method across every panel, and one legend below them naming every method
    methods = list(dict.fromkeys(r["method"] for res in results.values() for r in res["rows"] if r["method"] != "FP32"))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for ax, name in zip(axes, nets):
        for r in results[name]["rows"]:
            if r["method"] != "FP32":
                ax.scatter(r["compression_ratio"], r["value"], color=colours[r["method"]], s=18)
        ax.axhline(results[name]["rows"][0]["fp_value"], color="k", lw=0.8, ls="--")
        ax.set_title(f"{name} ({results[name]['rows'][0]['metric']})", fontsize=9)
        ax.set_xlabel("compression ratio (codebook not charged)")
    handles = [plt.Line2D([], [], ls="", marker="o", color=colours[m], label=m) for m in methods]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(methods)), fontsize=7)
    finish(fig, "pareto.png", rect=(0, 0.03 + 0.025 * -(-len(methods) // 4), 1, 1))  # room for the legend


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--networks", default=",".join(zoo.NAMES))
    p.add_argument("--steps", type=int, default=CompressConfig().steps)
    p.add_argument("--per-network", type=int, default=1 << 18)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a CompressConfig field for these networks' trained rows (e.g. finish=nearest); "
        "recorded in their rows and shown in the table",
    )
    p.add_argument(
        "--baseline-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the same for the per-layer k-means row (its codebooks train at its own lr)",
    )
    p.add_argument("--out", default="benches/results/compress")
    p.add_argument("--force", action="store_true", help="re-measure networks already in OUT/rows")
    args = p.parse_args(argv)
    out = Path(args.out)
    (out / "rows").mkdir(parents=True, exist_ok=True)

    def configured(items, flag) -> CompressConfig:
        overrides = {}
        for item in items:
            key, _, value = item.partition("=")
            try:
                overrides[key] = json.loads(value)  # numbers and true/false
            except ValueError:
                overrides[key] = value  # a plain word such as nearest
        unknown = set(overrides) - set(CompressConfig().to_dict())
        if unknown:
            p.error(f"{flag}: unknown CompressConfig fields {sorted(unknown)}")
        return CompressConfig.from_dict({**CompressConfig(steps=args.steps).to_dict(), **overrides})

    config = configured(args.set, "--set")
    baseline_config = configured(args.baseline_set, "--baseline-set")

    def log(r):
        print(
            f"[compress] {r['network']:<18} {r['method']:<36} {r['metric']} {r['value']:.4f} (FP {r['fp_value']:.4f}) "
            f"{r['bits_per_weight']:.3f} b/w {r['seconds']:.0f} s",
            flush=True,
        )

    names = [n for n in args.networks.split(",") if n]
    todo = [n for n in names if args.force or not (out / "rows" / f"{n}.json").exists()]
    if todo:
        sub8 = {n: network_subvectors(zoo.load(n).compressible(), 8, "channel") for n in zoo.NAMES}
        sub4 = {n: network_subvectors(zoo.load(n).compressible(), 4, "channel") for n in zoo.NAMES}
        codebooks = {
            "u16_all": build_from_subvectors(sub8, CodebookConfig(networks=zoo.NAMES, per_network=args.per_network)),
            "u256_all": build_from_subvectors(
                sub4, CodebookConfig(networks=zoo.NAMES, k=256, d=4, per_network=args.per_network)
            ),
        }
        for name in todo:
            partial = out / "rows" / f"{name}.partial.json"
            if args.force and partial.exists():
                partial.unlink()
            rows, extra = measure(name, codebooks, sub8, config, baseline_config, args.per_network, log, partial)
            atomic_write_bytes(out / "rows" / f"{name}.json", json.dumps({"rows": rows, "extra": extra}).encode())
            partial.unlink()
    results, rows = {}, []
    for name in zoo.NAMES:  # the table holds every network measured so far, in zoo order
        path, partial = out / "rows" / f"{name}.json", out / "rows" / f"{name}.partial.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
            rows += results[name]["rows"]
        elif partial.exists():  # a run still to be resumed: its rows so far, no plots yet
            rows += [{**m["row"], "unfinished": True} for m in json.loads(partial.read_text())["methods"].values()]
    table = to_markdown(rows)
    header = (
        f"# Compression at ~2 bits/weight\n\nTrained methods: batch {config.batch_size} "
        f"on {config.calibration or 'the network default number of'} calibration inputs (crepe: 4096, the others 512), n={config.n}, alpha={config.alpha}, reg={config.reg}, "
        f"lr={config.lr}, for the step budget in the steps column (end-to-end steps, or B blocks x at most S steps + F "
        f"end-to-end steps for block-wise rows; PNC may stop earlier; a network's "
        f"methods share one budget), with the settings column's changes to these defaults; per-layer k-means trains its codebooks "
        f"in the same mode with the same budget. Networks above 1M weights train block-wise (mode auto); for them the "
        f"end-to-end row trains the same settings on the output alone. "
        f"The no-PNC row trains its network's vq4all settings without PNC (a schedule is then unused) and takes every argmax. "
        f"Forced: the share of sub-vectors frozen without passing alpha (by the linear schedule's quota or at the end). "
        f"Every evaluation set is disjoint from the calibration data (docs/zoo.md). The mtcnn and digits_cnn eval sets "
        f"hold 200 and 450 samples: one sample is 0.5 or 0.22 points there. "
        f"Compression: 32 bits x values represented / bits stored (ROM codebook not charged, then charged once). "
        f"A network marked * has a run still to be resumed: its rows so far, and no plots yet.\n\n"
        f"![largest ratios](max_ratios.png)\n![codewords per layer](codewords.png)\n![metric vs compression](pareto.png)\n\n"
    )
    atomic_write_bytes(out / "compress.md", (header + table + "\n").encode())
    atomic_write_bytes(out / "compress.json", json.dumps({"config": config.to_dict(), "rows": rows}, indent=2).encode())
    plots(results, out)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
