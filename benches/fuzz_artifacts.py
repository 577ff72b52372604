"""Fuzz the artifact reader: damaged codebook and network files (support.fuzzing's mutation kinds)
through `artifact.summarize` (what `vq4all inspect` runs) and `artifact.load` against the
codebook, in-process, plus a sample through the real `vq4all inspect` command line.

    .venv/bin/python benches/fuzz_artifacts.py [--cases 12000] [--cli 60] [--seed 0] [--out benches/results/fuzz]

Every case must end as a valid load or one ArtifactError/VQ4AllError: a one-line printable
message naming the file, with a peak traced allocation (tracemalloc) <= 8 x file size + 2 MiB.
CLI cases must exit 0 or 2 with no traceback and at most one line on stderr. Anything else is a
bug, listed in the summary. Writes fuzz.json/.md: counts per mutation kind and per error rule.
"""

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fuzzers are test support
from support import fuzzing  # noqa: E402
from vq4all import artifact  # noqa: E402
from vq4all.errors import ArtifactError, VQ4AllError, printable
from vq4all.io import atomic_write_bytes

ALLOC_FACTOR, ALLOC_CONST = 8, 2 << 20


def rule_class(message: str) -> str:
    """A rule's message with its numbers and quoted values taken out, so equal rules group."""
    message = printable(message)  # rules quote names from the file: lone surrogates, line breaks
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|\b\d+(\.\d+)?\b|[0-9a-f]{16}\.\.\.", "_", message)
    return text[:100]


def run_case(path: Path, codebook) -> tuple[str, str | None, int]:
    """(outcome, bug or None, peak bytes) of one in-process case."""
    tracemalloc.start()
    bug = None
    try:
        artifact.summarize(path)
        if artifact.read_manifest(path).get("kind") == "network":
            artifact.load(path, codebook)
        outcome = "valid"
    except ArtifactError as e:
        outcome = f"ArtifactError: {rule_class(e.rule)}"
        if not (str(e).startswith(str(path)) and str(e).isprintable()):
            bug = f"message not one printable line naming the file: {str(e)[:200]!r}"
    except VQ4AllError as e:
        outcome = f"VQ4AllError: {rule_class(str(e).replace(str(path), 'FILE'))}"
        if "\n" in str(e):
            bug = f"multi-line message: {str(e)[:200]!r}"
    except Exception as e:  # noqa: BLE001 -- the point of fuzzing: anything else is a bug
        outcome = f"BUG {type(e).__name__}"
        bug = f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if bug is None and peak > ALLOC_FACTOR * path.stat().st_size + ALLOC_CONST:
        bug = f"peak allocation {peak} B for a {path.stat().st_size}-byte file"
    return outcome, bug, peak


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=12000)
    p.add_argument("--cli", type=int, default=60, help="cases also run through `vq4all inspect` in a subprocess")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "fuzz"))
    args = p.parse_args()

    seeds = fuzzing.seed_files()
    tmp = Path(tempfile.mkdtemp(prefix="vq4all-fuzz-"))
    (tmp / "cb.safetensors").write_bytes(seeds["codebook"])
    codebook = artifact.load_codebook(tmp / "cb.safetensors")
    rng = np.random.default_rng(args.seed)
    by_kind = collections.defaultdict(collections.Counter)
    by_rule = collections.Counter()
    bugs, max_ratio = [], 0.0
    cli = {"runs": 0, "exit_codes": collections.Counter(), "bugs": []}
    cli_every = max(1, args.cases // max(args.cli, 1)) if args.cli else 0
    start = time.perf_counter()
    for i in range(args.cases):
        source = sorted(seeds)[i % len(seeds)]
        kind = fuzzing.KINDS[(i // len(seeds)) % len(fuzzing.KINDS)]
        data = fuzzing.mutate(seeds[source], kind, rng)
        path = tmp / f"case-{source}-{kind}.safetensors"
        path.write_bytes(data)
        outcome, bug, peak = run_case(path, codebook)
        if len(data) >= 1 << 20:  # on big files the data, not the constant, dominates
            max_ratio = max(max_ratio, peak / len(data))
        by_kind[kind]["valid" if outcome == "valid" else "error" if not outcome.startswith("BUG") else "bug"] += 1
        by_rule[outcome] += 1
        if bug:
            keep = tmp / f"bug-{len(bugs)}.safetensors"
            keep.write_bytes(data)
            bugs.append({"case": i, "source": source, "kind": kind, "bug": bug, "file": str(keep)})
        if cli_every and i % cli_every == 0:
            proc = subprocess.run(
                [sys.executable, "-m", "vq4all", "inspect", str(path)], capture_output=True, text=True, timeout=60
            )
            cli["runs"] += 1
            cli["exit_codes"][proc.returncode] += 1
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            if proc.returncode not in (0, 2) or "Traceback" in proc.stderr or len(lines) > 1:
                cli["bugs"].append({"case": i, "kind": kind, "exit": proc.returncode, "stderr": proc.stderr[-500:]})
    seconds = time.perf_counter() - start
    summary = {
        "cases": args.cases,
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_rule": dict(by_rule.most_common()),
        "bugs": bugs,
        "max_peak_allocation_over_file_size": round(max_ratio, 2),
        "cli": {
            "runs": cli["runs"],
            "exit_codes": {str(k): v for k, v in cli["exit_codes"].items()},
            "bugs": cli["bugs"],
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "fuzz.json", (json.dumps(summary, indent=2) + "\n").encode())
    md = [
        f"# Artifact fuzzing: {args.cases} cases (seed {args.seed}), {seconds:.0f} s",
        "",
        f"Bugs (not ArtifactError/VQ4AllError, multi-line, or allocation > {ALLOC_FACTOR} x size + 2 MiB): "
        f"{len(bugs)}; CLI runs: {cli['runs']}, exit codes {dict(cli['exit_codes'])}, CLI bugs: {len(cli['bugs'])}",
        f"Largest peak allocation / file size over files >= 1 MiB: {max_ratio:.2f}",
        "",
        "| mutation kind | valid | error | bug |",
        "|---|---|---|---|",
    ]
    md += [
        f"| {k} | {v.get('valid', 0)} | {v.get('error', 0)} | {v.get('bug', 0)} |" for k, v in sorted(by_kind.items())
    ]
    md += ["", "| outcome (error rule, numbers and names elided) | cases |", "|---|---|"]
    md += [f"| {r.replace('|', '/')} | {n} |" for r, n in by_rule.most_common()]
    atomic_write_bytes(out / "fuzz.md", ("\n".join(md) + "\n").encode())
    print("\n".join(md[:4]))
    return 1 if bugs or cli["bugs"] else 0


if __name__ == "__main__":
    sys.exit(main())
