"""Fuzz every door a file comes in by: damaged codebook, network and checkpoint files through the
reader (`artifact.summarize` and `artifact.load`, what `vq4all inspect` and `vq4all.load` run)
and, in-process, through the commands `inspect`, `eval`, `rom export`, `sim` and
`compress --resume`.

    .venv/bin/python benches/fuzz_artifacts.py [--cases 12000] [--sim-every 150] [--checkpoints 240]
        [--seed 0] [--out benches/results/fuzz]

Seeds: toy files (support.fuzzing.seed_files: k=16 codebooks, a ~1 KiB network, one with 1 MiB of
leftovers) and real ones (a k=256 d=4 codebook built from digits_cnn, digits_cnn hard-assigned
on it, a `compress` checkpoint of it). Mutation kinds: support.fuzzing's KINDS (bytes, header,
dtypes, shapes, sizes, hashes, manifest fields, offsets), huge-integer shapes, sparse files of
1-4 GiB, JSON amplification, hostile names (line breaks, escapes, NUL, lone surrogates, 100,000
characters), leftover dtype lies and missing layers (self-consistent files, content hash
recomputed: only the network can tell), and checkpoint tampering.

A bug is any of:
- an exception other than ArtifactError/VQ4AllError (a traceback on the command line);
- a message that is not one printable line of < 2,000 characters, or a command that exits with
  another status than 0 or 2, or prints more than one line on error;
- wrong data accepted: a damaged file that loads although its content (codes, scales, codewords,
  leftovers, names, shapes) differs from the seed's, an `eval` that exits 0 on an artifact that
  does not rebuild the network, a tampered checkpoint that resumes;
- a peak traced allocation (tracemalloc) over 2 x the file's size + artifact.MAX_HEADER_MEMORY.
Writes fuzz.json/.md: counts per door, per mutation kind and per error rule.
"""

import argparse
import collections
import contextlib
import io
import json
import re
import struct
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fuzzers are test support
from support import fuzzing  # noqa: E402
from vq4all import artifact  # noqa: E402
from vq4all.cli import main as cli_main  # noqa: E402
from vq4all.errors import ArtifactError, VQ4AllError, printable  # noqa: E402
from vq4all.io import atomic_write_bytes  # noqa: E402

MAX_LINE = 2000
# kinds whose damage is never a legitimate file (manifest_rehashed rewrites a manifest field and
# recomputes the content hash: it may be a legitimate file, e.g. another network name)
WRONG_IF_ACCEPTED = (set(fuzzing.KINDS) - {"manifest_rehashed"}) | {
    "huge_int_shape",
    "json_amplification",
    "sparse_huge",
}
CHECKPOINT_TAMPERS = (
    "step",
    "lr",
    "betas",
    "eps",
    "network",
    "codebook_sha256",
    "config",
    "tensor_shape",
    "tensor_dtype",
    "tensor_missing",
    "tensor_extra",
    "counts",
    "history",
)
_ODD = [-5, -1, 10**9, 1e300, float("nan"), float("inf"), "x", None, True, [], {}, [5], 3.5, 2**64, -(2**63)]


def rule_class(message: str) -> str:
    """A rule's message with its numbers and quoted values taken out, so equal rules group."""
    message = printable(message)
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|\b\d+(\.\d+)?\b|[0-9a-f]{16}\.\.\.", "_", message)
    return text[:100]


def content(obj) -> tuple:
    """What a loaded file stands for (free-form manifest fields such as `config` left out)."""

    def arr(a):
        a = np.asarray(a)
        return (str(a.dtype), a.shape, a.tobytes())

    if isinstance(obj, artifact.Codebook):
        return ("codebook", arr(obj.codebook), None if obj.codebook_scale is None else arr(obj.codebook_scale))
    layers = tuple(
        (x.param, tuple(x.shape), x.d, x.pad, x.scale_granularity, arr(x.codes), arr(x.scales)) for x in obj.layers
    )
    leftovers = tuple(sorted((n, arr(t)) for n, t in obj.leftovers.items()))
    return ("network", obj.network, obj.codebook_sha256, obj.k, layers, leftovers)


def load_case(path: Path, codebook) -> tuple[str, object, str | None, int]:
    """(outcome, loaded object or None, bug or None, peak bytes) through the reader."""
    size = path.stat().st_size
    tracemalloc.start()
    bug, loaded = None, None
    try:
        artifact.summarize(path)
        loaded = artifact.load(path, codebook if artifact.read_manifest(path).get("kind") == "network" else None)
        outcome = "valid"
    except ArtifactError as e:
        outcome = f"ArtifactError: {rule_class(e.rule)}"
        line = str(e)
        if not (line.startswith(printable(str(path))) and line.isprintable() and len(line) < MAX_LINE):
            bug = f"message not one short printable line naming the file: {line[:200]!r}"
    except VQ4AllError as e:
        outcome = f"VQ4AllError: {rule_class(str(e).replace(str(path), 'FILE'))}"
        if not (str(e).isprintable() and len(str(e)) < MAX_LINE):
            bug = f"message not one short printable line: {str(e)[:200]!r}"
    except Exception as e:  # noqa: BLE001 -- the point of fuzzing: anything else is a bug
        outcome = f"BUG {type(e).__name__}"
        bug = f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if bug is None and peak > 2 * size + artifact.MAX_HEADER_MEMORY:
        bug = f"peak allocation {peak} B for a {size}-byte file"
    return outcome, loaded, bug, peak


def data_share(path: Path) -> float:
    """The share of the file after its declared header (0 when the length prefix is absurd)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
    if len(prefix) < 8:
        return 0.0
    (header_len,) = struct.unpack("<Q", prefix)
    return max(0.0, (size - 8 - header_len) / size) if header_len < size else 0.0


def run_cli(argv: list[str]) -> tuple[int | None, str, str, str | None]:
    """(exit status, stdout, stderr, bug or None) of `vq4all <argv>` run in-process."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli_main(argv)
    except SystemExit as e:  # argparse
        status = e.code
    except Exception as e:  # noqa: BLE001 -- a traceback on the command line
        return None, out.getvalue(), err.getvalue(), f"traceback: {type(e).__name__}: {str(e)[:200]}"
    # tqdm redraws with \r: what a terminal shows of each line is its last \r segment
    lines = [seg.split("\r")[-1] for seg in err.getvalue().split("\n")]
    lines = [line for line in lines if line.strip()]
    if status not in (0, 2):
        return status, out.getvalue(), err.getvalue(), f"exit status {status}"
    if status == 2 and (len(lines) != 1 or not lines[0].isprintable() or len(lines[0]) >= MAX_LINE):
        return status, out.getvalue(), err.getvalue(), f"error output not one short printable line: {lines[:3]!r}"[:300]
    if status == 0:
        shown = [line for line in out.getvalue().splitlines() if line.strip()]
        if any(not line.isprintable() or len(line) >= MAX_LINE for line in shown):
            return status, out.getvalue(), err.getvalue(), f"output line not short and printable: {shown[:1]!r}"[:300]
    return status, out.getvalue(), err.getvalue(), None


def make_real_seeds(tmp: Path) -> dict[str, Path]:
    """A k=256 d=4 codebook from digits_cnn, digits_cnn hard-assigned on it, and a kept checkpoint
    of a 4-step `compress` on it (the arguments in CHECKPOINT_ARGS)."""
    cb, net, ckpt = tmp / "real_cb.safetensors", tmp / "real_net.safetensors", tmp / "seed.ckpt"
    for argv in (
        ["codebook", "build", "--networks", "digits_cnn", "--k", "256", "--d", "4", "--out", str(cb)],
        ["assign", "--network", "digits_cnn", "--codebook", str(cb), "--out", str(net)],
        ["compress", "--codebook", str(cb), "--out", str(tmp / "seed_out.safetensors"), "--checkpoint", str(ckpt)]
        + checkpoint_args(),
    ):
        status, _, err, bug = run_cli(argv)
        if status != 0 or bug:
            raise SystemExit(f"could not make the seeds: vq4all {' '.join(argv)}: {bug or err[-500:]}")
    return {"codebook": cb, "network": net, "checkpoint": ckpt}


def checkpoint_args() -> list[str]:
    return ["--network", "digits_cnn", "--steps", "4", "--checkpoint-every", "2", "--calibration-count", "64"]


def tamper_checkpoint(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """A checkpoint with one field or tensor changed to something this run cannot have written."""
    header, body = fuzzing.split(data)
    meta = json.loads(header["__metadata__"]["vq4all"])
    names = sorted(n for n in header if n != "__metadata__")
    odd = _ODD[int(rng.integers(len(_ODD)))]
    groups = meta.get("param_groups") or [{}]
    group = groups[int(rng.integers(len(groups)))]
    if kind == "step":
        meta["step"] = odd if odd != 4 else -5
    elif kind == "lr":
        group["lr"] = odd if not isinstance(odd, int | float) or odd != group.get("lr") else -1
    elif kind == "betas":
        group["betas"] = [odd, 0.999] if rng.random() < 0.5 else odd
    elif kind == "eps":
        group["eps"] = odd
    elif kind == "network":
        meta["network"] = fuzzing.HOSTILE_NAMES[int(rng.integers(len(fuzzing.HOSTILE_NAMES)))]
    elif kind == "codebook_sha256":
        meta["codebook_sha256"] = "".join(rng.choice(list("0123456789abcdef"), 64))
    elif kind == "config":
        key = sorted(meta["config"])[int(rng.integers(len(meta["config"])))]
        meta["config"][key] = odd
    elif kind == "counts":
        meta[["forced", "passed_alpha", "blocks_done"][int(rng.integers(3))]] = odd if odd != 0 else -1
    elif kind == "history":  # the columns' names, or the table's bytes
        if rng.random() < 0.5:
            meta["history_columns"] = odd if not isinstance(odd, list) else ["loss", *odd]
        else:
            begin, end = header["history"]["data_offsets"]
            body = body[:begin] + np.full((end - begin) // 8, np.nan).tobytes() + body[end:]
    else:
        name = names[int(rng.integers(len(names)))]
        if kind == "tensor_shape":
            shape = header[name]["shape"]
            header[name]["shape"] = [int(np.prod(shape))] if len(shape) != 1 else [1, shape[0]] if shape else [1]
            if header[name]["shape"] == shape:
                header[name]["shape"] = shape + [1]
        elif kind == "tensor_dtype":
            same = {"F32": "I32", "I32": "F32", "F16": "I16", "I64": "F64", "F64": "I64", "U8": "I8", "I8": "U8"}
            header[name]["dtype"] = same.get(header[name]["dtype"], "U8")
        elif kind == "tensor_missing":
            begin, end = header.pop(name)["data_offsets"]
            body = body[:begin] + body[end:]
            for other in names:
                if other != name and header[other]["data_offsets"][0] >= end:
                    header[other]["data_offsets"] = [o - (end - begin) for o in header[other]["data_offsets"]]
        elif kind == "tensor_extra":
            header["student.extra.weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [len(body), len(body) + 4]}
            body = body + b"\0\0\0\0"
    header["__metadata__"]["vq4all"] = json.dumps(meta)
    return fuzzing.join(header, body)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=12000, help="file cases (every one through the reader)")
    p.add_argument("--sim-every", type=int, default=150, help="run `vq4all sim` on every Nth real-seed case")
    p.add_argument("--checkpoints", type=int, default=240, help="tampered checkpoints through compress --resume")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "fuzz"))
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vq4all-fuzz-"))
    seeds = fuzzing.seed_files()
    (tmp / "cb.safetensors").write_bytes(seeds["codebook"])
    real = make_real_seeds(tmp)
    seeds["real_codebook"], seeds["real_network"] = real["codebook"].read_bytes(), real["network"].read_bytes()
    toy_codebook = artifact.load_codebook(tmp / "cb.safetensors")
    real_codebook = artifact.load_codebook(real["codebook"])
    expected = {}
    for name, data in seeds.items():
        (tmp / f"seed-{name}").write_bytes(data)
        cb = real_codebook if name.startswith("real") else toy_codebook
        expected[name] = content(artifact.load(tmp / f"seed-{name}", cb if "network" in name else None))

    kinds = list(fuzzing.KINDS) + list(fuzzing.EXTRA_FILE_KINDS) + ["sparse_huge"]
    model_kinds = [k for k in fuzzing.MODEL_KINDS if k not in kinds]
    rng = np.random.default_rng(args.seed)
    by_kind = collections.defaultdict(collections.Counter)
    by_rule = collections.Counter()
    doors = collections.defaultdict(collections.Counter)
    bugs, max_ratio = [], 0.0
    start = time.perf_counter()

    def bug_found(where, kind, source, text, data=None):
        keep = None
        if data is not None:
            keep = tmp / f"bug-{len(bugs)}.safetensors"
            keep.write_bytes(data)
        bugs.append({"door": where, "kind": kind, "source": source, "bug": text, "file": str(keep) if keep else None})

    real_cases = 0
    for i in range(args.cases):
        source = sorted(seeds)[i % len(seeds)]
        pool = kinds + (model_kinds if source.startswith("real_network") else [])
        kind = pool[(i // len(seeds)) % len(pool)]
        path = tmp / f"case-{source}-{kind}.safetensors"
        data = None
        if kind == "sparse_huge":
            fuzzing.sparse_huge(seeds[source], rng, path)
        else:
            if kind in fuzzing.KINDS:
                data = fuzzing.mutate(seeds[source], kind, rng)
            else:
                data = fuzzing.mutate_extra(seeds[source], kind, rng)
            path.write_bytes(data)
        cb = real_codebook if source.startswith("real") else toy_codebook
        outcome, loaded, bug, peak = load_case(path, cb)
        doors["load"][outcome == "valid"] += 1
        if path.stat().st_size >= 1 << 20 and kind != "sparse_huge" and data_share(path) >= 0.9:
            max_ratio = max(max_ratio, peak / path.stat().st_size)  # where the data, not the header, dominates
        # codes_ge_k pokes a code of 16..255 and recomputes the hash: out of range for the toy
        # k=16 seeds, a legitimate code (and a legitimate file) for the real k=256 one
        wrong_if_accepted = kind in WRONG_IF_ACCEPTED and not (kind == "codes_ge_k" and source == "real_network")
        if bug is None and loaded is not None and wrong_if_accepted and content(loaded) != expected[source]:
            bug = "damaged file accepted: its content differs from the seed's"
        by_kind[kind]["bug" if bug else "valid" if outcome == "valid" else "error"] += 1
        by_rule[outcome] += 1
        if bug:
            bug_found("load", kind, source, bug, data)
        # the commands, on the real seeds (the toy ones through inspect only)
        argvs = [("inspect", ["inspect", str(path)])]
        if source == "real_network":
            real_cases += 1
            argvs.append(
                (
                    "eval",
                    ["eval", "--network", "digits_cnn", "--artifact", str(path), "--codebook", str(real["codebook"])],
                )
            )
        if source == "real_codebook":
            real_cases += 1
            fmt = ["hex", "mem", "coe", "mif"][i % 4]
            argvs.append(
                (
                    "rom export",
                    ["rom", "export", "--codebook", str(path), "--format", fmt, "--out", str(tmp / f"r.{fmt}")],
                )
            )
        if source.startswith("real") and args.sim_every and real_cases % args.sim_every == 0:
            cb_arg = path if source == "real_codebook" else real["codebook"]
            art_arg = path if source == "real_network" else real["network"]
            layer = "fc2" if kind != "unicode_names" else fuzzing.HOSTILE_NAMES[i % len(fuzzing.HOSTILE_NAMES)]
            argvs.append(("sim", ["sim", "--codebook", str(cb_arg), "--artifact", str(art_arg), "--layer", layer]))
        for door, argv in argvs:
            status, _out, _err, bug = run_cli(argv)
            doors[door][f"exit {status}"] += 1
            accepted_wrong = status == 0 and (
                (door == "eval" and (kind in model_kinds or kind == "unicode_names"))
                or (wrong_if_accepted and outcome == "valid" and content(loaded) != expected[source])
            )
            if status == 0 and door == "eval" and kind == "unicode_names" and source == "real_network":
                # a renamed leftover or layer, or another network name: eval must refuse all three
                accepted_wrong = True
            if bug is None and accepted_wrong:
                bug = f"`vq4all {door}` accepted a file that does not rebuild its network"
            if bug:
                bug_found(door, kind, source, bug, data)
        if kind == "sparse_huge":
            path.unlink()  # 1-4 GiB apparent size: never leave it behind

    # checkpoints, through compress --resume
    ckpt_seed = real["checkpoint"].read_bytes()
    control = tmp / "control.ckpt"
    control.write_bytes(ckpt_seed)
    argv = ["compress", "--codebook", str(real["codebook"]), "--out", str(tmp / "control.safetensors")]
    status, _o, err, bug = run_cli(argv + ["--checkpoint", str(control), "--resume"] + checkpoint_args())
    if status != 0:  # else every tampered case would be refused for the wrong reason
        raise SystemExit(f"the untampered checkpoint does not resume: {bug or err[-500:]}")
    ckpt_outcomes = collections.Counter()
    for i in range(args.checkpoints):
        kind = CHECKPOINT_TAMPERS[i % len(CHECKPOINT_TAMPERS)]
        data = tamper_checkpoint(ckpt_seed, kind, rng)
        ck = tmp / "tampered.ckpt"
        ck.write_bytes(data)
        out = tmp / "resumed.safetensors"
        argv = ["compress", "--codebook", str(real["codebook"]), "--out", str(out), "--checkpoint", str(ck), "--resume"]
        status, _out, err, bug = run_cli(argv + checkpoint_args())
        doors["compress --resume"][f"exit {status}"] += 1
        ckpt_outcomes[f"{kind}: exit {status}"] += 1
        by_kind[f"checkpoint:{kind}"]["bug" if bug else "valid" if status == 0 else "error"] += 1
        if bug is None and status == 0:
            bug = "a tampered checkpoint was resumed"
        if bug:
            bug_found("compress --resume", kind, "checkpoint", bug, data)
    seconds = time.perf_counter() - start

    total = sum(sum(c.values()) for c in doors.values())
    summary = {
        "file_cases": args.cases,
        "checkpoint_cases": args.checkpoints,
        "door_runs": total,
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "doors": {d: dict(c) for d, c in sorted(doors.items())},
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_rule": dict(by_rule.most_common()),
        "checkpoint_outcomes": dict(sorted(ckpt_outcomes.items())),
        "bugs": bugs,
        "max_peak_allocation_over_file_size": round(max_ratio, 2),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "fuzz.json", (json.dumps(summary, indent=2, default=str) + "\n").encode())
    md = [
        f"# Fuzzing every door: {args.cases} file cases + {args.checkpoints} checkpoints (seed {args.seed}), "
        f"{total} runs through the doors, {seconds:.0f} s",
        "",
        f"Bugs (traceback, not one short printable line, exit not 0/2, wrong data accepted, or allocation > "
        f"2 x size + {artifact.MAX_HEADER_MEMORY >> 20} MiB): **{len(bugs)}**",
        f"Largest peak allocation / file size over files >= 1 MiB that are >= 90% data: {max_ratio:.2f}",
        "",
        "| door | outcomes |",
        "|---|---|",
    ]
    md += [f"| {d} | {', '.join(f'{k}: {v}' for k, v in sorted(c.items()))} |" for d, c in sorted(doors.items())]
    md += ["", "| mutation kind | valid | error | bug |", "|---|---|---|---|"]
    md += [
        f"| {k} | {v.get('valid', 0)} | {v.get('error', 0)} | {v.get('bug', 0)} |" for k, v in sorted(by_kind.items())
    ]
    md += ["", "| outcome through the reader (error rule, numbers and names elided) | cases |", "|---|---|"]
    md += [f"| {r.replace('|', '/')} | {n} |" for r, n in by_rule.most_common()]
    if bugs:
        md += ["", "## Bugs", ""] + [f"- {b['door']} / {b['kind']} / {b['source']}: {b['bug']}" for b in bugs[:50]]
    atomic_write_bytes(out / "fuzz.md", ("\n".join(md) + "\n").encode())
    print("\n".join(md[:4]))
    for b in bugs[:20]:
        print(f"BUG {b['door']} / {b['kind']} / {b['source']}: {b['bug']}")
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
