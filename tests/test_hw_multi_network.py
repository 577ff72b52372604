"""Several networks, one ROM: real layers of two zoo networks back to back on one engine
instance (Amaranth's simulator), with no codebook reload. Every output bit-exact against
reference.lookup_matmul_int (the driver checks), and each layer after the first costs exactly
its code beats rows * ceil(m / lanes): switching networks adds nothing but the new activations,
whose load overlaps the previous layer's compute."""

import pytest

from vq4all import zoo
from vq4all.codebook import build
from vq4all.config import CodebookConfig
from vq4all.hw.layer_inputs import real_layer_job
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.rtl.engine import Engine
from vq4all.hw.sim.amaranth_sim import run_engine
from vq4all.hw.sim.streams import StreamDriver, beats_per_row

pytestmark = pytest.mark.sim

# digits conv2: 32 rows x m=18; mtcnn_pnet conv2: 16 rows x m=12 (ragged at 8 wide: 90 values);
# then back to digits conv1: 16 rows x m=2 (9 values per row)
LAYERS = [("digits_cnn", "conv2.weight"), ("mtcnn_pnet", "conv2.weight"), ("digits_cnn", "conv1.weight")]


@pytest.fixture(scope="module")
def codebook():
    # a small universal codebook from both networks (K=256 keeps the Amaranth simulation quick)
    config = CodebookConfig(networks=("digits_cnn", "mtcnn_pnet"), k=256, per_network=4096)
    return build(config, {name: zoo.load(name) for name in config.networks})


@pytest.mark.parametrize("lanes", [1, 2])
def test_two_networks_back_to_back_on_one_rom(codebook, lanes):
    jobs = [real_layer_job(zoo.load(net), param, codebook) for net, param in LAYERS]
    config = EngineConfig(k=codebook.k, d=codebook.d, lanes=lanes, max_m=32, max_rows=63)
    driver = StreamDriver(config, jobs, codebook)
    report = run_engine(Engine(config, codebook), driver)
    assert not report["timed_out"]
    assert report["mismatches"] == 0
    assert report["outputs"] == sum(job.codes.shape[0] for job in jobs)
    for job, layer in list(zip(jobs, report["layers"]))[1:]:
        rows, m = job.codes.shape
        assert layer["cycles"] == rows * beats_per_row(m, lanes), layer["name"]
