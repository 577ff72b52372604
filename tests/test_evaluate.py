"""The quality table's measurements: SQNR against a known value, and the table's rows on a
real (small) zoo network."""

import math

import numpy as np
import pytest

from vq4all import zoo
from vq4all.evaluate import quality_table, rows_to_json, rows_to_markdown, sqnr_db


def test_sqnr_known_values():
    w = {"a": np.ones((4, 4)), "b": np.full(3, 2.0)}
    assert sqnr_db(w, {k: v * 0.9 for k, v in w.items()}) == pytest.approx(20.0)  # noise = 1% of signal
    assert math.isinf(sqnr_db(w, w))


@pytest.fixture(scope="module")
def table():
    nets = {name: zoo.load(name) for name in ("digits_cnn", "mtcnn_pnet")}
    return quality_table(
        nets, ["digits_cnn"], ["digits_cnn", "mtcnn_pnet"], per_network=4000, progress=False, log=lambda s: None
    )


def test_quality_rows_for_a_real_network(table):
    rows, codebooks = table
    methods = [r.method for r in rows]
    assert methods == [
        "FP32",
        "universal 65536x8, leave-one-out",
        "universal 65536x8, all sources",
        "universal 256x4",
        "per-layer k-means 256x4",
        "RTN 2-bit per channel, MSE clip",
    ]
    fp = rows[0]
    assert fp.value == fp.fp_value and fp.extras["fp_agreement"] == 1.0
    # the leave-one-out codebook was built from mtcnn_pnet alone
    assert codebooks["u16_loo_digits_cnn"].manifest["sources"].keys() == {"mtcnn_pnet"}
    for r in rows[1:]:
        assert r.network == "digits_cnn" and r.metric == "test_accuracy"
        assert 2.0 <= r.bits_per_weight < 3.5  # codes + scales (+ per-layer codebooks for k-means)
        assert 3.0 < r.sqnr_db < 30.0
        assert 0.0 <= r.value <= 1.0
    universal = rows[1]
    # 16-bit codes per 8 weights (2 bits) + padding of ragged rows + one fp16 scale per row
    assert 2.0 < universal.bits_per_weight < 2.2


def test_table_renders(table):
    rows, _ = table
    md = rows_to_markdown(rows)
    assert md.count("\n") == len(rows) + 1 and "| digits_cnn | FP32 |" in md
    assert rows_to_json(rows)[0]["sqnr_db"] is None  # inf is not JSON


def test_evaluate_artifact_of_a_network_with_batch_norm(tmp_path):
    """crepe_tiny's leftovers include 0-d num_batches_tracked buffers: they must load back."""
    from vq4all import artifact, zoo
    from vq4all.artifact import Codebook
    from vq4all.evaluate import evaluate_artifact
    from vq4all.hard import hard_assign

    rng = np.random.default_rng(0)
    cb = Codebook(rng.integers(-127, 128, (256, 8), dtype=np.int8), np.array([1 / 40], np.float32), {})
    net = zoo.load("crepe_tiny")
    state = {k: v.numpy() for k, v in net.model.state_dict().items()}
    art = hard_assign(net.name, state, net.compressible_keys(), cb)
    assert any(v.ndim == 0 for v in art.leftovers.values())
    path = tmp_path / "crepe.safetensors"
    artifact.save_network(path, art)
    info = evaluate_artifact(net, artifact.load_network(path, cb), cb)
    assert info["metric"] == "pitch_error_cents" and np.isfinite(info["value"])
    assert info["compression_ratio"] > info["compression_ratio_with_codebook"] > 1
