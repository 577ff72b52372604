"""The generated Verilog in real simulators (cocotb 2 on Icarus and Verilator): real layers of
zoo networks hard-assigned to the universal codebook (K=65536, built by vq4all.codebook.build
from real networks) or to its first K rows, with their real input vectors quantised to int8, plus
random ragged layers, all back to back through one engine, under random valid/ready
backpressure on every stream and at full speed; every output compared with
reference.lookup_matmul_int bit for bit (inside the testbench; a mismatch fails it).

Verilog and simulator builds are cached per (config, codebook SHA-256) under $VQ4ALL_CACHE/rtl,
the universal codebook per config under $VQ4ALL_CACHE/rtl/codebooks: nothing in the source tree.
"""

import hashlib
import json

import numpy as np
import pytest

from vq4all import zoo
from vq4all.artifact import Codebook, load_codebook, save_codebook
from vq4all.config import CodebookConfig
from vq4all.errors import VQ4AllError
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.sim.runner import cache_root, simulate
from vq4all.hw.sim.streams import Job

pytestmark = pytest.mark.sim

# the universal codebook of these tests: the default K=2^16, d=8, int8 build from two real zoo
# networks (the two whose layers run below), deterministic
UNIVERSAL = CodebookConfig(networks=("digits_cnn", "crepe_tiny"))
# (network, weight): ragged rows (digits conv1: 9 values = 2 sub-vectors, the last 1/8 full;
# conv2: m=18, ragged for 4 lanes), long rows (fc1: 64 sub-vectors; crepe classifier: 360 rows)
REAL_LAYERS = [
    ("digits_cnn", "conv1.weight"),
    ("digits_cnn", "conv2.weight"),
    ("digits_cnn", "fc1.weight"),
    ("crepe_tiny", "classifier.weight"),
]
RANDOM_SHAPES = [(7, 61), (3, 8), (5, 1)]  # (rows, in_features): m = 8 (ragged), 1, 1
BACKPRESSURE = 0.3


@pytest.fixture(scope="session")
def universal() -> Codebook:
    blob = json.dumps(UNIVERSAL.to_dict(), sort_keys=True).encode()
    path = cache_root() / "codebooks" / f"{hashlib.sha256(blob).hexdigest()[:16]}.safetensors"
    if path.exists():
        return load_codebook(path)
    from vq4all.codebook import build

    cb = build(UNIVERSAL, {name: zoo.load(name) for name in UNIVERSAL.networks})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_codebook(path, cb)
    return cb


def codebook_k(universal: Codebook, k: int) -> Codebook:
    """The universal codebook itself (k=65536) or its first k rows: real codewords either way."""
    if k == universal.k:
        return universal
    return Codebook(universal.codebook[:k], universal.codebook_scale)


_jobs_cache: dict = {}


def jobs_for(cb: Codebook) -> list[Job]:
    """The real layers hard-assigned to cb, with real int8 inputs, then random ragged layers."""
    if cb.sha256 not in _jobs_cache:
        from vq4all.hw.layer_inputs import real_layer_job

        jobs = [real_layer_job(zoo.load(net), param, cb) for net, param in REAL_LAYERS]
        rng = np.random.default_rng(cb.k)
        for i, (rows, in_features) in enumerate(RANDOM_SHAPES):
            m = -(-in_features // cb.d)
            jobs.append(
                Job(
                    f"random{i}",
                    rng.integers(-128, 128, in_features).astype(np.int8),
                    rng.integers(0, cb.k, (rows, m)).astype(np.uint8 if cb.k <= 256 else np.uint16),
                )
            )
        _jobs_cache[cb.sha256] = jobs
    return _jobs_cache[cb.sha256]


def check(report: dict, jobs: list[Job]) -> None:
    assert report["mismatches"] == 0 and not report["timed_out"]
    assert [layer["outputs"] for layer in report["layers"]] == [job.codes.shape[0] for job in jobs]


def record(name: str, reports: list[dict]) -> None:
    """Keep the numbers for the hardware notes (outside the source tree, next to the cache)."""
    folder = cache_root() / "results"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(reports, indent=2))


def run_config(universal, k, lanes, simulator="icarus", readmemh=False):
    cb = codebook_k(universal, k)
    jobs = jobs_for(cb)
    config = EngineConfig(k=k, lanes=lanes, max_m=64, max_rows=512)
    pressed = simulate(config, cb, jobs, simulator=simulator, backpressure=BACKPRESSURE, seed=lanes, readmemh=readmemh)
    check(pressed, jobs)
    full = simulate(config, cb, jobs, simulator=simulator, readmemh=readmemh)
    check(full, jobs)
    # at full speed every layer takes exactly its ideal cycle count (one beat per cycle)...
    for layer in full["layers"]:
        assert layer["cycles"] == layer["ideal_cycles"], layer
    # ...so real layers with many rows keep the MACs busy (the load of x costs one row's time)
    fc1 = next(layer for layer in full["layers"] if layer["name"] == "digits_cnn.fc1")
    assert fc1["mac_utilization"] > 0.95
    record(f"{simulator}-k{k}-l{lanes}{'-readmemh' if readmemh else ''}", [pressed, full])
    return pressed, full


@pytest.mark.parametrize("lanes", [1, 2, 4])
@pytest.mark.parametrize("k", [256, 4096])
def test_icarus(universal, k, lanes):
    run_config(universal, k, lanes)


def test_icarus_universal_codebook_65536(universal):
    assert universal.k == 65536 and universal.d == 8 and universal.dtype == "int8"
    run_config(universal, 65536, 4)


def test_verilator(universal):
    pressed, full = run_config(universal, 4096, 2, simulator="verilator")
    # the same seeds give the same cycle counts in both simulators: the handshakes are cycle-exact
    cb = codebook_k(universal, 4096)
    icarus = simulate(
        EngineConfig(k=4096, lanes=2, max_m=64, max_rows=512), cb, jobs_for(cb), backpressure=BACKPRESSURE, seed=2
    )
    assert [layer["cycles"] for layer in icarus["layers"]] == [layer["cycles"] for layer in pressed["layers"]]


def test_icarus_requantization(universal):
    """The output stage on real layers: multipliers from each layer's real scales, int8 results
    equal to reference.requantize(lookup_matmul_int(...)) bit for bit."""
    from vq4all.hw.layer_inputs import real_layer_job

    cb = codebook_k(universal, 4096)
    jobs = [real_layer_job(zoo.load(net), param, cb, requant=True) for net, param in REAL_LAYERS]
    config = EngineConfig(k=4096, lanes=2, max_m=64, max_rows=512, requant=True)
    report = simulate(config, cb, jobs, backpressure=BACKPRESSURE, seed=7)
    check(report, jobs)
    full = simulate(config, cb, jobs)
    check(full, jobs)
    assert all(layer["cycles"] == layer["ideal_cycles"] for layer in full["layers"])
    record("icarus-k4096-l2-requant", [report, full])


def test_readmemh_rom(universal):
    """The FPGA variant: the ROM module loads codebook.hex with $readmemh."""
    run_config(universal, 256, 1, readmemh=True)


def test_a_wrong_rom_fails_the_testbench(universal):
    """The testbench can fail: codes checked against a codebook other than the ROM's."""
    from vq4all.hw.sim import runner

    cb = codebook_k(universal, 256)
    values = cb.codebook.copy()
    values[:, 0] = values[:, 0] ^ 1
    other = Codebook(values, cb.codebook_scale)
    config = EngineConfig(k=256, max_m=64, max_rows=512)
    verilog = runner.cached_verilog(config, cb)
    assert cb.sha256[:16] in verilog.parent.name and other.sha256[:16] not in verilog.parent.name
    # same engine (the cached Verilog of cb's ROM), reference computed on `other`
    with pytest.raises(VQ4AllError, match="mismatches"):
        simulate(config, other, jobs_for(cb)[-3:], verilog=verilog)


@pytest.mark.parametrize("lanes", [1, 2])
def test_icarus_split_rom(universal, lanes):
    """The split ROM (rom_width=5: the memory holds each value's low 5 bits, the codewords with
    values outside -16..15 are a case statement) in the generated Verilog: real layers bit for bit
    under backpressure, and at full speed on the same schedule as the whole ROM."""
    from vq4all.hw.rtl.rom import split_words

    cb = codebook_k(universal, 4096)
    _, exceptions = split_words(cb.rom_words(8), d=8, width=8, rom_width=5)
    jobs = jobs_for(cb)
    used = {int(c) for job in jobs for c in job.codes.ravel()}
    assert len(used & set(exceptions)) > 10  # the layers really read codewords that need the logic
    config = EngineConfig(k=4096, lanes=lanes, max_m=64, max_rows=512, rom_width=5)
    pressed = simulate(config, cb, jobs, backpressure=BACKPRESSURE, seed=lanes)
    check(pressed, jobs)
    full = simulate(config, cb, jobs)
    check(full, jobs)
    assert all(layer["cycles"] == layer["ideal_cycles"] for layer in full["layers"])


@pytest.mark.parametrize(
    "simulator,requant,lanes",
    [("icarus", False, 1), ("icarus", True, 1), ("verilator", False, 1), ("icarus", True, 2), ("verilator", False, 2)],
)
def test_packing_engine(universal, simulator, requant, lanes):
    """The row-packing engine (pack=True: 2 * lanes codes per beat, a value queue without padding)
    in the generated Verilog: the real layers and random rows of at least d values, with a
    rejected descriptor between them, bit for bit under backpressure; at full speed on the packing
    model's schedule."""
    from vq4all.hw.layer_inputs import real_layer_job
    from vq4all.hw.sim.streams import Descriptor

    cb = codebook_k(universal, 4096)
    jobs = [real_layer_job(zoo.load(net), param, cb, requant=requant) for net, param in REAL_LAYERS]
    rng = np.random.default_rng(17)
    for i, (rows, in_features) in enumerate([(7, 61), (5, 8), (6, 13)]):
        m = -(-in_features // cb.d)
        jobs.append(
            Job(
                f"random{i}",
                rng.integers(-128, 128, in_features).astype(np.int8),
                rng.integers(0, cb.k, (rows, m)).astype(np.uint16),
                rng.integers(1, 1 << 16, rows).astype(np.uint32) if requant else None,
                12 if requant else 0,
            )
        )
    jobs.insert(2, Descriptor("row shorter than d", 1, 3, shift=12, tail=5))
    layers = [job for job in jobs if isinstance(job, Job)]
    config = EngineConfig(k=4096, lanes=lanes, max_m=64, max_rows=512, pack=True, requant=requant)
    pressed = simulate(config, cb, jobs, simulator=simulator, backpressure=BACKPRESSURE, seed=3)
    check(pressed, layers)
    assert pressed["rejected"] == 1
    full = simulate(config, cb, jobs, simulator=simulator)
    check(full, layers)
    assert all(layer["cycles"] == layer["ideal_cycles"] for layer in full["layers"])
    record(f"{simulator}-k4096-pack{'' if lanes == 1 else '-l2'}{'-requant' if requant else ''}", [pressed, full])
