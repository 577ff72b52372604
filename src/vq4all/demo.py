"""The demo on the bundled real networks (`scripts/demo`; `python -m vq4all.demo [OUT] [--full]`).

1. Builds the universal codebook (K=2^16, d=8, int8) from every zoo network and writes it.
2. Rebuilds one network by hard assignment and writes its artifact; both files are validated.
3. Compresses the same network properly: candidate ratios trained by distillation with
   Progressive Network Construction, and compares the two artifacts' task metric.
4. Prints the hard-assignment quality table (universal codebook with and without the network,
   universal 256x4, per-layer k-means, 2-bit RTN) for the networks that evaluate in a few
   minutes on two cores, or for all of them with --full (as benches/quality.py does).
5. Hardware: exports the codebook's ROM files (.hex/.mem/.coe/.mif), generates the engine's
   Verilog and RTLIL for it (out/rtl/), and runs one real layer of the step-3 artifact (crepe_tiny's
   classifier on its real input, int8) through the engine in Icarus, checked bit for bit against
   the reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

FAST = ("digits_cnn", "crepe_tiny", "silero_vad", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "efficientnet_lite0")


def main(argv=None) -> int:
    from . import api, zoo
    from .artifact import load_network, save_codebook, summarize
    from .codebook import build_from_subvectors, network_subvectors
    from .config import CodebookConfig, CompressConfig
    from .evaluate import evaluate_artifact, plot_sqnr, quality_table, rows_to_json, rows_to_markdown
    from .io import atomic_write_bytes

    p = argparse.ArgumentParser(prog="vq4all.demo")
    p.add_argument("out", nargs="?", default="out", help="folder for the demo's files (default ./out)")
    p.add_argument("--full", action="store_true", help="the quality table for every zoo network (slower)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    print("== vq4all demo: one universal codebook for real networks ==\n")
    print("zoo:")
    for r in zoo.list_networks():
        print(f"  {r['name']:<20}{r['compressible_parameters']:>12,} compressible weights   metric: {r['metric']}")

    t = time.perf_counter()
    config = CodebookConfig(networks=zoo.NAMES)
    subvectors = {
        name: network_subvectors(zoo.load(name).compressible(), config.d, config.scale_granularity)
        for name in zoo.NAMES
    }
    cb = build_from_subvectors(subvectors, config)
    save_codebook(out / "codebook.safetensors", cb)
    info = summarize(out / "codebook.safetensors")
    print(
        f"\n[1] universal codebook: k={cb.k} d={cb.d} {cb.dtype} (h={cb.manifest['bandwidth_h']:.4f}, "
        f"{info['bits'] / 8 / 1024:.0f} KiB) from {len(zoo.NAMES)} networks in {time.perf_counter() - t:.1f} s"
    )
    print(f"    {out / 'codebook.safetensors'}  sha256={cb.sha256}")

    t = time.perf_counter()
    net = zoo.load("crepe_tiny")
    api.save(api.hard_assign(net, cb), out / "crepe_tiny.safetensors")  # the public API, as for any model
    info = summarize(out / "crepe_tiny.safetensors")
    print(
        f"\n[2] {net.name} as codes: {info['layers']} layers, {info['bits_per_weight']:.3f} bits/weight, "
        f"compression {info['compression_ratio']:.1f}x (ROM codebook not charged), {time.perf_counter() - t:.1f} s"
    )
    print(f"    {out / 'crepe_tiny.safetensors'}  (vq4all inspect validates it)")

    t = time.perf_counter()
    # the results table's settings for short budgets (README, "Short budgets")
    config = CompressConfig(schedule="linear", finish="nearest")
    print(
        f"\n[3] compressing {net.name} by distillation with PNC (n={config.n}, alpha={config.alpha}, "
        f"{config.schedule} schedule, finish {config.finish}, up to {config.steps} steps)",
        flush=True,
    )
    student = api.compress(net, None, cb, config, checkpoint=out / "crepe_tiny.ckpt", progress=True)
    api.save(student, out / "crepe_tiny_vq4all.safetensors")
    (out / "crepe_tiny.ckpt").unlink(missing_ok=True)
    trained = evaluate_artifact(net, load_network(out / "crepe_tiny_vq4all.safetensors", cb), cb)
    hard = evaluate_artifact(net, load_network(out / "crepe_tiny.safetensors", cb), cb)
    report = student.vq4all_result.report
    print(
        f"    {report['steps']} steps in {time.perf_counter() - t:.0f} s: {report['frozen_by_pnc']:,} sub-vectors frozen by PNC, "
        f"{report['forced']:,} forced (finish {config.finish})"
    )
    print(
        f"    {trained['metric']}: FP {trained['fp_value']:.3f}, hard assignment {hard['value']:.3f}, "
        f"vq4all {trained['value']:.3f}; {trained['bits_per_weight']:.3f} bits/weight, "
        f"compression {trained['compression_ratio']:.1f}x ({trained['compression_ratio_with_codebook']:.2f}x with the codebook)"
    )
    print(f"    {out / 'crepe_tiny_vq4all.safetensors'}")

    networks = zoo.NAMES if args.full else FAST
    print(f"\n[4] hard-assignment quality table ({len(networks)} networks; codebooks from all {len(zoo.NAMES)})\n")
    rows, _ = quality_table(
        {name: zoo.load(name) for name in zoo.NAMES},
        networks,
        zoo.NAMES,
        log=lambda s: print(s, flush=True),
        progress=False,
        codebooks={"u16_all": cb},
    )  # step 1's codebook: same sources and defaults
    table = rows_to_markdown(rows)
    atomic_write_bytes(out / "quality.md", (table + "\n").encode())
    atomic_write_bytes(out / "quality.json", json.dumps(rows_to_json(rows), indent=2).encode())
    plot_sqnr(rows, out / "quality.png")
    print("\n" + table)

    hardware_step(out, cb, out / "crepe_tiny_vq4all.safetensors")
    print(
        f"\nwrote {out}/codebook.safetensors, crepe_tiny.safetensors, crepe_tiny_vq4all.safetensors, quality.md/.json/.png "
        f"in {time.perf_counter() - start:.0f} s"
    )
    return 0


def hardware_step(out: Path, cb, artifact_path: Path, layer_name: str = "classifier") -> dict:
    """Step 5: ROM files + RTL for codebook `cb` in out/rtl, and one real layer of the artifact
    simulated in Icarus (the Verilog just generated, compiled once). Returns the sim summary."""
    from . import zoo
    from .artifact import load_network
    from .hw.layer_inputs import real_input
    from .hw.rtl.generate import TOP, generate
    from .hw.sim.layer import engine_for, run_layer
    from .hw.sim.streams import quantize_int8

    t = time.perf_counter()
    art = load_network(artifact_path, cb)
    layer = next(layer for layer in art.layers if layer.name == layer_name)
    rows, m = layer.codes.shape
    config = engine_for(cb.k, cb.d, m, rows)
    print(
        f"\n[5] hardware: the engine for this codebook (k={cb.k}, d={cb.d}, {config.lanes} lane), "
        f"one real layer in simulation",
        flush=True,
    )
    generate(cb, out / "rtl", config, progress=True)
    print(
        f"    {out / 'rtl'}: codebook.hex/.mem/.coe/.mif (ROM init), {TOP}.v, {TOP}.il (RTLIL), "
        f"{TOP}_readmemh.v, manifest.json ({time.perf_counter() - t:.1f} s)",
        flush=True,
    )
    t = time.perf_counter()
    x, _scale = quantize_int8(real_input(zoo.load(art.network), layer.param))
    result = run_layer(cb, layer.codes, x, name=f"{art.network}.{layer.name}", verilog=out / "rtl" / f"{TOP}.v")
    print(
        f"    icarus: {result['name']} ({rows} rows x {result['in_features']} int8 inputs): {result['outputs']} outputs, "
        f"{result['mismatches']} mismatches vs the reference, {result['cycles']} cycles, "
        f"MAC utilization {result['mac_utilization']:.3f} ({time.perf_counter() - t:.1f} s)"
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
