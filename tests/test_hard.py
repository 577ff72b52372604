"""Hard assignment, its decoding through the reference, and the baselines."""

import numpy as np
import pytest

from vq4all import artifact
from vq4all.artifact import Codebook
from vq4all.baselines import kmeans_layer, rtn
from vq4all.decode import decode_weights
from vq4all.evaluate import sqnr_db
from vq4all.hard import assign, hard_assign
from vq4all.subvectors import split


@pytest.fixture(scope="module")
def codebook():
    rng = np.random.default_rng(0)
    return Codebook(rng.integers(-127, 128, (512, 4), dtype=np.int8), np.array([1 / 50], np.float32))


def test_codes_are_the_nearest_codewords(codebook):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 2, 7)).astype(np.float32)  # rows of 14: m=4, pad=2 at d=4
    (layer,) = assign({"w": w}, codebook)
    assert layer.codes.dtype == np.uint8 or layer.codes.dtype == np.uint16
    assert layer.codes.shape == (5, 4) and layer.pad == 2
    s = split(w, 4)
    values = codebook.values().astype(np.float64)
    for o in range(5):
        for j in range(4):
            keep = 4 - s.pad if j == 3 else 4  # the ragged tail is matched on its real values only
            dist = ((values[:, :keep] - s.subvectors[o, j, :keep]) ** 2).sum(1)
            assert dist[layer.codes[o, j]] <= dist.min() + 1e-5


def test_hard_assign_round_trips_through_the_artifact(codebook, tmp_path):
    rng = np.random.default_rng(2)
    state = {
        "a.weight": rng.standard_normal((8, 12)).astype(np.float32),
        "a.bias": np.ones(8, np.float32),
        "lstm.weight_hh_l0": rng.standard_normal((16, 4)).astype(np.float32),
    }
    art = hard_assign("toy", state, ["a.weight", "lstm.weight_hh_l0"], codebook)
    assert set(art.leftovers) == {"a.bias"}
    path = tmp_path / "toy.safetensors"
    artifact.save_network(path, art)
    back = artifact.load_network(path, codebook)
    rebuilt = decode_weights(back, codebook)
    # decoding = the chosen codewords times the row scales, in the original shape
    s = split(state["a.weight"], 4)
    want = (codebook.values()[art.layers[0].codes] * s.scales.astype(np.float32)[:, None, None]).reshape(8, 12)
    np.testing.assert_allclose(rebuilt["a.weight"], want, rtol=1e-6)
    # far better than random codes
    random_codes = {k: v * 0 + rng.standard_normal(v.shape) for k, v in rebuilt.items()}
    weights = {k: state[k] for k in rebuilt}
    assert sqnr_db(weights, rebuilt) > sqnr_db(weights, random_codes) + 3


def test_rtn_uses_at_most_four_levels_per_row_and_beats_plain_min_max():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 64)).astype(np.float32)
    w[:, 0] = 8.0  # an outlier per row
    q, bits = rtn(w, 2)
    assert all(len(np.unique(row)) <= 4 for row in q)
    assert bits == 6 * 64 * 2 + 6 * 32
    plain, _ = rtn(w, 2, clip_steps=1)  # clip ratio 1 only: plain min/max
    assert ((w - q) ** 2).sum() < 0.8 * ((w - plain) ** 2).sum()


def test_kmeans_layer_charges_its_codebook_and_fits_the_layer():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    rebuilt, bits = kmeans_layer(w, k=256, d=4, iters=10)
    assert bits == 64 * 8 * 8 + 64 * 16 + 256 * 4 * 16
    # each row's sub-vectors come from one shared table of <= 256 codewords (up to the row scale)
    s = split(w, 4)
    normalised = (rebuilt.reshape(64, 8, 4) / s.scales.astype(np.float32)[:, None, None]).reshape(-1, 4)
    assert len(np.unique(np.round(normalised, 3), axis=0)) <= 256
    assert sqnr_db({"w": w}, {"w": rebuilt}) > 8.0  # 256 codewords for 512 sub-vectors: a close fit
