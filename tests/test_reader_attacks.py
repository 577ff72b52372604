"""What an independent attack on the format broke, each case rebuilt from raw bytes: huge-integer
shapes, data read before the header was checked, JSON memory amplification, trailing bytes and
duplicate keys, network files without a content hash, `eval --artifact` filling missing layers
with the zoo's weights, leftovers whose dtype lies, untrusted names in messages, file modes and
symlinked outputs. Each test failed on the reader before these rules."""

import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

from support import fuzzing
from vq4all import artifact
from vq4all.cli import main
from vq4all.errors import ArtifactError

HUGE = 10**4000  # json (and Python's int()) read integers of up to 4,300 digits


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A codebook and the hard-assigned digits_cnn artifact on it (files), plus their bytes."""
    folder = tmp_path_factory.mktemp("real")
    cb_path, net_path = folder / "cb.safetensors", folder / "net.safetensors"
    assert main(["codebook", "build", "--networks", "digits_cnn", "--k", "256", "--d", "4", "--out", str(cb_path)]) == 0
    assert main(["assign", "--network", "digits_cnn", "--codebook", str(cb_path), "--out", str(net_path)]) == 0
    return cb_path, net_path


def one_line_error(capsys, argv, *words) -> str:
    status = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(err) == 1 and err[0].startswith("vq4all: error: "), err
    assert len(err[0]) < 2000 and err[0].isprintable(), err[0][:300]
    for word in words:
        assert word in err[0], err[0]
    return err[0]


def edit_manifest(data: bytes, change) -> bytes:
    header, body = fuzzing.split(data)
    manifest = json.loads(header["__metadata__"]["vq4all"])
    change(manifest)
    header["__metadata__"]["vq4all"] = json.dumps(manifest)
    return fuzzing.rehash(fuzzing.join(header, body))  # the hostile writer's hash is right


# ----------------------------------------------------------------------------- 1: huge integers
def test_shape_past_the_digit_limit_is_one_error_everywhere(real, tmp_path, capsys):
    cb, net = real
    data = net.read_bytes()
    bad = tmp_path / "huge_layer.safetensors"
    bad.write_bytes(edit_manifest(data, lambda m: m["layers"][0].update(shape=[HUGE, HUGE, 3])))
    with pytest.raises(ArtifactError, match="larger than any tensor"):
        artifact.load(bad)
    # a tensor entry whose dimensions multiply past the limit
    header, body = fuzzing.split(data)
    header["big"] = {"dtype": "U8", "shape": [HUGE, HUGE], "data_offsets": [0, 0]}
    bad2 = tmp_path / "huge_tensor.safetensors"
    bad2.write_bytes(fuzzing.rehash(fuzzing.join(header, body)))
    with pytest.raises(ArtifactError, match="needs more than"):
        artifact.load(bad2)
    for path in (bad, bad2):
        one_line_error(capsys, ["inspect", str(path)])
        one_line_error(capsys, ["eval", "--network", "digits_cnn", "--artifact", str(path), "--codebook", str(cb)])
        one_line_error(capsys, ["sim", "--codebook", str(cb), "--artifact", str(path), "--layer", "conv1"])
    cb_bad = tmp_path / "huge_cb.safetensors"
    header, body = fuzzing.split(cb.read_bytes())
    header["codebook"]["shape"] = [HUGE, 4]
    cb_bad.write_bytes(fuzzing.join(header, body))
    one_line_error(
        capsys, ["rom", "export", "--codebook", str(cb_bad), "--format", "hex", "--out", str(tmp_path / "r.hex")]
    )


# ----------------------------------------------------------------------------- 2, 3: eval and leftovers
def test_eval_refuses_an_artifact_with_missing_layers(real, tmp_path, capsys):
    cb, net = real
    art = artifact.load_network(net)
    dropped = artifact.NetworkArtifact(art.network, art.codebook_sha256, art.k, art.layers[1:], art.leftovers, {})
    path = tmp_path / "missing.safetensors"
    artifact.save_network(path, dropped)
    missing = art.layers[0].param
    one_line_error(capsys, ["eval", "--network", "digits_cnn", "--artifact", str(path), "--codebook", str(cb)], missing)
    empty = artifact.NetworkArtifact(art.network, art.codebook_sha256, art.k, [], {}, {})
    artifact.save_network(path, empty)
    one_line_error(
        capsys, ["eval", "--network", "digits_cnn", "--artifact", str(path), "--codebook", str(cb)], "no such entry"
    )


def test_leftover_whose_dtype_lies_is_refused(real, tmp_path, capsys):
    cb, net = real
    art = artifact.load_network(net)
    key = next(k for k, v in art.leftovers.items() if v.dtype == np.float32)
    # the same bytes relabelled I32: sizes agree, so only the model can tell
    header, body = fuzzing.split(net.read_bytes())
    header[key]["dtype"] = "I32"
    relabelled = tmp_path / "i32.safetensors"
    relabelled.write_bytes(fuzzing.rehash(fuzzing.join(header, body)))
    artifact.load_network(relabelled)  # a valid file on its own
    one_line_error(
        capsys,
        ["eval", "--network", "digits_cnn", "--artifact", str(relabelled), "--codebook", str(cb)],
        key,
        "int32",
    )
    # an F64 leftover beyond float32's range would become inf in the model
    art.leftovers[key] = np.full(art.leftovers[key].shape, 1e300, np.float64)
    wide = tmp_path / "f64.safetensors"
    artifact.save_network(wide, art)
    one_line_error(
        capsys, ["eval", "--network", "digits_cnn", "--artifact", str(wide), "--codebook", str(cb)], key, "range"
    )
    # an F64 leftover within range is fine (it is cast to the model's float32)
    art.leftovers[key] = np.full(art.leftovers[key].shape, 0.25, np.float64)
    artifact.save_network(wide, art)
    assert main(["eval", "--network", "digits_cnn", "--artifact", str(wide), "--codebook", str(cb), "--json"]) == 0


def test_untrusted_network_name_is_escaped_in_eval(real, tmp_path, capsys):
    cb, net = real
    art = artifact.load_network(net)
    art.network = "evil\n\x1b[2J\x00" + "x" * 1_000_000
    path = tmp_path / "name.safetensors"
    artifact.save_network(path, art)
    line = one_line_error(capsys, ["eval", "--network", "digits_cnn", "--artifact", str(path), "--codebook", str(cb)])
    assert "\\n\\x1b" in line


# ----------------------------------------------------------------------------- 5, 6: memory
def test_header_is_checked_before_the_data_is_read(tmp_path):
    path = tmp_path / "sparse.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 20) + b"not json at all!!!!!")
        f.truncate(2 << 30)  # 2 GiB, sparse: reading it whole would cost 2 GiB
    tracemalloc.start()
    with pytest.raises(ArtifactError, match="not valid JSON"):
        artifact.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_data_larger_than_memory_is_one_clear_error(tmp_path):
    path = tmp_path / "big.safetensors"
    header = {"__metadata__": {"vq4all": "{}"}, "x": {"dtype": "U8", "shape": [1 << 30], "data_offsets": [0, 1 << 30]}}
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        f.truncate(8 + len(h) + (1 << 30))  # 1 GiB of data, sparse on disk
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))
        from vq4all import artifact
        from vq4all.errors import VQ4AllError
        try:
            artifact.read_safetensors({str(path)!r})
        except VQ4AllError as e:
            print(e)
            sys.exit(3)
        """
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "do not fit in memory" in done.stdout and "Traceback" not in done.stderr


def test_json_amplification_is_bounded(tmp_path):
    # the densest JSON Python parses into the largest objects: empty dicts, 3 bytes each
    count = (artifact.MAX_HEADER_BYTES - 64) // 3
    h = b'{"a":[' + b",".join([b"{}"] * count) + b"]}"
    assert len(h) <= artifact.MAX_HEADER_BYTES
    path = tmp_path / "dense.safetensors"
    path.write_bytes(struct.pack("<Q", len(h)) + h)
    tracemalloc.start()
    with pytest.raises(ArtifactError):
        artifact.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 2 * path.stat().st_size + artifact.MAX_HEADER_MEMORY, peak
    # the same inside the manifest string, which is parsed a second time
    inner = json.dumps({"x": [{}] * ((artifact.MAX_HEADER_BYTES - 64) // 4)})
    h = json.dumps({"__metadata__": {"vq4all": inner}}).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h)
    tracemalloc.start()
    with pytest.raises(ArtifactError, match="too dense"):
        artifact.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 2 * path.stat().st_size + artifact.MAX_HEADER_MEMORY, peak
    # the 14.8 MB header of the attack is refused before it is parsed
    big = tmp_path / "big_header.safetensors"
    h = b'{"a":[' + b",".join([b"{}"] * 5_000_000) + b"]}"
    big.write_bytes(struct.pack("<Q", len(h)) + h)
    tracemalloc.start()
    with pytest.raises(ArtifactError, match="exceeds"):
        artifact.load(big)
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()


def test_real_network_loads_within_twice_its_size(real):
    _, net = real
    size = net.stat().st_size
    tracemalloc.start()
    artifact.load_network(net)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 2 * size + artifact.MAX_HEADER_MEMORY, (peak, size)


# ----------------------------------------------------------------------------- 10: layout rules
def test_config_must_be_an_object(real, tmp_path):
    _, net = real
    path = tmp_path / "config.safetensors"
    path.write_bytes(edit_manifest(net.read_bytes(), lambda m: m.update(config=7)))
    with pytest.raises(ArtifactError, match="'config' must be a JSON object"):
        artifact.load(path)


def test_trailing_bytes_gaps_and_duplicate_keys_are_refused(real, tmp_path):
    cb, net = real
    data = cb.read_bytes()
    trailing = tmp_path / "trailing.safetensors"
    trailing.write_bytes(data + b"\0" * 16)
    with pytest.raises(ArtifactError, match="after the last tensor"):
        artifact.load(trailing)
    header, body = fuzzing.split(data)
    for name in fuzzing._tensor_names(header):  # 4 bytes of nothing before the first tensor
        header[name]["data_offsets"] = [o + 4 for o in header[name]["data_offsets"]]
    gap = tmp_path / "gap.safetensors"
    gap.write_bytes(fuzzing.join(header, b"\0" * 4 + body))
    with pytest.raises(ArtifactError, match="4 data bytes before it belong to no tensor"):
        artifact.load(gap)
    # a second __metadata__ (safetensors refuses it; which copy wins differs between parsers)
    header, body = fuzzing.split(data)
    text = json.dumps(header)
    doubled = text[:-1] + ', "__metadata__": {"vq4all": "{}"}}'
    dup = tmp_path / "dup.safetensors"
    dup.write_bytes(struct.pack("<Q", len(doubled)) + doubled.encode() + body)
    with pytest.raises(ArtifactError, match="'__metadata__' twice"):
        artifact.load(dup)


def test_the_safetensors_library_agrees_on_every_refused_layout(real, tmp_path):
    from safetensors.numpy import load_file

    cb, _ = real
    trailing = tmp_path / "trailing.safetensors"
    trailing.write_bytes(cb.read_bytes() + b"\0" * 16)
    with pytest.raises(Exception):  # noqa: B017 - the library's own error type
        load_file(str(trailing))
    load_file(str(cb))  # and our writer's files are its files


# ----------------------------------------------------------------------------- 11: content hash
def test_every_bit_flip_in_a_network_file_is_refused(real, tmp_path):
    cb, net = real
    codebook = artifact.load_codebook(cb)
    data = net.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    rng = np.random.default_rng(0)
    path = tmp_path / "flip.safetensors"
    accepted = 0
    for pos in rng.integers(8 + hlen, len(data), 120):
        out = bytearray(data)
        out[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(out))
        try:
            artifact.load_network(path, codebook)
            accepted += 1
        except ArtifactError as e:
            assert "SHA-256" in str(e)
    assert accepted == 0
    manifest = artifact.read_manifest(net)
    tensors = artifact.read_safetensors(net)
    assert manifest["sha256"] == fuzzing.content_sha256(fuzzing.split(data)[0], fuzzing.split(data)[1])
    assert manifest["sha256"] == artifact.content_sha256(manifest, tensors)


def test_old_network_files_are_refused_with_a_way_out(real, tmp_path):
    _, net = real

    def old(m):
        m["format_version"] = 1
        del m["sha256"]

    path = tmp_path / "v1.safetensors"
    path.write_bytes(edit_manifest(net.read_bytes(), old))
    with pytest.raises(ArtifactError, match="no content hash: rebuild it"):
        artifact.load(path)


# ----------------------------------------------------------------------------- 10: writes
def test_written_files_follow_the_umask_and_keep_a_replaced_mode(real, tmp_path):
    cb, _ = real
    codebook = artifact.load_codebook(cb)
    old = os.umask(0o027)
    try:
        path = tmp_path / "a.safetensors"
        artifact.save_codebook(path, codebook)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        os.chmod(path, 0o604)
        artifact.save_codebook(path, codebook)
        assert stat.S_IMODE(path.stat().st_mode) == 0o604
    finally:
        os.umask(old)


def test_an_output_symlink_is_written_through(real, tmp_path):
    cb, _ = real
    target = tmp_path / "target.hex"
    target.write_text("old")
    link = tmp_path / "link.hex"
    link.symlink_to(target)
    assert main(["rom", "export", "--codebook", str(cb), "--format", "hex", "--out", str(link)]) == 0
    assert link.is_symlink() and target.read_text() != "old"
    to_input = tmp_path / "to_input.hex"
    to_input.symlink_to(cb)
    before = cb.read_bytes()
    assert main(["rom", "export", "--codebook", str(cb), "--format", "hex", "--out", str(to_input)]) == 2
    assert cb.read_bytes() == before


def test_the_content_hash_sees_the_manifest_as_a_reader_will(real, tmp_path):
    """A config with integer keys and tuples (JSON turns them into strings and lists, and sorts
    the keys differently) still loads: the writer hashes what the reader parses."""
    cb, net = real
    art = artifact.load_network(net)
    art.config = {**art.config, "by_step": {2: "a", 10: "b"}, "pair": (1, 2)}
    path = tmp_path / "keys.safetensors"
    artifact.save_network(path, art)
    assert artifact.load_network(path, artifact.load_codebook(cb)).config["by_step"] == {"2": "a", "10": "b"}
