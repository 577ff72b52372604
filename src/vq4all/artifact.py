"""The artifact format: the only reader and writer of vq4all files.

Both kinds are safetensors files (no pickle; readable from numpy without torch) whose metadata
key `vq4all` holds a JSON manifest with `format` = "vq4all", `format_version` = 1 and `kind`.

Codebook file (kind "codebook"):
  codebook        [k, d] int8 (value = codebook * codebook_scale) or float16 (value = codebook)
  codebook_scale  [1] float32, > 0, only with int8
  manifest: k, d, dtype, sha256 (hex SHA-256 of codebook's raw C-order little-endian bytes, then
  codebook_scale's when present), config (the CodebookConfig), anything else the builder adds.

Network file (kind "network"):
  <layer>.codes   [out_features, m] U8 when k <= 256 else U16, m = ceil(row / d), every code < k
  <layer>.scales  [out_features] float16, finite and > 0
  FP leftovers    every other tensor, under its state-dict name (biases, norms, ...), finite
  manifest: network, codebook_sha256, k, sha256 (`content_sha256`: a content hash over the rest
  of the manifest and every tensor's name, dtype, shape and bytes), layers = [{name, param, shape, d, pad, scale_granularity}]
  (`param` is the state-dict key of the weight; `name` is that key without a final ".weight";
  pad = m*d - row), config.

format_version is 2; codebook files of version 1 (the same layout) are read too, network files
of version 1 (no content hash) are refused.

Reading parses and checks the safetensors header itself before touching any data (the file's
size, then a header of at most MAX_HEADER_BYTES, duplicate JSON keys refused, every entry's
offsets within the file and the entries tiling the data section exactly, no trailing bytes),
so a malformed or hostile file ends in one `ArtifactError` naming the file, the tensor and the
rule. Memory: loading a file peaks at <= 2x its size + MAX_HEADER_MEMORY (the parsed header's
bound). Writes are atomic: a temporary file in the same folder, fsync, rename. The temporary
file is named `.<name>.<random>.tmp`: a crash can leave one behind, but it never
has the artifact's name, so no reader mistakes it for the artifact (delete leftovers freely).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ArtifactError, VQ4AllError, printable
from .io import atomic_write_bytes
from .rules import CODEBOOK_DTYPES, GRANULARITIES, MAX_D, MAX_K, MIN_D, MIN_K, code_dtype, is_power_of_two

FORMAT = "vq4all"
FORMAT_VERSION = 2  # 2: network files carry `sha256`, a content hash over their tensors
READ_VERSIONS = {"codebook": (1, 2), "network": (2,)}  # a codebook's layout is the same in 1 and 2
# Real headers take ~40 bytes per JSON object or list (EfficientNet-Lite0's: 45 KB), so 1 MiB
# holds thousands of tensors. The bound is also the memory bound: with the density rule of
# _parse_json, Python's parsed JSON takes at most ~13x its text, so a hostile header costs
# at most ~20 MiB before it is refused (MAX_HEADER_MEMORY, with margin).
MAX_HEADER_BYTES = 1 << 20
MAX_HEADER_MEMORY = 32 << 20  # the "constant" of the reader's bound: peak <= 2x file + this
DENSE_ABOVE = 64 << 10  # headers longer than this must not be mostly brackets (see _parse_json)
MAX_NDIM = 64  # numpy's own limit
MAX_TENSOR_BYTES = 1 << 62  # beyond any real file; keeps sizes within int64

_DTYPES = {  # safetensors dtype -> numpy little-endian dtype
    "BOOL": np.dtype("bool"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ----------------------------------------------------------------------------- in-memory forms
@dataclass(eq=False)
class Codebook:
    """The universal codebook, as it travels between core, kernels and hardware.

    codebook: [k, d] int8 (real value = codebook * codebook_scale) or float16;
    codebook_scale: [1] float32 (int8 only) or None; manifest: the file's manifest.
    Both arrays are made read-only on construction, so the SHA-256, the real values and the ROM
    words are computed once and stay true for the object's life.
    """

    codebook: np.ndarray
    codebook_scale: np.ndarray | None = None
    manifest: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.codebook = np.array(self.codebook, copy=True)
        self.codebook.setflags(write=False)
        if self.codebook_scale is not None:
            self.codebook_scale = np.array(self.codebook_scale, dtype=np.float32, copy=True).reshape(1)
            self.codebook_scale.setflags(write=False)

    def _cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    @property
    def k(self) -> int:
        return int(self.codebook.shape[0])

    @property
    def d(self) -> int:
        return int(self.codebook.shape[1])

    @property
    def dtype(self) -> str:
        return "int8" if self.codebook.dtype == np.int8 else "float16"

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the codebook's bytes then codebook_scale's (`codebook_sha256`), once."""
        return self._cached("sha256", lambda: codebook_sha256(self.codebook, self.codebook_scale))

    @property
    def scale(self) -> float:
        """The int8 codebook's real-value step (codebook_scale[0]); 1.0 for float16."""
        return 1.0 if self.codebook_scale is None else float(self.codebook_scale[0])

    def values(self) -> np.ndarray:
        """The codewords' real values: [k, d] float32, read-only (the reference's definition)."""
        from .reference import codebook_values

        def compute():
            v = codebook_values(self.codebook, self.codebook_scale)
            v.setflags(write=False)
            return v

        return self._cached("values", compute)

    def rom_words(self, width: int = 8) -> list[int]:
        """The ROM's k words of d * width bits (`vq4all.reference.rom_words`), once per width."""
        from .reference import rom_words

        return self._cached(("rom", width), lambda: rom_words(self.codebook, width))


@dataclass
class LayerCodes:
    """One compressed weight. codes: [out_features, m] uint8/uint16; scales: [out_features] float16."""

    param: str
    shape: tuple[int, ...]
    d: int
    pad: int
    scale_granularity: str
    codes: np.ndarray
    scales: np.ndarray

    @property
    def name(self) -> str:
        return layer_name(self.param)

    @property
    def row(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1


@dataclass
class NetworkArtifact:
    """A network rebuilt on a codebook: per-layer codes and scales plus the FP leftovers."""

    network: str
    codebook_sha256: str
    k: int
    layers: list[LayerCodes]
    leftovers: dict[str, np.ndarray] = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def layer_name(param: str) -> str:
    """The artifact's layer name of a state-dict weight key: the key without a final '.weight'."""
    return param[: -len(".weight")] if param.endswith(".weight") else param


def codebook_sha256(codebook: np.ndarray, codebook_scale: np.ndarray | None = None) -> str:
    """Hex SHA-256 of the codebook's raw C-order little-endian bytes, then codebook_scale's."""
    h = hashlib.sha256(np.ascontiguousarray(codebook, dtype=codebook.dtype.newbyteorder("<")).tobytes())
    if codebook_scale is not None:
        h.update(np.ascontiguousarray(codebook_scale, dtype="<f4").tobytes())
    return h.hexdigest()


def canonical_manifest(manifest: dict) -> bytes:
    """The manifest as the content hash sees it: without `sha256`, as
    json.dumps(sort_keys=True, separators=(",", ":")) (ASCII, surrogates escaped), UTF-8."""
    body = {key: value for key, value in manifest.items() if key != "sha256"}
    # through JSON once first, so the writer hashes what a reader will parse (tuples become lists,
    # non-string keys strings: sorting {2: .., 10: ..} and {"2": .., "10": ..} differs)
    body = json.loads(json.dumps(body))
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


def content_sha256(manifest: dict, tensors: dict[str, np.ndarray]) -> str:
    """Hex SHA-256 of a network file's content (its manifest's `sha256`): `canonical_manifest`,
    then for every tensor in name order the UTF-8 name, NUL, the safetensors dtype, NUL, the
    shape as comma-separated decimals, NUL, then the raw C-order little-endian bytes. Any
    changed bit of the manifest (network name, layers, config) or of any tensor's name, dtype,
    shape or bytes changes it."""
    h = hashlib.sha256(canonical_manifest(manifest))
    for name in sorted(tensors):
        t = np.asarray(tensors[name])
        le = t.dtype.newbyteorder("<")
        h.update(
            f"{name}\0{_NAMES.get(le, str(t.dtype))}\0{','.join(map(str, t.shape))}\0".encode("utf-8", "surrogatepass")
        )
        h.update(np.ascontiguousarray(t, dtype=le).tobytes() if t.dtype != le or not t.flags.c_contiguous else t.data)
    return h.hexdigest()


# ----------------------------------------------------------------------------- writing
def _save(path, tensors: dict[str, np.ndarray], manifest: dict) -> None:
    from safetensors.numpy import save

    for name, t in tensors.items():
        if np.dtype(t.dtype).newbyteorder("<") not in _NAMES:
            raise VQ4AllError(f"{path}: tensor '{name}': dtype {t.dtype} cannot be stored")
    # np.ascontiguousarray would turn a 0-d tensor (e.g. num_batches_tracked) into shape [1]
    data = save(
        {n: np.asarray(t, order="C") for n, t in tensors.items()},
        metadata={"vq4all": json.dumps(manifest, sort_keys=True)},
    )
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES:  # never write a file the reader would refuse
        raise VQ4AllError(
            f"{printable(path)}: the header of {header_len} bytes ({len(tensors)} tensors) exceeds the "
            f"{MAX_HEADER_BYTES}-byte limit of vq4all files: compress fewer layers per file"
        )
    atomic_write_bytes(path, data)


def save_codebook(path, cb: Codebook) -> None:
    """Write a codebook file (atomic). The manifest's k, d, dtype and sha256 are recomputed here."""
    manifest = dict(cb.manifest)
    manifest.update(
        format=FORMAT, format_version=FORMAT_VERSION, kind="codebook", k=cb.k, d=cb.d, dtype=cb.dtype, sha256=cb.sha256
    )
    tensors = {"codebook": cb.codebook}
    if cb.codebook_scale is not None:
        tensors["codebook_scale"] = np.asarray(cb.codebook_scale, dtype=np.float32).reshape(1)
    _check_codebook(path, manifest, tensors)
    _save(path, tensors, manifest)


def save_network(path, art: NetworkArtifact) -> None:
    """Write a network file (atomic), after checking it by the same rules a reader applies."""
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "network",
        "network": art.network,
        "codebook_sha256": art.codebook_sha256,
        "k": int(art.k),
        "layers": [
            {
                "name": layer.name,
                "param": layer.param,
                "shape": [int(s) for s in layer.shape],
                "d": int(layer.d),
                "pad": int(layer.pad),
                "scale_granularity": layer.scale_granularity,
            }
            for layer in art.layers
        ],
        "config": art.config,
    }
    tensors: dict[str, np.ndarray] = {}
    for layer in art.layers:
        tensors[f"{layer.name}.codes"] = np.asarray(layer.codes)
        tensors[f"{layer.name}.scales"] = np.asarray(layer.scales)
    for name, value in art.leftovers.items():
        if name in tensors:
            raise VQ4AllError(f"{path}: tensor '{name}': an FP leftover has the name of a layer tensor")
        tensors[name] = np.asarray(value)
    manifest["sha256"] = content_sha256(manifest, tensors)
    _check_network(path, manifest, tensors)
    _save(path, tensors, manifest)


# ----------------------------------------------------------------------------- reading
def _no_duplicates(pairs):
    """json object_pairs_hook: a key given twice is refused (JSON parsers disagree on which copy
    wins, so a second `__metadata__` or tensor entry could show different readers different files)."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


class _DuplicateKey(ValueError):
    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _parse_json(path, text: bytes | str, what: str):
    """json.loads with duplicate keys refused; every failure is one ArtifactError about `what`.

    Text of more than DENSE_ABOVE characters must average >= 8 per JSON object or list (real
    headers average ~40): an empty `{}` costs Python ~90 bytes, so this keeps the parsed header
    within ~13x its text (MAX_HEADER_MEMORY)."""
    if len(text) > DENSE_ABOVE:
        brackets = text.count(b"{" if isinstance(text, bytes) else "{")
        brackets += text.count(b"[" if isinstance(text, bytes) else "[")
        if brackets * 8 > len(text):
            raise ArtifactError(
                path,
                None,
                f"{what} is too dense ({brackets} objects and lists in {len(text)} characters): not a vq4all file",
            )
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise ArtifactError(path, None, f"{what} gives the key '{printable(e.key, 80)}' twice") from None
    # ValueError: also integers past Python's digit limit; RecursionError: deeply nested arrays
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ArtifactError(
            path, None, f"{what} is not valid JSON ({e.__class__.__name__}): not a safetensors file or corrupted"
        ) from None


def _shape_bytes(path, name, shape, itemsize: int) -> int:
    """Bytes a tensor of `shape` needs, refused (one line, no giant number printed) past
    MAX_TENSOR_BYTES: a product of header integers can have thousands of digits."""
    nbytes = math.prod(shape) * itemsize
    if nbytes > MAX_TENSOR_BYTES:
        raise ArtifactError(
            path, name, f"shape {printable(shape, 120)} needs more than {MAX_TENSOR_BYTES} bytes: corrupted or hostile"
        )
    return nbytes


def _read_raw(
    path, *, manifest_required: bool = True, writable: bool = False, data: bool = True
) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse a safetensors file with every size checked against the file: (manifest, tensors).
    Without `manifest_required`, a plain safetensors file (no vq4all manifest) gives {}.

    Order, so a hostile file costs little: the file's size, then the 8-byte header length
    (<= MAX_HEADER_BYTES and within the file), then the JSON header and every entry's dtype,
    shape and offsets (the entries must tile the data section exactly: no overlap, no gap, no
    trailing bytes), and only then the data, read once into one buffer. Peak memory is the data
    section plus the parsed header (bounded by MAX_HEADER_BYTES). The tensors are views of one
    private buffer: read-only, or with `writable` handed out as they are (no copy: nothing else
    holds the buffer), so `load_network` peaks at ~1.5x the file (+ the checks' temporaries)."""
    path = Path(path)
    try:
        # only regular files: a FIFO, /dev/zero or a socket would block or never end
        if path.exists() and not path.is_dir() and not stat.S_ISREG(path.stat().st_mode):
            raise VQ4AllError(
                f"{printable(path)}: not a regular file (a device, pipe or socket): give an artifact file"
            )
        f = open(path, "rb")
    except FileNotFoundError:
        raise VQ4AllError(f"{printable(path)}: no such file") from None
    except IsADirectoryError:
        raise VQ4AllError(f"{printable(path)}: is a folder, not an artifact file") from None
    except OSError as e:
        raise VQ4AllError(f"{printable(path)}: cannot read ({e.strerror})") from None
    with f:
        try:
            return _parse_open(path, f, manifest_required, writable, data)
        except OSError as e:
            raise VQ4AllError(f"{printable(path)}: cannot read ({e.strerror})") from None


def _parse_open(path, f, manifest_required: bool, writable: bool, data: bool) -> tuple[dict, dict[str, np.ndarray]]:
    size = os.fstat(f.fileno()).st_size
    if size < 8:
        raise ArtifactError(
            path, None, f"truncated: {size} bytes, but a safetensors file starts with an 8-byte header length"
        )
    (header_len,) = struct.unpack("<Q", f.read(8))
    if header_len > size - 8:
        raise ArtifactError(
            path,
            None,
            f"header declares {header_len} bytes but only {size - 8} follow (truncated or not a safetensors file)",
        )
    if header_len > MAX_HEADER_BYTES:
        raise ArtifactError(path, None, f"header of {header_len} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    header = _parse_json(path, f.read(header_len), "header")
    if not isinstance(header, dict):
        raise ArtifactError(path, None, "header must be a JSON object")
    meta = header.pop("__metadata__", None)
    if not manifest_required and not (isinstance(meta, dict) and "vq4all" in meta):
        meta = {"vq4all": "{}"}
    if not isinstance(meta, dict) or "vq4all" not in meta:
        raise ArtifactError(path, None, "no 'vq4all' manifest in the metadata: not a vq4all artifact")
    if not isinstance(meta["vq4all"], str):
        raise ArtifactError(path, None, "the 'vq4all' manifest must be a JSON string")
    manifest = _parse_json(path, meta["vq4all"], "the 'vq4all' manifest")
    if not isinstance(manifest, dict):
        raise ArtifactError(path, None, "the 'vq4all' manifest must be a JSON object")
    body_len = size - 8 - header_len
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ArtifactError(path, name, "entry must be an object with dtype, shape and data_offsets")
        dtype = _DTYPES.get(info.get("dtype")) if isinstance(info.get("dtype"), str) else None
        if dtype is None:
            raise ArtifactError(path, name, f"unknown dtype {printable(repr(info.get('dtype')), 40)}")
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
        ):
            raise ArtifactError(
                path, name, f"shape must be a list of non-negative integers, got {printable(repr(shape), 120)}"
            )
        if len(shape) > MAX_NDIM:
            raise ArtifactError(path, name, f"shape has {len(shape)} dimensions, at most {MAX_NDIM} are read")
        offsets = info.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise ArtifactError(path, name, f"data_offsets must be [begin, end], got {printable(repr(offsets), 120)}")
        begin, end = offsets
        if not 0 <= begin <= end <= body_len:
            raise ArtifactError(
                path,
                name,
                f"data_offsets {printable(offsets, 120)} fall outside the {body_len} data bytes (truncated file?)",
            )
        nbytes = _shape_bytes(path, name, shape, dtype.itemsize)
        if end - begin != nbytes:
            raise ArtifactError(
                path, name, f"shape {shape} of {info['dtype']} needs {nbytes} bytes, data_offsets give {end - begin}"
            )
        entries.append((begin, end, name, dtype, shape))
    entries.sort(key=lambda e: (e[0], e[1]))
    covered = 0  # the entries must tile the data section: [0, body_len) with no overlap or gap
    for begin, end, name, _dtype, _shape in entries:
        if begin < covered:
            raise ArtifactError(path, name, "data overlaps another tensor's")
        if begin > covered:
            raise ArtifactError(path, name, f"{begin - covered} data bytes before it belong to no tensor")
        covered = end
    if covered != body_len:
        raise ArtifactError(path, None, f"{body_len - covered} bytes after the last tensor belong to no tensor")
    if not data:  # the manifest alone: the data is never read
        return manifest, {}
    try:
        body = bytearray(body_len)
    except MemoryError:
        raise VQ4AllError(
            f"{printable(path)}: its {body_len} data bytes do not fit in memory: free memory or use a larger machine"
        ) from None
    if f.readinto(body) != body_len:
        raise ArtifactError(path, None, "the file shrank while it was read")
    tensors = {}
    view = memoryview(body)
    for begin, end, name, dtype, shape in entries:
        try:
            t = np.frombuffer(view[begin:end], dtype=dtype).reshape(shape)
        except ValueError:  # an empty tensor passes the size check whatever its other dimensions
            raise ArtifactError(
                path, name, f"shape {printable(shape, 120)} cannot be held by numpy (too many or too large dimensions)"
            ) from None
        if not writable:
            t.setflags(write=False)
        tensors[name] = t
    return manifest, tensors


def _check_common(path, manifest: dict, kind: str | None = None) -> None:
    if manifest.get("format") != FORMAT:
        raise ArtifactError(
            path, None, f"manifest format is {printable(repr(manifest.get('format')), 80)}, expected {FORMAT!r}"
        )
    if manifest.get("kind") not in ("codebook", "network"):
        raise ArtifactError(
            path, None, f"manifest kind {printable(repr(manifest.get('kind')), 80)} must be 'codebook' or 'network'"
        )
    if kind is not None and manifest["kind"] != kind:
        raise ArtifactError(path, None, f"this is a {manifest['kind']} file, a {kind} file is needed here")
    version = manifest.get("format_version")
    readable = READ_VERSIONS[manifest["kind"]]
    if type(version) is not int or version not in readable:  # JSON 1.0 and true also equal 1 in Python
        if manifest["kind"] == "network" and type(version) is int and version == 1:
            raise ArtifactError(
                path,
                None,
                "format_version 1 network files carry no content hash: rebuild it with this vq4all (vq4all assign or compress)",
            )
        raise ArtifactError(
            path,
            None,
            f"unknown format_version {printable(repr(version), 80)}: this vq4all reads version "
            f"{' or '.join(map(str, readable))} {manifest['kind']} files; use a matching vq4all release",
        )


def _int_field(path, manifest, key, lo=None, hi=None, where=None) -> int:
    value = manifest.get(key)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or (lo is not None and value < lo)
        or (hi is not None and value > hi)
    ):
        raise ArtifactError(path, where, f"manifest field '{key}' must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _check_k(path, manifest) -> int:
    k = _int_field(path, manifest, "k", MIN_K, MAX_K)
    if not is_power_of_two(k):
        raise ArtifactError(path, None, f"manifest k={k} is not a power of two")
    return k


def _check_finite(path, name, t: np.ndarray) -> None:
    if t.dtype.kind == "f" and not np.isfinite(t).all():
        raise ArtifactError(path, name, "holds NaN or Inf values")


def _check_codebook(path, manifest: dict, tensors: dict) -> None:
    _check_common(path, manifest, "codebook")
    k = _check_k(path, manifest)
    if not isinstance(manifest.get("config", {}), dict):
        raise ArtifactError(path, None, "manifest field 'config' must be a JSON object")
    d = _int_field(path, manifest, "d", MIN_D, MAX_D)
    dtype = manifest.get("dtype")
    if dtype not in CODEBOOK_DTYPES:
        raise ArtifactError(path, None, f"manifest dtype {dtype!r} must be one of {', '.join(CODEBOOK_DTYPES)}")
    expected = {"codebook", "codebook_scale"} if dtype == "int8" else {"codebook"}
    for name in sorted(set(tensors) - expected):
        raise ArtifactError(path, name, f"unexpected tensor in a {dtype} codebook file")
    for name in sorted(expected - set(tensors)):
        raise ArtifactError(path, name, f"missing: a {dtype} codebook file holds {', '.join(sorted(expected))}")
    cb = tensors["codebook"]
    want = np.int8 if dtype == "int8" else np.float16
    if cb.dtype != want:
        raise ArtifactError(
            path,
            "codebook",
            f"dtype {_NAMES.get(cb.dtype.newbyteorder('<'), cb.dtype)} does not match the manifest's {dtype}",
        )
    if tuple(cb.shape) != (k, d):
        raise ArtifactError(path, "codebook", f"shape {list(cb.shape)} must be [k, d] = [{k}, {d}]")
    _check_finite(path, "codebook", cb)
    scale = tensors.get("codebook_scale")
    if scale is not None:
        if scale.dtype != np.float32 or tuple(scale.shape) != (1,):
            raise ArtifactError(
                path, "codebook_scale", f"must be float32 of shape [1], got {scale.dtype} {list(scale.shape)}"
            )
        if not (np.isfinite(scale).all() and scale[0] > 0):
            raise ArtifactError(path, "codebook_scale", f"must be finite and > 0, got {scale[0]}")
    sha = codebook_sha256(cb, scale)
    if manifest.get("sha256") != sha:
        raise ArtifactError(
            path,
            "codebook",
            f"SHA-256 {sha[:16]}... does not match the manifest's {str(manifest.get('sha256'))[:16]}... (corrupted file)",
        )


def _check_network(path, manifest: dict, tensors: dict, codebook: Codebook | None = None) -> None:
    _check_common(path, manifest, "network")
    k = _check_k(path, manifest)
    content = manifest.get("sha256")
    if not isinstance(content, str) or not _HEX64.match(content):
        raise ArtifactError(
            path, None, f"manifest sha256 must be 64 lowercase hex digits, got {printable(repr(content), 80)}"
        )
    if content_sha256(manifest, tensors) != content:
        raise ArtifactError(path, None, "the content's SHA-256 does not match the manifest's sha256 (corrupted file)")
    if not isinstance(manifest.get("config", {}), dict):
        raise ArtifactError(path, None, "manifest field 'config' must be a JSON object")
    if not isinstance(manifest.get("network"), str) or not manifest["network"]:
        raise ArtifactError(path, None, "manifest field 'network' must be a non-empty string")
    sha = manifest.get("codebook_sha256")
    if not isinstance(sha, str) or not _HEX64.match(sha):
        raise ArtifactError(path, None, f"manifest codebook_sha256 must be 64 lowercase hex digits, got {sha!r}")
    if codebook is not None:
        if sha != codebook.sha256:
            raise ArtifactError(
                path,
                None,
                f"built on codebook {sha[:16]}..., not on the given codebook {codebook.sha256[:16]}...: pass the codebook it was built with",
            )
        if k != codebook.k:
            raise ArtifactError(path, None, f"k={k} does not match the codebook's k={codebook.k}")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ArtifactError(path, None, "manifest field 'layers' must be a list")
    want_codes = code_dtype(k)
    claimed = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise ArtifactError(path, None, f"layers[{i}] must be an object")
        name, param = layer.get("name"), layer.get("param")
        if not isinstance(name, str) or not name or not isinstance(param, str) or layer_name(param) != name:
            raise ArtifactError(
                path,
                None,
                f"layers[{i}]: 'param' must be a state-dict key and 'name' that key without '.weight', got {param!r}, {name!r}",
            )
        if name in claimed:
            raise ArtifactError(path, f"{name}.codes", "layer listed twice")
        shape = layer.get("shape")
        if (
            not isinstance(shape, list)
            or not shape
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
        ):
            raise ArtifactError(
                path,
                f"{name}.codes",
                f"layer shape must be a list of positive integers, got {printable(repr(shape), 120)}",
            )
        if len(shape) > MAX_NDIM or math.prod(shape) > MAX_TENSOR_BYTES:
            raise ArtifactError(
                path, f"{name}.codes", f"layer shape {printable(shape, 120)} is larger than any tensor vq4all reads"
            )
        d = _int_field(path, layer, "d", MIN_D, MAX_D, where=f"{name}.codes")
        if codebook is not None and d != codebook.d:
            raise ArtifactError(path, f"{name}.codes", f"d={d} does not match the codebook's d={codebook.d}")
        row = math.prod(shape[1:]) if len(shape) > 1 else 1
        m = -(-row // d)
        pad = layer.get("pad")
        if not isinstance(pad, int) or isinstance(pad, bool) or pad != m * d - row:
            raise ArtifactError(
                path,
                f"{name}.codes",
                f"pad {layer.get('pad')!r} must be m*d - row = {m * d - row} for shape {shape} and d={d}",
            )
        if layer.get("scale_granularity") not in GRANULARITIES:
            raise ArtifactError(
                path,
                f"{name}.scales",
                f"scale_granularity {layer.get('scale_granularity')!r} must be one of {', '.join(GRANULARITIES)}",
            )
        codes, scales = tensors.get(f"{name}.codes"), tensors.get(f"{name}.scales")
        for tname, t in ((f"{name}.codes", codes), (f"{name}.scales", scales)):
            if t is None:
                raise ArtifactError(path, tname, "missing: every layer in the manifest has .codes and .scales")
        if codes.dtype != want_codes:
            raise ArtifactError(
                path, f"{name}.codes", f"dtype {codes.dtype} must be {'U8' if k <= 256 else 'U16'} for k={k}"
            )
        if tuple(codes.shape) != (shape[0], m):
            raise ArtifactError(
                path,
                f"{name}.codes",
                f"shape {list(codes.shape)} must be [out_features, ceil(row/d)] = [{shape[0]}, {m}]",
            )
        if codes.size and int(codes.max()) >= k:
            raise ArtifactError(path, f"{name}.codes", f"code {int(codes.max())} is >= k={k}")
        if scales.dtype != np.float16 or tuple(scales.shape) != (shape[0],):
            raise ArtifactError(
                path,
                f"{name}.scales",
                f"must be float16 of shape [{shape[0]}], got {scales.dtype} {list(scales.shape)}",
            )
        if not (np.isfinite(scales).all() and (scales > 0).all()):
            raise ArtifactError(path, f"{name}.scales", "every scale must be finite and > 0")
        if param in tensors:
            raise ArtifactError(path, param, "a compressed layer's weight must not also be stored as an FP leftover")
        claimed.add(name)
    for name, t in tensors.items():
        base, _, suffix = name.rpartition(".")
        if suffix in ("codes", "scales") and base in claimed:
            continue
        if suffix in ("codes", "scales") and base not in claimed:
            raise ArtifactError(path, name, "a .codes/.scales tensor of no layer in the manifest")
        _check_finite(path, name, t)


def read_container(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(manifest, {name: read-only array}) of any safetensors file vq4all writes (artifacts and
    training checkpoints), through the same checked parse; the caller applies its own rules."""
    return _read_raw(path)


def read_safetensors(path) -> dict[str, np.ndarray]:
    """{name: read-only array} of any safetensors file (e.g. a user's calibration inputs),
    through the same checked parse as artifacts; no vq4all manifest needed."""
    return _read_raw(path, manifest_required=False)[1]


def read_manifest(path) -> dict:
    """The manifest of any vq4all file, after the header checks (not the full validation); the
    data section is not read."""
    manifest, _ = _read_raw(path, data=False)
    _check_common(path, manifest)
    return manifest


def load_codebook(path) -> Codebook:
    """Read and fully validate a codebook file."""
    manifest, tensors = _read_raw(path)
    _check_codebook(path, manifest, tensors)
    scale = tensors.get("codebook_scale")
    return Codebook(tensors["codebook"], scale, manifest)  # Codebook keeps its own read-only copies


def load_network(path, codebook: Codebook | None = None) -> NetworkArtifact:
    """Read and fully validate a network file; with `codebook`, also check it was built on it."""
    manifest, tensors = _read_raw(path, writable=True)  # views of a private buffer: no copies
    _check_network(path, manifest, tensors, codebook)
    layers = [
        LayerCodes(
            param=e["param"],
            shape=tuple(e["shape"]),
            d=e["d"],
            pad=e["pad"],
            scale_granularity=e["scale_granularity"],
            codes=tensors[f"{e['name']}.codes"],
            scales=tensors[f"{e['name']}.scales"],
        )
        for e in manifest["layers"]
    ]
    claimed = {f"{layer.name}.{s}" for layer in layers for s in ("codes", "scales")}
    leftovers = {n: t for n, t in tensors.items() if n not in claimed}
    return NetworkArtifact(
        manifest["network"], manifest["codebook_sha256"], manifest["k"], layers, leftovers, manifest.get("config", {})
    )


def load(path, codebook: Codebook | None = None) -> Codebook | NetworkArtifact:
    """Read and validate either kind of file."""
    kind = read_manifest(path)["kind"]
    return load_codebook(path) if kind == "codebook" else load_network(path, codebook)


# ----------------------------------------------------------------------------- summaries
def network_sizes(art: NetworkArtifact) -> dict:
    """Bits and ratios of a network artifact (ROM codebook not charged).

    represented: values the artifact stands for (compressed weights' elements + FP leftovers);
    stored_bits: codes at log2(k) bits + scales at 16 + leftovers at their stored width.
    """
    code_bits = int(math.log2(art.k))
    weights = sum(math.prod(layer.shape) for layer in art.layers)
    codes_bits = sum(layer.codes.size for layer in art.layers) * code_bits
    scale_bits = sum(layer.scales.size for layer in art.layers) * 16
    left_elems = sum(int(t.size) for t in art.leftovers.values())
    left_bits = sum(int(t.size) * t.dtype.itemsize * 8 for t in art.leftovers.values())
    stored = codes_bits + scale_bits + left_bits
    return {
        "compressed_weights": weights,
        "leftover_values": left_elems,
        "stored_bits": stored,
        "bits_per_weight": (codes_bits + scale_bits) / weights if weights else float("nan"),
        "compression_ratio": 32 * (weights + left_elems) / stored if stored else float("nan"),
    }


def summarize(path) -> dict:
    """Validate a file of either kind and describe it (what `vq4all inspect` prints)."""
    art = load(path)
    if isinstance(art, Codebook):
        m = art.manifest
        return {
            "file": str(path),
            "kind": "codebook",
            "k": art.k,
            "d": art.d,
            "dtype": art.dtype,
            "sha256": art.sha256,
            "bits": int(art.codebook.size * art.codebook.itemsize * 8),
            "codebook_scale": None if art.codebook_scale is None else float(art.codebook_scale[0]),
            "config": m.get("config"),
            "valid": True,
        }
    sizes = network_sizes(art)
    return {
        "file": str(path),
        "kind": "network",
        "network": art.network,
        "k": art.k,
        "codebook_sha256": art.codebook_sha256,
        "layers": len(art.layers),
        **sizes,
        "fp_leftover_tensors": len(art.leftovers),
        "valid": True,
    }
