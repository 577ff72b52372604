"""Stimulus for tb_one_layer.v: one real layer of a vq4all network artifact as plain hex files.

    python make_stimulus.py --codebook codebook.safetensors --network digits_cnn.safetensors \
        --layer conv1 --rtl rtl --out stim

reads the engine's parameters from `rtl/manifest.json` (written by `vq4all rtl generate`; its
codebook must be the one given), takes the layer's codes from the artifact and its real input
vector from the zoo network's first calibration sample (hw.layer_inputs.real_input, quantised to
int8 by hw.sim.streams.quantize_int8), and writes into `stim/`:

    layer.hex     the descriptor word        (vq4all.hw.sim.streams.descriptor_word)
    acts.hex      the activation beats       (streams.pack_acts)
    codes.hex     the code beats, row-major  (streams.pack_codes)
    expected.hex  one result per row         (vq4all.reference.lookup_matmul_int), two's complement
    stimulus.vh   localparams the testbench includes: port widths, beat counts, the files' paths

The beats come from the same packers the project's own simulations drive the engine with, and
the expected results from the reference, so the testbench checks the generated RTL against the
Python definition without any Python at simulation time. Every hex file is plain `$readmemh`
text: one word per line, a `//` comment after it saying what it holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vq4all.artifact import load_codebook, load_network
from vq4all.errors import VQ4AllError
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.sim.streams import beats_per_row, descriptor_word, pack_acts, pack_codes
from vq4all.reference import lookup_matmul_int

FILES = ("layer", "acts", "codes", "expected")


def hex_digits(bits: int) -> int:
    return -(-bits // 4)


def code_note(codes: np.ndarray, row: int, beat: int, lanes: int) -> str:
    """What one code beat holds: codes[row, j] for each lane, idle lanes (past m) named."""
    m = codes.shape[1]
    parts = []
    for lane in range(lanes):
        j = beat * lanes + lane
        parts.append(f"codes[{row}, {j}] = {int(codes[row, j])}" if j < m else "idle lane (0)")
    return ", ".join(parts)


def engine_config(rtl: Path) -> tuple[EngineConfig, dict]:
    """(EngineConfig, manifest) of a `vq4all rtl generate` folder."""
    try:
        manifest = json.loads((rtl / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise VQ4AllError(f"{rtl}/manifest.json: not readable ({e}): run `vq4all rtl generate` first") from None
    config = EngineConfig(**manifest["config"])
    if config.requant:  # the testbench has no `scales` stream
        raise VQ4AllError(
            f"{rtl}: a requantizing engine; tb_one_layer.v drives a plain one (generate without --requant)"
        )
    return config, manifest


def write_stimulus(out: Path, config: EngineConfig, name: str, x: np.ndarray, codes: np.ndarray, codebook) -> dict:
    """Write the stimulus of one layer (x [in_features] int8, codes [rows, m] < k, codebook the
    int8 artifact.Codebook the ROM holds) into `out`; return {"descriptor", "acts", "codes",
    "expected"} (the words and the expected results as ints)."""
    rows, m = codes.shape
    lanes, d = config.lanes, config.d
    b = beats_per_row(m, lanes)
    if not ((m - 1) * d < x.size <= m * d and 1 <= m <= config.max_m and 1 <= rows <= config.max_rows):
        raise VQ4AllError(f"layer {name}: {x.size} inputs, codes {list(codes.shape)} do not fit this engine")
    descriptor = descriptor_word(config, m, rows)
    acts = pack_acts(x, m, d, lanes)
    code_words = pack_codes(codes, lanes, config.code_bits)
    expected = lookup_matmul_int(x[None, :].astype(np.int8), codes, codebook.codebook, config.acc_bits)[0]
    expected = [int(v) for v in expected]
    widths = {
        "layer": config.m_bits + config.rows_bits,
        "acts": lanes * d * 8,
        "codes": lanes * config.code_bits,
        "expected": config.result_bits,
    }
    pad = m * d - x.size
    xpad = np.zeros(b * lanes * d, dtype=np.int64)
    xpad[: x.size] = x
    lines = {
        "layer": [(descriptor, f"m={m} | rows={rows} << {config.m_bits}")],
        "acts": [
            (
                w,
                f"beat {i}: x[{i * lanes * d}..{(i + 1) * lanes * d - 1}] = "
                + " ".join(str(v) for v in xpad[i * lanes * d : (i + 1) * lanes * d].tolist()),
            )
            for i, w in enumerate(acts)
        ],
        "codes": [
            (w, f"row {i // b}, beat {i % b}: {code_note(codes, i // b, i % b, lanes)}")
            for i, w in enumerate(code_words)
        ],
        "expected": [(v & ((1 << widths["expected"]) - 1), f"row {o}: {v}") for o, v in enumerate(expected)],
    }
    out.mkdir(parents=True, exist_ok=True)
    head = (
        f"// {name}: in_features={x.size} m={m} (pad={pad} zero activations end the last sub-vector) "
        f"rows={rows}, engine k={config.k} d={d} lanes={lanes}; codebook sha256={codebook.sha256}\n"
    )
    for f in FILES:
        n = hex_digits(widths[f])
        text = head + "".join(f"{w:0{n}x}  // {note}\n" for w, note in lines[f])
        (out / f"{f}.hex").write_text(text)
    counts = {"layer": 1, "acts": len(acts), "codes": len(code_words), "expected": rows}
    # paths as given (relative to the folder vvp runs in), with forward slashes: Verilog strings
    where = {f: (out / f"{f}.hex").as_posix() for f in FILES}
    vh = [
        head.rstrip("\n"),
        "// generated by examples/verilog_tb/make_stimulus.py; included by tb_one_layer.v (iverilog -I <this folder>)",
        f"localparam LAYER_W = {widths['layer']};   // m_bits + rows_bits",
        f"localparam ACTS_W = {widths['acts']};    // lanes * d * 8",
        f"localparam CODES_W = {widths['codes']};    // lanes * log2(k)",
        f"localparam RESULT_W = {widths['expected']};  // acc_bits",
        f"localparam N_ACTS = {counts['acts']};      // ceil(m / lanes) beats",
        f"localparam N_CODES = {counts['codes']};    // rows * ceil(m / lanes) beats",
        f"localparam N_RESULTS = {counts['expected']};  // rows",
        f"localparam LAT = {config.latency};        // EngineConfig.latency",
    ]
    vh += [f'localparam {f.upper()}_FILE = "{where[f]}";' for f in FILES]
    (out / "stimulus.vh").write_text("\n".join(vh) + "\n")
    return {"descriptor": descriptor, "acts": acts, "codes": code_words, "expected": expected}


def real_layer(network_path: Path, codebook, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(x int8 [in_features], codes [rows, m]) of `layer` of the artifact: its stored codes and
    the real input vector of its zoo network (first calibration sample)."""
    from vq4all import zoo
    from vq4all.hw.layer_inputs import real_input
    from vq4all.hw.sim.streams import quantize_int8

    art = load_network(network_path, codebook)
    by_name = {entry.name: entry for entry in art.layers}
    if layer not in by_name:
        raise VQ4AllError(f"{network_path}: no layer '{layer}': choose one of {', '.join(by_name)}")
    entry = by_name[layer]
    x, _ = quantize_int8(real_input(zoo.load(art.network), entry.param))
    if entry.row + entry.pad != entry.codes.shape[1] * codebook.d:  # the artifact's own bookkeeping
        raise VQ4AllError(f"{network_path}: layer {layer}: row {entry.row} + pad {entry.pad} != m * d")
    return x, np.asarray(entry.codes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codebook", required=True, type=Path)
    p.add_argument("--network", required=True, type=Path, help="a zoo network's artifact (vq4all assign)")
    p.add_argument("--layer", required=True)
    p.add_argument("--rtl", required=True, type=Path, help="the `vq4all rtl generate` folder")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    try:
        codebook = load_codebook(a.codebook)
        config, manifest = engine_config(a.rtl)
        if manifest["codebook_sha256"] != codebook.sha256:
            raise VQ4AllError(f"{a.rtl} was generated for another codebook than {a.codebook}")
        config.check_codebook(codebook)
        x, codes = real_layer(a.network, codebook, a.layer)
        words = write_stimulus(a.out, config, a.layer, x, codes, codebook)
    except VQ4AllError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows, m = codes.shape
    print(
        f"wrote {a.out}: {a.layer} rows={rows} m={m} in_features={x.size}: descriptor 0x{words['descriptor']:x}, "
        f"{len(words['acts'])} activation beats, {len(words['codes'])} code beats, {rows} expected results"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
