"""Integer inference (vq4all.integer) of digits_cnn on a small codebook (k=256, d=4): the host
operations against torch, every layer's integer outputs against an independent computation
(torch's conv/linear in float64 on the same int8 values, exact below 2^53, and the requant
formula written out), the task metric against the float compressed model, and the one-line
errors for what the executor does not run."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vq4all import zoo
from vq4all.artifact import Codebook
from vq4all.codebook import build as build_codebook
from vq4all.config import CodebookConfig
from vq4all.errors import VQ4AllError
from vq4all.evaluate import evaluate_artifact
from vq4all.hard import hard_assign
from vq4all.integer import CompressedLayer, IntegerBackend, build, compare, eval_task
from vq4all.integer.layers import quantize
from vq4all.integer.networks import Builder, recipe
from vq4all.integer.ops import MaxPool, im2col
from vq4all.zoo import data


@pytest.fixture(scope="module")
def digits():
    """(net, artifact, codebook, integer model): digits_cnn hard-assigned to a k=256, d=4
    codebook built from it, calibrated on 64 inputs."""
    net = zoo.load("digits_cnn")
    cb = build_codebook(CodebookConfig(networks=("digits_cnn",), k=256, d=4), {"digits_cnn": net})
    state = {k: v.numpy() for k, v in net.model.state_dict().items()}
    art = hard_assign(net.name, state, net.compressible_keys(4), cb)
    return net, art, cb, build(net, art, cb, calibration=64)


@pytest.mark.parametrize(
    "kernel,stride,padding,dilation", [((3, 3), (1, 1), (1, 1), (1, 1)), ((5, 1), (4, 1), (2, 0), (2, 1))]
)
def test_im2col_is_torch_unfold(kernel, stride, padding, dilation):
    x = np.random.default_rng(0).integers(-127, 128, (2, 3, 11, 7)).astype(np.int8)
    cols, (ho, wo) = im2col(x, kernel, stride, padding, dilation)
    want = F.unfold(torch.from_numpy(x).double(), kernel, dilation=dilation, padding=padding, stride=stride)
    assert np.array_equal(cols.reshape(2, ho * wo, -1), want.numpy().transpose(0, 2, 1))


@pytest.mark.parametrize(
    "kernel,stride,ceil_mode", [(3, 2, True), (2, 2, True), (2, 2, False), ((2, 1), (2, 1), False)]
)
def test_max_pool_is_torch(kernel, stride, ceil_mode):
    x = np.random.default_rng(1).standard_normal((2, 3, 21, 10))
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    got = MaxPool("p", pair(kernel), pair(stride), ceil_mode=ceil_mode)(x)
    want = F.max_pool2d(torch.from_numpy(x), kernel, stride, ceil_mode=ceil_mode).numpy()
    assert np.array_equal(got, want)


def _requant(acc, mult, shift):
    """reference.requantize written out in int64 numpy (exact: |acc * mult| < 2^47 here)."""
    y = (acc.astype(np.int64) * mult.astype(np.int64)[None, :] + (1 << (shift - 1))) >> shift
    return np.clip(y, -128, 127)


def test_every_layer_is_exact_integer_arithmetic(digits):
    """Walk the steps by hand on 3 test digits: each compressed layer's integer outputs equal
    torch's conv2d/linear in float64 on the int8-quantised input and the integer codeword
    weights, then the requant formula (hidden layers) — and the model's own forward equals
    this walk."""
    net, art, cb, model = digits
    inputs = data.digits_split()[2][:3].astype(np.float64)
    backend = IntegerBackend(record=True)
    y = inputs
    seen = []
    for step in model.steps:
        if isinstance(step, CompressedLayer):
            q = torch.from_numpy(quantize(y, step.x_scale).astype(np.float64))
            w_int = cb.codebook.astype(np.float64)[step.codes.astype(np.int64)].reshape(step.rows, -1)
            w_int = torch.from_numpy(w_int[:, : step.in_features])
            if step.conv is not None:
                w = w_int.reshape(step.rows, -1, *step.conv.kernel)
                acc = F.conv2d(q, w, stride=step.conv.stride, padding=step.conv.padding)
                acc = acc.permute(0, 2, 3, 1).reshape(-1, step.rows).numpy()
            else:
                acc = (q.reshape(len(q), -1) @ w_int.T).numpy()
            want = _requant(acc, step.multipliers, step.shift) if step.output == "requant" else acc
            y = step(y, backend)
            (_, got), *_ = backend.records[step.name]
            assert got.dtype == (np.int8 if step.output == "requant" else np.int32)
            assert np.array_equal(got.astype(np.int64), want.astype(np.int64)), step.name
            seen.append((step.name, step.output))
        else:
            y = step(y, backend)
    assert seen == [("conv1", "requant"), ("conv2", "requant"), ("fc1", "requant"), ("fc2", "int32")]
    assert np.array_equal(model.forward(inputs, IntegerBackend()), y)


def test_metric_close_to_float_compressed(digits):
    """On all 450 test digits: the numpy float compressed model scores what the torch model
    rebuilt from the artifact scores (one digit of slack for float32 vs float64 near-ties),
    and the integer model stays within 2 points of it: int8 activations move only logits
    near a tie (measured: 0.2 points on this codebook, 0 on the universal k=65536 one)."""
    net, art, cb, model = digits
    result = compare(net, model, task=eval_task(net, *data.digits_split()[2:]))
    assert result["inputs"] == 450
    assert abs(result["float"] - evaluate_artifact(net, art, cb)["value"]) <= 1 / 450
    assert abs(result["fp"] - net.fp_value) <= 1 / 450
    assert abs(result["integer"] - result["float"]) <= 0.02
    assert result["integer_vs_float"] >= 0.97  # same predicted class on >= 97 % of the digits


def test_unsupported_module_is_one_line():
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Tanh())
    builder = Builder("toy", model, {}, {}, {}, None)
    with pytest.raises(VQ4AllError, match=r"module '1' is a Tanh, which the integer executor does not run") as e:
        builder.step("1")
    assert "\n" not in str(e.value)
    grouped = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(VQ4AllError, match=r"module '0' is a Conv2d with groups=2"):
        Builder("toy", grouped, {}, {}, {}, None).step("0")
    with pytest.raises(VQ4AllError, match=r"no recipe for 'silero_vad': it runs digits_cnn, crepe_tiny, mtcnn_onet"):
        recipe("silero_vad")


def test_wrong_artifact_or_codebook_is_one_line(digits):
    net, art, cb, _ = digits
    with pytest.raises(VQ4AllError, match=r"holds network 'digits_cnn', not 'mtcnn_onet'"):
        build(zoo.load("mtcnn_onet"), art, cb)
    other = Codebook(cb.codebook[::-1], cb.codebook_scale)
    with pytest.raises(VQ4AllError, match=r"the artifact was built on codebook"):
        build(net, art, other)
