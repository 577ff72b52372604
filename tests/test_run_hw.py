"""`vq4all run-hw` and the host driver (vq4all.hw.host): digits_cnn on a small codebook (k=256,
d=4) with every compressed layer on the simulated engine, bit for bit against the integer
model; a mismatch is counted, not hidden; every bad input is one line before any simulation."""

import json

import numpy as np
import pytest

from vq4all import cli, zoo
from vq4all.artifact import Codebook, save_codebook, save_network
from vq4all.codebook import build as build_codebook
from vq4all.config import CodebookConfig
from vq4all.hard import hard_assign
from vq4all.hw import host
from vq4all.hw.rtl.romfiles import rom_file_text


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """cb.safetensors (k=256, d=4, from digits_cnn), digits.safetensors (hard assignment),
    cb16.safetensors (a float16 codebook), other.hex (the ROM of another codebook)."""
    folder = tmp_path_factory.mktemp("runhw")
    net = zoo.load("digits_cnn")
    cb = build_codebook(CodebookConfig(networks=("digits_cnn",), k=256, d=4), {"digits_cnn": net})
    save_codebook(folder / "cb.safetensors", cb)
    state = {k: v.numpy() for k, v in net.model.state_dict().items()}
    save_network(folder / "digits.safetensors", hard_assign(net.name, state, net.compressible_keys(4), cb))
    save_codebook(folder / "cb16.safetensors", Codebook(cb.values().astype(np.float16)))
    other = Codebook(cb.codebook[::-1], cb.codebook_scale)
    (folder / "other.hex").write_text(rom_file_text("hex", other, 8))
    (folder / "cb.hex").write_text(rom_file_text("hex", cb, 8))
    return folder


def _main(capsys, *argv):
    status = cli.main(["run-hw", *map(str, argv)])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.sim
def test_engine_is_bit_exact_with_the_integer_model(files, capsys):
    """Two test digits (evenly spaced: the first and the last) through the $readmemh engine
    (its ROM loaded from the exported codebook.hex), 4 lanes: no mismatch in any layer, the
    network's outputs identical to the integer model's, the same metric, every GEMV accounted
    for (64 positions per conv, one per Linear), full-speed cycles."""
    status, out, err = _main(
        capsys,
        "--network",
        "digits_cnn",
        "--artifact",
        files / "digits.safetensors",
        "--codebook",
        files / "cb.safetensors",
        "--limit",
        2,
        "--lanes",
        4,
        "--rom-file",
        files / "cb.hex",
        "--json",
    )
    assert status == 0, err
    r = json.loads(out)
    assert r["inputs"] == 2 and r["index"] == [0, 449] and r["simulator"] == "icarus" and r["rom"] == "readmemh"
    assert r["mismatches"] == 0 and r["engine_equals_integer"] and r["engine"] == r["integer"]
    layers = {e["name"]: e for e in r["layers"]}
    assert [(n, e["output"], e["gemvs"]) for n, e in layers.items()] == [
        ("conv1", "requant", 128),
        ("conv2", "requant", 128),
        ("fc1", "requant", 2),
        ("fc2", "int32", 2),
    ]
    assert r["outputs"] == sum(e["gemvs"] * e["rows"] for e in r["layers"])
    for e in r["layers"]:
        assert e["cycles"] == e["ideal_cycles"] > 0 and 0 < e["mac_utilization"] <= 1
    text = cli._run_hw_text(r)
    assert "0 mismatches in" in text and "identical to the integer model's" in text


@pytest.mark.sim
def test_a_mismatch_is_counted(files, monkeypatch):
    """If the integer model said something else, every differing result is counted, and what
    flows on is the engine's own result (here: the true one)."""
    from vq4all.artifact import load_codebook, load_network
    from vq4all.integer import build
    from vq4all.integer.layers import quantize, reference_outputs

    cb = load_codebook(files / "cb.safetensors")
    net = zoo.load("digits_cnn")
    model = build(net, load_network(files / "digits.safetensors", cb), cb, calibration=16)
    fc2 = model.layers()[-1]
    cols = quantize(np.random.default_rng(0).uniform(0, 3, (2, fc2.in_features)), fc2.x_scale)
    truth = reference_outputs(fc2, cols)
    monkeypatch.setattr(host, "reference_outputs", lambda layer, c, bits: reference_outputs(layer, c, bits) + 1)
    backend = host.EngineBackend(codebook=cb, configs=host.engine_configs(cb, lanes=2), progress=False)
    got = backend.gemv(fc2, cols)
    assert np.array_equal(got, truth) and got.dtype == np.int32
    assert backend.stats["fc2"].mismatches == backend.stats["fc2"].outputs == 2 * fc2.rows


def _bad(files, *extra, network="digits_cnn", codebook="cb.safetensors"):
    return [
        "--network",
        network,
        "--artifact",
        files / "digits.safetensors",
        "--codebook",
        files / codebook,
        *extra,
    ]


@pytest.mark.parametrize(
    "kind,expected",
    [
        (("--simulator", "modelsim"), "unknown simulator 'modelsim': choose one of icarus, verilator"),
        ({"network": "resnet99"}, "unknown network 'resnet99'"),
        ({"network": "silero_vad"}, "the integer executor has no recipe for 'silero_vad'"),
        ({"codebook": "cb16.safetensors"}, "a float16 codebook has no integer datapath"),
        ({"network": "mtcnn_onet"}, "the artifact holds network 'digits_cnn', not 'mtcnn_onet'"),
        (
            ("--max-m", 64),
            "layer 'fc1' of the artifact does not fit the engine: m=128 > max_m=64 (--max-m 128 would)",
        ),
        (("--rom-file", "missing.hex"), "missing.hex: ROM file not found"),
        (("--rom-file", "other.hex"), "other.hex: ROM file holds 256 words that are not codebook"),
    ],
)
def test_bad_input_is_one_line_before_simulation(files, capsys, monkeypatch, kind, expected):
    def no_simulation(*args, **kwargs):
        raise AssertionError("simulation started")

    monkeypatch.setattr(host, "_simulate_layer", no_simulation)
    if isinstance(kind, dict):
        argv = _bad(files, **kind)
    else:
        extra = [files / v if str(v).endswith(".hex") else v for v in kind]
        argv = _bad(files, *extra)
    status, out, err = _main(capsys, *argv)
    assert status == 2 and out == ""
    assert err.startswith("vq4all: error: ") and err.count("\n") == 1, err
    assert expected in err, err


def test_good_rom_file_passes_the_checks(files):
    """The same checks accept the codebook's own ROM file (and return its absolute path)."""
    from vq4all.artifact import load_codebook, load_network

    cb = load_codebook(files / "cb.safetensors")
    art = load_network(files / "digits.safetensors", cb)
    configs, rom = host.prepare(zoo.load("digits_cnn"), art, cb, rom_file=files / "cb.hex")
    assert rom == (files / "cb.hex").absolute() and configs["requant"].requant and not configs["int32"].requant
