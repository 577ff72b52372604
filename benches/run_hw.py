"""Whole networks in integer arithmetic and on the simulated engine: task metric of the FP model,
the float compressed model, the integer model (vq4all.integer) and the engine (vq4all.hw.host),
mismatches, cycles and MAC utilisation per layer, simulation time.

    .venv/bin/python benches/run_hw.py --codebook CB [--simulator verilator] \
        [--networks digits_cnn,crepe_tiny,mtcnn_onet] [--limits digits_cnn=all,crepe_tiny=8,mtcnn_onet=24] \
        [--lanes digits_cnn=4,crepe_tiny=16,mtcnn_onet=16] [--pack [--pack-lanes 2]] [--out benches/results/run_hw]

Each network is hard-assigned to the codebook (the artifact is cached under $VQ4ALL_CACHE/run_hw).
First, the calibration table: the integer model on the whole evaluation set (host only) for
activation scales at the maximum, the 99.99th and the 99.9th percentile of |x| (hidden layers
requantised by the engine's output stage), and at 99.99 with every layer dequantised on the
host instead. Then each network on the engine, for `limit` evaluation inputs evenly spaced over
its set (the FP, float compressed and integer metrics are taken on the same inputs). --pack runs
every network on the row-packing engine (EngineConfig.pack) at --pack-lanes (1 or 2). Results are written after
each network: run_hw.json (everything) and run_hw.md (tables).
"""

import argparse
import json
import sys
import time
from pathlib import Path

from vq4all import zoo
from vq4all.artifact import Codebook, load_codebook, load_network, save_network
from vq4all.errors import VQ4AllError
from vq4all.hard import hard_assign
from vq4all.hw.host import run_network
from vq4all.hw.sim.runner import cache_root
from vq4all.integer import build, compare, eval_task
from vq4all.io import atomic_write_bytes
from vq4all.zoo import data

NETWORKS = ("digits_cnn", "crepe_tiny", "mtcnn_onet")
CALIBRATIONS = [(100.0, "requant"), (99.99, "requant"), (99.9, "requant"), (99.99, "int32")]


def artifact_for(name: str, cb: Codebook):
    """`name` hard-assigned to `cb` (per-channel scales), cached by codebook hash."""
    path = cache_root().parent / "run_hw" / f"{name}-{cb.sha256[:16]}.safetensors"
    if path.is_file():
        return load_network(path, cb)
    net = zoo.load(name)
    state = {k: v.numpy() for k, v in net.model.state_dict().items()}
    art = hard_assign(name, state, net.compressible_keys(cb.d), cb, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_network(path, art)
    return art


def task_of(net):
    """The network's evaluation set (digits_cnn's test split from the zoo's data module)."""
    return eval_task(net, *data.digits_split()[2:]) if net.name == "digits_cnn" else eval_task(net)


def calibration_rows(name: str, art, cb: Codebook) -> list[dict]:
    """The integer model on the whole evaluation set for each of CALIBRATIONS."""
    net = zoo.load(name)
    rows = []
    for percentile, hidden in CALIBRATIONS:
        model = build(net, art, cb, percentile=percentile, hidden_output=hidden)
        r = compare(net, model, task=task_of(net))
        rows.append(
            {
                "network": name,
                "percentile": percentile,
                "hidden_output": hidden,
                "inputs": r["inputs"],
                "metric": r["metric"],
                "fp": r["fp"],
                "float": r["float"],
                "integer": r["integer"],
                "integer_vs_float": r["integer_vs_float"],
            }
        )
        print(f"[run_hw] calibration {name} p={percentile} {hidden}: integer {r['integer']:.4f} float {r['float']:.4f}")
    return rows


def _pairs(text: str, cast) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in NETWORKS or not value:
            raise VQ4AllError(f"'{part}' must be NETWORK=VALUE with NETWORK one of {', '.join(NETWORKS)}")
        out[key] = cast(value)
    return out


def _limit(value: str):
    return None if value == "all" else int(value)


def _agreement_name(metric: str) -> str:
    return "mean abs. cents to float" if metric == "pitch_error_cents" else "same decisions as float"


def markdown(results: dict) -> str:
    cb = results["codebook"]
    lines = [
        "# Whole networks on the engine (integer model and simulated RTL)\n",
        f"Codebook {cb['sha256'][:16]}... (k={cb['k']}, d={cb['d']}, int8); every network hard-assigned to it "
        f"(per-channel scales). Simulator: {results['simulator']}. Seconds are wall-clock on a machine of 2 CPU "
        "cores shared with other work. The FP, float compressed and integer metrics of a row are measured on the "
        "same inputs as the engine (evenly spaced over the evaluation set).\n",
        "## Task metric and bit-exactness\n",
        "| network | metric | inputs | lanes | FP | float compressed | integer | engine | engine outputs = integer "
        "model's | mismatches / engine results | cycles per input | simulation s per input | simulation s |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['network']} | {r['metric']} | {r['inputs']} of {r['eval_size']} | {_lanes(r)} | {r['fp']:.4f} "
            f"| {r['float']:.4f} | {r['integer']:.4f} | {r['engine']:.4f} | "
            f"{'yes' if r['engine_equals_integer'] else 'no'} | {r['mismatches']} / {r['outputs']} | "
            f"{r['cycles'] / r['inputs']:.0f} | {r['seconds']['per_input']:.2f} | {r['seconds']['simulation']:.0f} |"
        )
    if results.get("goals"):
        lines += ["", "## Goals\n"] + [f"- {g}" for g in results["goals"]]
    for r in results["runs"]:
        lines += [
            "",
            f"## {r['network']}: per layer ({r['inputs']} inputs, lanes {_lanes(r)}, {r['simulator']})\n",
            "| layer | kind | output | rows | in | m | GEMVs per input | cycles per input | ideal cycles per input | "
            "MAC utilisation | runs | mismatches | simulation s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in r["layers"]:
            lines.append(
                f"| {e['name']} | {e['kind']} | {e['output']} | {e['rows']} | {e['in_features']} | {e['m']} | "
                f"{e['gemvs_per_input']:.0f} | {e['cycles_per_input']:.0f} | {e['ideal_cycles'] / r['inputs']:.0f} | "
                f"{e['mac_utilization']:.3f} | {e['runs']} | {e['mismatches']} | {e['run_seconds']:.1f} |"
            )
    if results.get("calibration"):
        lines += [
            "",
            "## Calibration of the activation scales (integer model, whole evaluation set, host only)\n",
            "| network | metric | percentile of abs(x) | hidden layers | inputs | float compressed | integer | "
            "integer vs float |",
            "|---|---|---:|---|---:|---:|---:|---|",
        ]
        for c in results["calibration"]:
            lines.append(
                f"| {c['network']} | {c['metric']} | {c['percentile']:g} | {c['hidden_output']} | {c['inputs']} | "
                f"{c['float']:.4f} | {c['integer']:.4f} | {c['integer_vs_float']:.4f} "
                f"({_agreement_name(c['metric'])}) |"
            )
    return "\n".join(lines) + "\n"


def goals(runs: list[dict]) -> list[str]:
    """The issue's goals, checked on what was measured."""
    out = []
    for r in runs:
        exact = f"{r['mismatches']} mismatches in {r['outputs']} engine results"
        if r["network"] == "digits_cnn":
            gap = 100 * abs(r["engine"] - r["float"])
            ok = gap <= 0.5 and r["mismatches"] == 0
            out.append(
                f"digits_cnn: engine accuracy {100 * r['engine']:.2f} % vs float compressed {100 * r['float']:.2f} % "
                f"on {r['inputs']} test digits: {gap:.2f} points apart (goal <= 0.5), {exact} (goal 0): "
                f"{'met' if ok else 'NOT met'}"
            )
        elif r["network"] == "crepe_tiny":
            rel = abs(r["engine"] - r["float"]) / r["float"]
            out.append(
                f"crepe_tiny: engine pitch error {r['engine']:.3f} cents vs float compressed {r['float']:.3f} on "
                f"{r['inputs']} tones: {100 * rel:.1f} % apart (goal <= 10 %), {exact}: "
                f"{'met' if rel <= 0.10 else 'NOT met'}"
            )
        else:
            out.append(
                f"{r['network']}: engine {r['engine']:.4f} vs float compressed {r['float']:.4f} on {r['inputs']} "
                f"inputs, {exact}"
            )
    return out


def _lanes(r: dict) -> str:
    return f"{r['lanes']}, packing rows" if r.get("pack") else str(r["lanes"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codebook", required=True)
    p.add_argument("--simulator", default="verilator")
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--limits", default="digits_cnn=all,crepe_tiny=8,mtcnn_onet=24")
    p.add_argument("--lanes", default="digits_cnn=4,crepe_tiny=16,mtcnn_onet=16")
    p.add_argument("--skip-calibration", action="store_true")
    p.add_argument("--pack", action="store_true", help="run on the row-packing engine (at --pack-lanes)")
    p.add_argument("--pack-lanes", type=int, choices=(1, 2), default=1, help="lanes of the row-packing engine")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of other networks (and of skipped steps) from an existing run_hw.json in --out",
    )
    p.add_argument("--out", default="benches/results/run_hw")
    args = p.parse_args(argv)
    cb = load_codebook(args.codebook)
    names = [n for n in args.networks.split(",") if n]
    limits, lanes = _pairs(args.limits, _limit), _pairs(args.lanes, int)
    if args.pack:
        lanes = {name: args.pack_lanes for name in names}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "codebook": {"sha256": cb.sha256, "k": cb.k, "d": cb.d, "file": str(args.codebook)},
        "simulator": args.simulator,
        "calibration": [],
        "runs": [],
    }
    if args.merge and (out / "run_hw.json").is_file():
        old = json.loads((out / "run_hw.json").read_text())
        if old["codebook"]["sha256"] != cb.sha256:
            raise VQ4AllError(f"--merge: {out / 'run_hw.json'} was measured on another codebook")
        redo_calibration = set() if args.skip_calibration else set(names)
        results["calibration"] = [c for c in old["calibration"] if c["network"] not in redo_calibration]
        results["runs"] = [r for r in old["runs"] if r["network"] not in names]
    start = time.perf_counter()

    def write():
        results["runs"].sort(key=lambda r: NETWORKS.index(r["network"]))
        results["calibration"].sort(key=lambda c: NETWORKS.index(c["network"]))
        results["goals"] = goals(results["runs"])
        results["seconds"] = round(time.perf_counter() - start, 1)
        atomic_write_bytes(out / "run_hw.json", json.dumps(results, indent=2).encode())
        atomic_write_bytes(out / "run_hw.md", markdown(results).encode())

    arts = {name: artifact_for(name, cb) for name in names}
    if not args.skip_calibration:
        for name in names:
            results["calibration"] += calibration_rows(name, arts[name], cb)
            write()
    for name in names:
        net = zoo.load(name)
        r = run_network(
            net,
            arts[name],
            cb,
            limit=limits.get(name),
            lanes=lanes.get(name, 1),
            simulator=args.simulator,
            pack=args.pack,
            task=task_of(net),
        )
        r["eval_size"] = len(task_of(net).inputs)
        results["runs"].append(r)
        write()
        print(
            f"[run_hw] {name}: {r['inputs']} inputs, engine {r['engine']:.4f} integer {r['integer']:.4f} "
            f"float {r['float']:.4f} FP {r['fp']:.4f}, {r['mismatches']} mismatches, "
            f"{r['seconds']['simulation']:.0f} s simulating",
            flush=True,
        )
    print(markdown(results))
    print(f"wrote {out}/run_hw.md, run_hw.json ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
