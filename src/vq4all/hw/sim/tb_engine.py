"""cocotb testbench of the generated engine (runs inside Icarus or Verilator; see sim.runner).

Reads its layers from the .npz named by $VQ4ALL_TB_INPUT (codebook [k, d] int8 and, when it
has one, codebook_scale [1] float32: the artifact.Codebook in the ROM; per layer name_i, x_i
[in_features] int8, codes_i [rows, m], with requant mult_i [rows] and shift_i; per bare
descriptor (`streams.Descriptor`) name_i and desc_i = [m, rows, shift, tail]) and from
$VQ4ALL_TB_SPEC (JSON) the engine's config (`EngineConfig.to_dict()`), the codebook's SHA-256
(the rebuilt Codebook must hash to it), backpressure and seed;
drives them through `sim.streams.StreamDriver` (the same environment model the Amaranth unit
tests use) and writes the driver's report as JSON to $VQ4ALL_TB_OUTPUT.
Fails if any result differs from `reference.lookup_matmul_int`, a result is missing, or the
status outputs (`error`, `rejected`) differ from the model in any cycle.

The cycle loop is `sim.tb_drive.run_driver`, shared with the host driver's testbench.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np

from vq4all.artifact import Codebook
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.sim.streams import Descriptor, Job, StreamDriver
from vq4all.hw.sim.tb_drive import run_driver


def _load():
    spec = json.loads(os.environ["VQ4ALL_TB_SPEC"])
    with np.load(os.environ["VQ4ALL_TB_INPUT"]) as f:
        codebook = Codebook(f["codebook"], f["codebook_scale"] if "codebook_scale" in f else None)
        jobs = []
        for i in range(int(f["jobs"])):
            name = str(f[f"name_{i}"])
            if f"desc_{i}" in f:
                jobs.append(Descriptor(name, *(int(v) for v in f[f"desc_{i}"])))
                continue
            jobs.append(
                Job(
                    name,
                    f[f"x_{i}"],
                    f[f"codes_{i}"],
                    f[f"mult_{i}"] if f"mult_{i}" in f else None,
                    int(f[f"shift_{i}"]) if f"shift_{i}" in f else 0,
                )
            )
    return spec, codebook, jobs


@cocotb.test()
async def engine_matches_reference(dut):
    spec, codebook, jobs = _load()
    assert codebook.sha256 == spec["codebook_sha256"], "the codebook in the input file is not the one simulated"
    config = EngineConfig(**spec["config"])
    driver = StreamDriver(config, jobs, codebook, backpressure=spec["backpressure"], seed=spec["seed"])
    await run_driver(dut, driver, config)
    report = driver.report()
    report["timed_out"] = not driver.done
    with open(os.environ["VQ4ALL_TB_OUTPUT"], "w") as f:
        json.dump(report, f, indent=2)
    assert driver.done, f"only {len(driver.results)} of {driver.total_results} results after {driver.cycle} cycles"
    assert report["mismatches"] == 0, f"{report['mismatches']} results differ from the reference: {report['layers']}"
    assert report["status_mismatches"] == 0, (
        f"error/rejected differ from the model in {report['status_mismatches']} cycles: "
        f"{report['first_status_mismatches']}"
    )
