"""Run the engine in Amaranth's own simulator (no external tools): the fast unit-test path.

Same environment model as the cocotb testbench (`sim.streams.StreamDriver`), so both check the
same protocol and the same reference.
"""

from __future__ import annotations

from amaranth.sim import Simulator

from .streams import StreamDriver


def run_engine(engine, driver: StreamDriver, vcd: str | None = None) -> dict:
    """Simulate until every result is in (or driver.max_cycles() passes); return driver.report()."""
    sim = Simulator(engine)
    sim.add_clock(1e-8)
    limit = driver.max_cycles()

    async def testbench(ctx):
        ports = {s: getattr(engine, s) for s in driver.streams}
        while not driver.done and driver.cycle < limit:
            values = driver.inputs()
            for s, port in ports.items():
                ctx.set(port.valid, values[f"{s}_valid"])
                ctx.set(
                    port.payload.as_value() if hasattr(port.payload, "as_value") else port.payload,
                    values[f"{s}_payload"],
                )
            ctx.set(engine.results.ready, values["results_ready"])
            driver.observe(
                layer_ready=ctx.get(engine.layer.ready),
                acts_ready=ctx.get(engine.acts.ready),
                codes_ready=ctx.get(engine.codes.ready),
                results_valid=ctx.get(engine.results.valid),
                results_payload=ctx.get(engine.results.payload.as_unsigned()),
                error=ctx.get(engine.error),
                rejected=ctx.get(engine.rejected),
                scales_ready=ctx.get(engine.scales.ready) if "scales" in ports else 0,
            )
            await ctx.tick()

    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    report = driver.report()
    report["timed_out"] = not driver.done
    return report
