"""Every numeric flag of the CLI is checked by its argparse type: any value out of range, NaN,
infinite, unparsable or thousands of digits long ends in ONE line naming the flag and the allowed
range, exit status 2, before any file is read, any memory allocated or anything written; and
argparse's own errors (missing, unknown, bad choice) are one line too. In-process `main`,
exactly what the console script runs (an exception would escape and fail the test)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from vq4all import artifact
from vq4all.artifact import Codebook
from vq4all.cli import build_parser, main
from vq4all.config import CodebookConfig, CompressConfig
from vq4all.errors import VQ4AllError

HUGE = "9" * 5000  # int() itself refuses numerals past 4300 digits


@pytest.fixture(scope="module")
def cb(tmp_path_factory):
    path = tmp_path_factory.mktemp("args") / "cb.safetensors"
    rng = np.random.default_rng(0)
    artifact.save_codebook(
        path, Codebook(rng.integers(-127, 128, (256, 4), dtype=np.int8), np.array([0.02], np.float32), {})
    )
    return path


def commands(cb, out):
    """(subcommand words, the rest of a valid command line) of every command with numeric flags."""
    return {
        "codebook build": (["codebook", "build"], ["--networks", "digits_cnn", "--out", str(out)]),
        "compress": (
            ["compress"],
            ["--network", "digits_cnn", "--codebook", str(cb), "--out", str(out)],
        ),
        "rom export": (["rom", "export"], ["--codebook", str(cb), "--format", "hex", "--out", str(out)]),
        "rtl generate": (["rtl", "generate"], ["--codebook", str(cb), "--out-dir", str(out)]),
        "sim": (["sim"], ["--codebook", str(cb)]),
    }


# (command, flag, the range as the error line states it, values it refuses)
INTS = ["-1", "nan", "inf", "1e400", "1.5", "x", "", HUGE, "-" + HUGE]
FLOATS = ["nan", "inf", "-inf", "1e400", "x", "", HUGE, "-" + HUGE]
FLAGS = [
    ("codebook build", "--k", "a power of two in 2..65536", [*INTS, "0", "1000", "131072"]),
    ("codebook build", "--d", "an integer in 1..64", [*INTS, "0", "65"]),
    ("codebook build", "--per-network", "an integer in 1..4194304", [*INTS, "0", "4194305"]),
    ("codebook build", "--lloyd-iters", "an integer in 0..1000", [*INTS, "1001"]),
    ("codebook build", "--seed", "an integer in 0..4294967295", [*INTS, "4294967296"]),
    ("codebook build", "--bandwidth", "scott, silverman or a positive finite number", [*FLOATS, "0", "-1"]),
    ("compress", "--alpha", "a number in (0, 1)", [*FLOATS, "0", "1", "-0.5", "1.5"]),
    ("compress", "--n", "an integer in 1..256", [*INTS, "0", "257", "65536"]),
    ("compress", "--steps", "an integer in 1..1000000", [*INTS, "0", "1000001"]),
    ("compress", "--lr", "a finite number > 0", [*FLOATS, "0", "-1"]),
    ("compress", "--reg", "a finite number >= 0", [*FLOATS, "-1"]),
    ("compress", "--feature-weight", "a finite number >= 0", [*FLOATS, "-0.1"]),
    ("compress", "--batch-size", "an integer in 1..65536", [*INTS, "0", "65537"]),
    ("compress", "--calibration-count", "an integer in 1..65536", [*INTS, "0", "1000000000"]),
    ("compress", "--seed", "an integer in 0..4294967295", [*INTS, "4294967296", "18446744073709551616"]),
    ("compress", "--checkpoint-every", "an integer in 0..1000000", [*INTS, "1000001"]),
    ("compress", "--block-steps", "an integer in 1..1000000", [*INTS, "0"]),
    ("compress", "--finetune-steps", "an integer in 0..1000000", [*INTS, "1000001"]),
    ("rom export", "--width", "an integer in 1..8", [*INTS, "0", "9"]),
    ("rtl generate", "--lanes", "a power of two in 1..16", [*INTS, "0", "3", "32"]),
    ("rtl generate", "--acc-bits", "an integer in 16..64", [*INTS, "15", "70"]),
    ("rtl generate", "--max-m", "an integer in 1..1048576", [*INTS, "0", "1048577"]),
    ("sim", "--lanes", "a power of two in 1..16", [*INTS, "0", "3"]),
    ("sim", "--backpressure", "a number in [0, 1)", [*FLOATS, "1", "1.5", "-0.1"]),
    ("sim", "--seed", "an integer in 0..4294967295", [*INTS, "4294967296"]),
]


def one_line(capsys, argv) -> str:
    status = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and not out, (status, out, err[:2000])
    assert "Traceback" not in err and len(lines[0]) < 300, lines[0][:400]
    return lines[0]


@pytest.mark.parametrize("command,flag,rule,values", FLAGS, ids=[f"{c}{f}" for c, f, _, _ in FLAGS])
def test_every_numeric_flag_refuses_bad_values_in_one_line(capsys, cb, tmp_path, command, flag, rule, values):
    out = tmp_path / "out"
    words, rest = commands(cb, out)[command]
    for value in values:
        line = one_line(capsys, [*words, *rest, f"{flag}={value}"])
        shown = value if len(value) <= 24 else value[:24]
        assert line.startswith(f"vq4all {command}: error: {flag} {shown}"), line
        assert f": must be {rule} (see vq4all {command} --help)" in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_documented_ranges_hold_at_their_ends(cb, tmp_path):
    """The ends of every range parse; the configs take the same values (one source of truth)."""
    parser = build_parser()
    top = parser.parse_args(
        ["compress", "--network", "digits_cnn", "--codebook", "c", "--out", "o"]
        + ["--seed", "4294967295", "--n", "256", "--steps", "1000000", "--calibration-count", "65536"]
        + ["--batch-size", "65536", "--checkpoint-every", "0", "--finetune-steps", "0", "--alpha", "1e-9"]
        + ["--lr", "1e-30", "--reg", "0", "--feature-weight", "0", "--block-steps", "1000000"]
    )
    assert (top.seed, top.n, top.steps, top.calibration_count) == (4294967295, 256, 1000000, 65536)
    CompressConfig(
        seed=top.seed,
        n=top.n,
        steps=top.steps,
        calibration=top.calibration_count,
        batch_size=top.batch_size,
        checkpoint_every=0,
        finetune_steps=0,
        block_steps=top.block_steps,
        alpha=top.alpha,
    )
    b = parser.parse_args(
        ["codebook", "build", "--networks", "x", "--out", "o", "--k", "65536", "--d", "64", "--seed", "0"]
        + ["--per-network", "4194304", "--lloyd-iters", "1000", "--bandwidth", "0.5"]
    )
    CodebookConfig(k=b.k, d=b.d, seed=b.seed, per_network=b.per_network, lloyd_iters=b.lloyd_iters, bandwidth=0.5)
    assert b.bandwidth == 0.5 and parser.parse_args(["codebook", "build", "--networks", "x", "--out", "o"]).k is None
    s = parser.parse_args(["sim", "--codebook", "c", "--lanes", "16", "--backpressure", "0", "--seed", "1_000"])
    assert (s.lanes, s.backpressure, s.seed) == (16, 0.0, 1000)
    # the library refuses what the flags refuse, with the same bounds
    for bad in ({"seed": -1}, {"seed": 1 << 32}, {"n": 257}, {"calibration": 10**9}, {"steps": 10**300}):
        with pytest.raises(VQ4AllError, match=f"{next(iter(bad))}="):
            CompressConfig(**bad)
    for bad in ({"steps": 1.5}, {"seed": float("nan")}, {"lr": float("inf")}, {"alpha": "0.9"}, {"blocks": "abc"}):
        with pytest.raises(VQ4AllError, match=f"{next(iter(bad))}="):
            CompressConfig(**bad)
    for bad in ({"seed": -1}, {"per_network": 1 << 30}, {"lloyd_iters": -1}):
        with pytest.raises(VQ4AllError, match=f"{next(iter(bad))}="):
            CodebookConfig(**bad)


def test_negative_seeds_no_longer_reach_numpy(capsys, cb, tmp_path):
    """The reported tracebacks: numpy's ValueError for a negative seed (codebook build,
    compress, sim), and allocations of gigabytes for --calibration-count / --n."""
    out = tmp_path / "x.safetensors"
    cases = [
        ["codebook", "build", "--networks", "digits_cnn", "--k", "256", "--d", "4", "--seed", "-1", "--out", str(out)],
        ["compress", "--network", "digits_cnn", "--codebook", str(cb), "--out", str(out), "--seed", "-1"],
        ["sim", "--codebook", str(cb), "--seed", "-1"],
        ["compress", "--network", "digits_cnn", "--codebook", str(cb), "--out", str(out), "--calibration-count", "1e9"],
        ["compress", "--network", "digits_cnn", "--codebook", str(cb), "--out", str(out), "--calibration-count"]
        + ["1000000000"],
        ["compress", "--network", "digits_cnn", "--codebook", str(cb), "--out", str(out), "--n", "65536"],
    ]
    for argv in cases:
        line = one_line(capsys, argv)
        assert "must be an integer in" in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    "argv,words",
    [
        (["compress", "--network", "digits_cnn"], ["vq4all compress: error: ", "required: --codebook, --out"]),
        (["compress", "--init", "zzz"], ["vq4all compress: error: --init: invalid choice: 'zzz'"]),
        (["codebook", "build", "--k"], ["vq4all codebook build: error: --k: expected one argument"]),
        (["nonsense"], ["vq4all: error: ", "invalid choice: 'nonsense'"]),
        (["inspect", "a", "b"], ["vq4all: error: unrecognized arguments: b"]),
        (["zoo"], ["vq4all zoo: error: ", "required"]),
        (["inspect", "f", "--bogus\x1b[2J"], ["unrecognized arguments: --bogus\\x1b[2J"]),
    ],
)
def test_argparse_errors_are_one_line(capsys, argv, words):
    line = one_line(capsys, argv)
    assert line.endswith("--help)"), line
    for word in words:
        assert word in line, line


def test_help_still_works(capsys):
    assert main(["compress", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--calibration-count" in out and "1..65536" in out and "0..4294967295" in out


def test_the_console_script_prints_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vq4all", "codebook", "build", "--networks", "digits_cnn", "--k", "256", "--d", "4"]
        + ["--seed", "-1", "--out", str(tmp_path / "x.safetensors")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr == (
        "vq4all codebook build: error: --seed -1: must be an integer in 0..4294967295 "
        "(see vq4all codebook build --help)\n"
    )
    assert not (tmp_path / "x.safetensors").exists()
    # and a good command's --json output is unaffected
    assert json.loads(
        subprocess.run(
            [sys.executable, "-m", "vq4all", "zoo", "list", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    )
