"""A soak run of the engine: many random layers back to back under random backpressure on every
stream, every output checked bit for bit against reference.lookup_matmul_int (in the testbench).

Used by tests/test_rtl_soak.py (a short default) and benches/rtl_soak.py (>= 100,000 outputs).
A small K keeps the Verilog and the simulator build quick; short, often ragged rows (1..max_in
values) make many layer starts, row ends and partial sub-vectors per output. numpy only.
"""

from __future__ import annotations

import time

import numpy as np

from vq4all.artifact import Codebook
from vq4all.hw.rtl.config import EngineConfig

from .runner import simulate
from .streams import Job


def soak_jobs(outputs: int, k: int, d: int, seed: int, max_rows: int = 64, max_in: int = 6 * 8) -> list[Job]:
    """Random layers holding `outputs` rows in all: rows 1..max_rows, in_features 1..max_in,
    full-range int8 activations, uniform codes < k."""
    rng = np.random.default_rng(seed)
    jobs, left = [], outputs
    while left > 0:
        rows = min(left, int(rng.integers(1, max_rows + 1)))
        in_features = int(rng.integers(1, max_in + 1))
        m = -(-in_features // d)
        jobs.append(
            Job(
                f"soak{len(jobs)}",
                rng.integers(-128, 128, in_features).astype(np.int8),
                rng.integers(0, k, (rows, m)).astype(np.uint8 if k <= 256 else np.uint16),
            )
        )
        left -= rows
    return jobs


def soak(
    outputs: int,
    *,
    k: int = 16,
    d: int = 8,
    lanes: int = 2,
    backpressure: float = 0.3,
    seed: int = 0,
    simulator: str = "icarus",
) -> dict:
    """Run the soak; returns outputs, layers, mismatches, cycles, seconds (wall, build included)
    and the simulator's report. Raises VQ4AllError on any mismatch (the testbench fails)."""
    rng = np.random.default_rng(seed)
    codebook = Codebook(rng.integers(-127, 128, (k, d)).astype(np.int8), np.ones(1, np.float32))
    jobs = soak_jobs(outputs, k, d, seed)
    config = EngineConfig(k=k, d=d, lanes=lanes, max_m=64, max_rows=512)
    start = time.perf_counter()
    report = simulate(config, codebook, jobs, simulator=simulator, backpressure=backpressure, seed=seed)
    layers = report["layers"]
    return {
        "outputs": report["outputs"],
        "expected_outputs": sum(j.codes.shape[0] for j in jobs),
        "layers": len(layers),
        "mismatches": report["mismatches"],
        "timed_out": report.get("timed_out", False),
        "cycles": report["cycles"],
        "ideal_cycles": sum(layer.get("ideal_cycles", 0) for layer in layers),
        "seconds": round(time.perf_counter() - start, 1),
        "build_seconds": report["build_seconds"],
        "run_seconds": report["run_seconds"],
        "simulator": simulator,
        "k": k,
        "d": d,
        "lanes": lanes,
        "backpressure": backpressure,
        "seed": seed,
    }
