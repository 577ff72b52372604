"""One layer through the engine: pick the engine's parameters for it, simulate, summarise.

What `vq4all sim` and the demo run. numpy only (the caller supplies the int8 input vector).
"""

from __future__ import annotations

import numpy as np

from vq4all.artifact import Codebook
from vq4all.errors import VQ4AllError
from vq4all.hw.rtl.config import EngineConfig
from vq4all.reference import lookup_matmul_int, requant_parameters
from vq4all.rules import code_dtype

from .runner import simulate
from .streams import Job

DEFAULT_MAX_M = 2048  # in_features up to 16384 at d=8; a fixed value keeps one cached engine per K


def engine_for(
    k: int, d: int, m: int, rows: int, *, lanes: int = 1, acc_bits: int = 32, requant: bool = False, pack: bool = False
) -> EngineConfig:
    """The engine config used for a layer of m sub-vectors and `rows` rows: the default buffer
    unless the layer needs a bigger one (then the next power of two); `pack`: row packing."""
    max_m = DEFAULT_MAX_M if m <= DEFAULT_MAX_M else 1 << (m - 1).bit_length()
    max_rows = 65535 if rows <= 65535 else (1 << rows.bit_length()) - 1
    return EngineConfig(
        k=k, d=d, lanes=lanes, acc_bits=acc_bits, max_m=max_m, max_rows=max_rows, requant=requant, pack=pack
    )


def requant_for(
    x: np.ndarray, codes: np.ndarray, codebook: Codebook, row_factors: np.ndarray, mult_bits: int = 16
) -> tuple[np.ndarray, int]:
    """Multipliers and shift that map a layer's accumulators to int8 outputs spanning -127..127.

    x: [in_features] int8; codes: [rows, m] < k; codebook: the int8 artifact.Codebook [k, d].
    row_factors: [rows] the real value of one accumulator unit per row (row scale x codebook
    scale x activation scale); the output scale is max|acc * row_factors| / 127, so the largest
    output lands at 127. Returns reference.requant_parameters(row_factors / output_scale)."""
    acc = lookup_matmul_int(x[None, :], codes, codebook.codebook, 64)[0].astype(np.float64)
    real = np.abs(acc * row_factors)
    out_scale = float(real.max()) / 127.0 if real.max() > 0 else 1.0
    return requant_parameters(np.asarray(row_factors, np.float64) / out_scale, mult_bits)


def random_layer(
    k: int, d: int, seed: int = 0, rows: int = 48, in_features: int = 293
) -> tuple[np.ndarray, np.ndarray]:
    """A random layer: (x [in_features] int8, codes [rows, ceil(in_features/d)] < k), seeded.
    The default 293 values at d=8 make a ragged row (37 sub-vectors, the last one 5/8 full)."""
    rng = np.random.default_rng(seed)
    m = -(-in_features // d)
    x = rng.integers(-128, 128, in_features).astype(np.int8)
    codes = rng.integers(0, k, (rows, m)).astype(code_dtype(k))
    return x, codes


def run_layer(
    codebook: Codebook,
    codes: np.ndarray,
    x: np.ndarray,
    *,
    name: str = "layer",
    lanes: int = 1,
    simulator: str = "icarus",
    backpressure: float = 0.0,
    seed: int = 0,
    acc_bits: int = 32,
    verilog=None,
    row_factors: np.ndarray | None = None,
    pack: bool = False,
) -> dict:
    """Simulate one layer: codebook, the int8 artifact.Codebook [k, d]; codes [rows, m] < k;
    x [in_features] int8. The summary has outputs, mismatches, cycles, mac_utilization (useful
    MACs rows*in_features / (d*lanes*cycles)), ideal_cycles and the run's details.
    verilog: a generated vq4all_engine.v of engine_for(...)'s config and this codebook, to reuse.
    row_factors: [rows] real factors per accumulator unit: run the engine with its requantization
    stage (int8 results, parameters from requant_for). pack: on the row-packing engine (lanes 1
    or 2, rows of at least d values)."""
    k, d = codebook.k, codebook.d
    rows, m = codes.shape
    config = engine_for(k, d, m, rows, lanes=lanes, acc_bits=acc_bits, requant=row_factors is not None, pack=pack)
    config.check_codebook(codebook)
    if x.dtype != np.int8:
        raise VQ4AllError(f"the engine takes int8 activations, got {x.dtype}")
    job = Job(name, x, codes)
    if row_factors is not None:
        job.multipliers, job.shift = requant_for(x, codes, codebook, row_factors, config.mult_bits)
    report = simulate(
        config, codebook, [job], simulator=simulator, backpressure=backpressure, seed=seed, verilog=verilog
    )
    layer = report["layers"][0]
    return {
        **layer,
        "simulator": simulator,
        "lanes": lanes,
        "pack": pack,
        "k": k,
        "d": d,
        "backpressure": backpressure,
        "requant": row_factors is not None,
        "build_seconds": report["build_seconds"],
        "run_seconds": report["run_seconds"],
        "codebook_sha256": report["codebook_sha256"],
        "config": report["config"],
    }
