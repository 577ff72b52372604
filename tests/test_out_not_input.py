"""No command writes over one of its own inputs: an output path (--out, --checkpoint, a file
--out-dir would receive) that is an input file (--codebook, --weights, --calibration, ...) is
refused with one line before anything is written, and the input's bytes stay as they were."""

import os

import numpy as np
import pytest
import torch

from vq4all import artifact
from vq4all.artifact import Codebook
from vq4all.cli import main
from vq4all.hw.rtl.generate import TOP
from vq4all.hw.rtl.romfiles import FORMATS, SUFFIX

MODEL = "torch.nn:Identity"  # any importable factory: the refusal comes before the model is built


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    cb = Codebook(rng.integers(-127, 128, (256, 4), dtype=np.int8), np.array([0.02], np.float32), {})
    artifact.save_codebook(tmp_path / "cb.safetensors", cb)
    from safetensors.torch import save_file

    save_file({"inputs": torch.zeros(4, 8)}, str(tmp_path / "calib.safetensors"))
    save_file({"weight": torch.zeros(2, 8)}, str(tmp_path / "weights.safetensors"))
    return tmp_path


def generated_files():
    """What `rtl generate` writes into --out-dir (the module doc of vq4all.hw.rtl.generate)."""
    return [f"{TOP}.v", f"{TOP}.il", f"{TOP}_readmemh.v", *(f"codebook{SUFFIX[f]}" for f in FORMATS), "manifest.json"]


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def refused(capsys, folder, argv, *words):
    before = snapshot(folder)
    status = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("vq4all: error: "), err
    assert "is also an input file: choose another output path" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert snapshot(folder) == before, "a file was written, changed or removed"


def test_rom_export_never_overwrites_its_codebook(capsys, files):
    cb = str(files / "cb.safetensors")
    refused(capsys, files, ["rom", "export", "--codebook", cb, "--format", "hex", "--out", cb], "--out")
    # the same file by another name: a hard link, and a path through ..
    os.link(cb, files / "link.safetensors")
    for other in (files / "link.safetensors", files / ".." / files.name / "cb.safetensors"):
        refused(capsys, files, ["rom", "export", "--codebook", cb, "--format", "mif", "--out", str(other)])


@pytest.mark.parametrize("command", ["assign", "compress"])
def test_assign_and_compress_never_overwrite_an_input(capsys, files, command):
    cb, calib, weights = (str(files / n) for n in ("cb.safetensors", "calib.safetensors", "weights.safetensors"))
    zoo = ["--network", "digits_cnn", "--codebook", cb]
    model = ["--model", MODEL, "--codebook", cb, "--calibration", calib, "--weights", weights]
    refused(capsys, files, [command, *zoo, "--out", cb], "--out")
    refused(capsys, files, [command, *model, "--out", calib], "--out")
    refused(capsys, files, [command, *model, "--out", weights], "--out")
    if command == "compress":
        out = str(files / "net.safetensors")
        for ckpt in (cb, calib, weights):
            refused(capsys, files, [command, *model, "--out", out, "--checkpoint", ckpt], "--checkpoint")
        # --checkpoint the same as --out
        before = snapshot(files)
        assert main([command, *zoo, "--out", out, "--checkpoint", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--checkpoint {out} is the --out file: give the checkpoint another" in err
        assert snapshot(files) == before
        # no checkpoints are written, but a finished run deletes its default checkpoint OUT.ckpt:
        # that must never be an input either
        os.replace(files / "cb.safetensors", files / "net.safetensors.ckpt")
        moved = str(files / "net.safetensors.ckpt")
        refused(
            capsys,
            files,
            [command, "--network", "digits_cnn", "--codebook", moved, "--out", out, "--checkpoint-every", "0"],
            "--checkpoint",
        )
        refused(capsys, files, [command, "--network", "digits_cnn", "--codebook", moved, "--out", out, "--resume"])


def test_rtl_generate_never_overwrites_its_codebook(capsys, files):
    """--out-dir may be the codebook's folder, but no generated file may replace the codebook."""
    for name in generated_files():
        path = files / name
        os.replace(next(p for p in files.iterdir() if p.name in (*generated_files(), "cb.safetensors")), path)
        refused(
            capsys,
            files,
            ["rtl", "generate", "--codebook", str(path), "--out-dir", str(files)],
            "--out-dir",
            f"the generated file {files / name}",
        )
    assert sorted(p.name for p in files.iterdir()) == sorted(["calib.safetensors", "weights.safetensors", name])


def test_rtl_generate_into_the_codebooks_own_folder_works(capsys, files):
    cb = files / "cb.safetensors"
    data = cb.read_bytes()
    assert main(["rtl", "generate", "--codebook", str(cb), "--out-dir", str(files)]) == 0
    assert cb.read_bytes() == data
    # exactly the files the CLI protects: a new generated file must join generated_files() in cli.py
    made = {p.name for p in files.iterdir()} - {"cb.safetensors", "calib.safetensors", "weights.safetensors"}
    assert made == set(generated_files())
    from vq4all import cli

    assert sorted(cli.generated_files()) == sorted(generated_files())
