"""The cycle loop both cocotb testbenches share (`tb_engine`, `hw.host_tb`): reset the engine,
then each cycle drive the inputs `streams.StreamDriver` wants on the falling edge and, in
ReadOnly (everything settled), hand the handshakes and outputs back to it (they complete on the
next rising edge). No cocotb tests here: a test module imports `run_driver`.
"""

from __future__ import annotations

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.sim.streams import StreamDriver


async def run_driver(dut, driver: StreamDriver, config: EngineConfig) -> None:
    """Run `driver` against the engine `dut` until every result is in or driver.max_cycles().

    Signal handles are looked up once: a lookup per signal per cycle costs as much as the
    driver itself."""
    import cocotb

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    drive = {f"{s}_{p}": getattr(dut, f"{s}__{p}") for s in driver.streams for p in ("valid", "payload")}
    drive["results_ready"] = dut.results__ready
    readies = {s: getattr(dut, f"{s}__ready") for s in driver.streams}
    results_valid, results_payload, error, rejected = dut.results__valid, dut.results__payload, dut.error, dut.rejected
    for handle in drive.values():
        handle.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    limit = driver.max_cycles()
    while not driver.done and driver.cycle < limit:
        await FallingEdge(dut.clk)
        for key, value in driver.inputs().items():
            drive[key].value = value
        await ReadOnly()
        valid = int(results_valid.value)
        driver.observe(
            layer_ready=int(readies["layer"].value),
            acts_ready=int(readies["acts"].value),
            codes_ready=int(readies["codes"].value),
            results_valid=valid,
            results_payload=int(results_payload.value) if valid else 0,
            error=int(error.value),
            rejected=int(rejected.value),
            scales_ready=int(readies["scales"].value) if config.requant else 0,
        )
