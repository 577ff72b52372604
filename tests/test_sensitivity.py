"""benches/sensitivity.py: layer groups and the metric with one group coded at a time.

Expectations come from the library's own public path, taken independently of the bench: a plain
hard assignment (deterministic), decoded through the reference, put into the FP model for the
keys of one group only, and evaluated by the network's own task.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from support.scripts import load_script
from vq4all import api, zoo
from vq4all.artifact import save_codebook
from vq4all.codebook import build
from vq4all.config import CodebookConfig
from vq4all.decode import decode_weights
from vq4all.evaluate import task_metric


def load_bench():
    return load_script(Path(__file__).resolve().parents[1] / "benches" / "sensitivity.py", "sensitivity")


@pytest.mark.parametrize(
    "key, group",
    [
        ("_blocks.3._depthwise_conv.weight", "_blocks.#._depthwise_conv"),
        ("encoder.layer.5.attention.self.query.weight", "encoder.layer.#.attention.self.query"),
        ("_fc.weight", "_fc"),
        ("features.3.weight", "features.3"),  # a Sequential's layer index names the layer
        ("rnn.weight_ih_l0", "rnn.weight_ih_l0"),
    ],
)
def test_groups_replace_block_indices_only(key, group):
    assert load_bench().group_of(key) == group


def test_each_group_alone_matches_an_independent_evaluation(tmp_path, monkeypatch):
    bench = load_bench()
    net = zoo.load("digits_cnn")
    cb = build(CodebookConfig(networks=("digits_cnn",), k=1024, per_network=8192), {"digits_cnn": net})
    save_codebook(tmp_path / "cb.safetensors", cb)
    out = tmp_path / "out"
    args = ["--codebook", str(tmp_path / "cb.safetensors"), "--networks", "digits_cnn", "--search", "plain"]
    assert bench.main([*args, "--out", str(out)]) == 0
    (res,) = json.loads((out / "sensitivity.json").read_text())
    decoded = decode_weights(api.hard_assign(net, cb), cb)
    # digits_cnn has no repeated blocks: one group per layer, covering every coded weight once
    assert [g["group"] for g in res["groups"]] == ["conv1", "conv2", "fc1", "fc2"]
    assert sum(g["weights"] for g in res["groups"]) == sum(v.size for v in decoded.values())
    assert np.isclose(sum(g["share"] for g in res["groups"]), 1.0)
    for g in res["groups"]:
        key = g["group"] + ".weight"
        alone = task_metric(net, {key: decoded[key]})["value"]
        all_but = task_metric(net, {k: v for k, v in decoded.items() if k != key})["value"]
        assert g["alone"]["value"] == pytest.approx(alone, abs=1e-9)
        assert g["all_but"]["value"] == pytest.approx(all_but, abs=1e-9)
    assert res["all"]["value"] == pytest.approx(task_metric(net, decoded)["value"], abs=1e-9)
    assert (out / "sensitivity.md").read_text().count("| `conv") == 2
    assert (out / "sensitivity.png").stat().st_size > 0

    # a rerun keeps the measured network instead of measuring it again
    monkeypatch.setattr(bench, "measure", lambda *a: pytest.fail("re-measured a kept network"))
    assert bench.main([*args, "--out", str(out)]) == 0


def test_the_sequential_search_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        load_bench().main(["--codebook", str(tmp_path / "cb.safetensors"), "--search", "sequential"])
