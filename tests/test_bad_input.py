"""Bad networks and bad arguments: exit status 2 and one line that says what is wrong and what
to do (in-process `vq4all.cli.main`, exactly what the console script runs; an exception other
than VQ4AllError would escape and fail the test), `--debug` shows the traceback; and the library
functions the commands call, for inputs the zoo's fixed networks cannot produce."""

import os

import numpy as np
import pytest
import torch

from vq4all import artifact
from vq4all.artifact import Codebook
from vq4all.cli import main
from vq4all.errors import VQ4AllError
from vq4all.hard import hard_assign


def error_line(capsys, argv, *words, prefix="vq4all: error: "):
    status = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith(prefix), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    cb = Codebook(rng.integers(-127, 128, (256, 4), dtype=np.int8), np.array([0.02], np.float32), {})
    other = Codebook(rng.integers(-127, 128, (256, 4), dtype=np.int8), np.array([0.02], np.float32), {})
    artifact.save_codebook(folder / "cb.safetensors", cb)
    artifact.save_codebook(folder / "other.safetensors", other)
    from vq4all import zoo

    net = zoo.load("digits_cnn")
    state = {k: v.numpy() for k, v in net.model.state_dict().items()}
    artifact.save_network(folder / "digits.safetensors", hard_assign(net.name, state, net.compressible_keys(), cb))
    return folder


def test_unknown_network_name(capsys, files, tmp_path):
    for command in ("assign", "compress"):
        error_line(
            capsys,
            [
                command,
                "--network",
                "resnet99",
                "--codebook",
                str(files / "cb.safetensors"),
                "--out",
                str(tmp_path / "x"),
            ],
            "unknown network 'resnet99'",
            "choose one of",
            "digits_cnn",
        )
    error_line(
        capsys,
        ["codebook", "build", "--networks", "digits_cnn,resnet99", "--out", str(tmp_path / "x")],
        "resnet99",
        "choose from",
    )


def test_codebook_and_network_mismatch(capsys, files):
    error_line(
        capsys,
        [
            "eval",
            "--network",
            "digits_cnn",
            "--artifact",
            str(files / "digits.safetensors"),
            "--codebook",
            str(files / "other.safetensors"),
        ],
        "not on the given codebook",
        "pass the codebook it was built with",
    )
    # a codebook where a network artifact is needed, and the other way round
    error_line(
        capsys,
        [
            "eval",
            "--network",
            "digits_cnn",
            "--artifact",
            str(files / "cb.safetensors"),
            "--codebook",
            str(files / "cb.safetensors"),
        ],
        "a network file is needed here",
    )
    error_line(
        capsys,
        [
            "assign",
            "--network",
            "digits_cnn",
            "--codebook",
            str(files / "digits.safetensors"),
            "--out",
            str(files / "y"),
        ],
        "a codebook file is needed here",
    )


def test_missing_and_unwritable_paths(capsys, files, tmp_path):
    cb = str(files / "cb.safetensors")
    error_line(
        capsys,
        [
            "assign",
            "--network",
            "digits_cnn",
            "--codebook",
            str(tmp_path / "nope.safetensors"),
            "--out",
            str(tmp_path / "x"),
        ],
        "no such file",
    )
    error_line(capsys, ["inspect", str(tmp_path)], "is a folder")
    error_line(
        capsys,
        ["rom", "export", "--codebook", cb, "--format", "hex", "--out", str(tmp_path / "no" / "rom.hex")],
        "does not exist",
        "create it first",
    )
    error_line(
        capsys,
        ["rom", "export", "--codebook", cb, "--format", "hex", "--out", str(tmp_path)],
        "is a folder",
        "give a file name",
    )
    # /proc refuses new files even to root (for whom os.access says every folder is writable)
    error_line(
        capsys,
        ["rom", "export", "--codebook", cb, "--format", "hex", "--out", "/proc/vq4all-test.hex"],
        "/proc",
        "writable",
    )
    if os.geteuid() != 0:  # a read-only folder binds only non-root users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        error_line(
            capsys,
            ["rom", "export", "--codebook", cb, "--format", "hex", "--out", str(ro / "rom.hex")],
            "not writable",
            "choose another",
        )
    assert not (tmp_path / "x").exists()


def test_bad_numbers_say_what_to_change(capsys, tmp_path):
    """A bad number is a usage error of its flag (argparse, one line, the allowed range)."""
    build = "vq4all codebook build: error: "
    error_line(
        capsys,
        ["codebook", "build", "--networks", "digits_cnn", "--d", "0", "--out", str(tmp_path / "x")],
        "--d 0: must be an integer in 1..64",
        "(see vq4all codebook build --help)",
        prefix=build,
    )
    error_line(
        capsys,
        ["codebook", "build", "--networks", "digits_cnn", "--k", "1000", "--out", str(tmp_path / "x")],
        "--k 1000: must be a power of two in 2..65536",
        prefix=build,
    )
    assert not (tmp_path / "x").exists()


def test_debug_shows_the_traceback(files, tmp_path):
    with pytest.raises(VQ4AllError, match="unknown network"):
        main(
            [
                "--debug",
                "assign",
                "--network",
                "resnet99",
                "--codebook",
                str(files / "cb.safetensors"),
                "--out",
                str(tmp_path / "x"),
            ]
        )


# ----------------------------------------------------------------------------- library paths
def codebook(d=4):
    rng = np.random.default_rng(1)
    return Codebook(rng.integers(-127, 128, (256, d), dtype=np.int8), np.array([0.02], np.float32), {})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_weights_name_the_tensor(bad):
    state = {
        "fc1.weight": np.ones((4, 8), np.float32),
        "fc2.weight": np.ones((4, 8), np.float32),
        "fc2.bias": np.zeros(4),
    }
    state["fc2.weight"][1, 3] = bad
    with pytest.raises(VQ4AllError, match=r"weight 'fc2.weight' holds 1 NaN or Inf values: fix the network"):
        hard_assign("toy", state, ["fc1.weight", "fc2.weight"], codebook())
    # the codebook builder and the trainer's parametrization go through the same check
    from vq4all.assign import quantize_
    from vq4all.codebook import network_subvectors

    with pytest.raises(VQ4AllError, match="weight 'fc2.weight'"):
        network_subvectors({k: state[k] for k in ("fc1.weight", "fc2.weight")}, 4, "channel")
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    with torch.no_grad():
        model[0].weight[0, 0] = bad
    with pytest.raises(VQ4AllError, match="weight '0.weight' holds"):
        quantize_(model, ["0.weight"], codebook(), n=2)


def test_a_network_with_no_compressible_layer():
    from vq4all.assign import quantize_

    with pytest.raises(VQ4AllError, match="no compressible layer"):
        hard_assign("biases", {"b": np.zeros(3, np.float32)}, [], codebook())
    with pytest.raises(VQ4AllError, match="no compressible layer"):
        quantize_(torch.nn.Sequential(torch.nn.ReLU()), [], codebook(), n=2)


def test_d_that_does_not_divide_a_row_is_padded_not_refused(tmp_path):
    """Not an error by design: a row of 9 values at d=4 is 3 sub-vectors, the last one padded
    (pad=3, recorded in the manifest and checked on load); decoding gives back 9 values."""
    from vq4all.decode import decode_layer

    w = np.random.default_rng(2).standard_normal((5, 9)).astype(np.float32)
    art = hard_assign("toy", {"fc.weight": w}, ["fc.weight"], codebook(4))
    path = tmp_path / "toy.safetensors"
    artifact.save_network(path, art)
    layer = artifact.load_network(path, codebook(4)).layers[0]
    assert layer.pad == 3 and layer.codes.shape == (5, 3)
    assert decode_layer(layer, codebook(4)).shape == (5, 9)


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path):
    """--resume from a checkpoint that parses but lacks what a run needs (edited or from
    another tool) ends in one VQ4AllError saying to delete it, not a KeyError."""
    import json

    from safetensors.numpy import save

    from vq4all import zoo
    from vq4all.config import CompressConfig
    from vq4all.train import CHECKPOINT_FORMAT, compress

    cb = codebook(8)
    config = CompressConfig(steps=2, calibration=32, checkpoint_every=1)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "network": "digits_cnn",
        "codebook_sha256": cb.sha256,
        "config": config.to_dict(),
    }
    ckpt = tmp_path / "run.ckpt"
    ckpt.write_bytes(save({"x": np.zeros(1, np.float32)}, metadata={"vq4all": json.dumps(meta)}))
    with pytest.raises(VQ4AllError, match="damaged checkpoint .*delete it and run without --resume") as err:
        compress(zoo.load("digits_cnn"), cb, config, checkpoint=ckpt, resume=True)
    assert "\n" not in str(err.value)


def test_bad_block_flags_fail_before_training(capsys, files, tmp_path):
    base = ["compress", "--network", "digits_cnn", "--codebook", str(files / "cb.safetensors")]
    out = str(tmp_path / "net.safetensors")
    error_line(
        capsys,
        [*base, "--out", out, "--mode", "blockwise", "--blocks", "conv1,fc9"],
        "block 'fc9' names no module",
        "did you mean",
    )
    error_line(capsys, [*base, "--out", out, "--blocks", "conv1,,fc1"], "--blocks", "empty name")
    error_line(
        capsys,
        [*base, "--out", out, "--block-steps", "0"],
        "--block-steps 0: must be an integer in 1..1000000",
        prefix="vq4all compress: error: ",
    )
    error_line(
        capsys,
        [*base, "--out", out, "--mode", "blockwise", "--calibration-count", "8"],
        "needs at least batch_size=32 calibration inputs",
    )
    (tmp_path / "file").write_text("x")
    error_line(
        capsys,
        [*base, "--out", out, "--mode", "blockwise", "--block-cache", str(tmp_path / "file")],
        "is a file, not a folder",
    )
    assert not (tmp_path / "net.safetensors").exists()
