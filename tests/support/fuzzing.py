"""Damaged artifacts for the fuzz tests and benches/fuzz_artifacts.py (numpy only).

`seed_files()` makes small valid files (an int8 codebook with k=16, so U8 codes 16..255 are
out of range; a float16 codebook; a network built on the int8 one); `mutate(data, kind, rng)`
damages one file's bytes in one of the ways of `KINDS`. The mutators work on the raw
safetensors bytes (8-byte length, JSON header, data), never through vq4all's writer, so they can
produce anything a hostile or broken file could hold. A mutation may leave the file valid (a
flipped bit in a bias): the loader must then accept it; otherwise it must raise ArtifactError.
"""

from __future__ import annotations

import json
import struct

import numpy as np

KINDS = (
    "truncate",
    "flip_bytes",
    "flip_header",
    "dtype",
    "shape",
    "codes_ge_k",
    "huge_sizes",
    "wrong_hash",
    "format_version",
    "nan_inf",
    "manifest_field",
    "manifest_rehashed",
    "garbage_header",
    "offsets",
)

_DTYPES = ["BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "F32", "F64", "BF16", "Q4", "", 7, None]
_ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    3,
    2**31,
    2**63,
    2**64 + 1,
    -(2**63),
    1.0,
    0.5,
    float("nan"),
    float("inf"),
    "",
    "1",
    "x" * 300,
    "\n\ud800",
    [],
    [1],
    {},
    {"a": 1},
]


def seed_files() -> dict[str, bytes]:
    """{name: bytes} of valid files: 'codebook' (int8, k=16, d=4), 'codebook_f16', 'network' (~1 KiB),
    'network_big' (the network plus a 1 MiB leftover)."""
    import tempfile
    from pathlib import Path

    from vq4all.artifact import Codebook, LayerCodes, NetworkArtifact, save_codebook, save_network

    rng = np.random.default_rng(0)
    cb = Codebook(
        rng.integers(-127, 128, (16, 4), dtype=np.int8), np.array([0.05], np.float32), {"config": {"seed": 0}}
    )
    f16 = Codebook(rng.standard_normal((16, 4)).astype(np.float16), None, {})
    layers = [
        LayerCodes(
            "conv.weight",
            (6, 3, 3, 3),
            4,
            1,
            "channel",
            rng.integers(0, 16, (6, 7)).astype(np.uint8),
            rng.uniform(0.1, 1, 6).astype(np.float16),
        ),
        LayerCodes(
            "fc.weight",
            (5, 8),
            4,
            0,
            "tensor",
            rng.integers(0, 16, (5, 2)).astype(np.uint8),
            np.full(5, 0.5, np.float16),
        ),
    ]
    leftovers = {
        "conv.bias": rng.standard_normal(6).astype(np.float32),
        "fc.bias": rng.standard_normal(5).astype(np.float16),
        "bn.num_batches_tracked": np.array(3, np.int64),
    }
    net = NetworkArtifact("toy", cb.sha256, 16, layers, leftovers, {"method": "fuzz"})
    # the same with 1 MiB of leftovers: data dominates the file, so allocation bounds bite
    big = NetworkArtifact(
        "toy",
        cb.sha256,
        16,
        layers,
        {**leftovers, "big": rng.standard_normal(1 << 18).astype(np.float32)},
        {"method": "fuzz"},
    )
    with tempfile.TemporaryDirectory() as tmp:
        save_codebook(Path(tmp) / "cb", cb)
        save_codebook(Path(tmp) / "f16", f16)
        save_network(Path(tmp) / "net", net)
        save_network(Path(tmp) / "big", big)
        return {
            "codebook": (Path(tmp) / "cb").read_bytes(),
            "codebook_f16": (Path(tmp) / "f16").read_bytes(),
            "network": (Path(tmp) / "net").read_bytes(),
            "network_big": (Path(tmp) / "big").read_bytes(),
        }


def split(data: bytes) -> tuple[dict, bytes]:
    """(header dict, data bytes) of a well-formed safetensors file."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header: dict, body: bytes) -> bytes:
    h = json.dumps(header).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(h)) + h + body


def _tensor_names(header: dict) -> list[str]:
    return sorted(k for k in header if k != "__metadata__")


def _with_manifest(data: bytes, change) -> bytes:
    header, body = split(data)
    manifest = json.loads(header["__metadata__"]["vq4all"])
    change(manifest)
    header["__metadata__"]["vq4all"] = json.dumps(manifest)
    return join(header, body)


def content_sha256(header: dict, body: bytes) -> str:
    """A network file's content hash computed from the raw header and bytes (independently of
    vq4all's `content_sha256`): the manifest without sha256 as compact sorted JSON, then per
    tensor in name order: name NUL dtype NUL shape NUL bytes."""
    import hashlib

    manifest = json.loads(header["__metadata__"]["vq4all"])
    manifest.pop("sha256", None)
    h = hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("ascii"))
    for name in _tensor_names(header):
        info = header[name]
        begin, end = info["data_offsets"]
        shape = ",".join(str(s) for s in info["shape"])
        h.update(f"{name}\0{info['dtype']}\0{shape}\0".encode("utf-8", "surrogatepass"))
        h.update(body[begin:end])
    return h.hexdigest()


def rehash(data: bytes) -> bytes:
    """`data` with a network manifest's content hash recomputed, as a hostile writer would do:
    the damage must then be caught by its own rule, not by the hash."""
    header, body = split(data)
    manifest = json.loads(header["__metadata__"]["vq4all"])
    if manifest.get("kind") != "network":
        return data
    manifest.pop("sha256", None)
    header["__metadata__"]["vq4all"] = json.dumps(manifest)
    manifest["sha256"] = content_sha256(header, body)
    header["__metadata__"]["vq4all"] = json.dumps(manifest)
    return join(header, body)


def _poke(data: bytes, name: str, index: int, raw: bytes) -> bytes:
    """Overwrite element `index` of tensor `name` with `raw` bytes (the same item size); a
    network's content hash is recomputed so the value rule is what catches it."""
    header, body = split(data)
    begin = header[name]["data_offsets"][0] + index * len(raw)
    body = body[:begin] + raw + body[begin + len(raw) :]
    return rehash(join(header, body))


# ----------------------------------------------------------------------------- the attack's classes
# Strings a hostile file may use as a name: line breaks, terminal escapes, NUL, a lone surrogate
# (legal in JSON), a right-to-left override, DEL, and 100,000 characters.
HOSTILE_NAMES = (
    "a\nb",
    "\x1b[2J\x1b[Hclear",
    "nul\x00byte",
    "lone\ud800surrogate",
    "\u202eevil",
    "\r\rcarriage",
    "del\x7f",
    "x" * 100_000,
    "\u00e9\u6f22\u5b57 ok",
)

# New kinds: damage a reader must catch in the file itself (EXTRA_FILE_KINDS), and lies a file
# can tell that only the network it claims to rebuild can expose (MODEL_KINDS: the file is
# self-consistent, its content hash recomputed; `eval` must refuse it).
EXTRA_FILE_KINDS = ("huge_int_shape", "json_amplification", "unicode_names")
MODEL_KINDS = ("leftover_dtype_lie", "missing_layers", "unicode_names")
_SAME_SIZE_LIES = {"F32": ("I32", "U32"), "F16": ("I16", "U16", "BF16"), "F64": ("I64", "U64"), "I64": ("F64", "U64")}


def _manifest(header: dict) -> dict:
    return json.loads(header["__metadata__"]["vq4all"])


def _set_manifest(header: dict, manifest: dict) -> None:
    header["__metadata__"]["vq4all"] = json.dumps(manifest)


def _rename_tensor(header: dict, old: str, new: str) -> None:
    header[new] = header.pop(old)


def mutate_extra(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One copy of a valid file `data` damaged in one of EXTRA_FILE_KINDS or MODEL_KINDS."""
    header, body = split(data)
    names = _tensor_names(header)
    manifest = _manifest(header)
    network = manifest.get("kind") == "network"
    huge = 10 ** int(rng.integers(2000, 4300))
    if kind == "huge_int_shape":
        choice = int(rng.integers(0, 3))
        if choice == 0 and network:  # a manifest layer whose dimensions multiply past 4,300 digits
            layer = manifest["layers"][int(rng.integers(len(manifest["layers"])))]
            layer["shape"] = [huge] * int(rng.integers(2, 5))
            _set_manifest(header, manifest)
            return join(header, body)
        name = names[int(rng.integers(len(names)))]
        if choice == 1:  # a tensor of huge dimensions, empty data (0 in front) or none at all
            header[name]["shape"] = [0, huge, huge]
        else:
            header[name]["shape"] = [huge, huge]
        return rehash(join(header, body))
    if kind == "json_amplification":
        from vq4all.artifact import MAX_HEADER_BYTES

        unit = [b"{}", b"[]", b'"%02x"', b"1.5", b"[[[]]]"][int(rng.integers(0, 5))]
        target = int(MAX_HEADER_BYTES * rng.choice([0.5, 0.99, 1.5, 14]))
        count = max(1, target // (len(unit) + 1))
        items = unit % 7 if b"%" in unit else unit
        h = b'{"a":[' + b",".join([items] * count) + b"]}"
        if rng.random() < 0.5:  # the dense part inside the manifest string, parsed a second time
            inner = json.dumps({"x": [{}] * (target // 4)})
            h = json.dumps({"__metadata__": {"vq4all": inner}}).encode()
        return struct.pack("<Q", len(h)) + h + body
    if kind == "unicode_names":
        bad = HOSTILE_NAMES[int(rng.integers(len(HOSTILE_NAMES)))]
        choice = int(rng.integers(0, 3))
        if network and choice == 0:
            manifest["network"] = bad
        elif network and choice == 1:
            layer = manifest["layers"][int(rng.integers(len(manifest["layers"])))]
            for suffix in ("codes", "scales"):
                _rename_tensor(header, f"{layer['name']}.{suffix}", f"{bad}.{suffix}")
            layer["name"], layer["param"] = bad, f"{bad}.weight"
        else:
            _rename_tensor(header, names[int(rng.integers(len(names)))], bad)
        _set_manifest(header, manifest)
        return rehash(join(header, body))
    if kind == "leftover_dtype_lie":
        claimed = {f"{layer['name']}.{s}" for layer in manifest.get("layers", []) for s in ("codes", "scales")}
        liars = [n for n in names if n not in claimed and header[n]["dtype"] in _SAME_SIZE_LIES]
        if not liars:
            return data
        name = liars[int(rng.integers(len(liars)))]
        options = _SAME_SIZE_LIES[header[name]["dtype"]]
        header[name]["dtype"] = options[int(rng.integers(len(options)))]
        return rehash(join(header, body))
    if kind == "missing_layers":
        layers = manifest["layers"]
        drop = sorted(rng.choice(len(layers), int(rng.integers(1, len(layers) + 1)), replace=False).tolist())
        kept_body, offset, out = [], 0, {"__metadata__": header["__metadata__"]}
        gone = {f"{layers[i]['name']}.{s}" for i in drop for s in ("codes", "scales")}
        for name in sorted(names, key=lambda n: header[n]["data_offsets"][0]):
            if name in gone:
                continue
            begin, end = header[name]["data_offsets"]
            out[name] = {**header[name], "data_offsets": [offset, offset + end - begin]}
            kept_body.append(body[begin:end])
            offset += end - begin
        manifest["layers"] = [layer for i, layer in enumerate(layers) if i not in drop]
        _set_manifest(out, manifest)
        return rehash(join(out, b"".join(kept_body)))
    raise ValueError(f"unknown mutation kind {kind!r}")


def sparse_huge(data: bytes, rng: np.random.Generator, path) -> None:
    """Write a damaged copy of `data` to `path` as a sparse file of 1-4 GiB (nothing is stored on
    disk but the first bytes): trailing zeros, or a header length claiming most of the file."""
    size = int(rng.integers(1, 5)) << 30
    with open(path, "wb") as f:
        if rng.random() < 0.5:
            f.write(data)  # valid prefix, then gigabytes that belong to no tensor
        else:
            f.write(struct.pack("<Q", size - 8 - int(rng.integers(0, 64))) + data[8:])
        f.truncate(size)


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One damaged copy of a valid file `data` (see KINDS)."""
    header, body = split(data)
    names = _tensor_names(header)
    hlen = struct.unpack("<Q", data[:8])[0]
    if kind == "truncate":
        return data[: int(rng.integers(0, len(data)))]
    if kind in ("flip_bytes", "flip_header"):
        out = bytearray(data)
        lo, hi = (0, len(data)) if kind == "flip_bytes" else (0, 8 + hlen)
        for pos in rng.integers(lo, hi, int(rng.integers(1, 9))):
            out[pos] ^= 1 << int(rng.integers(0, 8))
        return bytes(out)
    if kind == "dtype":
        name = names[int(rng.integers(len(names)))]
        header[name]["dtype"] = _DTYPES[int(rng.integers(len(_DTYPES)))]
        return join(header, body)
    if kind == "shape":
        name = names[int(rng.integers(len(names)))]
        ndim = int(rng.integers(0, 5))
        choice = rng.integers(0, 4)
        if choice == 0:  # any small shape
            header[name]["shape"] = [int(s) for s in rng.integers(0, 9, ndim)]
        elif choice == 1:  # the same element count, another layout
            header[name]["shape"] = list(reversed(header[name]["shape"])) + [1]
        elif choice == 2:  # an empty tensor whose other dimensions are enormous
            header[name]["shape"] = [0] + [int(2 ** rng.integers(30, 70)) for _ in range(ndim)]
            header[name]["data_offsets"] = [header[name]["data_offsets"][0]] * 2  # so the size check passes
        else:  # values of the wrong type
            header[name]["shape"] = _ODD_VALUES[int(rng.integers(len(_ODD_VALUES)))]
        return join(header, body)
    if kind == "codes_ge_k":
        codes = [n for n in names if n.endswith(".codes")]
        if not codes:  # a codebook: claim a smaller k than it holds
            return _with_manifest(data, lambda m: m.update(k=int(rng.choice([2, 4, 8]))))
        name = codes[int(rng.integers(len(codes)))]
        count = int(np.prod(header[name]["shape"]))
        return _poke(data, name, int(rng.integers(count)), bytes([int(rng.integers(16, 256))]))
    if kind == "huge_sizes":
        choice = rng.integers(0, 3)
        if choice == 0:  # the length prefix
            return struct.pack("<Q", int(rng.integers(len(data), 2**63, dtype=np.uint64))) + data[8:]
        name = names[int(rng.integers(len(names)))]
        big = int(2 ** rng.integers(20, 64))
        if choice == 1:  # a shape (and matching offsets) far larger than the file
            header[name]["shape"] = [big, big]
            header[name]["data_offsets"] = [0, big * big]
        else:
            header[name]["data_offsets"] = [header[name]["data_offsets"][0], big]
        return join(header, body)
    if kind == "wrong_hash":
        key = "codebook_sha256" if "codebook_sha256" in json.loads(header["__metadata__"]["vq4all"]) else "sha256"
        fake = "".join(rng.choice(list("0123456789abcdef"), 64))
        # a network's content hash covers codebook_sha256: recomputed, so the codebook rule is reached
        return rehash(_with_manifest(data, lambda m: m.update({key: fake})))
    if kind == "format_version":
        return _with_manifest(data, lambda m: m.update(format_version=_ODD_VALUES[int(rng.integers(len(_ODD_VALUES)))]))
    if kind == "nan_inf":
        floats = [n for n in names if header[n]["dtype"] in ("F16", "F32", "F64") and np.prod(header[n]["shape"]) > 0]
        name = floats[int(rng.integers(len(floats)))]
        dtype = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}[header[name]["dtype"]]
        value = np.array([rng.choice([np.nan, np.inf, -np.inf])], dtype=dtype).tobytes()
        return _poke(data, name, int(rng.integers(int(np.prod(header[name]["shape"])))), value)
    if kind in ("manifest_field", "manifest_rehashed"):

        def change(m):
            target = m
            if "layers" in m and rng.random() < 0.5:
                target = m["layers"][int(rng.integers(len(m["layers"])))]
            key = sorted(target)[int(rng.integers(len(target)))]
            if rng.random() < 0.2:
                del target[key]
            else:
                target[key] = _ODD_VALUES[int(rng.integers(len(_ODD_VALUES)))]

        changed = _with_manifest(data, change)
        # manifest_rehashed: a hostile writer recomputes the content hash, so the field's own rule
        # must catch it (or the file is a legitimate one, e.g. another network name)
        return rehash(changed) if kind == "manifest_rehashed" else changed
    if kind == "garbage_header":
        choice = rng.integers(0, 4)
        if choice == 0:  # random bytes
            h = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif choice == 1:  # deeply nested JSON
            depth = int(rng.integers(1000, 200000))
            h = b"[" * depth + b"]" * depth
        elif choice == 2:  # an integer beyond Python's digit limit
            h = b'{"a": ' + b"9" * int(rng.integers(5000, 20000)) + b"}"
        else:  # a tensor name holding control characters and a lone surrogate
            header = {**header, "a\n\ud800\x00b": {"dtype": "Q", "shape": [1], "data_offsets": [0, 1]}}
            return join(header, body)
        return struct.pack("<Q", len(h)) + h + body
    if kind == "offsets":
        name = names[int(rng.integers(len(names)))]
        begin, end = header[name]["data_offsets"]
        delta = int(rng.integers(-8, 9)) or 1
        choices = [[begin + delta, end], [begin, end + delta], [begin + delta, end + delta], [end, begin], [begin], "x"]
        header[name]["data_offsets"] = choices[int(rng.integers(len(choices)))]
        return join(header, body)
    raise ValueError(f"unknown mutation kind {kind!r}")
