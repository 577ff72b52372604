"""Layer descriptors the engine cannot run (m > max_m, rows > max_rows, a requant shift outside
1..62) are rejected visibly and harmlessly: the engine raises `error` (sticky) and steps
`rejected` on the cycle after the descriptor's transfer, takes no activations or codes for it,
and the next valid layer computes bit for bit against reference.lookup_matmul_int / requantize.
Before this check the engine took a descriptor with m > max_m as a layer, swallowed the next
layer's activations and never took a code again.

Amaranth's simulator for the unit tests; one cocotb run on Icarus (marker sim) for the
generated Verilog. The stream model (sim.streams.StreamDriver) checks the status outputs in every
cycle against its own count, and every result against the reference."""

import numpy as np
import pytest

from vq4all.artifact import Codebook
from vq4all.errors import VQ4AllError
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.rtl.engine import Engine
from vq4all.hw.sim.amaranth_sim import run_engine
from vq4all.hw.sim.streams import Descriptor, Job, StreamDriver, descriptor_word
from vq4all.reference import lookup_matmul_int, requantize

# m field: max_m.bit_length() = 3 bits (holds 0..7), rows field 3 bits (0..7)
CONFIG = EngineConfig(k=16, d=4, max_m=4, max_rows=5)


def codebook(seed: int = 0, k: int = 16, d: int = 4) -> Codebook:
    return Codebook(np.random.default_rng(seed).integers(-127, 128, (k, d)).astype(np.int8), np.ones(1, np.float32))


def job(rng, name: str, rows: int, in_features: int, d: int = 4, k: int = 16) -> Job:
    m = -(-in_features // d)
    return Job(
        name, rng.integers(-128, 128, in_features).astype(np.int8), rng.integers(0, k, (rows, m)).astype(np.uint8)
    )


def run(config: EngineConfig, cb: Codebook, jobs, backpressure: float = 0.0, seed: int = 0) -> dict:
    report = run_engine(Engine(config, cb), StreamDriver(config, jobs, cb, backpressure=backpressure, seed=seed))
    assert not report["timed_out"], report
    return report


def test_the_descriptor_rule():
    """EngineConfig.descriptor_problem is the rule the RTL applies (the driver predicts with it)."""
    assert CONFIG.descriptor_problem(4, 5) is None and CONFIG.descriptor_problem(1, 1) is None
    assert CONFIG.descriptor_problem(0, 7) == "rows=7 > max_rows=5"  # an empty layer is not exempt
    assert CONFIG.descriptor_problem(5, 0) == "m=5 > max_m=4"
    assert CONFIG.descriptor_problem(0, 0) is None and CONFIG.descriptor_problem(0, 3) is None  # empty
    rq = EngineConfig(k=16, d=4, max_m=4, max_rows=5, requant=True)
    assert rq.descriptor_problem(2, 2, 0) == "shift=0 outside 1..62"
    assert rq.descriptor_problem(2, 2, 63) == "shift=63 outside 1..62"
    assert rq.descriptor_problem(2, 2, 62) is None and rq.descriptor_problem(2, 2, 1) is None
    assert rq.descriptor_problem(0, 2, 0) is None  # the all-zero descriptor stays a legal no-op
    assert (rq.shift_cap, EngineConfig(k=16, acc_bits=64, mult_bits=32).shift_cap) == (48, 62)
    with pytest.raises(ValueError, match="m=8 does not fit its 3-bit field"):
        descriptor_word(CONFIG, 8, 1)
    with pytest.raises(ValueError, match="a valid non-empty layer"):  # the engine would wait for its activations
        StreamDriver(CONFIG, [Descriptor("ok", 2, 2)], codebook())


@pytest.mark.parametrize("lanes", [1, 2])
@pytest.mark.parametrize("backpressure", [0.0, 0.4])
def test_rejected_descriptors_then_valid_layers_are_exact(lanes, backpressure):
    rng = np.random.default_rng(lanes)
    config = EngineConfig(k=16, d=4, lanes=lanes, max_m=4, max_rows=5)
    cb = codebook(lanes)
    jobs = [
        job(rng, "A", 3, 14),
        Descriptor("m=5", 5, 2),  # m = max_m + 1: the descriptor that used to hang the engine
        job(rng, "B", 5, 16),  # right after it: m = max_m, rows = max_rows
        Descriptor("m=7", 7, 1),  # the largest m the field holds
        Descriptor("rows=6", 2, 6),
        Descriptor("empty", 0, 3),  # legal: ignored, no error
        Descriptor("m=7 rows=0", 7, 0),  # out of range even though empty
        job(rng, "C", 2, 5),
    ]
    report = run(config, cb, jobs, backpressure, seed=lanes)
    assert report["status_mismatches"] == 0, report["first_status_mismatches"]
    assert report["rejected"] == 4
    assert [entry["rejected"] for entry in report["descriptors"]] == [True, True, True, False, True]
    assert report["mismatches"] == 0 and report["outputs"] == 10, report["layers"]
    layers = [j for j in jobs if isinstance(j, Job)]
    for layer, entry in zip(layers, report["layers"]):  # the same numbers, computed here again
        want = lookup_matmul_int(layer.x[None], layer.codes, cb.codebook, 32)[0]
        assert entry["outputs"] == want.size and entry["mismatches"] == 0
    # nothing is taken for a rejected descriptor: every beat on every stream belongs to a layer
    assert report["beats"] == {
        "layer": 8,
        "acts": sum(-(-j.codes.shape[1] // lanes) for j in layers),
        "codes": sum(j.codes.shape[0] * -(-j.codes.shape[1] // lanes) for j in layers),
    }
    if backpressure == 0:  # a bare descriptor costs the layer stream one cycle and nothing else
        assert all(entry["cycles"] == entry["ideal_cycles"] for entry in report["layers"]), report["layers"]


def test_the_status_check_can_fail():
    """The model does compare the status outputs: an engine that never raises them is caught."""
    driver = StreamDriver(CONFIG, [Descriptor("bad", 6, 1)], codebook())
    ports = {"acts_ready": 0, "codes_ready": 0, "results_valid": 0, "results_payload": 0}
    driver.inputs()
    driver.observe(layer_ready=1, error=0, rejected=0, **ports)  # the descriptor transfers
    driver.inputs()
    driver.observe(layer_ready=1, error=0, rejected=0, **ports)  # one cycle later: must be 1, 1
    assert driver.status_mismatches == 1
    assert driver.first_status_mismatches == [{"cycle": 1, "error": 0, "rejected": 0, "want": [1, 1]}]


def test_a_run_may_end_with_bare_descriptors():
    """The model waits for the status of the last descriptor even when no result is due."""
    rng = np.random.default_rng(4)
    report = run(CONFIG, codebook(4), [job(rng, "A", 2, 7), Descriptor("bad", 5, 1), Descriptor("empty", 0, 0)])
    assert report["rejected"] == 1 and report["status_mismatches"] == 0 and report["beats"]["layer"] == 3
    report = run(CONFIG, codebook(4), [Descriptor("only", 0, 6)])  # rows > max_rows, nothing else
    assert report["rejected"] == 1 and report["status_mismatches"] == 0 and report["cycles"] == 2


def test_rejected_count_wraps_and_error_stays():
    """`rejected` counts modulo 2^8 while `error` stays high (checked in every cycle)."""
    rng = np.random.default_rng(9)
    cb = codebook(9)
    jobs = [Descriptor(f"bad{i}", 5 + i % 3, 1) for i in range(257)] + [job(rng, "after", 4, 9)]
    report = run(CONFIG, cb, jobs)
    assert report["rejected"] == 257 and report["status_mismatches"] == 0
    assert report["mismatches"] == 0 and report["outputs"] == 4


def test_requant_shift_outside_the_reference_range_is_rejected():
    rng = np.random.default_rng(3)
    config = EngineConfig(k=16, d=4, max_m=4, max_rows=5, requant=True)
    cb = codebook(3)
    a, b = job(rng, "A", 4, 13), job(rng, "B", 3, 8)
    a.multipliers, a.shift = rng.integers(1, 1 << 16, 4).astype(np.uint16), 18
    b.multipliers, b.shift = rng.integers(1, 1 << 16, 3).astype(np.uint16), 20
    jobs = [a, Descriptor("shift=0", 2, 2, 0), Descriptor("shift=63", 4, 1, 63), Descriptor("no-op", 0, 0, 0), b]
    report = run(config, cb, jobs, backpressure=0.3, seed=3)
    assert report["rejected"] == 2 and report["status_mismatches"] == 0
    assert report["mismatches"] == 0 and report["outputs"] == 7


def test_requant_shifts_above_acc_plus_mult_bits_match_the_reference():
    """Shifts 49..62 (valid for reference.requantize) used to give -1 where the reference gives 0:
    the rounding constant 2^(shift-1) did not fit the engine's adder. Now computed as shift_cap."""
    rng = np.random.default_rng(5)
    config = EngineConfig(k=16, d=4, max_m=4, max_rows=7, requant=True)  # acc 32 + mult 16
    cb = codebook(5)
    jobs = []
    for shift in (47, 48, 49, 50, 55, 62):
        layer = job(rng, f"shift{shift}", 7, 16)
        layer.multipliers, layer.shift = rng.integers(1 << 15, 1 << 16, 7).astype(np.uint16), shift
        jobs.append(layer)
    accs = [lookup_matmul_int(j.x[None], j.codes, cb.codebook, 32) for j in jobs]
    assert sum(int((acc < 0).sum()) for acc in accs) > 10  # negative products: where -1 came from
    assert all((requantize(acc, j.multipliers, j.shift) == 0).all() for acc, j in zip(accs[3:], jobs[3:]))
    report = run(config, cb, jobs)
    assert report["mismatches"] == 0 and report["outputs"] == 42 and report["rejected"] == 0


@pytest.mark.sim
def test_icarus_rejects_m_above_max_m_and_recovers():
    """The generated Verilog in Icarus (cocotb): a descriptor with m = max_m + 1 between two valid
    layers, under backpressure; the testbench fails on any status or result mismatch."""
    from vq4all.hw.sim.runner import simulate

    rng = np.random.default_rng(14)
    config = EngineConfig(k=16, d=4, lanes=2, max_m=4, max_rows=5)
    cb = codebook(14)
    jobs = [job(rng, "A", 3, 14), Descriptor("m=5", 5, 2), job(rng, "B", 5, 13), Descriptor("rows=7", 1, 7)]
    jobs.append(job(rng, "C", 2, 3))
    report = simulate(config, cb, jobs, backpressure=0.3, seed=14)
    assert report["rejected"] == 2 and report["status_mismatches"] == 0
    assert report["mismatches"] == 0 and [e["outputs"] for e in report["layers"]] == [3, 5, 2]
    full = simulate(config, cb, jobs)
    assert full["mismatches"] == 0 and all(e["cycles"] == e["ideal_cycles"] for e in full["layers"])
    with pytest.raises(VQ4AllError, match="m=8 does not fit its 3-bit field"):
        simulate(config, cb, [Descriptor("wide", 8, 1)])
