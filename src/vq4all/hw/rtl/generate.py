"""Generation: the engine's Verilog and RTLIL, its ROM init files and a manifest, for one codebook.

Files written into the output folder (every write atomic):
  vq4all_engine.v           Verilog, ROM contents inline (simulators, ASIC flows)
  vq4all_engine.il          RTLIL of the same design: what yosys should read for synthesis (yosys
                            0.23 took 281 s to read the inline-ROM Verilog of a 16384-row ROM,
                            0.36 s for its RTLIL; HARDWARE.md)
  vq4all_engine_readmemh.v  the same engine whose ROM (`vq4all_codebook_rom`, defined at the end
                            of the file) loads the file named by the top's parameter
                            ROM_INIT_FILE (default "codebook.hex") with $readmemh: swap the
                            codebook without regenerating
  codebook.hex/.mem/.coe/.mif   ROM init files (rtl.romfiles)
  manifest.json             parameters, codebook SHA-256, ports, files with their SHA-256
Each .v starts with a header comment: codebook SHA-256, parameters, port list.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from vq4all.artifact import Codebook
from vq4all.errors import VQ4AllError
from vq4all.io import atomic_write_bytes

from .config import ACT_BITS, EngineConfig
from .engine import Engine
from .rom import readmemh_module
from .romfiles import FORMATS, SUFFIX, rom_file_text

TOP = "vq4all_engine"
PORT_NOTES = {
    "clk": "clock (rising edge)",
    "rst": "synchronous reset, active high",
    "layer__payload": "layer descriptor: m (sub-vectors per row) in bits [0, m_bits), rows above",
    "acts__payload": "lanes*d int8 activations, value i in bits [8i, 8i+8)",
    "codes__payload": "lanes codes of log2(k) bits, lane 0 in the least significant bits",
    "scales__payload": "requant: the row's unsigned multiplier, taken with the row's first code beat",
    "results__payload": "one output row: the signed accumulator (wrapped), or with requant its int out_bits result",
    "error": "sticky until rst: a layer descriptor was rejected (m > max_m, rows > max_rows, or a bad shift)",
    "rejected": "rejected layer descriptors since rst, modulo 2^width; steps the cycle after each one's transfer",
}
# the packing engine's streams differ (EngineConfig.pack, docs/stream-protocol.md)
PACK_PORT_NOTES = {
    "layer__payload": "layer descriptor: m in bits [0, m_bits), rows, tail (values in a row's last sub-vector), (shift)",
    "codes__payload": "2*lanes codes of the layer's codes flattened row-major, the first in the least significant bits",
    "scales__payload": "requant: lanes multipliers, rows lanes*t.. of a layer in beat t, taken as row ends need them",
}
PACK_WIDE_RESULTS = "1..lanes output rows, row i in bits [i*result_bits, ...), their count in the top bits"
ROM_PARAMETER = "ROM_INIT_FILE"  # the $readmemh top's parameter: the ROM file vq4all_codebook_rom loads


def ports(engine: Engine) -> list[dict]:
    """The top's ports: [{name, direction, width, note}], clock and reset first (read from the
    signature: the engine is not elaborated)."""
    engine._MustUse__silence = True  # only its signature is read here
    out = [
        {"name": "clk", "direction": "input", "width": 1, "note": PORT_NOTES["clk"]},
        {"name": "rst", "direction": "input", "width": 1, "note": PORT_NOTES["rst"]},
    ]
    config = engine.config
    notes = PORT_NOTES | (PACK_PORT_NOTES if config.pack else {})
    if config.results_per_beat > 1:
        notes["results__payload"] = PACK_WIDE_RESULTS
    for path, member, value in engine.signature.flatten(engine):
        name = "__".join(str(p) for p in path)
        width = len(value.as_value()) if hasattr(value, "as_value") else len(value)
        out.append(
            {
                "name": name,
                "direction": "input" if member.flow.name == "In" else "output",
                "width": width,
                "note": notes.get(name, "valid/ready handshake"),
            }
        )
    return out


def header(config: EngineConfig, codebook: Codebook, port_list: list[dict], what: str) -> str:
    """A Verilog comment block: what the file is, the codebook's SHA-256, parameters, ports."""
    lines = [
        f"// {TOP}: VQ4ALL universal-codebook engine ({what})",
        f"// codebook sha256: {codebook.sha256}",
        "// parameters: " + ", ".join(f"{k}={v}" for k, v in config.to_dict().items()),
        f"//   code_bits={config.code_bits} m_bits={config.m_bits} rows_bits={config.rows_bits} "
        f"activations int{ACT_BITS} latency={config.latency} cycles to the result FIFO (+2 to its output)",
        "// results[o] = reference.lookup_matmul_int(x, codes, codebook, acc_bits)[o] (vq4all/reference.py)"
        + (", then reference.requantize(.., multiplier[o], shift, out_bits)" if config.requant else ""),
        "// ports:",
    ]
    for p in port_list:
        lines.append(f"//   {p['direction']:<6} [{p['width']:>4}] {p['name']:<18} {p['note']}")
    return "\n".join(lines) + "\n"


def verilog_string(text: str, what: str) -> str:
    """`text` as a Verilog string literal (with its quotes); VQ4AllError for characters a Verilog
    string or a tool's -P/-G option cannot carry as they are (quotes, backslashes, control
    characters, non-ASCII)."""
    if not all(" " <= ch <= "~" for ch in text) or '"' in text or "\\" in text:
        raise VQ4AllError(
            f"{what} {text!r}: use a path of printable ASCII without quotes or backslashes (it becomes a Verilog string)"
        )
    return f'"{text}"'


def top_rom_parameter(text: str, rom_init_file: str) -> str:
    """Amaranth's Verilog of the $readmemh engine with the ROM file made a parameter of the top:
    `module vq4all_engine #(parameter ROM_INIT_FILE = "<rom_init_file>") (...)`, passed to the
    ROM instance (which the engine keeps in its top module, rom.readmemh_rom), so FPGA flows and
    testbenches override it at the top (iverilog -P, verilator -G, yosys chparam, a vendor's
    generic) instead of editing the file or reaching into the hierarchy."""
    literal = verilog_string(rom_init_file, "ROM file")
    edits = [
        (f"module {TOP}(", f"module {TOP} #(\n  parameter {ROM_PARAMETER} = {literal}\n) ("),
        (f".INIT_FILE({literal})", f".INIT_FILE({ROM_PARAMETER})"),
    ]
    for old, new in edits:
        if text.count(old) != 1:  # Amaranth changed how it writes modules or instance parameters
            raise VQ4AllError(f"cannot make {ROM_PARAMETER} a top parameter: {old!r} occurs {text.count(old)} times")
        text = text.replace(old, new)
    return text


def engine_verilog(config: EngineConfig, codebook: Codebook, *, rom_init_file: str | None = None) -> str:
    """Verilog of the engine for `codebook` (an int8 artifact.Codebook [k, d]) with the header:
    ROM inline (default) or, with rom_init_file, the $readmemh ROM module appended, its file the
    top's parameter ROM_INIT_FILE, default rom_init_file (relative to the simulator's or
    synthesis tool's working folder unless absolute; the codebook is still checked against the
    config and named in the header)."""
    from amaranth.back import verilog

    if rom_init_file is None:
        engine = Engine(config, codebook)
        text = verilog.convert(engine, name=TOP)
        return header(config, codebook, ports(engine), "ROM inline") + text
    config.check_codebook(codebook)
    verilog_string(rom_init_file, "ROM file")  # before the conversion: a bad name fails fast
    engine = Engine(config, rom_init_file=rom_init_file)
    text = top_rom_parameter(verilog.convert(engine, name=TOP), rom_init_file)
    rom = readmemh_module(k=config.k, word_bits=config.word_bits, ports=config.lanes)
    note = (
        f'// parameter {ROM_PARAMETER} = "{rom_init_file}": the ROM file, relative to the tool\'s working folder unless\n'
        f"//   absolute; override it at the top: iverilog -P{TOP}.{ROM_PARAMETER}='\"path\"', "
        f"verilator -G{ROM_PARAMETER}='\"path\"',\n"
        f'//   yosys: read_verilog -defer <this file>; chparam -set {ROM_PARAMETER} "path" {TOP}; hierarchy -top {TOP}\n'
    )
    what = f"ROM loaded by $readmemh from the file named by parameter {ROM_PARAMETER}"
    return header(config, codebook, ports(engine), what) + note + text + "\n" + rom


def engine_rtlil(config: EngineConfig, codebook: Codebook) -> str:
    """RTLIL of the engine, ROM inline, for `codebook` (an int8 artifact.Codebook [k, d])."""
    from amaranth.back import rtlil

    return rtlil.convert(Engine(config, codebook), name=TOP)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def generate(codebook: Codebook, out_dir, config: EngineConfig, *, progress: bool = False) -> dict:
    """Write every generated file for `codebook` (an int8 artifact.Codebook [k, d]) into
    `out_dir` (created if missing); return the manifest (also written as manifest.json). A split
    ROM (`config.rom_width`) has the inline Verilog and the RTLIL only: its memory holds the
    values' low bits, so neither the $readmemh engine nor the whole-value ROM files describe it."""
    config.check_codebook(codebook)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise VQ4AllError(f"{out}: exists and is not a folder: choose another --out-dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VQ4AllError(f"{out}: cannot create the folder ({e.strerror})") from None
    steps = [
        ("Verilog (ROM inline)", f"{TOP}.v", lambda: engine_verilog(config, codebook)),
        ("RTLIL", f"{TOP}.il", lambda: engine_rtlil(config, codebook)),
    ]
    if not config.split_rom:  # a split ROM's memory holds low bits only: no whole-value ROM file loads it
        steps.append(
            (
                "Verilog ($readmemh ROM)",
                f"{TOP}_readmemh.v",
                lambda: engine_verilog(config, codebook, rom_init_file="codebook.hex"),
            )
        )
        steps += [
            (f"ROM file .{fmt}", f"codebook{SUFFIX[fmt]}", (lambda f=fmt: rom_file_text(f, codebook, config.width)))
            for fmt in FORMATS
        ]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(steps), desc=f"rtl k={config.k}", unit="file", leave=False)
    files, seconds = {}, {}
    for label, name, make in steps:
        if bar is not None:
            bar.set_postfix_str(label)
        t = time.perf_counter()
        data = make().encode()
        atomic_write_bytes(out / name, data)
        files[name] = {"sha256": _sha(data), "bytes": len(data)}
        seconds[name] = round(time.perf_counter() - t, 3)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    manifest = {
        "format": "vq4all-rtl",
        "format_version": 1,
        "top": TOP,
        "codebook_sha256": codebook.sha256,
        "config": config.to_dict(),
        "derived": {
            "code_bits": config.code_bits,
            "word_bits": config.word_bits,
            "m_bits": config.m_bits,
            "rows_bits": config.rows_bits,
            "tree_levels": config.tree_levels,
            "latency": config.latency,
        },
        "ports": ports(Engine(config, codebook) if config.split_rom else Engine(config, rom_init_file="codebook.hex")),
        "files": files,
        "seconds": seconds,
    }
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
