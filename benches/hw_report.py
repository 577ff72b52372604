"""Hardware report: throughput, off-chip traffic, FPGA resources and Fmax, several networks on one ROM.

    .venv/bin/python benches/hw_report.py [--out benches/results/hw] [--resynth] [--quick]
        [--codebook universal.safetensors]

Sections (each measured here, nothing typed in):
1. Throughput: real layers of zoo networks run back to back through the engine in Icarus (cocotb),
   lanes 1/2/4; measured cycles and MAC utilisation next to the simple model
   out*in/(d*lanes) + fill.
2. Off-chip weight traffic per inference for every zoo network (vq4all.hw.traffic), from hard-assigned
   artifacts on the universal codebook; for digits_cnn, the VQ4ALL figure is confirmed by counting
   the code and scale stream beats of a simulation of all its layers.
3. Resources and Fmax: yosys + nextpnr per device, K and lanes (vq4all.hw.synth), and the 2^16 x 8
   ROM on ECP5-85k split (EngineConfig.rom_width, SPLIT_RUNS), and the row-packing engine
   (EngineConfig.pack, PACK_RUNS); the results are cached in
   <out>/synth_cache.json and reused unless --resynth.
4. Several networks, one ROM: layers of digits_cnn, crepe_tiny and mtcnn_pnet on one engine, back
   to back, bit-exact, and each switch costing no cycles beyond the layer's own code beats.
5. Utilisation in a stream of GEMVs: every layer of digits_cnn, mtcnn_pnet and mtcnn_onet as two
   GEMVs back to back at lanes 1 and 2, the second's utilisation next to the bound of row-local
   sub-vectors (--steady-only adds this section to an existing report).
Writes <out>/hw_report.md, hw_report.json, PNG plots, and rewrites the README block between
<!-- hw-report:begin --> and <!-- hw-report:end --> with the main tables.

The committed results in benches/results/hw came from: the synthesis sweep (vq4all.hw.synth.sweep, run on
its own into synth_cache.json, ~25 min on 2 shared cores), then
`hw_report.py --synth-from-cache --assign-limit 5000000` (~10 min: minilm_l6 and crepe_full are
counted from their layer split, their nearest-codeword search taking over 15 min here), then
`hw_report.py --render-only`. A plain run does all of it in one go; `--synth-only` re-measures the
synthesis runs of a changed RTL (the cache is keyed by the generator's source) and keeps the rest.

The universal codebook is --codebook, else built once from the whole zoo (vq4all.codebook.build,
default config: K=65536, d=8, int8, seed 0; deterministic) and kept in $VQ4ALL_CACHE.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))

from hw_sections import (  # noqa: E402
    multi_network,
    plots,
    render,
    steady_state,
    throughput,
    traffic_confirm,
    traffic_table,
    update_readme,
)
from vq4all import zoo  # noqa: E402
from vq4all.artifact import load_codebook, save_codebook  # noqa: E402
from vq4all.hw.synth import DEVICES, fit_table, sweep, variant_runs  # noqa: E402
from vq4all.io import atomic_write_bytes  # noqa: E402

# the 2^16 x 8 ROM on ECP5-85k with its values' low 6 or 7 bits in block RAM (EngineConfig.rom_width):
# (device, K, lanes, rom_width)
SPLIT_RUNS = [("ecp5-85k", 65536, lanes, rom_width) for lanes in (1, 2) for rom_width in (6, 7)]
# the row-packing engine (EngineConfig.pack) where the lane engine of the same lanes is measured:
# (device, K, lanes, rom_width, pack); the 2^16 split ROM last (nextpnr may take its 30 minutes)
PACK_RUNS = [
    ("ice40-up5k", 1024, 1, 0, True),
    ("ice40-hx8k", 1024, 1, 0, True),
    ("ecp5-85k", 4096, 1, 0, True),
    ("ecp5-85k", 4096, 2, 0, True),
    ("ecp5-85k", 65536, 1, 6, True),
]


def _cached_codebook() -> Path:
    """Where universal_codebook keeps the codebook it builds."""
    return (
        Path(os.environ.get("VQ4ALL_CACHE") or Path.home() / ".cache" / "vq4all") / "hw_universal_codebook.safetensors"
    )


def universal_codebook(path: str | None):
    """The universal codebook: the given file, else built from all zoo networks once and cached."""
    if path:
        return load_codebook(path)
    from vq4all.codebook import build
    from vq4all.config import CodebookConfig

    cache = _cached_codebook()
    if cache.exists():
        return load_codebook(cache)
    print("building the universal codebook from the whole zoo (about a minute) ...", flush=True)
    cb = build(CodebookConfig(networks=tuple(zoo.NAMES)), {name: zoo.load(name) for name in zoo.NAMES})
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_codebook(cache, cb)
    return cb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benches/results/hw")
    p.add_argument("--codebook", default=None, help="universal codebook file (default: built from the zoo and cached)")
    p.add_argument("--resynth", action="store_true", help="rerun synthesis even where the cache has a result")
    p.add_argument("--quick", action="store_true", help="fewer networks and lanes; synthesis only from the cache")
    p.add_argument("--devices", default="ice40-up5k,ice40-hx8k,ecp5-85k")
    p.add_argument("--ks", default="256,1024,4096,16384,32768,65536")
    p.add_argument("--lanes", default="1,2,4")
    p.add_argument("--readme", default=str(ROOT / "README.md"), help="README to update ('' to skip)")
    p.add_argument(
        "--assign-limit",
        type=int,
        default=None,
        help="networks with more compressible weights are counted from their layer split, not hard-assigned",
    )
    p.add_argument(
        "--synth-from-cache",
        action="store_true",
        help="run no synthesis: configurations missing from <out>/synth_cache.json show as not measured",
    )
    p.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite the report from <out>/hw_report.json and <out>/synth_cache.json",
    )
    p.add_argument(
        "--steady-only",
        action="store_true",
        help="measure only the stream-of-GEMVs section (lanes 1, 2) into <out>/hw_report.json, then render",
    )
    p.add_argument(
        "--synth-only",
        action="store_true",
        help="measure only the synthesis runs missing from <out>/synth_cache.json, then render from hw_report.json",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    devices = [d for d in args.devices.split(",") if d in DEVICES]
    ks, lanes = [int(k) for k in args.ks.split(",")], [int(v) for v in args.lanes.split(",")]
    cache = out / "synth_cache.json"
    if args.synth_only:  # fill the synthesis cache for the current RTL, keep the other sections
        report = json.loads((out / "hw_report.json").read_text())
        cb = universal_codebook(args.codebook)
        if cb.sha256 != report["codebook_sha256"]:
            raise SystemExit(f"the codebook {cb.sha256[:16]} is not the report's {report['codebook_sha256'][:16]}")
        synthesis(report, cb, devices, ks, lanes, cache)
        atomic_write_bytes(out / "hw_report.json", (json.dumps(report, indent=1, default=float) + "\n").encode())
        write(report, out, args.readme)
        return 0
    if args.steady_only:  # add the stream-of-GEMVs section to an existing report
        report = json.loads((out / "hw_report.json").read_text())
        cb = universal_codebook(args.codebook)
        if cb.sha256 != report["codebook_sha256"]:
            raise SystemExit(f"the codebook {cb.sha256[:16]} is not the report's {report['codebook_sha256'][:16]}")
        start = time.perf_counter()
        print("[5/5] utilisation in a stream of GEMVs (Icarus)", flush=True)
        report["steady_state"] = steady_state(cb, [1, 2])
        report["seconds_steady_state"] = round(time.perf_counter() - start, 1)
        synthesis(report, cb, devices, ks, lanes, cache, cache_only=True)
        atomic_write_bytes(out / "hw_report.json", (json.dumps(report, indent=1, default=float) + "\n").encode())
        write(report, out, args.readme)
        return 0
    if args.render_only:  # synthesis results come from the cache, which a separate sweep may have filled since
        report = json.loads((out / "hw_report.json").read_text())
        # with the codewords, a generator changed since the cache was written costs one RTLIL
        # generation per configuration (seconds), to find the results whose design is unchanged
        cb = universal_codebook(args.codebook) if args.codebook or _cached_codebook().exists() else None
        if cb is not None and cb.sha256 != report["codebook_sha256"]:
            raise SystemExit(f"the codebook {cb.sha256[:16]} is not the report's {report['codebook_sha256'][:16]}")
        synthesis(report, cb, devices, ks, lanes, cache, cache_only=True)
        atomic_write_bytes(out / "hw_report.json", (json.dumps(report, indent=1, default=float) + "\n").encode())
        write(report, out, args.readme)
        return 0
    start = time.perf_counter()
    cb = universal_codebook(args.codebook)
    print(f"universal codebook {cb.sha256[:16]}... K={cb.k} d={cb.d}", flush=True)
    report = {"codebook_sha256": cb.sha256, "k": cb.k, "d": cb.d, "quick": args.quick}

    print("[1/4] throughput (Icarus)", flush=True)
    report["throughput"] = throughput(cb, [1, 2] if args.quick else lanes, quick=args.quick)
    print("[2/4] off-chip traffic", flush=True)
    nets = ["digits_cnn", "mtcnn_pnet", "crepe_tiny"] if args.quick else list(zoo.NAMES)
    report["traffic"] = traffic_table(cb, nets, args.assign_limit)
    report["traffic_confirm"] = traffic_confirm(cb, "digits_cnn", report["traffic"])
    print("[3/4] synthesis", flush=True)
    synthesis(
        report, cb, devices, ks, lanes, cache, resynth=args.resynth, cache_only=args.quick or args.synth_from_cache
    )
    print("[4/4] several networks, one ROM", flush=True)
    report["multi_network"] = multi_network(cb)
    if not args.quick:
        print("[5/5] utilisation in a stream of GEMVs (Icarus)", flush=True)
        report["steady_state"] = steady_state(cb, [1, 2])
    report["seconds"] = round(time.perf_counter() - start, 1)

    atomic_write_bytes(out / "hw_report.json", (json.dumps(report, indent=1, default=float) + "\n").encode())
    write(report, out, args.readme)
    return 0


def synthesis(
    report: dict, cb, devices, ks, lanes, cache: Path, *, resynth: bool = False, cache_only: bool = False
) -> None:
    """report["synth"] (every configuration, measured or cached) and report["fit"]."""
    synth = sweep(
        report["codebook_sha256"] if cb is None else cb,
        devices,
        ks,
        lanes,
        cache,
        resynth=resynth,
        cache_only=cache_only,
        progress=lambda s: print(s, flush=True),
    )
    report["synth"] = [{k: v for k, v in r.items() if k != "utilization"} for r in synth]
    report["fit"] = fit_table(synth)
    for key, runs in (("split_rom", SPLIT_RUNS), ("pack_synth", PACK_RUNS)):
        measured = variant_runs(
            report["codebook_sha256"] if cb is None else cb,
            [r for r in runs if r[0] in devices],
            cache,
            cache_only=cache_only,
            progress=lambda s: print(s, flush=True),
        )
        report[key] = [{k: v for k, v in r.items() if k != "utilization"} for r in measured]


def write(report: dict, out: Path, readme: str) -> None:
    """The markdown report, the plots and the README block, all from the measured `report`.
    (JSON turns the fit table's integer lane keys into strings; rendering accepts both.)"""
    md, main_tables = render(report)
    plots(report, out)
    atomic_write_bytes(out / "hw_report.md", md.encode())
    if readme:
        update_readme(Path(readme), main_tables, out)
    print(md)
    print(f"\nwrote {out}/hw_report.md, hw_report.json, plots ({report['seconds']:.0f} s of measurement)")


if __name__ == "__main__":
    sys.exit(main())
