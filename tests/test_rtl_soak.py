"""RTL soak: thousands of random ragged layers back to back through the engine in Icarus, random
valid/ready backpressure on every stream, every output compared bit for bit with
reference.lookup_matmul_int inside the testbench (a single mismatch fails it).

The default size keeps the suite quick (slow tests run by default here); set
VQ4ALL_SOAK_OUTPUTS=100000 (benches/rtl_soak.py does) for the full soak."""

import os

import pytest

from vq4all.hw.sim.soak import soak

pytestmark = [pytest.mark.sim, pytest.mark.slow]

OUTPUTS = int(os.environ.get("VQ4ALL_SOAK_OUTPUTS", "2000"))


def test_soak_under_backpressure_on_every_stream():
    result = soak(OUTPUTS, lanes=2, backpressure=0.3, seed=11)
    assert result["outputs"] == result["expected_outputs"] >= OUTPUTS
    assert result["mismatches"] == 0 and not result["timed_out"]
    assert result["cycles"] > result["ideal_cycles"]  # the backpressure really stalled the engine
