"""One compression run per call, block-wise or end to end, added to a results table.

    .venv/bin/python benches/blockwise.py --network minilm_l6 --label "blockwise, prose calibration" \
        --set mode=blockwise --set block_steps=100 --set finetune_steps=30 --set schedule=linear \
        --set finish=nearest --set lr_fp=0.001 [--codebook FILE] [--out benches/results/blockwise]

The codebook is the universal 2^16 x 8 one built from every zoo network (built once and kept
as OUT/codebook.safetensors, or --codebook). Each run appends one row to OUT/rows.jsonl (the
task metric with its extras, bits/weight, the run's report: steps, per-block losses, seconds)
and rewrites OUT/blockwise.md from all rows, so runs made on different days land in one table.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from vq4all import zoo
from vq4all.artifact import load_codebook, save_codebook
from vq4all.codebook import build_from_subvectors, network_subvectors
from vq4all.config import CodebookConfig, CompressConfig
from vq4all.evaluate import evaluate_artifact
from vq4all.io import atomic_write_bytes

EXTRAS = ("top5_agreement", "kl", "retrieval_top1_agreement", "retrieval_recall_at_5", "min_cosine")


def universal_codebook(path: Path):
    if not path.exists():
        config = CodebookConfig(networks=zoo.NAMES)
        subvectors = {n: network_subvectors(zoo.load(n).compressible(), 8, "channel") for n in zoo.NAMES}
        save_codebook(path, build_from_subvectors(subvectors, config))
    return load_codebook(path)


def overrides(items, parser) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    unknown = set(out) - set(CompressConfig().to_dict())
    if unknown:
        parser.error(f"--set: unknown CompressConfig fields {sorted(unknown)}")
    return out


def table(rows) -> str:
    lines = [
        "| network | label | mode | metric | value | FP | also | bits/weight | steps | seconds | settings |",
        "|---|---|---|---|---:|---:|---|---:|---|---:|---|",
    ]
    for r in rows:
        also = ", ".join(f"{k} {v:.3f}" for k, v in r["extras"].items())
        steps = f"{len(r['blocks'])}x{max(b['steps'] for b in r['blocks'])}+{r['steps']}" if r["blocks"] else r["steps"]
        lines.append(
            f"| {r['network']} | {r['label']} | {r['mode']} | {r['metric']} | {r['value']:.4f} | {r['fp_value']:.4f} "
            f"| {also} | {r['bits_per_weight']:.3f} | {steps} | {r['seconds']:.0f} | {r['settings']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", required=True, choices=zoo.NAMES)
    p.add_argument("--label", required=True, help="what distinguishes this run in the table")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a CompressConfig field")
    p.add_argument("--codebook", help="codebook file (default: OUT/codebook.safetensors, built once)")
    p.add_argument("--out", default="benches/results/blockwise")
    p.add_argument(
        "--keep-fp",
        default="",
        help="comma-separated module-name prefixes whose weights stay FP (counted at their stored width in bits/weight)",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    given = overrides(args.set, p)
    config = CompressConfig.from_dict({**CompressConfig(checkpoint_every=0).to_dict(), **given})
    codebook = load_codebook(args.codebook) if args.codebook else universal_codebook(out / "codebook.safetensors")
    net = zoo.load(args.network)
    prefixes = tuple(x for x in args.keep_fp.split(",") if x)
    state = net.model.state_dict()
    kept = [k for k in net.compressible_keys(codebook.d) if k.startswith(prefixes)] if prefixes else []
    if prefixes and not kept:
        p.error(f"--keep-fp {args.keep_fp}: no compressible weight starts with these prefixes")
    net.exclude = tuple(net.exclude) + tuple(kept)

    from vq4all.train import compress

    start = time.perf_counter()
    result = compress(net, codebook, config, progress=True)
    seconds = time.perf_counter() - start
    info = evaluate_artifact(net, result.artifact, codebook)
    report = result.report
    row = {
        "network": net.name,
        "label": args.label,
        "mode": report["mode"],
        "metric": info["metric"],
        "value": info["value"],
        "fp_value": info["fp_value"],
        "extras": {k: float(info[k]) for k in EXTRAS if k in info},
        "bits_per_weight": info["bits_per_weight"],
        # with weights kept FP: every compressible weight counted, the kept ones at their stored width
        "kept_fp": kept,
        "bits_per_weight_all": (
            info["bits_per_weight"] * sum(state[k].numel() for k in net.compressible_keys(codebook.d))
            + sum(state[k].numel() * state[k].element_size() * 8 for k in kept)
        )
        / sum(state[k].numel() for k in net.compressible_keys(codebook.d) + kept),
        "steps": report["steps"],
        "blocks": report["blocks"],
        "frozen_by_pnc": report["frozen_by_pnc"],
        "forced": report["forced"],
        "final_loss": report["final_loss"],
        "seconds": seconds,
        "settings": ", ".join(f"{k}={v}" for k, v in given.items()),
        "codebook_sha256": codebook.sha256,
    }
    with open(out / "rows.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines() if line.strip()]
    header = (
        "# Block-wise reconstruction against end-to-end distillation\n\n"
        "One row per `benches/blockwise.py` run (universal 2^16 x 8 codebook from all zoo networks, "
        "2 CPU cores); steps: end-to-end steps, or blocks x most steps per block + end-to-end steps.\n\n"
    )
    atomic_write_bytes(out / "blockwise.md", (header + table(rows) + "\n").encode())
    print(table([row]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
