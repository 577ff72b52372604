"""Names the CLI did not choose (a network name read from an artifact, a model's class name or
--name, layer names, --networks / --layer entries) reach every line it prints, success lines
included, escaped and shortened (errors.printable, errors.MAX_NAME_CHARS): a name holding a line
break, a terminal escape or a NUL, or a million characters, still gives one short line."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from vq4all import artifact, zoo
from vq4all.artifact import Codebook
from vq4all.cli import main
from vq4all.errors import MAX_NAME_CHARS
from vq4all.hard import hard_assign

EVIL = "\n\x1b[2J\x00evil"
ESCAPED = "\\n\\x1b[2J\\x00evil"
CLASS = "\n\x1b[2Jevil"  # a class name cannot hold a NUL
CLASS_ESCAPED = "\\n\\x1b[2Jevil"
LONG = "n" * 1_000_000
MAX_LINE = 2 * MAX_NAME_CHARS + 400  # the name's share, plus the command's own words

TOY = """
import torch


def make():
    torch.manual_seed(0)
    cls = type({name!r}, (torch.nn.Sequential,), {{}})  # the network name defaults to the class name
    return cls(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("names")
    rng = np.random.default_rng(0)
    cb = Codebook(rng.integers(-127, 128, (256, 4), dtype=np.int8), np.array([0.02], np.float32), {})
    artifact.save_codebook(folder / "cb.safetensors", cb)
    net = zoo.load("digits_cnn")
    state = {k: v.numpy() for k, v in net.model.state_dict().items()}
    real = hard_assign(net.name, state, net.compressible_keys(), cb)
    for label, name in (("evil", EVIL), ("long", LONG), ("both", EVIL + LONG)):
        artifact.save_network(folder / f"{label}.safetensors", dataclasses.replace(real, network=name))
    (folder / "toy.py").write_text(TOY.format(name=CLASS + "n" * 5000))
    np.save(folder / "x.npy", rng.standard_normal((64, 8)).astype(np.float32))
    return folder


def clean_line(text: str) -> str:
    """The one line of `text`: short, no control character left."""
    lines = text.splitlines()
    assert len(lines) == 1 and text.endswith("\n"), text[:1000]
    line = lines[0]
    assert len(line) <= MAX_LINE, f"{len(line)} characters: {line[:300]}"
    assert line.isprintable(), repr(line[:300])
    return line


@pytest.mark.parametrize("label", ["evil", "long", "both"])
def test_inspect_prints_one_short_line_for_a_hostile_network_name(capsys, files, label):
    status = main(["inspect", str(files / f"{label}.safetensors")])
    out, err = capsys.readouterr()
    if status == 0:  # the reader accepts the name: the success line escapes and shortens it
        line = clean_line(out)
        assert not err and "valid network artifact of " in line, line
        if label != "long":
            assert f"of {ESCAPED}" in line, line
        if label != "evil":
            assert "more characters)" in line, line
    else:  # or the reader refuses it, in one line too
        assert status == 2 and not out
        clean_line(err)


def test_inspect_in_a_terminal_gets_no_escape_sequence(files):
    proc = subprocess.run(
        [sys.executable, "-m", "vq4all", "inspect", str(files / "both.safetensors")],
        capture_output=True,
        timeout=120,
    )
    assert b"\x1b" not in proc.stdout + proc.stderr and b"\x00" not in proc.stdout + proc.stderr
    assert len((proc.stdout + proc.stderr).splitlines()) == 1 and len(proc.stdout + proc.stderr) <= MAX_LINE


def test_assign_compress_and_eval_summaries_escape_the_model_name(capsys, files, tmp_path):
    user = ["--model", f"{files / 'toy.py'}:make", "--calibration", str(files / "x.npy")]
    cb = ["--codebook", str(files / "cb.safetensors")]
    assert main(["assign", *user, *cb, "--out", str(tmp_path / "a.safetensors")]) == 0
    out, err = capsys.readouterr()
    assert f": {CLASS_ESCAPED}nnnn" in clean_line(out) and "more characters)" in out
    # --name too, and the progress bar on stderr (no --json) shows no raw escape either
    argv = ["compress", *user, *cb, "--name", EVIL, "--steps", "2", "--checkpoint-every", "0"]
    assert main([*argv, "--out", str(tmp_path / "c.safetensors")]) == 0
    out, err = capsys.readouterr()
    assert f": {ESCAPED} in " in clean_line(out)
    assert "\x1b" not in err and "\x00" not in err
    assert main(["eval", *user, *cb, "--name", EVIL, "--artifact", str(tmp_path / "c.safetensors")]) == 0
    out, err = capsys.readouterr()
    assert clean_line(out).startswith(f"{ESCAPED} (") and " vs its FP model on 64 inputs" in out


def test_error_lines_escape_names_from_flags_and_files(capsys, files, tmp_path):
    cb = str(files / "cb.safetensors")
    cases = [
        (
            ["codebook", "build", "--networks", f"digits_cnn,{EVIL}{LONG}", "--out", str(tmp_path / "x")],
            "unknown network",
        ),
        (["assign", "--network", EVIL + LONG, "--codebook", cb, "--out", str(tmp_path / "x")], "unknown network"),
        (
            ["sim", "--codebook", cb, "--artifact", str(files / "evil.safetensors"), "--layer", EVIL + LONG],
            "unknown layer",
        ),
        (
            [
                "compress",
                "--network",
                "digits_cnn",
                "--codebook",
                cb,
                "--out",
                str(tmp_path / "x"),
                "--blocks",
                f"a,,{EVIL}",
            ],
            "--blocks",
        ),
    ]
    for argv, words in cases:
        assert main(argv) == 2
        out, err = capsys.readouterr()
        line = clean_line(err)
        assert not out and line.startswith("vq4all: error: ") and words in line and "\\x1b[2J\\x00evil" in line, line
    assert not (tmp_path / "x").exists()


def test_the_command_line_cuts_any_error_to_one_short_line(monkeypatch, capsys):
    """The last guard: whatever text a message carries (15.5M characters, line breaks, escapes),
    `vq4all` prints one escaped line of bounded length."""
    from vq4all import cli
    from vq4all.errors import VQ4AllError

    def hostile(_args):
        raise VQ4AllError("bad \n\x1b[2J" + "y" * 15_500_000)

    monkeypatch.setattr(cli, "cmd_zoo_list", hostile)
    assert cli.main(["zoo", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\\n\\x1b[2J" in err and len(err) < cli.MAX_ERROR_CHARS + 100
