"""A network that is not in the zoo, end to end: examples/wine_mlp.py (an MLP trained here on
sklearn's real wine data) goes model -> compress -> artifact -> vq4all.load(model=...) -> ROM
file -> `vq4all sim` on one of its layers, through the same CLI and API a user has.

Independent expectations: the loaded model equals the model with the artifact's weights decoded
by the numpy reference; the ROM file equals reference.rom_words; the simulated layer equals
reference.lookup_matmul_int (0 mismatches); and the compressed network keeps the teacher's
predictions (measured: top-1 agreement 1.0 on all 178 inputs at ~1.7 bits/weight).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vq4all
from support.scripts import load_script
from vq4all.errors import VQ4AllError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "wine_mlp.py"
MODEL = f"{EXAMPLE}:wine_mlp"


def cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "vq4all", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """(folder, weights file, inputs file, codebook file): the trained example and a universal
    codebook built from two zoo networks it never contributed to."""
    folder = tmp_path_factory.mktemp("wine")
    subprocess.run([sys.executable, str(EXAMPLE), str(folder)], check=True, capture_output=True, timeout=120)
    codebook = folder / "codebook.safetensors"
    cli(
        "codebook",
        "build",
        "--networks",
        "digits_cnn,mtcnn_onet",
        "--k",
        "1024",
        "--per-network",
        "20000",
        "--out",
        codebook,
        "--json",
    )
    return folder, folder / "wine_mlp.safetensors", folder / "wine_x.npy", codebook


def _teacher(weights):
    """The trained example model, from its weight file."""
    from safetensors.torch import load_file

    model = _example_module().wine_mlp()
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def _example_module():
    return load_script(EXAMPLE, "wine_mlp_example")


@pytest.mark.sim
def test_a_model_outside_the_zoo_from_compress_to_the_simulated_engine(wine):

    from vq4all.evaluate import artifact_weights
    from vq4all.hw.rtl.romfiles import read_readmemh
    from vq4all.reference import rom_words

    folder, weights, inputs, codebook_path = wine
    out = folder / "wine.safetensors"
    user = ["--model", MODEL, "--weights", weights, "--calibration", inputs]  # fmt: skip
    json_of = lambda *args: json.loads(cli(*args, "--json").stdout)  # noqa: E731
    report = json_of("compress", *user, "--loss", "kl", "--codebook", codebook_path, "--out", out, "--steps", "100")
    assert report["network"] == "WineMLP" and report["frozen_by_pnc"] > 0 and report["bits_per_weight"] < 2.0

    codebook = vq4all.load_codebook(codebook_path)
    teacher = _teacher(weights)
    x = torch.from_numpy(np.load(inputs))
    model = vq4all.load(out, codebook, model=_example_module().wine_mlp())  # weights ignored: the artifact's are used
    assert type(model.fc2).__name__ == "VQLinear"

    reference_model = _example_module().wine_mlp()
    art = vq4all.load_network(out, codebook)
    reference_model.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in artifact_weights(art, codebook).items()}
    )
    with torch.no_grad():
        got, want, fp = model(x), reference_model(x), teacher(x)
    # float32: the torch path decodes the same codes x scales as the reference, then one matmul; the
    # order of the sums differs, so equal to float32 rounding only
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float((got.argmax(1) == fp.argmax(1)).float().mean()) >= 0.95

    info = json_of("eval", *user, "--artifact", out, "--codebook", codebook_path)
    assert info["inputs"] == 178 and info["top1_agreement"] >= 0.95 and info["cosine"] > 0.9

    rom = folder / "codebook.hex"
    cli("rom", "export", "--codebook", codebook_path, "--format", "hex", "--out", rom)
    assert read_readmemh(rom.read_text()) == rom_words(codebook.codebook)

    sim = json_of("sim", *user, "--codebook", codebook_path, "--artifact", out, "--layer", "fc2")
    assert sim["mismatches"] == 0 and sim["outputs"] == 64 and sim["input"].startswith("real (WineMLP")


def test_python_api_on_a_model_outside_the_zoo(wine):
    """compress -> save -> load(model=) in Python; the student runs as returned and equals the
    loaded model; hard_assign gives codes that save writes."""
    folder, weights, inputs, codebook_path = wine

    teacher = _teacher(weights)
    x = torch.from_numpy(np.load(inputs))
    codebook = vq4all.load_codebook(codebook_path)
    teacher.train()
    student = vq4all.compress(teacher, x, codebook, vq4all.CompressConfig(steps=60), loss="kl", progress=False)
    # the caller's model is not touched: still in training mode, still trainable
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    teacher.eval()
    assert student is not teacher and student.fc1.weight.shape == teacher.fc1.weight.shape
    vq4all.save(student, folder / "api.safetensors")
    loaded = vq4all.load(folder / "api.safetensors", codebook, model=_example_module().wine_mlp())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), student(x), rtol=1e-5, atol=1e-5)  # same codes; float32 sum order
    codes = vq4all.hard_assign(teacher, codebook)
    vq4all.save(codes, folder / "hard.safetensors")
    assert [layer.param for layer in vq4all.load_network(folder / "hard.safetensors", codebook).layers] == [
        "fc1.weight",
        "fc2.weight",
        "head.weight",
    ]


def test_user_mistakes_are_one_line_errors(wine, tmp_path):
    folder, weights, inputs, codebook_path = wine
    from safetensors.torch import load_file

    teacher = _teacher(weights)
    codebook = vq4all.load_codebook(codebook_path)
    with pytest.raises(VQ4AllError, match=r"key 'fc3.weight' is not in the model's state dict"):
        vq4all.hard_assign(teacher, codebook, keys=["fc1.weight", "fc3.weight"])
    broken = _example_module().wine_mlp()
    with torch.no_grad():
        broken.fc2.weight[3, 4] = float("nan")
    with pytest.raises(VQ4AllError, match=r"weight 'fc2.weight' holds 1 NaN"):
        vq4all.compress(broken, torch.zeros(4, 13), codebook, progress=False)
    with pytest.raises(VQ4AllError, match=r"WineMLP: the model fails on its calibration inputs \(RuntimeError: mat1"):
        vq4all.compress(teacher, torch.zeros(4, 12), codebook, progress=False)
    art = vq4all.hard_assign(teacher, codebook)
    other = torch.nn.Module()
    other.fc1, other.fc2, other.head = torch.nn.Linear(13, 32), torch.nn.Linear(32, 64), torch.nn.Linear(64, 3)
    with pytest.raises(VQ4AllError, match=r"layer 'fc1.weight' is \[64, 13\] in the artifact, \[32, 13\] in the model"):
        vq4all.load(art, codebook, model=other)
    with pytest.raises(VQ4AllError, match=r"'WineMLP', not a zoo network: pass model="):
        vq4all.load(art, codebook)

    bad_cli = [
        (["assign", "--model", "no_such_package.mod:f"], "cannot import no_such_package.mod"),
        (["assign", "--model", f"{EXAMPLE}:nothing"], "has no attribute 'nothing'"),
        (["assign", "--model", MODEL, "--network", "digits_cnn"], "exactly one of --network"),
        (["assign", "--network", "digits_cnn", "--weights", weights], "--weights goes with --model"),
        (["compress", "--model", MODEL, "--weights", weights], "--model needs --calibration"),
        (["assign", "--model", MODEL, "--weights", inputs], "unknown suffix '.npy'"),
        (["assign", "--model", MODEL, "--weights", codebook_path], "no entry 'fc1.weight'"),
        (["assign", "--model", MODEL, "--weights", weights, "--out", weights], "is also an input file"),
    ]
    for args, message in bad_cli:
        if "--out" not in args:
            args = [*args, "--out", tmp_path / "x.safetensors"]
        if "--codebook" not in args:
            args = [*args, "--codebook", codebook_path]
        proc = cli(*args, check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert load_file(str(weights))  # the refused --out never touched the input


def test_weights_with_rows_shorter_than_d_stay_fp_and_are_reported(wine):
    """keys=None: a Linear with 3 inputs has rows of 3 values (< d=8): it is left FP, bit for bit,
    named in a warning and in the artifact's left_fp; the others are coded."""
    _, _, _, codebook_path = wine
    codebook = vq4all.load_codebook(codebook_path)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(13, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3), torch.nn.Linear(3, 2))
    with pytest.warns(UserWarning, match=r"left FP, rows shorter than d=8: 3.weight"):
        art = vq4all.hard_assign(model, codebook)
    assert [layer.param for layer in art.layers] == ["0.weight", "2.weight"]
    assert list(art.config["left_fp"]) == ["3.weight"]
    np.testing.assert_array_equal(art.leftovers["3.weight"], model[3].weight.detach().numpy())
    with pytest.raises(VQ4AllError, match=r"key '3.weight' has rows of 3 values, fewer than d=8"):
        vq4all.hard_assign(model, codebook, keys=["3.weight"])
