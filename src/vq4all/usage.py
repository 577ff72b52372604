"""Codeword usage and the usage-ordered universal codebook.

The universal codebook is frozen and the order of its codewords is arbitrary, so it can be
renumbered for free: codeword 0 becomes the one the networks use most, codeword 1 the next, and so
on. A GPU kernel can then keep a hot prefix (16,384 codewords x 8 int8 = 128 KiB) in shared memory
and serve only the rare cold codes from L2/global memory.

Conventions:
- `counts`: [k] int64, counts[c] = how many codes of the artifacts equal c (every code of every
  compressed layer, the ragged rows' last sub-vectors included: each costs one gather).
- `perm`: [k] int64, a permutation of 0..k-1 with perm[new] = old: row `new` of the reordered
  codebook is row perm[new] of the old one (`new_codebook = old_codebook[perm]`).
- `inverse`: [k] int64, inverse[old] = new: an artifact's codes are remapped as inverse[codes].
A remapped artifact decodes to exactly the same weights on the new codebook as the old artifact
on the old one: new_codebook[inverse[c]] = old_codebook[perm[inverse[c]]] = old_codebook[c].

The new codebook is one file with one SHA-256 (its rows changed, so its hash did); artifacts are
remapped and re-saved against it (their `codebook_sha256` and content hash change with it), and
ROM files and RTL generated from the new file carry its numbering and hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .artifact import Codebook, NetworkArtifact, load_codebook, load_network, save_codebook, save_network
from .errors import VQ4AllError, printable

HOT_SIZES = (4096, 8192, 16384, 32768)  # hot prefixes reported: 32, 64, 128, 256 KiB of 8-byte codewords


def usage_counts(art: NetworkArtifact, k: int | None = None) -> np.ndarray:
    """How often each codeword is used by `art`'s codes: [k] int64 (k defaults to art.k)."""
    k = art.k if k is None else int(k)
    counts = np.zeros(k, dtype=np.int64)
    for layer in art.layers:
        codes = np.asarray(layer.codes).reshape(-1)
        if codes.size:
            if int(codes.max()) >= k:
                raise VQ4AllError(
                    f"network '{printable(art.network, 200)}': layer '{printable(layer.name, 200)}' has code "
                    f"{int(codes.max())} >= k={k}: not built on this codebook"
                )
            counts += np.bincount(codes, minlength=k).astype(np.int64)
    return counts


def pooled_usage(counts: Iterable[np.ndarray], weighting: str = "codes") -> np.ndarray:
    """Usage of several networks together: [k] float64.

    weighting "codes": the plain sum of the counts (a network weighs as many codes as it has);
    "network": each network's counts divided by its total first (every network weighs the same).
    """
    if weighting not in ("codes", "network"):
        raise VQ4AllError(f"weighting '{printable(weighting, 40)}' must be 'codes' or 'network'")
    total = None
    for c in counts:
        c = np.asarray(c, dtype=np.float64)
        if weighting == "network":
            c = c / max(float(c.sum()), 1.0)
        total = c.copy() if total is None else total + c
    if total is None:
        raise VQ4AllError("no usage counts given: name at least one artifact")
    return total


def usage_order(usage: np.ndarray) -> np.ndarray:
    """The renumbering by usage: perm [k] int64 with perm[new] = old, most used first; ties (and
    the unused codewords, at the end) keep their old relative order, so the result is unique."""
    usage = np.asarray(usage)
    if usage.ndim != 1 or usage.size == 0:
        raise VQ4AllError(f"usage must be a non-empty vector [k], got shape {list(usage.shape)}")
    return np.argsort(-usage.astype(np.float64), kind="stable").astype(np.int64)


def inverse_permutation(perm: np.ndarray) -> np.ndarray:
    """inverse [k] int64 with inverse[perm[i]] = i; VQ4AllError if `perm` is not a permutation."""
    perm = np.asarray(perm)
    k = perm.size
    if perm.ndim != 1 or perm.dtype.kind not in "iu" or k == 0:
        raise VQ4AllError(f"a permutation must be a non-empty integer vector, got {perm.dtype} {list(perm.shape)}")
    if int(perm.min()) < 0 or int(perm.max()) >= k or np.unique(perm).size != k:
        raise VQ4AllError(f"not a permutation of 0..{k - 1}: values repeat or fall outside the range")
    inverse = np.empty(k, dtype=np.int64)
    inverse[perm] = np.arange(k, dtype=np.int64)
    return inverse


def hot_shares(counts: np.ndarray, perm: np.ndarray, sizes: Sequence[int] = HOT_SIZES) -> dict[int, float]:
    """{size: share of the codes in `counts` ([k], by old index) that fall in the first `size`
    codewords of the order `perm`} (NaN when counts is all zero)."""
    counts = np.asarray(counts, dtype=np.float64)
    sorted_counts = counts[np.asarray(perm)]
    total = float(counts.sum())
    cumulative = np.cumsum(sorted_counts)
    out = {}
    for size in sizes:
        n = min(int(size), counts.size)
        out[int(size)] = float(cumulative[n - 1] / total) if total > 0 and n > 0 else float("nan")
    return out


def reorder_codebook(codebook: Codebook, perm: np.ndarray, provenance: dict | None = None) -> Codebook:
    """The codebook renumbered by `perm` (row i = old row perm[i]); same scale, same config.

    The manifest keeps the old one's fields and adds `reordered_from` (the old SHA-256) and
    whatever `provenance` holds (e.g. the networks the order was measured on)."""
    perm = np.asarray(perm)
    inverse_permutation(perm)  # checks it is a permutation
    if perm.size != codebook.k:
        raise VQ4AllError(f"the permutation has {perm.size} entries, the codebook k={codebook.k}")
    manifest = {key: value for key, value in codebook.manifest.items() if key not in ("sha256",)}
    manifest["reordered_from"] = codebook.sha256
    manifest.update(provenance or {})
    return Codebook(codebook.codebook[perm], codebook.codebook_scale, manifest)


def remap_artifact(art: NetworkArtifact, perm: np.ndarray, new_codebook: Codebook) -> NetworkArtifact:
    """`art` with every code c replaced by inverse[c] and bound to `new_codebook` (the codebook
    reordered by `perm`): decodes to the same weights, bit for bit. Scales and leftovers are kept."""
    inverse = inverse_permutation(perm)
    if inverse.size != art.k or new_codebook.k != art.k:
        raise VQ4AllError(
            f"network '{printable(art.network, 200)}': k={art.k}, the permutation has {inverse.size} entries "
            f"and the new codebook k={new_codebook.k}: they must agree"
        )
    layers = []
    for layer in art.layers:
        codes = np.asarray(layer.codes)
        new_codes = inverse[codes.astype(np.int64)].astype(codes.dtype)
        layers.append(
            type(layer)(
                param=layer.param,
                shape=layer.shape,
                d=layer.d,
                pad=layer.pad,
                scale_granularity=layer.scale_granularity,
                codes=new_codes,
                scales=np.array(layer.scales),
            )
        )
    config = dict(art.config)
    config["codebook_reordered_from"] = art.codebook_sha256
    return NetworkArtifact(
        art.network,
        new_codebook.sha256,
        art.k,
        layers,
        {name: np.array(value) for name, value in art.leftovers.items()},
        config,
    )


# ----------------------------------------------------------------------------- the CLI command
def reorder_files(
    codebook_path, usage_paths: Sequence, out, remap: Sequence = (), out_artifacts: Sequence = ()
) -> dict:
    """`vq4all codebook reorder`: order `codebook_path` by the pooled usage (sum of counts) of the
    artifacts `usage_paths` (all built on it), write the reordered codebook to `out`, and each
    artifact remap[i] remapped to out_artifacts[i]. No output may be an input or another output.
    Returns what the command reports."""
    from .io import check_not_input, check_writable

    if not usage_paths:
        raise VQ4AllError("--by-usage needs at least one network artifact built on the codebook")
    if len(remap) != len(out_artifacts):
        raise VQ4AllError(
            f"{len(remap)} --remap and {len(out_artifacts)} --out-artifact given: give one --out-artifact per --remap"
        )
    inputs = [codebook_path, *usage_paths, *remap]
    outputs = [("--out", out)] + [("--out-artifact", p) for p in out_artifacts]
    for flag, path in outputs:
        check_writable(path)
        check_not_input(path, *inputs, flag=flag)
    for i, (flag, path) in enumerate(outputs):
        for flag2, other in outputs[i + 1 :]:
            if Path(path).resolve() == Path(other).resolve():
                raise VQ4AllError(
                    f"{flag} and {flag2} are the same file {printable(path)}: give each output its own path"
                )
    old = load_codebook(codebook_path)
    counts, networks = [], []
    for path in usage_paths:
        art = load_network(path, old)
        counts.append(usage_counts(art, old.k))
        networks.append({"network": art.network, "codes": int(counts[-1].sum())})
    usage = pooled_usage(counts)
    perm = usage_order(usage)
    shares = hot_shares(usage, perm, [s for s in HOT_SIZES if s < old.k])
    new = reorder_codebook(
        old,
        perm,
        {
            "order": "usage",
            "usage_networks": networks,
            "hot_shares": {str(size): share for size, share in shares.items()},
        },
    )
    remapped = [(load_network(path, old), dest) for path, dest in zip(remap, out_artifacts)]
    save_codebook(out, new)
    for art, dest in remapped:
        save_network(dest, remap_artifact(art, perm, new))
    return {
        "file": str(out),
        "k": new.k,
        "d": new.d,
        "sha256": new.sha256,
        "reordered_from": old.sha256,
        "usage_networks": networks,
        "hot_shares": {str(size): share for size, share in shares.items()},
        "unused_codewords": int((usage == 0).sum()),
        "remapped": [str(dest) for _, dest in remapped],
    }


def cmd_codebook_reorder(args) -> int:
    """`vq4all codebook reorder` (wired into the CLI by `add_reorder_parser`; prints like every
    command: one JSON object with --json, else lines of text)."""
    import json

    usage_paths = [p.strip() for p in args.by_usage.split(",") if p.strip()]
    info = reorder_files(args.codebook, usage_paths, args.out, args.remap or [], args.out_artifact or [])
    shares = ", ".join(f"{int(s) // 1024}K {100 * v:.1f}%" for s, v in info["hot_shares"].items())
    text = (
        f"wrote {printable(args.out)}: k={info['k']} d={info['d']} ordered by the usage of "
        f"{len(info['usage_networks'])} artifacts (hot prefix shares: {shares}; {info['unused_codewords']} unused)"
        f"  sha256={info['sha256']}"
        + "".join(f"\nwrote {printable(p)}: remapped onto the reordered codebook" for p in info["remapped"])
    )
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else text)
    return 0


def add_reorder_parser(codebook_sub, with_json) -> None:
    """`vq4all codebook reorder` under the `codebook` subcommands (`codebook_sub`)."""
    r = with_json(
        codebook_sub.add_parser(
            "reorder",
            help="renumber the codebook's codewords by how often artifacts use them (hot prefix first) "
            "and remap artifacts onto it",
        )
    )
    r.add_argument("--codebook", required=True, help="the codebook file to reorder")
    r.add_argument(
        "--by-usage", required=True, help="comma-separated network artifacts built on it: their pooled code counts"
    )
    r.add_argument("--out", required=True, help="the reordered codebook file to write (never an input)")
    r.add_argument(
        "--remap",
        action="append",
        help="a network artifact built on --codebook to remap (repeatable, pairs with --out-artifact)",
    )
    r.add_argument("--out-artifact", action="append", help="where the remapped --remap artifact goes (repeatable)")
    r.set_defaults(func=cmd_codebook_reorder)
