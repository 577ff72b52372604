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
    vq4all's `tensors_sha256`): per tensor in name order, name NUL dtype NUL shape NUL bytes."""
    import hashlib

    h = hashlib.sha256()
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
        return _with_manifest(data, lambda m: m.update({key: fake}))
    if kind == "format_version":
        return _with_manifest(data, lambda m: m.update(format_version=_ODD_VALUES[int(rng.integers(len(_ODD_VALUES)))]))
    if kind == "nan_inf":
        floats = [n for n in names if header[n]["dtype"] in ("F16", "F32", "F64") and np.prod(header[n]["shape"]) > 0]
        name = floats[int(rng.integers(len(floats)))]
        dtype = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}[header[name]["dtype"]]
        value = np.array([rng.choice([np.nan, np.inf, -np.inf])], dtype=dtype).tobytes()
        return _poke(data, name, int(rng.integers(int(np.prod(header[name]["shape"])))), value)
    if kind == "manifest_field":

        def change(m):
            target = m
            if "layers" in m and rng.random() < 0.5:
                target = m["layers"][int(rng.integers(len(m["layers"])))]
            key = sorted(target)[int(rng.integers(len(target)))]
            if rng.random() < 0.2:
                del target[key]
            else:
                target[key] = _ODD_VALUES[int(rng.integers(len(_ODD_VALUES)))]

        return _with_manifest(data, change)
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
