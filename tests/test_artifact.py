"""Artifact round trips, and one bad file per validation rule: each must end in one
ArtifactError naming the file, the tensor (or the header) and the rule."""

import json
import os
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save

from vq4all import artifact, rules
from vq4all.artifact import Codebook, LayerCodes, NetworkArtifact
from vq4all.errors import ArtifactError, VQ4AllError


def make_codebook(k=256, d=4, dtype="int8", seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "int8":
        return Codebook(
            rng.integers(-127, 128, (k, d), dtype=np.int8), np.array([0.05], np.float32), {"config": {"seed": seed}}
        )
    return Codebook(rng.standard_normal((k, d)).astype(np.float16), None, {})


def make_network(cb, seed=0):
    rng = np.random.default_rng(seed)
    dtype = rules.code_dtype(cb.k)
    layers = [
        LayerCodes(
            "conv.weight",
            (6, 3, 3, 3),
            cb.d,
            (-27) % cb.d,
            "channel",
            rng.integers(0, cb.k, (6, -(-27 // cb.d))).astype(dtype),
            rng.uniform(0.1, 1, 6).astype(np.float16),
        ),
        LayerCodes(
            "rnn.weight_ih_l0",
            (8, 8),
            cb.d,
            0,
            "tensor",
            rng.integers(0, cb.k, (8, 8 // cb.d)).astype(dtype),
            np.full(8, 0.5, np.float16),
        ),
    ]
    leftovers = {
        "conv.bias": rng.standard_normal(6).astype(np.float32),
        "bn.num_batches_tracked": np.array(3, np.int64),
    }
    return NetworkArtifact("toy", cb.sha256, cb.k, layers, leftovers, {"method": "test"})


@pytest.fixture
def files(tmp_path):
    cb = make_codebook()
    cb_path, net_path = tmp_path / "cb.safetensors", tmp_path / "net.safetensors"
    artifact.save_codebook(cb_path, cb)
    artifact.save_network(net_path, make_network(cb))
    return cb, cb_path, net_path


def rewrite(src, dst, manifest_fn=None, tensors_fn=None):
    """Re-encode a file with an independent reader/writer (safetensors), bypassing our checks."""
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    manifest = json.loads(header["__metadata__"]["vq4all"])
    tensors = load_file(str(src))
    if manifest_fn:
        manifest_fn(manifest)
    if tensors_fn:
        tensors_fn(tensors)
    with open(dst, "wb") as f:
        f.write(save(tensors, metadata={"vq4all": json.dumps(manifest)}))
    return dst


def apply_case(src, dst, case, rehash=True):
    """rewrite() with case(manifest, tensors) mutating both (tensors copied first: writable).
    With `rehash`, a network file's content hash is recomputed after the case (as a hostile
    writer would), so the rule under test is reached, not the hash check."""
    state = {}

    def tensors_fn(t):
        for k in list(t):
            t[k] = t[k].copy()
        case(state["m"], t)
        if rehash and state["m"].get("kind") == "network":
            state["m"]["sha256"] = artifact.content_sha256(state["m"], t)

    return rewrite(src, dst, manifest_fn=lambda m: state.setdefault("m", m), tensors_fn=tensors_fn)


def raw(dst, header: dict, body: bytes = b""):
    h = json.dumps(header).encode()
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + body)
    return dst


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype,k", [("int8", 256), ("int8", 65536), ("float16", 1024)])
def test_codebook_round_trip(tmp_path, dtype, k):
    cb = make_codebook(k=k, d=8, dtype=dtype)
    path = tmp_path / "cb.safetensors"
    artifact.save_codebook(path, cb)
    back = artifact.load_codebook(path)
    np.testing.assert_array_equal(back.codebook, cb.codebook)
    assert back.codebook.dtype == cb.codebook.dtype and back.sha256 == cb.sha256
    assert (
        back.manifest["k"] == k
        and back.manifest["dtype"] == dtype
        and back.manifest.get("config") == cb.manifest.get("config")
    )
    # the hash is the documented one: SHA-256 of codebook bytes then codebook_scale bytes
    import hashlib

    raw_bytes = cb.codebook.tobytes() + (
        b"" if cb.codebook_scale is None else cb.codebook_scale.astype("<f4").tobytes()
    )
    assert back.manifest["sha256"] == hashlib.sha256(raw_bytes).hexdigest()
    # readable by the independent safetensors reader too
    assert set(load_file(str(path))) == ({"codebook", "codebook_scale"} if dtype == "int8" else {"codebook"})


@pytest.mark.parametrize("k", [256, 65536])
def test_network_round_trip(tmp_path, k):
    cb = make_codebook(k=k)
    net = make_network(cb)
    path = tmp_path / "net.safetensors"
    artifact.save_network(path, net)
    back = artifact.load_network(path, cb)
    assert back.network == "toy" and back.k == k and back.codebook_sha256 == cb.sha256
    for a, b in zip(net.layers, back.layers):
        assert (a.param, a.shape, a.d, a.pad, a.scale_granularity) == (
            b.param,
            b.shape,
            b.d,
            b.pad,
            b.scale_granularity,
        )
        np.testing.assert_array_equal(a.codes, b.codes)
        assert b.codes.dtype == (np.uint8 if k <= 256 else np.uint16)
        np.testing.assert_array_equal(a.scales, b.scales)
    assert set(back.leftovers) == {"conv.bias", "bn.num_batches_tracked"}
    names = set(load_file(str(path)))
    assert {"conv.codes", "conv.scales", "rnn.weight_ih_l0.codes", "rnn.weight_ih_l0.scales", "conv.bias"} <= names


def test_sizes_and_summary(files):
    cb, cb_path, net_path = files
    info = artifact.summarize(net_path)
    # 6*7 + 8*2 codes at 8 bits, 14 scales at 16 bits, 6 fp32 biases + one int64
    assert info["stored_bits"] == (6 * 7 + 8 * 2) * 8 + 14 * 16 + 6 * 32 + 64
    assert info["compression_ratio"] == pytest.approx(32 * (162 + 64 + 7) / info["stored_bits"])
    assert artifact.summarize(cb_path)["sha256"] == cb.sha256


def test_atomic_write_keeps_old_file_on_failure(files, monkeypatch):
    cb, cb_path, _ = files
    before = cb_path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        artifact.save_codebook(cb_path, make_codebook(seed=1))
    assert cb_path.read_bytes() == before
    assert [p.name for p in cb_path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_write_to_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(VQ4AllError, match="does not exist"):
        artifact.save_codebook(tmp_path / "nope" / "cb.safetensors", make_codebook())


# ----------------------------------------------------------------------------- bad files
def expect(path, tensor, rule, loader=artifact.load, **kw):
    with pytest.raises(ArtifactError) as err:
        loader(path, **kw)
    assert err.value.path == str(path)
    assert err.value.tensor == tensor
    assert rule in err.value.rule, err.value.rule
    assert str(path) in str(err.value)


def test_bad_container(tmp_path, files):
    cb, cb_path, _ = files
    data = cb_path.read_bytes()
    (tmp_path / "short").write_bytes(data[:5])
    expect(tmp_path / "short", None, "truncated")
    (tmp_path / "cut").write_bytes(data[: len(data) // 2])
    expect(tmp_path / "cut", "codebook", "outside")
    (tmp_path / "huge").write_bytes(struct.pack("<Q", 1 << 60) + data[8:])
    expect(tmp_path / "huge", None, "header declares")
    (tmp_path / "json").write_bytes(struct.pack("<Q", 4) + b"{{{{")
    expect(tmp_path / "json", None, "not valid JSON")
    expect(raw(tmp_path / "list", [1, 2]), None, "JSON object")
    expect(raw(tmp_path / "nometa", {"__metadata__": {}}), None, "not a vq4all artifact")
    expect(raw(tmp_path / "badman", {"__metadata__": {"vq4all": "{oops"}}), None, "not valid JSON")
    meta = {"vq4all": json.dumps({"format": "vq4all", "format_version": 1, "kind": "codebook"})}
    expect(
        raw(
            tmp_path / "dtype",
            {"__metadata__": meta, "codebook": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}},
            b"x",
        ),
        "codebook",
        "unknown dtype",
    )
    expect(
        raw(
            tmp_path / "size",
            {"__metadata__": meta, "codebook": {"dtype": "I8", "shape": [4, 2], "data_offsets": [0, 4]}},
            b"x" * 8,
        ),
        "codebook",
        "needs 8 bytes",
    )
    expect(
        raw(
            tmp_path / "shape",
            {"__metadata__": meta, "codebook": {"dtype": "I8", "shape": [-1], "data_offsets": [0, 0]}},
        ),
        "codebook",
        "non-negative",
    )
    expect(
        raw(
            tmp_path / "overlap",
            {
                "__metadata__": meta,
                "a": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]},
                "b": {"dtype": "I8", "shape": [4], "data_offsets": [2, 6]},
            },
            b"x" * 6,
        ),
        "b",
        "overlaps",
    )
    with pytest.raises(VQ4AllError, match="no such file"):
        artifact.load(tmp_path / "missing")


@pytest.mark.parametrize(
    "case,tensor,rule",
    [
        (lambda m, t: m.update(format="other"), None, "format"),
        (lambda m, t: m.update(format_version=3), None, "unknown format_version 3"),
        (lambda m, t: m.update(kind="model"), None, "kind"),
        (lambda m, t: m.update(k=300), None, "not a power of two"),
        (lambda m, t: m.update(k=512), "codebook", "must be [k, d]"),
        (lambda m, t: m.update(dtype="float16"), "codebook_scale", "unexpected tensor"),
        (lambda m, t: t.pop("codebook_scale"), "codebook_scale", "missing"),
        (lambda m, t: t.update(extra=np.zeros(1, np.float32)), "extra", "unexpected tensor"),
        (lambda m, t: t.update(codebook=t["codebook"].astype(np.int16)), "codebook", "does not match the manifest"),
        (lambda m, t: t.update(codebook_scale=np.array([0.0], np.float32)), "codebook_scale", "> 0"),
        (lambda m, t: t.update(codebook_scale=np.array([np.nan], np.float32)), "codebook_scale", "> 0"),
        (lambda m, t: t.update(codebook_scale=np.array([1.0], np.float64)), "codebook_scale", "float32"),
        (lambda m, t: t["codebook"].__setitem__((0, 0), t["codebook"][0, 0] ^ 1), "codebook", "SHA-256"),
    ],
)
def test_bad_codebook(files, tmp_path, case, tensor, rule):
    _, cb_path, _ = files
    bad = apply_case(cb_path, tmp_path / "bad", case)
    expect(bad, tensor, rule)


def test_nan_in_float16_codebook(tmp_path):
    cb = make_codebook(dtype="float16")
    path = tmp_path / "cb"
    artifact.save_codebook(path, cb)
    nan_cb = cb.codebook.copy()
    nan_cb[1, 1] = np.nan

    def poison(m, t):
        t["codebook"] = nan_cb
        m["sha256"] = artifact.codebook_sha256(nan_cb)

    bad = apply_case(path, tmp_path / "bad", poison)
    expect(bad, "codebook", "NaN or Inf")


def layer0(m):
    return m["layers"][0]


@pytest.mark.parametrize(
    "case,tensor,rule",
    [
        (lambda m, t: m.update(codebook_sha256="xyz"), None, "64 lowercase hex"),
        (lambda m, t: m.update(network=""), None, "network"),
        (lambda m, t: m.update(layers={}), None, "must be a list"),
        (lambda m, t: layer0(m).update(name="other"), None, "param"),
        (lambda m, t: m["layers"].append(dict(layer0(m))), "conv.codes", "listed twice"),
        (lambda m, t: layer0(m).update(pad=0), "conv.codes", "pad"),
        (lambda m, t: layer0(m).update(d=0), "conv.codes", "'d'"),
        (lambda m, t: layer0(m).update(shape=[6, 0]), "conv.codes", "positive integers"),
        (lambda m, t: layer0(m).update(scale_granularity="row"), "conv.scales", "scale_granularity"),
        (lambda m, t: t.pop("conv.codes"), "conv.codes", "missing"),
        (lambda m, t: t.update({"conv.codes": t["conv.codes"].astype(np.uint16)}), "conv.codes", "must be U8"),
        (
            lambda m, t: t.update({"conv.codes": np.ascontiguousarray(t["conv.codes"][:, :3])}),
            "conv.codes",
            "ceil(row/d)",
        ),
        (lambda m, t: m.update(k=128), "conv.codes", ">= k=128"),
        (lambda m, t: t.update({"conv.scales": t["conv.scales"].astype(np.float32)}), "conv.scales", "float16"),
        (lambda m, t: t["conv.scales"].__setitem__(2, 0), "conv.scales", "finite and > 0"),
        (lambda m, t: t["conv.scales"].__setitem__(2, np.inf), "conv.scales", "finite and > 0"),
        (lambda m, t: t.update({"ghost.codes": t["conv.codes"]}), "ghost.codes", "no layer"),
        (lambda m, t: t["conv.bias"].__setitem__(0, np.nan), "conv.bias", "NaN or Inf"),
        (lambda m, t: t.update({"conv.weight": np.zeros((6, 3, 3, 3), np.float32)}), "conv.weight", "also be stored"),
    ],
)
def test_bad_network(files, tmp_path, case, tensor, rule):
    _, _, net_path = files
    bad = apply_case(net_path, tmp_path / "bad", case)
    expect(bad, tensor, rule)


def test_network_refuses_another_codebook(files):
    _, _, net_path = files
    other = make_codebook(seed=7)
    expect(net_path, None, "not on the given codebook", loader=artifact.load_network, codebook=other)
    artifact.load_network(net_path, make_codebook())  # the same codebook (same seed) loads


def test_kind_mismatch(files):
    _, cb_path, net_path = files
    expect(net_path, None, "a codebook file is needed", loader=artifact.load_codebook)
    expect(cb_path, None, "a network file is needed", loader=artifact.load_network)


def test_writer_refuses_invalid_network(tmp_path):
    cb = make_codebook()
    net = make_network(cb)
    net.layers[0].codes = net.layers[0].codes.astype(np.uint16)
    with pytest.raises(ArtifactError, match="must be U8"):
        artifact.save_network(tmp_path / "x", net)
    assert not (tmp_path / "x").exists()


def test_zero_dimensional_leftovers_keep_their_shape(tmp_path):
    cb = make_codebook()
    net = make_network(cb)
    path = tmp_path / "net.safetensors"
    artifact.save_network(path, net)
    assert artifact.load_network(path).leftovers["bn.num_batches_tracked"].shape == ()
