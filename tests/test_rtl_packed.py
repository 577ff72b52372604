"""The row-packing engine (`EngineConfig(pack=True)`, rtl/packed.py) in Amaranth's simulator, at
lanes 1 and 2: every result bit for bit against reference.lookup_matmul_int (and requantize)
under random backpressure on every stream; at full speed every layer on the cycle the packing
model (sim.packing.pack_schedule) predicts; the padding products gone, so the ragged layers of
digits_cnn and MTCNN reach >= 0.95 MAC utilisation in a stream where the lane engine is held to
in / (ceil(m / lanes) * lanes * d); descriptors a packing engine cannot run rejected without
harm."""

import numpy as np
import pytest

from vq4all.artifact import Codebook
from vq4all.errors import VQ4AllError
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.rtl.engine import Engine
from vq4all.hw.sim.amaranth_sim import run_engine
from vq4all.hw.sim.packing import pack_codes_flat, pack_scales, pack_schedule, pack_tail, unpack_results
from vq4all.hw.sim.streams import Descriptor, Job, StreamDriver, check_job, descriptor_word


def codebook(k: int, d: int, seed: int = 0) -> Codebook:
    return Codebook(np.random.default_rng(seed).integers(-128, 128, (k, d)).astype(np.int8), np.ones(1, np.float32))


def layer(rng, name, rows, in_features, k, d, requant=False):
    m = -(-in_features // d)
    return Job(
        name,
        rng.integers(-128, 128, in_features).astype(np.int8),
        rng.integers(0, k, (rows, m)).astype(np.uint16),
        rng.integers(1, 1 << 16, rows).astype(np.uint32) if requant else None,
        int(rng.integers(8, 30)) if requant else 0,
    )


def run(config, cb, jobs, backpressure=0.0, seed=0):
    report = run_engine(Engine(config, cb), StreamDriver(config, jobs, cb, backpressure=backpressure, seed=seed))
    assert not report["timed_out"], report
    assert report["mismatches"] == 0 and report["status_mismatches"] == 0, report
    return report


# rows of 9 (a 1-value tail), 27 (3), 8 (no tail, one sub-vector per row), 90, 13, 16, 61: odd and
# even codes per layer, so layers end on one-code beats too
SHAPES = [(5, 9), (4, 27), (7, 8), (2, 90), (6, 13), (3, 16), (3, 61)]


@pytest.mark.parametrize("lanes", [1, 2])
@pytest.mark.parametrize("requant", [False, True])
@pytest.mark.parametrize("backpressure", [0.0, 0.4])
def test_matches_reference_bit_for_bit(requant, backpressure, lanes):
    rng = np.random.default_rng(3)
    config = EngineConfig(k=64, d=8, lanes=lanes, max_m=16, max_rows=64, pack=True, requant=requant)
    jobs = [layer(rng, f"L{i}", r, n, 64, 8, requant) for i, (r, n) in enumerate(SHAPES)]
    report = run(config, codebook(64, 8), jobs, backpressure, seed=1)
    assert report["outputs"] == sum(r for r, _ in SHAPES)
    if backpressure == 0.0:  # the packing model is the engine's schedule, cycle for cycle
        assert [x["cycles"] for x in report["layers"]] == [x["ideal_cycles"] for x in report["layers"]]


@pytest.mark.parametrize("backpressure", [0.0, 0.5])
def test_lanes_2_row_ends_at_every_position(backpressure):
    """Lanes 2 with requant: one-row layers back to back, rows of exactly d values (two row ends
    in a MAC beat), odd row counts (a layer's last scales beat half used): every result and its
    multiplier right, and at full speed the model's cycles."""
    rng = np.random.default_rng(11)
    shapes = [(1, 8), (1, 9), (3, 8), (1, 16), (2, 8), (5, 8), (1, 8), (4, 17), (1, 23)]
    config = EngineConfig(k=32, d=8, lanes=2, max_m=8, max_rows=16, pack=True, requant=True)
    jobs = [layer(rng, f"L{i}", r, n, 32, 8, requant=True) for i, (r, n) in enumerate(shapes)]
    report = run(config, codebook(32, 8), jobs, backpressure, seed=2)
    assert report["outputs"] == sum(r for r, _ in shapes)
    assert report["result_beats"] < report["outputs"]  # some beats carried two results
    if backpressure == 0.0:
        assert [x["cycles"] for x in report["layers"]] == [x["ideal_cycles"] for x in report["layers"]]


@pytest.mark.parametrize("d,width,lanes", [(4, 8, 1), (3, 5, 1), (16, 8, 1), (4, 8, 2), (3, 5, 2)])
def test_other_shapes(d, width, lanes):
    rng = np.random.default_rng(d)
    values = rng.integers(-(1 << (width - 1)), 1 << (width - 1), (32, d)).astype(np.int8)
    cb = Codebook(values, np.ones(1, np.float32))
    config = EngineConfig(k=32, d=d, width=width, lanes=lanes, max_m=24, max_rows=64, pack=True)
    jobs = [layer(rng, f"L{i}", r, n, 32, d) for i, (r, n) in enumerate([(6, d + 1), (5, 3 * d - 1), (4, d), (3, 40)])]
    report = run(config, cb, jobs, 0.3, seed=d)
    assert report["outputs"] == 18


# the ragged layers of digits_cnn (conv1: 16 x 9), mtcnn_pnet (conv1 10 x 27, conv2 16 x 90) and
# mtcnn_onet (conv1 32 x 27): the lane engine's bound in / (m * d) is 0.563, 0.844, 0.938, 0.844
RAGGED = [("digits_conv1", 16, 9), ("pnet_conv1", 10, 27), ("pnet_conv2", 16, 90), ("onet_conv1", 32, 27)]


@pytest.mark.parametrize("lanes", [1, 2])
def test_ragged_layers_keep_the_macs_busy_in_a_stream(lanes):
    """Each layer as two GEMVs back to back (as a convolution streams its positions): the second
    costs ceil(rows * in / (lanes * d)) cycles (a MAC beat never holds two layers' values),
    against rows * ceil(m / lanes) on the lane engine."""
    rng = np.random.default_rng(5)
    cb = codebook(256, 8)
    jobs = []
    for name, rows, in_features in RAGGED:
        job = layer(rng, name, rows, in_features, 256, 8)
        jobs += [job, Job(name + "#2", job.x, job.codes)]
    packed = run(EngineConfig(k=256, lanes=lanes, max_m=16, max_rows=64, pack=True), cb, jobs)
    lane = run(EngineConfig(k=256, lanes=lanes, max_m=16, max_rows=64), cb, jobs)
    for (name, rows, in_features), p, q in zip(RAGGED, packed["layers"][1::2], lane["layers"][1::2]):
        m = -(-in_features // 8)
        assert q["cycles"] == rows * -(-m // lanes)  # the lane engine: ceil(m / lanes) beats per row
        assert p["cycles"] == -(-rows * in_features // (lanes * 8)), (name, p)
        assert p["mac_utilization"] >= 0.95, (name, p)


@pytest.mark.parametrize("lanes", [1, 2])
def test_the_model_counts_a_layer_alone_and_bare_descriptors(lanes):
    """A lone layer pays its load, the queue's fill and the pipeline; a bare descriptor between
    layers takes its cycle; the model and the engine agree on every one."""
    rng = np.random.default_rng(9)
    config = EngineConfig(k=16, d=4, lanes=lanes, max_m=8, max_rows=16, pack=True)
    jobs = [
        layer(rng, "a", 3, 10, 16, 4),
        Descriptor("empty", 0, 3, tail=2),
        Descriptor("bad tail", 2, 2, tail=0),
        layer(rng, "b", 9, 4, 16, 4),
    ]
    report = run(config, codebook(16, 4), jobs)
    assert report["rejected"] == 1
    assert [x["cycles"] for x in report["layers"]] == [x["ideal_cycles"] for x in report["layers"]]
    taken, finish = pack_schedule(config, [(3, 3, 2)])
    assert taken == [0] and finish[0] == report["layers"][0]["ideal_cycles"] - 1


@pytest.mark.parametrize("lanes", [1, 2])
def test_descriptors_a_packing_engine_rejects(lanes):
    config = EngineConfig(k=16, d=4, lanes=lanes, max_m=4, max_rows=5, pack=True)
    assert config.descriptor_problem(2, 2, tail=0) == "tail=0 outside 1..d=4"
    assert config.descriptor_problem(2, 2, tail=5) == "tail=5 outside 1..d=4"
    assert "shorter than d=4" in config.descriptor_problem(1, 2, tail=3)
    assert config.descriptor_problem(1, 2, tail=4) is None and config.descriptor_problem(2, 2, tail=1) is None
    assert config.descriptor_problem(0, 2, tail=0) is None  # an empty layer
    assert descriptor_word(config, 2, 3, tail=4) == 2 | 3 << 3 | 4 << 6  # m, rows, tail (d.bit_length() = 3 bits)
    rng = np.random.default_rng(1)
    cb = codebook(16, 4)
    jobs = [
        Descriptor("tail 0", 2, 2, tail=0),
        layer(rng, "after", 3, 7, 16, 4),
        Descriptor("tail 5", 2, 2, tail=5),
        Descriptor("short row", 1, 2, tail=3),
        layer(rng, "last", 2, 4, 16, 4),
    ]
    report = run(config, cb, jobs, backpressure=0.3, seed=4)
    assert report["rejected"] == 3 and report["outputs"] == 5


def test_host_side_errors_and_layout():
    with pytest.raises(VQ4AllError, match="pack=True needs lanes 1 or 2, got lanes=4"):
        EngineConfig(k=16, lanes=4, pack=True)
    with pytest.raises(VQ4AllError, match="pack=1 must be True or False"):
        EngineConfig(k=16, pack=1)
    config = EngineConfig(k=16, d=4, pack=True)
    with pytest.raises(ValueError, match="rows of 3 values; a packing engine needs rows of at least d=4"):
        check_job(config, Job("short", np.zeros(3, np.int8), np.zeros((2, 1), np.uint8)))
    codes = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.uint8)
    assert pack_codes_flat(codes, 4) == [1 | 2 << 4, 3 | 4 << 4, 5 | 6 << 4, 7 | 8 << 4, 9]
    assert [pack_tail(n, 8) for n in (8, 9, 27, 90, 144)] == [8, 1, 3, 2, 8]
    assert pack_codes_flat(codes, 4, 4) == [1 | 2 << 4 | 3 << 8 | 4 << 12, 5 | 6 << 4 | 7 << 8 | 8 << 12, 9]
    assert config.key().endswith("_pack") and config.codes_per_beat == 2
    wide = EngineConfig(k=16, d=4, lanes=2, pack=True, requant=True, out_bits=8)
    assert (wide.codes_per_beat, wide.results_per_beat, wide.scales_per_beat, wide.count_bits) == (4, 2, 2, 2)
    assert wide.results_bits == 2 * 8 + 2 and wide.queue_slots == 6 * 2 * 4
    # a layer's multipliers pair up within the layer: rows 2t, 2t + 1 in beat t
    assert pack_scales([5, 6, 7], 2, 16) == [5 | 6 << 16, 7]
    # results beats: count above the values, values signed
    assert unpack_results(1 << 16 | 0xFF << 8 | 0x05, 2, 8) == [5]
    assert unpack_results(2 << 16 | 0xFF << 8 | 0x05, 2, 8) == [5, -1]
    assert unpack_results(0xFE, 1, 8) == [-2]
    for count in (0, 3):
        with pytest.raises(ValueError, match=f"count={count}, outside 1..2"):
            unpack_results(count << 16, 2, 8)
