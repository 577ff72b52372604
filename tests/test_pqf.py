"""The per-layer k-means baseline fine-tuned by distillation."""

import numpy as np
import pytest
import torch

from vq4all import zoo
from vq4all.config import CompressConfig
from vq4all.pqf import finetune_kmeans, kmeans_


@pytest.fixture(scope="module")
def digits():
    return zoo.load("digits_cnn")


def test_kmeans_weights_are_codewords_of_their_own_layer(digits):
    model = digits.with_weights({})
    params = kmeans_(model, ["fc2.weight"], k=16, d=4)
    p = params["fc2.weight"]
    w = model.fc2.weight.detach()
    rows = (w / p.scales[:, None]).reshape(-1, 4)
    codebook = p.used_codebook().detach()
    # every sub-vector of the layer is (up to its row scale) one of its 16 codewords
    dist = torch.cdist(rows, codebook).min(1).values
    assert float(dist.max()) < 1e-5
    assert p.stored_bits() == 10 * 16 * 4 + 10 * 16 + 16 * 4 * 16  # codes at 4 bits, fp16 scales, fp16 codebook


def test_finetuning_trains_the_codebooks_and_keeps_the_budget(digits):
    state, stored, report = finetune_kmeans(digits, CompressConfig(steps=40, calibration=64))
    assert report["steps"] == 40
    assert set(state) == set(digits.model.state_dict())
    count = sum(w.numel() for w in digits.compressible().values())
    assert 2.0 < stored / count < 4.0  # 2 bits of codes + scales + 256x4 fp16 codebooks per layer
    before, _, _ = finetune_kmeans(digits, CompressConfig(steps=1, calibration=64, lr=0.0, lr_fp=0.0))
    assert not np.allclose(state["fc1.weight"], before["fc1.weight"])  # the codewords moved


def test_blockwise_finetuning_reports_every_block(digits):
    """The k-means baseline trains in the same mode as vq4all and reports its blocks the same way
    (the compress table's budget column reads them): without PNC every block runs block_steps."""
    cfg = CompressConfig(mode="blockwise", block_steps=3, finetune_steps=2, calibration=64)
    _, _, report = finetune_kmeans(digits, cfg)
    assert report["mode"] == "blockwise"
    assert [b["block"] for b in report["blocks"]] == ["conv1", "conv2", "fc1", "fc2"]
    assert [b["steps"] for b in report["blocks"]] == [3, 3, 3, 3]
    assert report["block_steps"] == 12 and report["steps"] == 2
