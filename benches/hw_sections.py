"""The sections of benches/hw_report.py: measurements (simulation, traffic) and rendering.

Every number in the report comes from a function here or from vq4all.hw.synth / vq4all.hw.traffic;
rendering only formats them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vq4all import zoo
from vq4all.errors import VQ4AllError
from vq4all.hard import hard_assign
from vq4all.hw.layer_inputs import real_input
from vq4all.hw.sim.layer import engine_for, requant_for
from vq4all.hw.sim.runner import simulate
from vq4all.hw.sim.streams import Job, beats_per_row, quantize_int8
from vq4all.hw.synth import DEVICES, synth_config
from vq4all.hw.traffic import SCHEMES, network_traffic, stream_bits
from vq4all.io import atomic_write_bytes

THROUGHPUT_NETWORKS = ("digits_cnn", "mtcnn_pnet", "silero_vad", "crepe_tiny")
QUICK_THROUGHPUT_NETWORKS = ("digits_cnn", "mtcnn_pnet")
UTIL_GOAL = 0.95
TRAFFIC_GOAL = 7.5  # VQ4ALL at least this many times below fp16


# ----------------------------------------------------------------------------- artifacts and jobs
_ARTIFACTS: dict = {}


def artifact(cb, name: str):
    """The hard-assigned artifact of zoo network `name` on codebook `cb` (memoised per run)."""
    key = (cb.sha256, name)
    if key not in _ARTIFACTS:
        net = zoo.load(name)
        sd = {k: v.numpy() for k, v in net.model.state_dict().items()}
        _ARTIFACTS[key] = hard_assign(name, sd, net.compressible_keys(), cb)
    return _ARTIFACTS[key]


def jobs(cb, name: str, requant: bool = False, only: list[str] | None = None) -> list[Job]:
    """Engine jobs of the artifact's layers that take one shared input vector (grouped convs,
    recurrent and embedding weights have none and are left out), each on its real int8 input.
    only: layer names to keep, in that order. requant: with multipliers from the real scales."""
    art = artifact(cb, name)
    net = zoo.load(name)
    layers = {layer.name: layer for layer in art.layers}
    out = []
    for layer_name in only or list(layers):
        layer = layers[layer_name]
        try:
            x, x_scale = quantize_int8(real_input(net, layer.param))
        except VQ4AllError:
            continue
        job = Job(f"{name}.{layer.name}", x, layer.codes)
        if requant:
            factors = layer.scales.astype(np.float64) * cb.scale * x_scale
            job.multipliers, job.shift = requant_for(x, layer.codes, cb, factors)
        out.append(job)
    return out


def _config(cb, job_list, lanes, requant=False, pack=False):
    return engine_for(
        cb.k,
        cb.d,
        max(j.codes.shape[1] for j in job_list),
        max(j.codes.shape[0] for j in job_list),
        lanes=lanes,
        requant=requant,
        pack=pack,
    )


# ----------------------------------------------------------------------------- 1. throughput
def throughput(cb, lanes: list[int], quick: bool = False) -> list[dict]:
    """Per (network, lanes): all its engine-runnable layers back to back in Icarus.

    Per layer: cycles (what the layer adds to the run, StreamDriver.report), model = out*in /
    (d*lanes) (ideal, every MAC busy), beats = rows*ceil(m/lanes) (the engine's in-stream cost),
    utilisation = out*in / (d*lanes*cycles). Per run: total cycles and the simple model
    sum(out*in/(d*lanes)) + fill, fill = the first layer's activation load ceil(m0/lanes) + the
    pipeline's latency + 2 (result FIFO) + 1 (the descriptor's cycle)."""
    rows = []
    for name in QUICK_THROUGHPUT_NETWORKS if quick else THROUGHPUT_NETWORKS:
        job_list = jobs(cb, name)
        for lane_count in lanes:
            config = _config(cb, job_list, lane_count)
            rep = simulate(config, cb, job_list, simulator="icarus")
            layers = []
            for job, entry in zip(job_list, rep["layers"]):
                out_f, m = job.codes.shape
                useful = out_f * job.x.size
                layers.append(
                    {
                        "layer": job.name,
                        "rows": out_f,
                        "in_features": int(job.x.size),
                        "m": m,
                        "cycles": entry["cycles"],
                        "model": useful / (cb.d * lane_count),
                        "beats": out_f * beats_per_row(m, lane_count),
                        "utilization": entry["mac_utilization"],
                        "mismatches": entry["mismatches"],
                    }
                )
            first_m = job_list[0].codes.shape[1]
            fill = beats_per_row(first_m, lane_count) + config.latency + 2 + 1
            total = sum(layer["cycles"] for layer in layers)
            useful = sum(layer["rows"] * layer["in_features"] for layer in layers)
            rows.append(
                {
                    "network": name,
                    "lanes": lane_count,
                    "layers": layers,
                    "cycles": total,
                    "model": sum(layer["model"] for layer in layers) + fill,
                    "fill": fill,
                    "utilization": useful / (cb.d * lane_count * total),
                    "mismatches": rep["mismatches"],
                    "outputs": rep["outputs"],
                }
            )
            print(
                f"  {name} lanes={lane_count}: {total} cycles, util {rows[-1]['utilization']:.3f}, "
                f"{rep['mismatches']} mismatches",
                flush=True,
            )
    return rows


STEADY_NETWORKS = ("digits_cnn", "mtcnn_pnet", "mtcnn_onet")


def steady_state(cb, lanes: list[int]) -> list[dict]:
    """Per (network, engine): every engine-runnable layer as two identical GEMVs back to back (as
    `vq4all run-hw` streams a convolution's positions), all layers in one Icarus run; per layer
    the second GEMV's cycles (its load hidden behind the first's compute: the layer's cost in a
    stream) and its utilisation rows*in / (d*lanes*cycles). Engines: the lane engine at each of
    `lanes`, whose bound is that of row-local sub-vectors, in / (ceil(m/lanes)*lanes*d) (every
    row takes ceil(m/lanes) beats of lanes*d value slots), then the row-packing engine at lanes 1
    and 2 (EngineConfig.pack), whose bound is rows*in / (lanes*d*ceil(rows*in/(lanes*d))) (no
    padding is issued, and a MAC beat never holds two GEMVs' values)."""
    rows = []
    for name in STEADY_NETWORKS:
        job_list = jobs(cb, name)
        doubled = [Job(f"{j.name}#{copy}", j.x, j.codes) for j in job_list for copy in (0, 1)]
        for lane_count, pack in [(n, False) for n in lanes] + [(n, True) for n in (1, 2)]:
            config = _config(cb, job_list, lane_count, pack=pack)
            rep = simulate(config, cb, doubled, simulator="icarus")
            layers = []
            for job, entry in zip(doubled[1::2], rep["layers"][1::2]):
                out_f, m = job.codes.shape
                in_f = int(job.x.size)
                slots = lane_count * cb.d  # values per MAC beat
                bound = (
                    out_f * in_f / (slots * -(-out_f * in_f // slots))
                    if pack
                    else in_f / (beats_per_row(m, lane_count) * lane_count * cb.d)
                )
                layers.append(
                    {
                        "layer": job.name.split("#")[0],
                        "rows": out_f,
                        "in_features": in_f,
                        "m": m,
                        "cycles": entry["cycles"],
                        "ideal_cycles": entry["ideal_cycles"],
                        "utilization": entry["mac_utilization"],
                        "bound": bound,
                    }
                )
            rows.append(
                {
                    "network": name,
                    "lanes": lane_count,
                    "pack": pack,
                    "layers": layers,
                    "mismatches": rep["mismatches"],
                }
            )
            low = [f"{x['layer']} {x['utilization']:.3f}" for x in layers if x["utilization"] < UTIL_GOAL]
            what = f"lanes={lane_count}" + (" packing rows" if pack else "")
            print(f"  {name} {what}: {rep['mismatches']} mismatches; below {UTIL_GOAL}: {low}", flush=True)
    return rows


def _engine_name(run: dict) -> str:
    return f"{run['lanes']}, packing rows" if run.get("pack") else str(run["lanes"])


def steady_md(report) -> list[str]:
    lines = [
        "| layer | rows x in | m | lanes | cycles per GEMV | utilisation | bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.get("steady_state") or []:
        for x in r["layers"]:
            mark = " **" if x["utilization"] < UTIL_GOAL else ""
            lines.append(
                f"| {x['layer']} | {x['rows']} x {x['in_features']} | {x['m']} | {_engine_name(r)} | "
                f"{x['cycles']:,} | {mark.strip()}{x['utilization']:.3f}{mark.strip()} | {x['bound']:.3f} |"
            )
    return lines


# ----------------------------------------------------------------------------- 2. traffic
def split_artifact(cb, name: str):
    """An artifact of zoo network `name` with the hard-assigned artifact's layer shapes, code
    array shapes and scales (vq4all.subvectors.split, as hard_assign stores them) but codes left
    at 0: the nearest-codeword search, minutes on 2 CPU cores for networks of 20M+ weights, does
    not change any byte count."""
    from vq4all.artifact import LayerCodes, NetworkArtifact
    from vq4all.rules import code_dtype
    from vq4all.subvectors import split

    net = zoo.load(name)
    layers = []
    for key, weight in net.compressible().items():
        sp = split(weight.numpy(), cb.d, "channel")
        layers.append(
            LayerCodes(
                key, sp.shape, cb.d, sp.pad, "channel", np.zeros(sp.subvectors.shape[:2], code_dtype(cb.k)), sp.scales
            )
        )
    keys = set(net.compressible_keys())
    leftovers = {k: v.numpy() for k, v in net.model.state_dict().items() if k not in keys}
    return NetworkArtifact(name, cb.sha256, cb.k, layers, leftovers, {"method": "split only (codes not searched)"})


def traffic_table(cb, names: list[str], assign_limit: int | None = None) -> list[dict]:
    """Traffic per network from its hard-assigned artifact; networks with more than assign_limit
    compressible weights from split_artifact instead (marked counted_from="split")."""
    out = []
    for name in names:
        big = assign_limit is not None and sum(w.numel() for w in zoo.load(name).compressible().values()) > assign_limit
        t = network_traffic(split_artifact(cb, name) if big else artifact(cb, name))
        t["counted_from"] = "split" if big else "hard_assign"
        t.pop("layers")
        out.append(t)
        print(f"  {name}: vq4all {t['bytes']['vq4all']} B, fp16/vq4all {t['ratio_vs_fp16']['vq4all']:.2f}", flush=True)
    return out


def traffic_confirm(cb, name: str, table: list[dict]) -> dict:
    """Run every layer of `name` through a requant engine (lanes 1, so one code per beat) and
    count the weight bits the engine took in: code beats x log2 K + scale beats x 16 (the
    engine's per-row multiplier has the fp16 scale's 16 bits). Compared with the artifact count
    of traffic.network_traffic. Every layer must be engine-runnable (else the count is partial)."""
    art = artifact(cb, name)
    job_list = jobs(cb, name, requant=True)
    if len(job_list) != len(art.layers):
        raise VQ4AllError(f"{name}: only {len(job_list)} of {len(art.layers)} layers run on the engine")
    config = _config(cb, job_list, 1, requant=True)
    rep = simulate(config, cb, job_list, simulator="icarus")
    bits = stream_bits(rep["beats"]["codes"], 1, config.code_bits, rep["beats"]["scales"], config.mult_bits)
    counted = next(t for t in table if t["network"] == name)["bytes"]["vq4all"]
    result = {
        "network": name,
        "layers": len(job_list),
        "code_beats": rep["beats"]["codes"],
        "scale_beats": rep["beats"]["scales"],
        "beat_bits_codes": config.code_bits,
        "beat_bits_scales": config.mult_bits,
        "simulated_bytes": bits / 8,
        "artifact_bytes": counted,
        "mismatches": rep["mismatches"],
        "outputs": rep["outputs"],
        "match": bits / 8 == counted,
    }
    print(
        f"  {name}: simulated {bits / 8:.0f} B vs artifact {counted} B ({'match' if result['match'] else 'DIFFER'})",
        flush=True,
    )
    return result


# ----------------------------------------------------------------------------- 4. several networks
MULTI = (("digits_cnn", "fc1"), ("crepe_tiny", "conv3"), ("mtcnn_pnet", "conv3"), ("digits_cnn", "conv2"))


def multi_network(cb, lanes: int = 1) -> dict:
    """Layers of three networks back to back on one engine (one ROM, never reloaded). Each
    layer after the first should cost exactly its code beats rows*ceil(m/lanes): its activation
    load hides behind the previous layer's compute, and no codebook is loaded."""
    job_list = []
    for name, layer in MULTI:
        found = jobs(cb, name, only=[layer])
        if not found:
            raise VQ4AllError(f"{name}.{layer} has no engine input vector")
        job_list += found
    config = _config(cb, job_list, lanes)
    rep = simulate(config, cb, job_list, simulator="icarus")
    layers = []
    for i, (job, entry) in enumerate(zip(job_list, rep["layers"])):
        rows, m = job.codes.shape
        beats = rows * beats_per_row(m, lanes)
        layers.append(
            {
                "layer": job.name,
                "rows": rows,
                "m": m,
                "cycles": entry["cycles"],
                "code_beats": beats,
                "extra": None if i == 0 else entry["cycles"] - beats,
                "mismatches": entry["mismatches"],
            }
        )
    result = {
        "lanes": lanes,
        "k": cb.k,
        "layers": layers,
        "mismatches": rep["mismatches"],
        "outputs": rep["outputs"],
        "switch_extra_cycles": sum(layer["extra"] for layer in layers[1:]),
    }
    print(
        f"  {rep['outputs']} outputs, {rep['mismatches']} mismatches, extra cycles at switches "
        f"{result['switch_extra_cycles']}",
        flush=True,
    )
    return result


# ----------------------------------------------------------------------------- rendering
def _kb(n: float) -> str:
    return f"{n / 1024:.1f}" if n < 10 * 1024 * 1024 else f"{n / 1024 / 1024:.1f} M"


def traffic_md(report) -> list[str]:
    lines = [
        "| network | weights | fp16 KiB | int8 KiB | per-layer VQ KiB | VQ4ALL KiB | fp16 / VQ4ALL | "
        "per-layer VQ / VQ4ALL | per-layer codebook loads | per-layer codebooks, all resident (Kbit) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in report["traffic"]:
        b = t["bytes"]
        mark = "*" if t.get("counted_from") == "split" else ""
        lines.append(
            f"| {t['network']}{mark} | {t['weights']:,} | {_kb(b['fp16'])} | {_kb(b['int8'])} | "
            f"{_kb(b['per_layer_vq'])} | {_kb(b['vq4all'])} | {b['fp16'] / b['vq4all']:.2f}x | "
            f"{b['per_layer_vq'] / b['vq4all']:.2f}x | {t['per_layer_codebook_loads']} | "
            f"{t['per_layer_codebook_loads'] * t['sram_codebook_bits_per_layer_vq'] / 1024:.0f} |"
        )
    return lines


def throughput_md(report, per_layer: bool) -> list[str]:
    if not per_layer:
        lines = [
            "| network | lanes | layers | measured cycles | model cycles | MAC utilisation | mismatches |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["throughput"]:
            lines.append(
                f"| {r['network']} | {r['lanes']} | {len(r['layers'])} | {r['cycles']:,} | {r['model']:,.0f} | "
                f"{r['utilization']:.3f} | {r['mismatches']} |"
            )
        return lines
    lines = [
        "| layer | lanes | rows x in | measured cycles | code beats | out*in/(d*lanes) | utilisation |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["throughput"]:
        for layer in r["layers"]:
            lines.append(
                f"| {layer['layer']} | {r['lanes']} | {layer['rows']} x {layer['in_features']} | "
                f"{layer['cycles']:,} | {layer['beats']:,} | {layer['model']:,.1f} | {layer['utilization']:.3f} |"
            )
    return lines


def _res(r) -> str:
    if r.get("timed_out"):
        return f"not finished: {r['timed_out']}"
    if r.get("missing"):
        return "not measured (not in the synthesis cache: rerun without --quick/--synth-from-cache)"
    if r.get("implied_by"):
        return f"does not fit (not run: a larger ROM than {r['implied_by']}, which does not fit)"
    if not r["fits"]:
        o = r["overflow"]
        over = o.get("all") or [[o["cell"], o["used"], o["available"]]]
        return "does not fit: " + ", ".join(f"{cell} {used}/{available}" for cell, used, available in over)
    return "fits"


def _signal(cell: str) -> str:
    """A yosys cell name cut to the engine signal it was built from (mapping suffixes dropped)."""
    for cut in ("_SB_", "_TRELLIS", "_DFF", "_LUT4", "$"):
        cell = cell.split(cut)[0] if cut in cell[1:] else cell
    return cell[:48]


def synth_md(report) -> list[str]:
    lines = [
        "| device | K | lanes | result | LUT/LC | FF | block RAM | DSP | Fmax MHz | critical path: to (logic steps) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["synth"]:
        cp = r.get("critical_path")
        path = f"{_signal(cp['to_cell'])} ({cp['logic_steps']})" if cp else ""
        cells = (
            (
                f"{r.get('lut', '')} | {r.get('ff', '')} | {r.get('bram', '')} | {r.get('dsp', '-')} | "
                f"{r['fmax_mhz']:.1f} | {path}"
            )
            if r["fits"]
            else " |  |  |  |  | "
        )
        lines.append(f"| {r['device']} | {r['k']} | {r['lanes']} | {_res(r)} | {cells} |")
    return lines


def _resource_cells(entry: dict) -> str:
    """LUT/LC | FF | block RAM | DSP | Fmax | critical path cells of a synthesis result (empty when it did not fit)."""
    if not entry.get("fits"):
        return " |  |  |  |  | "
    cp = entry.get("critical_path")
    path = f"{_signal(cp['to_cell'])} ({cp['logic_steps']})" if cp else ""
    return (
        f"{entry.get('lut', '')} | {entry.get('ff', '')} | {entry.get('bram', '')}/{entry.get('bram_available', '')} | "
        f"{entry.get('dsp', '-')} | {entry['fmax_mhz']:.1f} | {path}"
    )


def split_md(report) -> list[str]:
    """The split-ROM runs (EngineConfig.rom_width) next to the whole ROM of the same K and device."""
    runs = report.get("split_rom") or []
    if not runs:
        return []
    whole = {(r["device"], r["k"], r["lanes"]): r for r in report["synth"]}
    lines = [
        "| device | K | lanes | ROM memory bits per value | exception codewords (logic) | result | LUT/LC | FF | "
        "block RAM | DSP | Fmax MHz | critical path: to (logic steps) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        base = whole.get((r["device"], r["k"], r["lanes"]))
        rows = ([(base, 8, "-")] if base is not None else []) + [(r, r["rom_width"], r.get("exceptions", "?"))]
        for entry, bits, exceptions in rows:
            cells = _resource_cells(entry)
            lines.append(
                f"| {entry['device']} | {entry['k']} | {entry['lanes']} | {bits} | {exceptions} | {_res(entry)} | {cells} |"
            )
        whole.pop((r["device"], r["k"], r["lanes"]), None)  # the whole ROM's row once per (device, K, lanes)
    return lines


def pack_md(report) -> list[str]:
    """The row-packing engine's synthesis runs (EngineConfig.pack, lanes 1 or 2), each after the
    lane engine of the same device, K, lanes and ROM width."""
    runs = report.get("pack_synth") or []
    if not runs:
        return []
    lane_runs = {(r["device"], r["k"], r["lanes"], 0): r for r in report["synth"]}
    lane_runs |= {(r["device"], r["k"], r["lanes"], r["rom_width"]): r for r in report.get("split_rom") or []}
    lines = [
        "| device | K | ROM memory bits per value | engine | result | LUT/LC | FF | block RAM | DSP | Fmax MHz | "
        "critical path: to (logic steps) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        base = lane_runs.get((r["device"], r["k"], r["lanes"], r["rom_width"]))
        lanes = f"lanes {r['lanes']}"
        for entry, name in ([(base, lanes)] if base is not None else []) + [(r, f"{lanes}, packing rows")]:
            cells = _resource_cells(entry)
            lines.append(
                f"| {entry['device']} | {entry['k']} | {r['rom_width'] or 8} | {name} | {_res(entry)} | {cells} |"
            )
    return lines


def fit_md(report) -> list[str]:
    ks = sorted({r["k"] for r in report["synth"]})
    lines = [
        f"Largest K among those tried ({', '.join(map(str, ks))}) that fits, per lane count; the best "
        "configuration is the largest K that fits, then the most lanes x Fmax. peak GMAC/s = lanes x 8 x Fmax "
        "(one codeword per lane per cycle; real layers reach the utilisation below).\n",
        "| device | largest K (lanes 1 / 2 / 4) | best configuration | LUT/LC | FF | block RAM | DSP | Fmax MHz | "
        "peak GMAC/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for device, entry in report["fit"].items():
        largest = " / ".join(
            str(entry["largest_k"].get(str(n), entry["largest_k"].get(n)) or "none") for n in (1, 2, 4)
        )
        b = entry["best"]
        if b is None:
            lines.append(f"| {device} | {largest} | nothing fits |  |  |  |  |  |  |")
            continue
        avail = lambda role, b=b: f"/{b[role + '_available']}" if role + "_available" in b else ""  # noqa: E731
        lines.append(
            f"| {device} | {largest} | K={b['k']}, lanes={b['lanes']} | {b['lut']}{avail('lut')} | {b['ff']} | "
            f"{b['bram']}{avail('bram')} | {b.get('dsp', '-')}{avail('dsp') if 'dsp' in b else ''} | "
            f"{b['fmax_mhz']:.1f} | {b['lanes'] * 8 * b['fmax_mhz'] / 1000:.2f} |"
        )
    return lines


def multi_md(report) -> list[str]:
    mn = report["multi_network"]
    lines = [
        "| order | layer | rows x m | measured cycles | code beats | extra cycles | mismatches |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, layer in enumerate(mn["layers"]):
        extra = "first (includes its load and fill)" if layer["extra"] is None else str(layer["extra"])
        lines.append(
            f"| {i + 1} | {layer['layer']} | {layer['rows']} x {layer['m']} | {layer['cycles']:,} | "
            f"{layer['code_beats']:,} | {extra} | {layer['mismatches']} |"
        )
    return lines


def goals(report) -> list[str]:
    """Each goal of the issue, held or not, with the measured gap and its cause."""
    lines = []
    layers = [(r["lanes"], layer) for r in report["throughput"] for layer in r["layers"]]
    low = [(n, layer) for n, layer in layers if layer["utilization"] < UTIL_GOAL]
    held = len(layers) - len(low)
    lines.append(
        f"- **MAC utilisation >= {UTIL_GOAL} on real layers** (in a back-to-back stream): holds for {held} of "
        f"{len(layers)} (layer, lanes) runs."
    )
    if low:

        def cause(n, layer):
            # a row's beats carry ceil(m/lanes)*lanes*d value slots for in_features values
            slots = -(-layer["m"] // n) * n * report["d"]
            why = [f"padding: {layer['in_features']} of {slots} slots per row"] if slots > layer["in_features"] else []
            if layer["cycles"] > layer["beats"]:
                why.append(f"+{layer['cycles'] - layer['beats']} cycles of load/fill (first layer of its run)")
            return "; ".join(why) or "?"

        lines.append(
            "  Fails for: "
            + "; ".join(
                f"{layer['layer']} lanes={n}: {layer['utilization']:.3f} ({layer['rows']} x {layer['in_features']}: "
                f"{cause(n, layer)})"
                for n, layer in sorted(low, key=lambda t: t[1]["utilization"])
            )
            + "."
        )
        lines.append(
            "  Cause: a row of m sub-vectors takes ceil(m/lanes) beats of lanes*d value slots, so "
            "in_features not a multiple of d*lanes leaves the zero padding and idle lanes of each row's "
            "last beat unused; the first layer of a run also pays its activation load and pipeline fill, "
            "which only short layers notice. Whole networks run back to back: see the table below."
        )
    bad = [
        t
        for t in report["traffic"]
        if not (
            t["bytes"]["fp16"] >= TRAFFIC_GOAL * t["bytes"]["vq4all"]
            and t["bytes"]["vq4all"] < t["bytes"]["per_layer_vq"]
        )
    ]
    lines.append(
        f"- **VQ4ALL traffic >= {TRAFFIC_GOAL}x below fp16 and below per-layer VQ on every network**: "
        + (
            "holds on all " + str(len(report["traffic"])) + " networks."
            if not bad
            else "fails on "
            + ", ".join(
                f"{t['network']} (fp16/VQ4ALL {t['ratio_vs_fp16']['vq4all']:.2f}x, "
                f"{8 * t['bytes']['vq4all'] / t['weights']:.2f} bits/weight; "
                f"per-layer/VQ4ALL {t['bytes']['per_layer_vq'] / t['bytes']['vq4all']:.2f}x)"
                for t in bad
            )
            + ". Cause: VQ4ALL costs log2(K)=16 bits per 8-value "
            "sub-vector (2 bits/weight) only on long rows; a row's ragged tail is padded to a whole code and "
            "each row carries a 16-bit scale: a 3x3x3 row (27 weights) costs (4 x 16 + 16) / 27 = 2.96 "
            "bits/weight, a depthwise 3x3 row (9 weights) (2 x 16 + 16) / 9 = 5.33, so networks with many "
            "short rows fall below "
            f"{TRAFFIC_GOAL}x."
        )
    )
    tc = report["traffic_confirm"]
    lines.append(
        f"- **Traffic confirmed in simulation** ({tc['network']}, all {tc['layers']} layers): "
        f"{tc['code_beats']} code beats x {tc['beat_bits_codes']} bits + {tc['scale_beats']} scale beats x "
        f"{tc['beat_bits_scales']} bits = {tc['simulated_bytes']:.0f} B vs {tc['artifact_bytes']} B from the "
        f"artifact: {'equal' if tc['match'] else 'DIFFERENT'}; {tc['mismatches']} output mismatches."
    )
    mn = report["multi_network"]
    lines.append(
        f"- **Several networks, one ROM**: {mn['outputs']} outputs, {mn['mismatches']} mismatches; the "
        f"switches between networks cost {mn['switch_extra_cycles']} cycles beyond the layers' own code beats."
    )
    runs = report.get("steady_state") or []
    for pack in (False, True):
        steady = [(_engine_name(r), x) for r in runs if bool(r.get("pack")) == pack for x in r["layers"]]
        if not steady:
            continue
        low = [(n, x) for n, x in steady if x["utilization"] < UTIL_GOAL]
        where = "the row-packing engine, lanes 1 and 2" if pack else "the lane engine, lanes 1 and 2"
        below = "; ".join(f"{x['layer']} lanes={n}: {x['utilization']:.3f} (bound {x['bound']:.3f})" for n, x in low)
        at_bound = all(abs(x["utilization"] - x["bound"]) < 5e-4 for _, x in low)
        lines.append(
            f"- **MAC utilisation >= {UTIL_GOAL} in a stream of GEMVs, {where}** (digits_cnn, mtcnn_pnet, "
            f"mtcnn_onet): holds for {len(steady) - len(low)} of {len(steady)} (layer, lanes) runs"
            + (f"; below: {below}" if low else ".")
            + (
                ". Each equals the bound of row-local sub-vectors, in/(ceil(m/lanes)*lanes*d): more needs more "
                "ROM reads per cycle than lanes (docs/hardware.md, rows that are not a multiple of d)."
                if low and at_bound and not pack
                else ("." if low else "")
            )
        )
    for r in report.get("split_rom") or []:
        if r.get("fits"):
            lines.append(
                f"- **{r['device']} K={r['k']} lanes={r['lanes']}, ROM split to {r['rom_width']} bits per value** "
                f"({r.get('exceptions', '?')} exception codewords as logic): fits, {r['fmax_mhz']:.1f} MHz, "
                f"{r['lut']} LUT/LC, {r['bram']}/{r.get('bram_available', '?')} block RAM."
            )
        elif r.get("fits") is False:
            lines.append(f"- **{r['device']} K={r['k']} lanes={r['lanes']}, rom_width={r['rom_width']}**: {_res(r)}.")
    for r in report.get("pack_synth") or []:
        rom = f", ROM split to {r['rom_width']} bits" if r.get("rom_width") else ""
        if r.get("timed_out"):
            lines.append(f"- **{r['device']} K={r['k']} lanes={r['lanes']}, packing rows{rom}**: {_res(r)}.")
        elif r.get("fits") is not None:
            got = (
                f"fits, {r['fmax_mhz']:.1f} MHz, {r['lut']} LUT/LC, {r['bram']}/{r.get('bram_available', '?')} block RAM"
                if r["fits"]
                else _res(r)
            )
            lines.append(f"- **{r['device']} K={r['k']} lanes={r['lanes']}, packing rows{rom}**: {got}.")
    for device, entry in report["fit"].items():
        b = entry["best"]
        if b:
            lines.append(
                f"- **{device}** best: K={b['k']}, lanes={b['lanes']}, {b['fmax_mhz']:.1f} MHz, "
                f"{b['lut']} LUT/LC, {b['ff']} FF, {b['bram']} block RAM, {b.get('dsp', 0)} DSP."
            )
        else:
            lines.append(f"- **{device}**: no configuration of the sweep fits.")
    return lines


def render(report) -> tuple[str, str]:
    """(the whole report as markdown, the main tables for the README)."""
    cfg = synth_config(256, 1)
    header = [
        "# Hardware report\n",
        f"Universal codebook {report['codebook_sha256'][:16]}... (K={report['k']}, d={report['d']}, int8), "
        f"built from the whole zoo. Simulation and traffic measured in {report['seconds']:.0f} s on 2 shared CPU "
        f"cores; synthesis ({sum(1 for r in report['synth'] if 'seconds_yosys' in r)} yosys + nextpnr runs, "
        f"{sum(r.get('seconds_yosys', 0) + r.get('seconds_nextpnr', 0) for r in report['synth']) / 60:.0f} min) "
        f"read from the synthesis cache (benches/results/hw/synth_cache.json).\n",
    ]
    traffic_note = (
        "Bytes of weights loaded per inference. fp16: 2 B/weight; int8: 1 B/weight + fp16 scale per row; "
        "per-layer VQ: 8-bit code per 4 weights + the layer's 256 x 4 **int8** codebook (1 KiB, loaded once "
        "per layer) + fp16 scale per row; VQ4ALL: log2(K)-bit codes + fp16 scale per row, codebook in ROM. "
        "FP leftovers (biases, norms) are excluded from every column (same in all). On chip, per-layer VQ "
        f"needs {report['traffic'][0]['sram_codebook_bits_per_layer_vq']:,} bits of codebook SRAM "
        f"(reloaded every layer); VQ4ALL needs {report['traffic'][0]['rom_codebook_bits_vq4all']:,} bits of "
        "ROM, loaded never. Embedding tables (minilm_l6's 30522 x 384 word embeddings) are counted whole, "
        "as every other weight, in every column. Counted from each network's artifact hard-assigned to the "
        "universal codebook; * = from the same layer split (shapes, code counts, scales) without the "
        "nearest-codeword search, which took over 15 min for a 20M-weight network on the shared cores "
        "and changes no byte count.\n"
    )
    main = [
        "### Off-chip weight traffic per inference\n",
        traffic_note,
        *traffic_md(report),
        "",
        "### Which configuration fits which FPGA (yosys + nextpnr, post-route)\n",
        *fit_md(report),
        "",
        "### MAC utilisation on real layers (Icarus, back to back)\n",
        *throughput_md(report, False),
        "",
    ]
    main_text = "\n".join(main)
    body = [
        *header,
        "## Goals\n",
        *goals(report),
        "",
        main_text,
        "## Throughput per layer\n",
        "`cycles` is what a layer adds to a back-to-back run (StreamDriver.report); `code beats` = rows x "
        "ceil(m/lanes), the engine's in-stream cost; the model out*in/(d*lanes) counts every MAC busy. "
        "Per run, the model adds fill = the first layer's load ceil(m/lanes) + pipeline latency + 3.\n",
        *throughput_md(report, True),
        "",
        "## Resources and Fmax per configuration\n",
        f"Engine: d=8 int8, 32-bit accumulator, activation buffer max_m={cfg.max_m} sub-vectors per slot "
        f"(in_features <= {cfg.max_m * cfg.d}), max_rows={cfg.max_rows}; inside a serial-I/O harness "
        "(vq4all.hw.synth: every input bit a flip-flop of one shift chain, outputs XOR-reduced to one pin; "
        "`harness_ffs` in the JSON, about 100-330 FF, counted in FF/LC). yosys `synth_ice40 -dsp` / `synth_ecp5` "
        "from Amaranth's RTLIL, nextpnr `--timing-allow-fail --freq 100 --seed 1`; Fmax is nextpnr's post-route "
        "estimate. Block RAM: iCE40 EBR (4 Kbit), ECP5 DP16KD (18 Kbit). iCE40 block RAM has one read port, so "
        "the ROM is duplicated per lane there.\n",
        *synth_md(report),
        "",
        "## The 2^16 x 8 ROM on ECP5-85k: split ROM\n",
        "K = 65536 words of 64 bits are 4,194,304 bits; the ECP5-85k's 208 DP16KD hold 208 x 18,432 = 3,833,856 "
        "bits counting their parity bits, so the whole ROM cannot fit its block RAM however it is packed. "
        "`EngineConfig.rom_width` keeps the low rom_width bits of every value in the ROM memory and rebuilds "
        "the high bits as the sign extension XOR an exception pattern, non-zero only for codewords with a value "
        "outside rom_width bits; those patterns are registered logic beside the memory (`rtl.rom.split_words`), "
        "so the results are exact for any codebook. Same harness and flow as above; the first row of each "
        "group is the whole ROM.\n",
        *split_md(report),
        "",
        "## The row-packing engine\n",
        "`EngineConfig(pack=True)` (`rtl/packed.py`): 2 x lanes codes per code beat, read through both ports "
        "of the ROM, and at lanes 2 of a second copy (iCE40 block RAM has one read port, so the ROM is copied "
        "there, as for a second lane), a queue of 6 x lanes x d (value, activation) pairs without the padding "
        "of rows' last sub-vectors, and one more adder tree per row end a beat may hold. Each run follows the "
        "lane engine of the same device, K, lanes and ROM width; same harness and flow as above.\n",
        *pack_md(report),
        "",
        *(
            [
                "## Utilisation in a stream of GEMVs (lanes 1 and 2, and packing rows)\n",
                "Each layer as two identical GEMVs back to back (as `vq4all run-hw` streams a convolution's "
                "positions), all layers of a network in one Icarus run, real codes and inputs; the second GEMV's "
                f"cycles are the layer's cost in a stream. Bold: below {UTIL_GOAL}. On the lane engine every row of "
                "m sub-vectors takes ceil(m/lanes) beats, so no schedule of row-local sub-vectors beats the bound "
                "in/(ceil(m/lanes)*lanes*d); the row-packing engine (`EngineConfig(pack=True)`: 2 x lanes "
                "codeword reads per cycle, padding dropped before the MAC, a MAC beat of lanes*d values never "
                "holding two GEMVs') is bound by rows*in/(lanes*d*ceil(rows*in/(lanes*d))). "
                f"{sum(r['mismatches'] for r in report['steady_state'])} mismatches.\n",
                *steady_md(report),
                "",
            ]
            if report.get("steady_state")
            else []
        ),
        "## Several networks, one ROM\n",
        f"One engine (K={report['multi_network']['k']}, lanes={report['multi_network']['lanes']}) runs these "
        "layers back to back; the ROM is never reloaded, only descriptors, activations and codes stream in. "
        "`extra cycles` = measured minus the layer's code beats.\n",
        *multi_md(report),
        "",
    ]
    return "\n".join(body), main_text


def plots(report, out: Path) -> None:
    """hw_bram_fmax.png (block RAM and Fmax vs K per device and lanes), hw_traffic.png (bytes per
    network and scheme, log scale), hw_utilization.png (MAC utilisation per network and lanes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for device in DEVICES:
        for lanes in sorted({r["lanes"] for r in report["synth"]}):
            pts = [
                (r["k"], r["bram"], r["fmax_mhz"])
                for r in report["synth"]
                if r["device"] == device and r["lanes"] == lanes and r["fits"]
            ]
            if pts:
                k, bram, fmax = zip(*pts)
                ax1.plot(k, bram, "o-", label=f"{device} L={lanes}")
                ax2.plot(k, fmax, "o-", label=f"{device} L={lanes}")
    for ax, label in ((ax1, "block RAMs used"), (ax2, "post-route Fmax (MHz)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K (codewords in ROM)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out / "hw_bram_fmax.png")

    fig, ax = plt.subplots(figsize=(11, 4))
    nets = [t["network"] for t in report["traffic"]]
    width = 0.2
    for i, scheme in enumerate(SCHEMES):
        ax.bar(
            np.arange(len(nets)) + (i - 1.5) * width,
            [t["bytes"][scheme] for t in report["traffic"]],
            width,
            label=scheme,
        )
    ax.set_xticks(np.arange(len(nets)), nets, rotation=20, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("weight bytes per inference")
    ax.legend()
    fig.tight_layout()
    _save(fig, out / "hw_traffic.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    runs = report["throughput"]
    ax.bar(np.arange(len(runs)), [r["utilization"] for r in runs])
    ax.axhline(UTIL_GOAL, color="k", ls="--", lw=1)
    ax.set_xticks(np.arange(len(runs)), [f"{r['network']}\nL={r['lanes']}" for r in runs], fontsize=7)
    ax.set_ylabel("MAC utilisation")
    fig.tight_layout()
    _save(fig, out / "hw_utilization.png")


def _save(fig, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


BEGIN, END = "<!-- hw-report:begin -->", "<!-- hw-report:end -->"


def update_readme(readme: Path, main_tables: str, out: Path) -> None:
    """Rewrite the README block between the hw-report markers (appended as a section if absent)."""
    text = readme.read_text()
    try:
        rel = out.resolve().relative_to(readme.resolve().parent)
    except ValueError:
        rel = out
    block = (
        f"{BEGIN}\n<!-- generated by benches/hw_report.py: do not edit by hand -->\n"
        f"Full report: [{rel}/hw_report.md]({rel}/hw_report.md).\n\n{main_tables}\n{END}"
    )
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Hardware report\n\n" + block + "\n"
    atomic_write_bytes(readme, text.encode())
