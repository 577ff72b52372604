"""Block-wise reconstruction: block discovery and checks, the cache against direct computation,
training, resume, and the one-line errors for bad block lists, data and disks."""

import os
import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch
from torch import nn

from vq4all import blockwise, zoo
from vq4all.artifact import Codebook
from vq4all.blocks import BlockCache, capture_inputs, capture_outputs, check_blocks, find_blocks
from vq4all.config import CompressConfig
from vq4all.errors import VQ4AllError
from vq4all.network import Network
from vq4all.rules import BLOCKWISE_ABOVE
from vq4all.train import compress


@pytest.fixture(scope="module")
def codebook():
    rng = np.random.default_rng(0)
    return Codebook(rng.integers(-127, 128, (4096, 8), dtype=np.int8), np.array([1 / 40], np.float32), {})


class Wrapped(nn.Module):
    """A wrapper (one child with weights) around a stem, a ModuleList of two layers and a head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Module()
        self.body.stem = nn.Linear(16, 32)
        self.body.layers = nn.ModuleList([nn.Linear(32, 32), nn.Linear(32, 32)])
        self.body.head = nn.Sequential(nn.ReLU(), nn.Linear(32, 8))
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        x = torch.relu(self.body.stem(x))
        for layer in self.body.layers:
            x = torch.relu(layer(x)) + x
        return self.norm(self.body.head(x))


def _keys(model):
    return [k for k in model.state_dict() if k.endswith(".weight") and model.state_dict()[k].dim() == 2]


def test_find_blocks_opens_wrappers_and_containers():
    model = Wrapped()
    # body: the single child with weights -> opened; layers (ModuleList) and head (Sequential) opened
    assert find_blocks(model, _keys(model)) == ["body.stem", "body.layers.0", "body.layers.1", "body.head.1"]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "minilm_l6", "crepe_full"])
def test_zoo_blocks_are_checked_and_cover_every_key(name):
    net = zoo.load(name)
    keys = net.compressible_keys(8)
    plan = check_blocks(net.model, net.blocks, keys)
    assert sorted(k for held in plan.values() for k in held) == sorted(keys)  # each key in one block
    assert find_blocks(net.model, keys) == list(net.blocks)  # the automatic rule agrees


@pytest.mark.parametrize(
    "names, message",
    [
        ([], "block list is empty"),
        (["body.stm"], r"names no module of the model \(did you mean body.stem"),
        (["body.stem", "body.stem"], "listed twice"),
        (["body", "body.stem"], "overlap"),
        (["norm"], "holds no weight to compress"),
    ],
)
def test_bad_block_lists_fail_in_one_line(names, message):
    model = Wrapped()
    with pytest.raises(VQ4AllError, match=message) as e:
        check_blocks(model, names, _keys(model))
    assert "\n" not in str(e.value)


def test_cache_holds_the_teacher_outputs_and_the_students_inputs(tmp_path):
    torch.manual_seed(0)
    model = Wrapped()
    x = torch.randn(150, 16)  # 3 chunks of 64, 64, 22
    net = Network(model, calibration=x)
    plan = check_blocks(net.model, ["body.layers.0", "body.head.1"], _keys(model))
    cache = BlockCache(tmp_path / "cache")
    assert capture_outputs(net, x, plan, cache) == ["body.layers.0", "body.head.1"]
    with torch.no_grad():  # the same outputs, computed by hand
        h0 = torch.relu(model.body.stem(x))
        out0 = model.body.layers[0](h0)
        h1 = torch.relu(out0) + h0
        h2 = torch.relu(model.body.layers[1](h1)) + h1
        out1 = model.body.head[1](torch.relu(h2))
    got0 = torch.cat([cache.get(f"out.0.c{c}") for c in range(3)])
    got1 = torch.cat([cache.get(f"out.1.c{c}") for c in range(3)])
    torch.testing.assert_close(got0, out0, rtol=0, atol=0)
    torch.testing.assert_close(got1, out1, rtol=0, atol=0)

    student = net.with_weights({"body.stem.weight": torch.zeros(32, 16)})  # a changed earlier layer
    data = capture_inputs(net, student, "body.layers.0", 0, x, cache)
    assert [rows for _, _, rows in data.calls] == [64, 64, 22]
    args, kwargs, target = data.batch(torch.Generator().manual_seed(1), 32)
    assert args[0].shape == (32, 32) and kwargs == {}
    with torch.no_grad():  # the student's input: relu(0 x + bias), the same for every row
        expected = torch.relu(student.body.stem.bias).expand(32, 32)
    torch.testing.assert_close(args[0], expected, rtol=0, atol=0)
    assert any(torch.equal(target[0], row) for row in out0)  # the target rows are teacher outputs


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.b(self.a(self.a(x)))


class Skips(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.a(x)


Case = namedtuple("Case", "model blocks message")


@pytest.mark.parametrize(
    "case",
    [
        Case(Twice, ["a", "b"], "block 'a' runs more than once per forward"),
        Case(Skips, ["a", "b"], "block 'b' never runs"),
    ],
    ids=["twice", "never"],
)
def test_blocks_that_cannot_be_reconstructed_fail_before_training(case, codebook, tmp_path):
    net = Network(case.model(), calibration=torch.randn(64, 8))
    cfg = CompressConfig(mode="blockwise", blocks=tuple(case.blocks), block_steps=2, finetune_steps=0)
    with pytest.raises(VQ4AllError, match=case.message):
        compress(net, codebook, cfg, block_cache=tmp_path)
    assert list(tmp_path.iterdir()) == []  # the cache folder is removed


def test_too_little_calibration_and_a_full_disk_fail_before_training(codebook, tmp_path, monkeypatch):
    net = Network(Wrapped(), calibration=torch.randn(8, 16))
    cfg = CompressConfig(mode="blockwise", block_steps=2, finetune_steps=0)
    with pytest.raises(VQ4AllError, match="needs at least batch_size=32 calibration inputs"):
        compress(net, codebook, cfg)
    net = Network(Wrapped(), calibration=torch.randn(64, 16))
    trained = []
    monkeypatch.setattr(blockwise, "train_block", lambda *a, **k: trained.append(a))
    disk = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: disk(1 << 30, (1 << 30) - 4096, 4096))
    with pytest.raises(VQ4AllError, match=r"block cache .* needs .* GiB .* has 0.00 GiB free") as e:
        compress(net, codebook, cfg, block_cache=tmp_path / "c")
    assert "\n" not in str(e.value) and trained == []


def test_blockwise_freezes_everything_and_beats_end_to_end_on_the_same_budget(codebook):
    """On digits_cnn, a random codebook: every sub-vector frozen, one report per block (in
    forward order), and a better test accuracy than end-to-end with as many steps in all."""
    digits = zoo.load("digits_cnn")
    block = CompressConfig(mode="blockwise", block_steps=60, finetune_steps=20, calibration=256, checkpoint_every=0)
    result = compress(digits, codebook, block)
    report = result.report
    assert report["mode"] == "blockwise"
    assert [b["block"] for b in report["blocks"]] == ["conv1", "conv2", "fc1", "fc2"]
    assert report["frozen_by_pnc"] + report["forced"] == report["subvectors"]
    assert report["frozen_by_pnc"] == sum(b["frozen_by_pnc"] for b in report["blocks"])
    assert report["steps"] == 20 and report["block_steps"] == sum(b["steps"] for b in report["blocks"])
    e2e = compress(
        digits, codebook, CompressConfig(mode="end_to_end", steps=report["block_steps"] + 20, calibration=256)
    )
    accuracy = {name: digits.evaluate(r.model)["value"] for name, r in (("block", result), ("e2e", e2e))}
    assert accuracy["block"] > accuracy["e2e"]


def test_a_finetuning_pass_with_nothing_to_train_ends_cleanly(codebook):
    """Every sub-vector frozen by the blocks and lr_fp = 0: the end-to-end pass has no trainable
    tensor left; it ends at once instead of failing in backward()."""
    digits = zoo.load("digits_cnn")
    cfg = CompressConfig(
        mode="blockwise", block_steps=10, finetune_steps=5, lr_fp=0.0, calibration=64, checkpoint_every=0
    )
    result = compress(digits, codebook, cfg)
    assert (
        result.report["steps"] == 0
        and result.report["frozen_by_pnc"] + result.report["forced"] == (result.report["subvectors"])
    )
    assert 0 <= digits.evaluate(result.model)["value"] <= 1


def test_blockwise_resumes_at_the_next_block(codebook, tmp_path, monkeypatch):
    digits = zoo.load("digits_cnn")
    cfg = CompressConfig(mode="blockwise", block_steps=15, finetune_steps=5, calibration=128, checkpoint_every=0)
    straight = compress(digits, codebook, cfg)
    ckpt = tmp_path / "run.ckpt"
    real = blockwise.train_block
    calls = []

    def crash_on_third(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(blockwise, "train_block", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        compress(digits, codebook, cfg, checkpoint=ckpt)
    monkeypatch.setattr(blockwise, "train_block", real)
    resumed = compress(digits, codebook, cfg, checkpoint=ckpt, resume=True)
    assert [b["block"] for b in resumed.report["blocks"]] == ["conv1", "conv2", "fc1", "fc2"]
    for a, b in zip(resumed.artifact.layers, straight.artifact.layers):
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.scales, b.scales)


def test_auto_mode_switches_at_the_weight_threshold():
    small = Network(nn.Linear(100, 100))
    large = Network(nn.Linear(1000, BLOCKWISE_ABOVE // 1000 + 1))
    auto = CompressConfig()
    assert not blockwise.uses_blockwise(small, small.compressible_keys(8), auto)
    assert blockwise.uses_blockwise(large, large.compressible_keys(8), auto)
    assert not blockwise.uses_blockwise(large, large.compressible_keys(8), CompressConfig(mode="end_to_end"))


def test_config_rejects_bad_block_settings():
    with pytest.raises(VQ4AllError, match="mode 'layerwise' must be one of auto, blockwise, end_to_end"):
        CompressConfig(mode="layerwise")
    with pytest.raises(VQ4AllError, match="block_steps=0 must be >= 1"):
        CompressConfig(block_steps=0)
    with pytest.raises(VQ4AllError, match="finetune_steps=-1 must be >= 0"):
        CompressConfig(finetune_steps=-1)


def test_a_cache_left_by_a_killed_run_is_removed(codebook, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"vq4all-blocks-{int(dead.stdout)}-abc"
    stale.mkdir()
    (stale / "out.0.c0.npy").write_bytes(b"x" * 1000)
    alive = tmp_path / f"vq4all-blocks-{os.getppid()}-def"  # a live process's cache stays
    alive.mkdir()
    net = Network(Wrapped(), calibration=torch.randn(64, 16))
    compress(net, codebook, CompressConfig(mode="blockwise", block_steps=1, finetune_steps=0), block_cache=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]
