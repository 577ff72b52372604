"""Bench: how much of the zoo's codes a usage-ordered hot prefix of the universal codebook serves.

    .venv/bin/python benches/code_usage.py [--work DIR] [--networks a,b,...] [--out benches/results/code_usage]

Builds (or reuses from --work) the universal codebook from all nine zoo networks (k = 65536,
d = 8, int8, the CodebookConfig defaults: what `vq4all codebook build --networks <all>` writes),
hard-assigns every network to it (`vq4all assign`; artifacts cached in --work, reused while they
name this codebook's SHA-256), optionally adds trained artifacts (--trained NAME=FILE,...), then
counts how often each codeword is used (`vq4all.usage.usage_counts`) and reports, for hot
prefixes of 4K/8K/16K/32K codewords (32-256 KiB of 8-byte codewords), the share of each network's
codes that fall in the prefix when the codebook is ordered by:
  - pooled usage: the summed counts of all networks (`vq4all codebook reorder`'s order);
  - pooled, network-weighted: each network's counts normalised to 1 first;
  - leave-one-out: the summed counts of the other networks only, share measured on the held-out
    one (what an unseen network gets from a codebook ordered on the zoo);
  - its own usage (the best any order can do for that network alone);
  - the original (arbitrary) order, for reference (~ prefix / k).
"all codes" rows pool the codes of every network (dominated by the largest ones).

Writes code_usage.md, code_usage.json and code_usage.png into --out (never the cached files:
--work defaults to $VQ4ALL_CACHE/code_usage or ~/.cache/vq4all/code_usage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from vq4all import zoo
from vq4all.artifact import load_codebook, load_network, read_manifest, save_codebook, save_network
from vq4all.errors import VQ4AllError
from vq4all.io import atomic_write_bytes, save_figure
from vq4all.usage import HOT_SIZES, hot_shares, pooled_usage, usage_counts, usage_order

ORDERS = ("pooled", "pooled_network_weighted", "leave_one_out", "own", "original")


def default_work() -> Path:
    return Path(os.environ.get("VQ4ALL_CACHE") or Path.home() / ".cache" / "vq4all") / "code_usage"


def codebook_file(work: Path, networks: tuple[str, ...], log) -> tuple[Path, float | None]:
    """The universal codebook of `networks` (CodebookConfig defaults otherwise) in `work`: reused
    when its manifest's config names the same networks, else built. (path, build seconds or None)."""
    from vq4all.codebook import build
    from vq4all.config import CodebookConfig

    config = CodebookConfig(networks=networks)
    path = work / "u16.safetensors"
    if path.exists():
        manifest = read_manifest(path)
        if manifest.get("config") == config.to_dict():
            return path, None
        log(f"{path}: built from another config, rebuilding")
    start = time.perf_counter()
    cb = build(config, {name: zoo.load(name) for name in networks})
    seconds = time.perf_counter() - start
    save_codebook(path, cb)
    return path, seconds


def hard_artifact(work: Path, name: str, codebook, log) -> tuple[Path, float | None]:
    """`vq4all assign --network name` onto `codebook`, cached in `work` while it names this
    codebook. (path, assignment seconds or None when cached)."""
    import warnings

    from vq4all import api

    path = work / f"hard_{name}.safetensors"
    if path.exists():
        manifest = read_manifest(path)
        if manifest.get("codebook_sha256") == codebook.sha256 and manifest.get("network") == name:
            return path, None
        log(f"{path}: built on another codebook, re-assigning")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # left-FP rows: recorded in the artifact's config
        art = api.hard_assign(zoo.load(name), codebook, granularity="channel")
    seconds = time.perf_counter() - start
    save_network(path, art)
    return path, seconds


def cached(work: Path, name: str, codebook) -> bool:
    """Whether `work` holds the hard assignment of `name` on `codebook`."""
    path = work / f"hard_{name}.safetensors"
    if not path.exists():
        return False
    manifest = read_manifest(path)
    return manifest.get("codebook_sha256") == codebook.sha256 and manifest.get("network") == name


def shares_table(
    counts: dict[str, np.ndarray], sizes=HOT_SIZES, network: dict[str, str] | None = None, sources=None
) -> dict:
    """{order: {label or "all codes": {size: share}}} for the orders in ORDERS.

    counts: {label: [k] int64 usage counts}, one label per artifact; network: {label: network
    name} (default: the label), so a trained and a hard artifact of one network are one network;
    sources: the labels whose counts build the pooled and leave-one-out orders (default: all;
    the bench passes the hard assignments, one per network). Leave-one-out for a label orders by
    the sources of the other networks only. "all codes" rows pool the sources' codes, each under
    its order."""
    labels = list(counts)
    network = network or {label: label for label in labels}
    sources = list(sources or labels)
    k = next(iter(counts.values())).size
    everything = pooled_usage(counts[s] for s in sources)
    pooled = usage_order(everything)
    weighted = usage_order(pooled_usage((counts[s] for s in sources), weighting="network"))

    def loo_order(label):
        others = [s for s in sources if network[s] != network[label]]
        return usage_order(pooled_usage(counts[s] for s in others)) if others else None

    out = {order: {} for order in ORDERS}
    for label in labels:
        c = counts[label]
        out["pooled"][label] = hot_shares(c, pooled, sizes)
        out["pooled_network_weighted"][label] = hot_shares(c, weighted, sizes)
        order = loo_order(label)
        if order is not None:
            out["leave_one_out"][label] = hot_shares(c, order, sizes)
        out["own"][label] = hot_shares(c, usage_order(c), sizes)
        out["original"][label] = hot_shares(c, np.arange(k), sizes)
    out["pooled"]["all codes"] = hot_shares(everything, pooled, sizes)
    out["pooled_network_weighted"]["all codes"] = hot_shares(everything, weighted, sizes)
    out["original"]["all codes"] = hot_shares(everything, np.arange(k), sizes)
    if all(loo_order(s) is not None for s in sources):
        # every source's codes counted under its own leave-one-out order, pooled
        totals = {size: 0.0 for size in sizes}
        for s in sources:
            cumulative = np.cumsum(counts[s][loo_order(s)].astype(np.float64))
            for size in sizes:
                totals[size] += cumulative[min(size, k) - 1]
        total = float(everything.sum())
        out["leave_one_out"]["all codes"] = {size: totals[size] / total for size in sizes}
    return out


def markdown(result: dict) -> str:
    sizes = result["sizes"]
    head = " | ".join(f"{s // 1024}K ({s * result['d'] // 1024} KiB)" for s in sizes)
    lines = [
        "# Codeword usage: share of codes in a usage-ordered hot prefix",
        "",
        f"Universal codebook k={result['k']} d={result['d']} {result['dtype']} from {', '.join(result['codebook_networks'])} "
        f"(sha256 {result['codebook_sha256'][:16]}...). Artifacts: {result['artifact_kind']}. "
        f"Measured {result['date']}, {result['seconds']:.0f} s (codebook build {result['build_seconds']}, "
        f"assignments {result['assign_seconds_total']}).",
        "",
        *([f"Note: {result['note']}", ""] if result.get("note") else []),
        "Share of each network's codes whose codeword lies in the first N codewords of the order. "
        "Pooled: ordered by the summed counts of all networks; leave-one-out: by the other networks' "
        "counts only; own: by the network's own counts (the best any order does for it); original: the "
        "codebook's arbitrary build order. The orders are built from one artifact per network (its hard "
        f"assignment where measured, else its trained artifact): {', '.join(result['order_sources'])}; the "
        "other artifacts are measured under the same orders, their own network left out of their leave-one-out "
        "order. 'all codes' pools the order sources' codes (the largest networks dominate it)."
        + (f" Not hard-assigned (time): {', '.join(result['not_assigned'])}." if result["not_assigned"] else ""),
        "",
    ]
    titles = {
        "pooled": "Ordered by pooled usage (all networks)",
        "leave_one_out": "Leave-one-out (ordered by the other networks, measured on the held-out one)",
        "pooled_network_weighted": "Ordered by pooled usage, every network weighted equally",
        "own": "Ordered by the network's own usage (upper bound)",
        "original": "Original order (reference)",
    }
    for order in ORDERS:
        rows = result["shares"][order]
        if not rows:
            continue
        lines += [f"## {titles[order]}", "", f"| network | codes | distinct codewords | {head} |"]
        lines += ["|---|---:|---:|" + "---:|" * len(sizes)]
        for name, shares in rows.items():
            info = result["networks"].get(name, result["all_codes"])
            cells = " | ".join(f"{100 * shares[str(s)]:.1f}%" for s in sizes)
            lines.append(f"| {name} | {info['codes']:,} | {info['distinct']:,} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, order in zip(axes, ("pooled", "leave_one_out")):
        colors = plt.get_cmap("tab20").colors
        for i, (name, cum) in enumerate(curves[order].items()):
            style = {"color": "black", "lw": 2} if name == "all codes" else {"color": colors[i % 20], "lw": 1}
            ax.plot(np.arange(1, cum.size + 1), cum, label=name, ls="--" if "trained" in name else "-", **style)
        for s in result["sizes"]:
            ax.axvline(s, color="grey", lw=0.5, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hot prefix (codewords)")
        ax.set_title({"pooled": "ordered by pooled usage", "leave_one_out": "leave-one-out order"}[order])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of the network's codes")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=None, help="cache folder for the codebook and artifacts (default: see above)")
    p.add_argument("--networks", default=",".join(zoo.NAMES), help="networks to assign and measure (default: all)")
    p.add_argument(
        "--codebook-networks", default=",".join(zoo.NAMES), help="source networks of the codebook (default: all)"
    )
    p.add_argument("--trained", default="", help="NAME=FILE,...: trained artifacts (built on the same codebook) too")
    p.add_argument("--out", default="benches/results/code_usage")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--note", default=None, help="a line recorded with the results (e.g. where cached files came from)")
    p.add_argument(
        "--cached-only",
        action="store_true",
        help="use the hard assignments cached in --work, assign none (a network without one is left out, "
        "or represented by its --trained artifact)",
    )
    args = p.parse_args(argv)

    def log(text):
        print(f"[code_usage] {text}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    work = Path(args.work) if args.work else default_work()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = tuple(n for n in args.codebook_networks.split(",") if n)
    names = [n for n in args.networks.split(",") if n]
    for n in (*source, *names):
        if n not in zoo.NAMES:
            raise VQ4AllError(f"unknown network '{n}': choose from {', '.join(zoo.NAMES)}")
    cb_path, build_seconds = codebook_file(work, source, log)
    cb = load_codebook(cb_path)
    log(
        f"codebook {cb_path} sha256 {cb.sha256[:16]}... ({f'built in {build_seconds:.1f} s' if build_seconds else 'cached'})"
    )
    counts, networks, assign_seconds, skipped = {}, {}, {}, []
    for name in list(names):
        if args.cached_only and not cached(work, name, cb):
            skipped.append(name)
            names.remove(name)
            log(f"{name}: no cached hard assignment (--cached-only): left out")
            continue
        path, seconds = hard_artifact(work, name, cb, log)
        assign_seconds[name] = seconds
        art = load_network(path, cb)
        counts[name] = usage_counts(art, cb.k)
        log(f"{name}: {int(counts[name].sum()):,} codes ({f'assigned in {seconds:.1f} s' if seconds else 'cached'})")
    kind = "hard assignment (vq4all assign)"
    network = {name: name for name in names}
    for item in (t for t in args.trained.split(",") if t):
        name, _, file = item.partition("=")
        art = load_network(file, cb)
        label = f"{name} (trained)"
        counts[label], network[label] = usage_counts(art, cb.k), art.network
        kind = "hard assignment (vq4all assign) and trained (vq4all compress)"
    # the orders come from one artifact per network: its hard assignment, else its trained one
    sources = names + [label for label in counts if label not in names and network[label] not in names]
    for name, c in counts.items():
        networks[name] = {
            "codes": int(c.sum()),
            "distinct": int((c > 0).sum()),
            "assign_seconds": assign_seconds.get(name),
        }
    everything = pooled_usage(counts[name] for name in sources)
    sizes = [s for s in HOT_SIZES if s < cb.k]
    table = shares_table(counts, sizes, network, sources=sources)
    known = [s for s in assign_seconds.values() if s is not None]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "k": cb.k,
        "d": cb.d,
        "dtype": cb.dtype,
        "codebook_sha256": cb.sha256,
        "codebook_networks": list(source),
        "artifact_kind": kind,
        "order_sources": sources,
        "note": args.note,
        "not_assigned": skipped,
        "sizes": sizes,
        "build_seconds": "cached" if build_seconds is None else f"{build_seconds:.1f} s",
        "assign_seconds_total": f"{sum(known):.0f} s for {len(known)} networks"
        + (f", {len(names) - len(known)} cached" if len(known) < len(names) else ""),
        "networks": networks,
        "all_codes": {"codes": int(everything.sum()), "distinct": int((everything > 0).sum())},
        "unused_codewords_pooled": int((everything == 0).sum()),
        "shares": {o: {n: {str(s): v for s, v in row.items()} for n, row in rows.items()} for o, rows in table.items()},
    }
    result["seconds"] = time.perf_counter() - start
    md = markdown(result)
    atomic_write_bytes(out / "code_usage.md", md.encode())
    atomic_write_bytes(out / "code_usage.json", json.dumps(result, indent=1).encode())
    if not args.no_plot:
        pooled = usage_order(everything)
        curves = {"pooled": {}, "leave_one_out": {}}
        for name, c in counts.items():
            total = max(float(c.sum()), 1.0)
            curves["pooled"][name] = np.cumsum(c[pooled]) / total
            others = [n for n in sources if network[n] != network[name]]
            if others:
                order = usage_order(pooled_usage(counts[n] for n in others))
                curves["leave_one_out"][name] = np.cumsum(c[order]) / total
        curves["pooled"]["all codes"] = np.cumsum(everything[pooled]) / max(float(everything.sum()), 1.0)
        plot(result, curves, out / "code_usage.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
