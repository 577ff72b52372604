"""The console script end to end: subprocesses, exit codes, one-line errors, JSON."""

import json
import subprocess
import sys

import pytest

from vq4all import artifact


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "vq4all", *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def assert_one_line_error(proc, *words, prefix="vq4all: error:"):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "cb.safetensors"
    proc = run(
        "codebook",
        "build",
        "--networks",
        "digits_cnn,mtcnn_pnet",
        "--k",
        "256",
        "--d",
        "4",
        "--per-network",
        "3000",
        "--seed",
        "1",
        "--out",
        str(out),
        "--json",
    )
    return out, json.loads(proc.stdout)


def test_codebook_build_and_inspect(built):
    out, info = built
    assert info["k"] == 256 and info["d"] == 4 and info["networks"] == ["digits_cnn", "mtcnn_pnet"]
    cb = artifact.load_codebook(out)
    assert cb.sha256 == info["sha256"] and cb.manifest["pooled_subvectors"] == 6000
    assert cb.manifest["config"]["seed"] == 1
    shown = json.loads(run("inspect", str(out), "--json").stdout)
    assert shown["kind"] == "codebook" and shown["sha256"] == info["sha256"]
    assert "valid codebook" in run("inspect", str(out)).stdout


def test_assign_writes_a_valid_network(built, tmp_path):
    out, _ = built
    net_path = tmp_path / "digits.safetensors"
    info = json.loads(
        run("assign", "--network", "digits_cnn", "--codebook", str(out), "--out", str(net_path), "--json").stdout
    )
    assert info["layers"] >= 3
    back = artifact.load_network(net_path, artifact.load_codebook(out))
    assert back.network == "digits_cnn" and all(layer.codes.dtype.name == "uint8" for layer in back.layers)
    shown = json.loads(run("inspect", str(net_path), "--json").stdout)
    assert shown["bits_per_weight"] == pytest.approx(info["bits_per_weight"])
    for search in ("activations", "hessian", "sequential"):
        weighted = tmp_path / f"digits_{search}.safetensors"
        run("assign", "--network", "digits_cnn", "--codebook", str(out), "--search", search, "--out", str(weighted))
        assert artifact.load_network(weighted, artifact.load_codebook(out)).config["search"] == search


def test_bad_input_exits_2_with_one_line(tmp_path, built):
    out, _ = built
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(out.read_bytes()[:100])
    assert_one_line_error(run("inspect", str(bad), check=False), str(bad))
    assert_one_line_error(run("inspect", str(tmp_path / "none"), check=False), "no such file")
    assert_one_line_error(
        run("codebook", "build", "--networks", "resnet99", "--out", str(tmp_path / "x"), check=False), "resnet99"
    )
    assert_one_line_error(
        run("codebook", "build", "--networks", "digits_cnn", "--k", "1000", "--out", str(tmp_path / "x"), check=False),
        "--k 1000: must be a power of two in 2..65536",
        prefix="vq4all codebook build: error:",
    )
    assert_one_line_error(
        run(
            "codebook",
            "build",
            "--networks",
            "digits_cnn",
            "--k",
            "256",
            "--d",
            "4",
            "--per-network",
            "100",
            "--out",
            str(tmp_path / "missing" / "x"),
            check=False,
        ),
        "does not exist",
    )
    assert_one_line_error(
        run("assign", "--network", "digits_cnn", "--codebook", str(bad), "--out", str(tmp_path / "y"), check=False),
        str(bad),
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_zoo_list_json():
    rows = json.loads(run("zoo", "list", "--json").stdout)
    names = [r["name"] for r in rows]
    assert names == [
        "efficientnet_lite0",
        "minilm_l6",
        "crepe_tiny",
        "crepe_full",
        "silero_vad",
        "mtcnn_pnet",
        "mtcnn_rnet",
        "mtcnn_onet",
        "digits_cnn",
    ]
    for r in rows:
        assert 0 < r["compressible_parameters"] <= r["parameters"] and r["metric"]
