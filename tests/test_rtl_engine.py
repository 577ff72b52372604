"""The engine in Amaranth's own simulator (no external tools): every result bit for bit against
reference.lookup_matmul_int, under random valid/ready backpressure, ragged rows, several layers
back to back; the throughput claim (one beat per cycle at full speed); and every impossible
parameter combination as a one-line error."""

import json

import numpy as np
import pytest

from vq4all.artifact import Codebook
from vq4all.errors import VQ4AllError
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.rtl.engine import Engine
from vq4all.hw.rtl.rom import CodebookROM
from vq4all.hw.sim.amaranth_sim import run_engine
from vq4all.hw.sim.streams import Job, StreamDriver, pack_acts, pack_codes, quantize_int8
from vq4all.reference import lookup_matmul_int, rom_words


def random_jobs(rng, k, d, shapes):
    """shapes: (rows, in_features); m = ceil(in_features / d)."""
    jobs = []
    for i, (rows, in_features) in enumerate(shapes):
        m = -(-in_features // d)
        jobs.append(
            Job(
                f"L{i}",
                rng.integers(-128, 128, in_features).astype(np.int8),
                rng.integers(0, k, (rows, m)).astype(np.uint8 if k <= 256 else np.uint16),
            )
        )
    return jobs


def int8_codebook(values: np.ndarray) -> Codebook:
    """An int8 Codebook of `values` [k, d] (scale 1: the engine computes on the int8 values)."""
    return Codebook(values, np.ones(1, np.float32))


def simulate(config, codebook, jobs, backpressure=0.0, seed=0):
    """codebook: [k, d] int8 values; the engine's ROM and the driver's reference share its Codebook."""
    cb = int8_codebook(codebook)
    report = run_engine(Engine(config, cb), StreamDriver(config, jobs, cb, backpressure=backpressure, seed=seed))
    assert not report["timed_out"], report
    return report


# ragged everywhere: m = 7, 5, 1, 16, 3 sub-vectors; in_features not multiples of d
SHAPES = [(9, 53), (6, 37), (5, 2), (3, 128), (4, 24)]


@pytest.mark.parametrize("lanes", [1, 2, 4])
@pytest.mark.parametrize("backpressure", [0.0, 0.4])
def test_matches_reference_bit_for_bit(lanes, backpressure):
    rng = np.random.default_rng(lanes)
    k, d = 64, 8
    codebook = rng.integers(-128, 128, (k, d)).astype(np.int8)
    config = EngineConfig(k=k, d=d, lanes=lanes, max_m=16, max_rows=15)
    jobs = random_jobs(rng, k, d, SHAPES)
    report = simulate(config, codebook, jobs, backpressure, seed=lanes)
    assert report["mismatches"] == 0, report["layers"]
    assert report["outputs"] == sum(rows for rows, _ in SHAPES)
    for job, layer in zip(jobs, report["layers"]):
        assert layer["outputs"] == job.codes.shape[0] and layer["mismatches"] == 0
        if backpressure == 0:  # the schedule holds also where a load outlasts the previous compute (5x1 -> 3x16)
            assert layer["cycles"] == layer["ideal_cycles"], layer


def test_full_speed_is_one_beat_per_cycle():
    """Without backpressure the engine follows its schedule to the cycle (StreamDriver.ideal_finish):
    no bubble between rows or layers, the next layer's load hidden behind this one's compute,
    lanes idle only in a ragged row's last beat."""
    rng = np.random.default_rng(7)
    for lanes in (1, 4):
        config = EngineConfig(k=32, d=8, lanes=lanes, max_m=64, max_rows=64)
        codebook = rng.integers(-128, 128, (32, 8)).astype(np.int8)
        report = simulate(config, codebook, random_jobs(rng, 32, 8, [(40, 512), (20, 100)]))
        for layer in report["layers"]:
            assert layer["cycles"] == layer["ideal_cycles"], layer
        first, second = report["layers"]
        assert first["mac_utilization"] > 0.95  # 40 rows of 64 sub-vectors: the load of x is 1/41 of the time
        # the second layer loaded while the first computed: it costs exactly rows * beats cycles
        assert second["cycles"] == 20 * -(-13 // lanes)


def test_a_wrong_engine_is_caught():
    """The check can fail: the same layers against a different codebook than the ROM's."""
    rng = np.random.default_rng(3)
    config = EngineConfig(k=16, d=4, max_m=8, max_rows=8)
    rom = rng.integers(-128, 128, (16, 4)).astype(np.int8)
    other = rom.copy()
    other[5, 2] ^= 1
    jobs = [Job("L", rng.integers(-128, 128, 16).astype(np.int8), np.full((4, 4), 5, np.uint8))]
    report = run_engine(Engine(config, int8_codebook(rom)), StreamDriver(config, jobs, int8_codebook(other)))
    assert report["mismatches"] == 4


def test_accumulator_wraps_like_the_reference():
    """acc_bits=16: the exact sums (up to 128*128*64 = 2^20) overflow; engine == reference's wrap."""
    k, d = 4, 8
    codebook = np.full((k, d), -128, np.int8)
    codebook[1] = 127
    x = np.full(64, -128, np.int8)
    codes = np.array([[0] * 8, [1] * 8, [0, 1] * 4], np.uint8)
    config = EngineConfig(k=k, d=d, acc_bits=16, max_m=8, max_rows=4)
    report = simulate(config, codebook, [Job("wrap", x, codes)], backpressure=0.3)
    assert report["mismatches"] == 0
    exact = lookup_matmul_int(x[None], codes, codebook, acc_bits=64)[0]
    assert (np.abs(exact[:2]) >= 1 << 15).all()  # the first two rows really wrapped


@pytest.mark.parametrize("d,width,lanes", [(3, 8, 2), (1, 8, 1), (5, 4, 4), (16, 8, 1)])
def test_other_shapes(d, width, lanes):
    """Odd d (an odd tree level), d=1 (no tree), 4-bit codewords, wide codewords."""
    rng = np.random.default_rng(d)
    lo = -(1 << (width - 1))
    codebook = rng.integers(lo, -lo, (8, d)).astype(np.int8)
    config = EngineConfig(k=8, d=d, width=width, lanes=lanes, max_m=40, max_rows=8)
    report = simulate(config, codebook, random_jobs(rng, 8, d, [(5, 7 * d - (d > 1)), (3, 33 * d)]), 0.3, seed=d)
    assert report["mismatches"] == 0 and report["outputs"] == 8


def test_result_fifo_full_stalls_without_loss():
    """One-sub-vector rows make a result every cycle while the consumer refuses most of them:
    the FIFO fills, the pipeline stalls, nothing is lost or duplicated."""
    rng = np.random.default_rng(11)
    codebook = rng.integers(-128, 128, (16, 8)).astype(np.int8)
    config = EngineConfig(k=16, d=8, max_m=4, max_rows=64, fifo_depth=2)
    jobs = random_jobs(rng, 16, 8, [(60, 8), (30, 5)])
    report = simulate(config, codebook, jobs, backpressure=0.8, seed=5)
    assert report["mismatches"] == 0 and report["outputs"] == 90


def test_packing_matches_the_documented_layout():
    x = np.arange(-5, 6, dtype=np.int8)  # 11 values, d=4: m=3, lanes=2: 2 beats
    words = pack_acts(x, 3, 4, 2)
    assert len(words) == 2
    assert words[0] & 0xFF == 0xFB and (words[0] >> 8) & 0xFF == 0xFC  # x[0]=-5, x[1]=-4 in the LSBs
    assert words[1] == 3 | 4 << 8 | 5 << 16  # x[8..10], then x[11..15] zero padding
    codes = np.array([[1, 2, 3]], np.uint8)
    assert pack_codes(codes, 2, 4) == [1 | 2 << 4, 3]  # the idle lane of the last beat is 0


def test_quantize_int8():
    q, scale = quantize_int8(np.array([0.5, -1.0, 0.25]))
    assert q.dtype == np.int8 and q.tolist() == [64, -127, 32] and scale == pytest.approx(1 / 127)
    assert quantize_int8(np.zeros(3))[0].tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"k": 1000}, "power of two"),
        ({"k": 1 << 17}, "power of two"),
        ({"k": 1}, "power of two"),
        ({"k": 256, "d": 0}, "d=0"),
        ({"k": 256, "d": 65}, "d=65"),
        ({"k": 256, "width": 9}, "width=9"),
        ({"k": 256, "width": 0}, "width=0"),
        ({"k": 256, "lanes": 3}, "lanes=3"),
        ({"k": 256, "lanes": 0}, "lanes=0"),
        ({"k": 256, "lanes": 32}, "lanes=32"),
        ({"k": 256, "acc_bits": 15}, "acc_bits=15"),
        ({"k": 256, "width": 4, "acc_bits": 11}, "acc_bits=11"),
        ({"k": 256, "acc_bits": 65}, "acc_bits=65"),
        ({"k": 256, "max_m": 0}, "max_m=0"),
        ({"k": 256, "max_rows": 0}, "max_rows=0"),
        ({"k": 256, "fifo_depth": 1}, "fifo_depth=1"),
        ({"k": "256"}, "integer"),
        ({"k": 256, "lanes": True}, "integer"),
    ],
)
def test_impossible_parameters_are_one_line_errors(kwargs, words):
    with pytest.raises(VQ4AllError, match=words) as e:
        EngineConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_engine_rejects_a_codebook_that_does_not_fit():
    rng = np.random.default_rng(0)
    config = EngineConfig(k=16, d=4)
    good = rng.integers(-8, 8, (16, 4)).astype(np.int8)
    with pytest.raises(VQ4AllError, match="int8 codebook"):
        Engine(config, Codebook(good.astype(np.float16)))
    with pytest.raises(VQ4AllError, match="artifact.Codebook, got ndarray"):
        Engine(config, good)
    with pytest.raises(VQ4AllError, match="does not match the engine's k=16, d=4"):
        Engine(config, int8_codebook(good[:8]))
    with pytest.raises(VQ4AllError, match="does not match the engine's k=16, d=4"):
        Engine(config, int8_codebook(np.zeros((16, 8), np.int8)))
    with pytest.raises(VQ4AllError, match="width=4"):
        Engine(EngineConfig(k=16, d=4, width=4), int8_codebook(np.full((16, 4), 100, np.int8)))
    with pytest.raises(VQ4AllError, match="exactly one"):
        Engine(config, int8_codebook(good), rom_init_file="codebook.hex")
    with pytest.raises(VQ4AllError, match="exactly one"):
        Engine(config)
    with pytest.raises(VQ4AllError, match="EngineConfig"):
        Engine({"k": 16}, int8_codebook(good))
    with pytest.raises(VQ4AllError, match="15 words given for k=16"):
        CodebookROM(k=16, word_bits=32, ports=1, words=rom_words(good)[:15])
    with pytest.raises(VQ4AllError, match="does not fit 8 bits"):
        CodebookROM(k=2, word_bits=8, ports=1, words=[0, 256])


def test_driver_rejects_a_layer_the_engine_cannot_hold():
    config = EngineConfig(k=16, d=4, max_m=4, max_rows=8)
    cb = int8_codebook(np.zeros((16, 4), np.int8))
    with pytest.raises(ValueError, match="max_m"):
        StreamDriver(config, [Job("big", np.zeros(20, np.int8), np.zeros((2, 5), np.uint8))], cb)
    with pytest.raises(ValueError, match="max_rows"):
        StreamDriver(config, [Job("tall", np.zeros(4, np.int8), np.zeros((9, 1), np.uint8))], cb)
    with pytest.raises(ValueError, match="activations"):
        StreamDriver(config, [Job("short", np.zeros(3, np.int8), np.zeros((2, 2), np.uint8))], cb)
    with pytest.raises(VQ4AllError, match="does not match the engine's k=16, d=4"):
        StreamDriver(config, [], int8_codebook(np.zeros((8, 4), np.int8)))


def test_the_config_travels_as_json():
    """What sim.runner hands the cocotb testbench: EngineConfig.to_dict() rebuilds the same config,
    streams included."""
    for config in (EngineConfig(k=256, lanes=4, max_m=64), EngineConfig(k=16, d=4, requant=True, mult_bits=24)):
        back = EngineConfig(**json.loads(json.dumps(config.to_dict())))
        assert back == config and back.streams == config.streams
    assert EngineConfig(k=16).streams == ("layer", "acts", "codes")
    assert EngineConfig(k=16, requant=True).streams == ("layer", "acts", "codes", "scales")


def requant_jobs(rng, k, d, shapes, mult_bits=16):
    """Random layers with per-row multipliers that put the outputs around the int8 range (some
    saturate), and a layer shift per job."""
    jobs = random_jobs(rng, k, d, shapes)
    for job in jobs:
        rows = job.codes.shape[0]
        shift = int(rng.integers(14, 24))
        # |acc| ~ 128*128*in_features/sqrt(3)...; aim |y| ~ 100 with a spread of factors
        typical = 128 * 128 * np.sqrt(job.x.size) / 3
        mult = np.clip(rng.uniform(0.3, 2.5, rows) * 100 / typical * 2.0**shift, 0, (1 << mult_bits) - 1)
        job.multipliers, job.shift = mult.astype(np.uint32 if mult_bits > 16 else np.uint16), shift
    return jobs


@pytest.mark.parametrize("lanes,backpressure", [(1, 0.0), (2, 0.4), (4, 0.0), (4, 0.4)])
def test_requantization_matches_the_reference(lanes, backpressure):
    rng = np.random.default_rng(20 + lanes)
    codebook = rng.integers(-128, 128, (64, 8)).astype(np.int8)
    config = EngineConfig(k=64, lanes=lanes, max_m=16, max_rows=15, requant=True)
    jobs = requant_jobs(rng, 64, 8, SHAPES)
    report = simulate(config, codebook, jobs, backpressure, seed=lanes)
    assert report["mismatches"] == 0 and report["outputs"] == sum(rows for rows, _ in SHAPES), report["layers"]
    if backpressure == 0:
        assert all(layer["cycles"] == layer["ideal_cycles"] for layer in report["layers"])
    # the check is not vacuous: outputs spread over the int8 range, some saturated
    driver_out = np.concatenate(
        [
            np.clip(
                np.floor(
                    (
                        lookup_matmul_int(j.x[None], j.codes, codebook)[0].astype(np.float64) * j.multipliers
                        + 2.0 ** (j.shift - 1)
                    )
                    / 2.0**j.shift
                ),
                -128,
                127,
            )
            for j in jobs
        ]
    )
    assert (np.abs(driver_out) == 127).sum() + (driver_out == -128).sum() > 0 and np.unique(
        driver_out
    ).size > 12  # of 27 outputs


def test_requantization_wide_multipliers_and_outputs():
    rng = np.random.default_rng(4)
    codebook = rng.integers(-128, 128, (16, 4)).astype(np.int8)
    config = EngineConfig(k=16, d=4, lanes=2, max_m=8, max_rows=8, requant=True, mult_bits=24, out_bits=12)
    jobs = requant_jobs(rng, 16, 4, [(6, 29), (3, 4)], mult_bits=24)
    assert simulate(config, codebook, jobs, 0.3, seed=1)["mismatches"] == 0


def test_requant_parameter_errors():
    for kwargs, words in [
        ({"mult_bits": 1}, "mult_bits=1"),
        ({"mult_bits": 33}, "mult_bits=33"),
        ({"out_bits": 1}, "out_bits=1"),
        ({"out_bits": 40}, "out_bits=40"),
        ({"requant": 1}, "requant=1"),
    ]:
        with pytest.raises(VQ4AllError, match=words):
            EngineConfig(k=16, **kwargs)
    config = EngineConfig(k=16, d=4, max_m=4, max_rows=8, requant=True)
    with pytest.raises(ValueError, match="multipliers and a shift"):
        StreamDriver(
            config,
            [Job("noscale", np.zeros(4, np.int8), np.zeros((2, 1), np.uint8))],
            int8_codebook(np.zeros((16, 4), np.int8)),
        )


def test_split_rom_words_rebuild_every_value():
    """split_words: the low bits plus the exception patterns give back every value exactly, and
    only words with a value outside rom_width bits have a pattern."""
    from vq4all.hw.rtl.rom import split_words

    rng = np.random.default_rng(21)
    values = rng.integers(-8, 8, (64, 4)).astype(np.int8)  # fits 4 bits ...
    values[3, 1], values[40, 3], values[41, 0] = 127, -128, -9  # ... except these three words
    words = rom_words(values, 8)
    low, exceptions = split_words(words, d=4, width=8, rom_width=4)
    assert sorted(exceptions) == [3, 40, 41]
    for i in range(64):
        for e in range(4):
            lo = (low[i] >> (4 * e)) & 0xF
            hi = (0xF if lo >> 3 else 0) ^ ((exceptions.get(i, 0) >> (4 * e)) & 0xF)
            got = lo | hi << 4
            assert got - 256 * (got >> 7) == values[i, e]


@pytest.mark.parametrize("rom_width,lanes", [(6, 1), (4, 2), (1, 1)])
def test_split_rom_matches_reference_bit_for_bit(rom_width, lanes):
    """rom_width < width (the ROM memory holds the low bits, exceptions are logic): the same
    results as the whole ROM, under backpressure, with values outside rom_width bits in use."""
    rng = np.random.default_rng(rom_width)
    k, d = 64, 8
    codebook = rng.integers(-(1 << (rom_width - 1)), 1 << (rom_width - 1), (k, d)).astype(np.int8)
    codebook[rng.choice(k, 6, replace=False), rng.integers(0, d, 6)] = [127, -128, 64, -65, 100, -1]
    config = EngineConfig(k=k, d=d, lanes=lanes, max_m=16, max_rows=15, rom_width=rom_width)
    assert config.split_rom and config.key().endswith(f"_rw{rom_width}")
    jobs = random_jobs(rng, k, d, SHAPES)
    jobs.append(Job("all", rng.integers(-128, 128, d * 8).astype(np.int8), np.arange(k, dtype=np.uint8).reshape(8, 8)))
    report = simulate(config, codebook, jobs, 0.3, seed=rom_width)
    assert report["mismatches"] == 0 and report["outputs"] == sum(rows for rows, _ in SHAPES) + 8


def test_split_rom_is_inline_only():
    """The $readmemh form cannot hold the exceptions: a one-line error; a rom_width out of range too."""
    with pytest.raises(VQ4AllError, match="rom_width=3: the split ROM exists only inline"):
        Engine(EngineConfig(k=16, d=4, rom_width=3), rom_init_file="codebook.hex")
    with pytest.raises(VQ4AllError, match="rom_width=9 must be 0"):
        EngineConfig(k=16, d=4, rom_width=9)
    assert EngineConfig(k=16, d=4, rom_width=8).key() == EngineConfig(k=16, d=4).key()  # 8 of 8 bits: not split
    engine = Engine(EngineConfig(k=16, d=4, rom_width=8), rom_init_file="codebook.hex")  # the file form exists
    engine._MustUse__silence = True  # built only to show it can be: Amaranth would warn it was never elaborated
