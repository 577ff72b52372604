"""cocotb testbench of the generated engine (runs inside Icarus or Verilator; see sim.runner).

Reads its layers from the .npz named by $VQ4ALL_TB_INPUT (codebook [k, d] int8 and, when it
has one, codebook_scale [1] float32: the artifact.Codebook in the ROM; per layer name_i, x_i
[in_features] int8, codes_i [rows, m], with requant mult_i [rows] and shift_i; per bare
descriptor (`streams.Descriptor`) name_i and desc_i = [m, rows, shift]) and from
$VQ4ALL_TB_SPEC (JSON) the engine's config (`EngineConfig.to_dict()`), the codebook's SHA-256
(the rebuilt Codebook must hash to it), backpressure and seed;
drives them through `sim.streams.StreamDriver` (the same environment model the Amaranth unit
tests use) and writes the driver's report as JSON to $VQ4ALL_TB_OUTPUT.
Fails if any result differs from `reference.lookup_matmul_int`, a result is missing, or the
status outputs (`error`, `rejected`) differ from the model in any cycle.

Per cycle: on the falling edge drive the inputs; in ReadOnly (everything settled) read the
handshakes, which then complete on the next rising edge.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from vq4all.artifact import Codebook
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.sim.streams import Descriptor, Job, StreamDriver


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
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for s in driver.streams:
        getattr(dut, f"{s}__valid").value = 0
        getattr(dut, f"{s}__payload").value = 0
    dut.results__ready.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    limit = driver.max_cycles()
    while not driver.done and driver.cycle < limit:
        await FallingEdge(dut.clk)
        values = driver.inputs()
        for s in driver.streams:
            getattr(dut, f"{s}__valid").value = values[f"{s}_valid"]
            getattr(dut, f"{s}__payload").value = values[f"{s}_payload"]
        dut.results__ready.value = values["results_ready"]
        await ReadOnly()
        valid = int(dut.results__valid.value)
        driver.observe(
            layer_ready=int(dut.layer__ready.value),
            acts_ready=int(dut.acts__ready.value),
            codes_ready=int(dut.codes__ready.value),
            results_valid=valid,
            results_payload=int(dut.results__payload.value) if valid else 0,
            error=int(dut.error.value),
            rejected=int(dut.rejected.value),
            scales_ready=int(dut.scales__ready.value) if config.requant else 0,
        )
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
