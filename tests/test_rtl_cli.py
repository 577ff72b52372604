"""`vq4all sim`: one layer through the engine in a simulator, a JSON summary; every user mistake
is one line and exit status 2."""

import json
import subprocess
import sys

import numpy as np
import pytest

from vq4all.artifact import Codebook, LayerCodes, NetworkArtifact, save_codebook, save_network


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vq4all", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A K=256 codebook and a (non-zoo) network artifact with a ragged layer."""
    folder = tmp_path_factory.mktemp("simcli")
    rng = np.random.default_rng(5)
    cb = Codebook(rng.integers(-127, 128, (256, 8)).astype(np.int8), np.array([0.01], np.float32))
    save_codebook(folder / "cb.safetensors", cb)
    codes = rng.integers(0, 256, (12, 5)).astype(np.uint8)  # rows of 37 values: m=5, pad 3
    layer = LayerCodes("head.weight", (12, 37), 8, 3, "channel", codes, np.ones(12, np.float16))
    art = NetworkArtifact("toy", cb.sha256, 256, [layer], {"head.bias": np.zeros(12, np.float32)})
    save_network(folder / "toy.safetensors", art)
    return folder


@pytest.mark.sim
def test_sim_random_and_artifact_layer(files):
    proc = run_cli(
        "sim", "--codebook", str(files / "cb.safetensors"), "--lanes", "2", "--backpressure", "0.2", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["mismatches"] == 0 and info["outputs"] == info["rows"] == 48 and info["cycles"] > 0
    assert 0 < info["mac_utilization"] <= 1 and info["input"] == "random"
    proc = run_cli(
        "sim",
        "--codebook",
        str(files / "cb.safetensors"),
        "--artifact",
        str(files / "toy.safetensors"),
        "--layer",
        "head",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["name"] == "head" and info["outputs"] == 12 and info["mismatches"] == 0 and info["in_features"] == 37
    assert info["cycles"] == info["ideal_cycles"]  # no backpressure: one beat per cycle
    assert info["input"].startswith("random normal")  # 'toy' is no zoo network: no real input to capture
    proc = run_cli(
        "sim",
        "--codebook",
        str(files / "cb.safetensors"),
        "--artifact",
        str(files / "toy.safetensors"),
        "--layer",
        "head",
        "--requant",
        "--lanes",
        "4",
        "--backpressure",
        "0.3",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["requant"] and info["mismatches"] == 0 and info["outputs"] == 12 and info["config"]["requant"]
    # the row-packing engine on the same ragged layer (rows of 37 values): fewer cycles, same results
    args = ["sim", "--codebook", str(files / "cb.safetensors"), "--artifact", str(files / "toy.safetensors")]
    lanes = json.loads(run_cli(*args, "--layer", "head", "--json").stdout)
    proc = run_cli(*args, "--layer", "head", "--pack", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["pack"] and info["config"]["pack"] and info["mismatches"] == 0 and info["outputs"] == 12
    assert info["cycles"] == info["ideal_cycles"] < lanes["cycles"]


def test_sim_user_mistakes(files, tmp_path):
    cb, art = str(files / "cb.safetensors"), str(files / "toy.safetensors")
    cases = [
        (["--codebook", str(tmp_path / "none.safetensors")], "no such file"),
        (["--codebook", cb, "--lanes", "3"], "--lanes 3: must be a power of two in 1..16"),
        (["--codebook", cb, "--simulator", "modelsim"], "unknown simulator 'modelsim'"),
        (["--codebook", cb, "--artifact", art, "--layer", "tail"], "unknown layer 'tail'"),
        (["--codebook", cb, "--artifact", art], "--layer"),
        (["--codebook", cb, "--backpressure", "1.5"], "--backpressure 1.5: must be a number in [0, 1)"),
        (["--codebook", art], "codebook file is needed"),
    ]
    for args, words in cases:
        proc = run_cli("sim", *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr
    proc = run_cli("sim", "--codebook", cb, "--artifact", art, "--layer", "tail")
    assert "choose one of head" in proc.stderr
