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


def shares_table(counts: dict[str, np.ndarray], sizes=HOT_SIZES) -> dict:
    """{order: {network or "all codes": {size: share}}} for the orders in ORDERS.

    counts: {network: [k] int64 usage counts}. Leave-one-out needs >= 2 networks."""
    names = list(counts)
    k = next(iter(counts.values())).size
    pooled = usage_order(pooled_usage(counts.values()))
    weighted = usage_order(pooled_usage(counts.values(), weighting="network"))
    everything = pooled_usage(counts.values())
    out = {order: {} for order in ORDERS}
    for name in names:
        c = counts[name]
        out["pooled"][name] = hot_shares(c, pooled, sizes)
        out["pooled_network_weighted"][name] = hot_shares(c, weighted, sizes)
        if len(names) > 1:
            others = pooled_usage(counts[n] for n in names if n != name)
            out["leave_one_out"][name] = hot_shares(c, usage_order(others), sizes)
        out["own"][name] = hot_shares(c, usage_order(c), sizes)
        out["original"][name] = hot_shares(c, np.arange(k), sizes)
    out["pooled"]["all codes"] = hot_shares(everything, pooled, sizes)
    out["pooled_network_weighted"]["all codes"] = hot_shares(everything, weighted, sizes)
    out["own"]["all codes"] = out["pooled"]["all codes"]
    out["original"]["all codes"] = hot_shares(everything, np.arange(k), sizes)
    if len(names) > 1:
        # every network's codes counted under its own leave-one-out order, pooled
        totals = {s: 0.0 for s in sizes}
        for n in names:
            order = usage_order(pooled_usage(counts[m] for m in names if m != n))
            cum = np.cumsum(counts[n][order].astype(np.float64))
            for s in sizes:
                totals[s] += cum[min(s, k) - 1]
        total = float(sum(c.sum() for c in counts.values()))
        out["leave_one_out"]["all codes"] = {s: totals[s] / total for s in sizes}
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
        "Share of each network's codes whose codeword lies in the first N codewords of the order. "
        "Pooled: ordered by the summed counts of all networks; leave-one-out: by the other networks' "
        "counts only; own: by the network's own counts (the best any order does for it); original: the "
        "codebook's arbitrary build order.",
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
        for name, cum in curves[order].items():
            ax.plot(np.arange(1, cum.size + 1), cum, label=name, lw=1.5 if name == "all codes" else 1)
        for s in result["sizes"]:
            ax.axvline(s, color="grey", lw=0.5, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hot prefix (codewords)")
        ax.set_title({"pooled": "ordered by pooled usage", "leave_one_out": "leave-one-out order"}[order])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of the network's codes")
    axes[1].legend(fontsize=7, loc="lower right")
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
    counts, networks, assign_seconds = {}, {}, {}
    for name in names:
        path, seconds = hard_artifact(work, name, cb, log)
        assign_seconds[name] = seconds
        art = load_network(path, cb)
        counts[name] = usage_counts(art, cb.k)
        log(f"{name}: {int(counts[name].sum()):,} codes ({f'assigned in {seconds:.1f} s' if seconds else 'cached'})")
    kind = "hard assignment (vq4all assign)"
    for item in (t for t in args.trained.split(",") if t):
        label, _, file = item.partition("=")
        art = load_network(file, cb)
        counts[f"{label} (trained)"] = usage_counts(art, cb.k)
        kind = "hard assignment (vq4all assign) and trained (vq4all compress)"
    for name, c in counts.items():
        networks[name] = {
            "codes": int(c.sum()),
            "distinct": int((c > 0).sum()),
            "assign_seconds": assign_seconds.get(name),
        }
    everything = pooled_usage(counts.values())
    sizes = [s for s in HOT_SIZES if s < cb.k]
    table = shares_table(counts, sizes)
    known = [s for s in assign_seconds.values() if s is not None]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "k": cb.k,
        "d": cb.d,
        "dtype": cb.dtype,
        "codebook_sha256": cb.sha256,
        "codebook_networks": list(source),
        "artifact_kind": kind,
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
            if len(counts) > 1:
                others = usage_order(pooled_usage(counts[n] for n in counts if n != name))
                curves["leave_one_out"][name] = np.cumsum(c[others]) / total
        curves["pooled"]["all codes"] = np.cumsum(everything[pooled]) / max(float(everything.sum()), 1.0)
        plot(result, curves, out / "code_usage.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
