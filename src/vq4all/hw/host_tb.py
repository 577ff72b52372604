"""cocotb testbench of the host driver (`vq4all.hw.host`): one layer's GEMVs through the engine,
the engine's results written back.

Runs inside Icarus or Verilator like `sim/tb_engine.py` with the same cycle loop
(`sim.tb_drive.run_driver` around `sim.streams.StreamDriver`, full speed), but its input is one
layer with many input vectors and it hands the results themselves back, not only their count
of mismatches: the host feeds them to the next layer and counts mismatches against the integer
model itself, so a mismatch does not fail this test (missing results, a timeout or a wrong
status output do).

$VQ4ALL_TB_INPUT (.npz): codebook [k, d] int8, codebook_scale [1] float32 (if any), name (str),
codes [rows, m], x [M, in_features] int8 (one GEMV per row of x), and for a requant engine
mult [rows] and shift. $VQ4ALL_TB_SPEC (JSON): config (EngineConfig.to_dict()),
codebook_sha256. Writes the driver's report (JSON) to $VQ4ALL_TB_OUTPUT and the results
[M, rows] int64 (.npy) to $VQ4ALL_TB_RESULTS.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np

from vq4all.artifact import Codebook
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.sim.streams import Job, StreamDriver
from vq4all.hw.sim.tb_drive import run_driver


def load_jobs():
    """(spec, codebook, jobs): one streams.Job per row of x, all with the layer's codes."""
    spec = json.loads(os.environ["VQ4ALL_TB_SPEC"])
    with np.load(os.environ["VQ4ALL_TB_INPUT"]) as f:
        codebook = Codebook(f["codebook"], f["codebook_scale"] if "codebook_scale" in f else None)
        name, codes, x = str(f["name"]), f["codes"], f["x"]
        mult = f["mult"] if "mult" in f else None
        shift = int(f["shift"]) if "shift" in f else 0
    jobs = [Job(f"{name}[{i}]", x[i], codes, mult, shift) for i in range(len(x))]
    return spec, codebook, jobs


@cocotb.test()
async def engine_runs_layer(dut):
    spec, codebook, jobs = load_jobs()
    assert codebook.sha256 == spec["codebook_sha256"], "the codebook in the input file is not the one simulated"
    config = EngineConfig(**spec["config"])
    driver = StreamDriver(config, jobs, codebook)
    await run_driver(dut, driver, config)
    report = driver.report()
    report["timed_out"] = not driver.done
    with open(os.environ["VQ4ALL_TB_OUTPUT"], "w") as f:
        json.dump(report, f)
    np.save(os.environ["VQ4ALL_TB_RESULTS"], np.array(driver.results, dtype=np.int64))
    assert driver.done, f"only {len(driver.results)} of {driver.total_results} results after {driver.cycle} cycles"
    assert report["status_mismatches"] == 0, (
        f"error/rejected differ from the model: {report['first_status_mismatches']}"
    )
