"""Benchmark: the cost of one distillation step as PNC freezes, active-only soft path vs all.

    .venv/bin/python benches/train_step.py [--network minilm_l6] [--fractions 0,0.5,0.9,0.99] [--steps 3]

The trainer's soft path (`CandidateWeight.subvectors`) mixes candidates only for the active
sub-vectors; frozen ones are one gather, redone only when PNC freezes more. The baseline row
("all") is the previous formula, where(frozen, codeword, softmax mixture over all S sub-vectors),
patched in for the measurement. At each frozen fraction (the most confident sub-vectors frozen
by the linear schedule's quota rule) both are timed on the same run, same batches, one after the
other; the table gives seconds per step (best of --steps), steps/s and their ratio.

The codebook is k=4096 from the network's own sub-vectors, so that the candidate search at start
stays short: a step's cost does not depend on k (the gather reads n codewords per sub-vector).
Prints a markdown table and writes it with JSON under --out.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from vq4all import zoo
from vq4all.assign import CandidateWeight, quantize_
from vq4all.codebook import build_from_subvectors, network_subvectors
from vq4all.config import CodebookConfig, CompressConfig
from vq4all.io import atomic_write_bytes
from vq4all.train import _Run


def all_subvectors(self) -> torch.Tensor:
    """The previous soft path: the mixture over every sub-vector, frozen ones masked after."""
    soft = torch.einsum("sn,snd->sd", self.ratios(), self.values[self.cand.long()])
    return torch.where(self.frozen.unsqueeze(1), self.values[self.chosen], soft)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--network", default="minilm_l6")
    p.add_argument("--fractions", default="0,0.5,0.9,0.99", help="frozen fractions measured")
    p.add_argument("--steps", type=int, default=3, help="steps timed per row (best of)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step"))
    args = p.parse_args(argv)
    fractions = [float(f) for f in args.fractions.split(",")]
    if args.steps < 1 or args.batch_size < 1 or not all(0 <= f < 1 for f in fractions):
        p.error("--steps and --batch-size must be >= 1, every --fractions value in [0, 1)")

    start = time.perf_counter()
    net = zoo.load(args.network)
    sub = {net.name: network_subvectors(net.compressible(), 8, "channel")}
    codebook = build_from_subvectors(sub, CodebookConfig(networks=(net.name,), k=4096, per_network=1 << 18))
    config = CompressConfig(pnc=False, checkpoint_every=0, batch_size=args.batch_size, calibration=4 * args.batch_size)
    student = net.with_weights({})
    params = quantize_(student, net.compressible_keys(), codebook, n=config.n, progress=True)
    run = _Run(net, config, student, params, [q.logits for q in params.values()], codebook.sha256)
    inputs = net.calibration(config.calibration, seed=0)
    labels = net.calibration_labels(config.calibration, seed=0)
    with torch.no_grad():
        teacher_out = net.forward(net.model, inputs)
    setup = time.perf_counter() - start
    print(f"[train_step] {net.name}: {run.total:,} sub-vectors, set up in {setup:.0f} s", flush=True)

    def step_seconds() -> float:
        best = math.inf
        for _ in range(args.steps):
            t = time.perf_counter()
            run.train(inputs, teacher_out, labels, None, False, until=run.step + 1)
            best = min(best, time.perf_counter() - t)
        return best

    rows = []
    active_path = CandidateWeight.subvectors
    for fraction in fractions:
        run._freeze_quota(math.ceil(run.total * fraction))
        timed = {}
        for path, fn in (("active", active_path), ("all", all_subvectors)):
            CandidateWeight.subvectors = fn
            try:
                timed[path] = step_seconds()
            finally:
                CandidateWeight.subvectors = active_path
        row = {
            "frozen_fraction": run.frozen_fraction(),
            "active_s_per_step": timed["active"],
            "all_s_per_step": timed["all"],
            "active_steps_per_s": 1 / timed["active"],
            "all_steps_per_s": 1 / timed["all"],
            "speedup": timed["all"] / timed["active"],
        }
        rows.append(row)
        print(
            f"[train_step] frozen {row['frozen_fraction']:.2f}: active {timed['active']:.3f} s/step, "
            f"all {timed['all']:.3f} s/step ({row['speedup']:.2f}x)",
            flush=True,
        )

    md = [
        f"# One distillation step as PNC freezes: {net.name}",
        "",
        f"{run.total:,} sub-vectors, n={config.n}, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
        f"best of {args.steps} steps per row; `active`: the trainer's soft path (active sub-vectors only), "
        "`all`: the previous formula over every sub-vector. Measured in one run by `benches/train_step.py`.",
        "",
        "| frozen fraction | active s/step | all s/step | active steps/s | all steps/s | speedup |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['frozen_fraction']:.2f} | {r['active_s_per_step']:.3f} | {r['all_s_per_step']:.3f} | "
            f"{r['active_steps_per_s']:.2f} | {r['all_steps_per_s']:.2f} | {r['speedup']:.2f}x |"
        )
    text = "\n".join(md) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "train_step.md", text.encode())
    report = {
        "network": net.name,
        "subvectors": run.total,
        "n": config.n,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "setup_seconds": setup,
        "rows": rows,
    }
    atomic_write_bytes(out / "train_step.json", json.dumps(report, indent=2).encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
