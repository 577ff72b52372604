"""Candidates ranked by the activation-weighted distance (vq4all.importance, search.candidates with
weights): equal to a brute-force weighted argmin, equal to the plain search under uniform
weights, and closer to the layer's outputs than the plain nearest codeword when a few inputs
dominate; the input statistics have the shape and values of their definition."""

import numpy as np
import pytest
import torch

from support.toynet import Net
from vq4all.errors import VQ4AllError
from vq4all.importance import input_mean_squares, weighs
from vq4all.search import candidates
from vq4all.subvectors import join, split


def codewords(k=64, d=4, seed=0):
    return np.random.default_rng(seed).standard_normal((k, d)).astype(np.float32)


@pytest.mark.parametrize("pad_row", [12, 11])  # whole rows, and a ragged last sub-vector
def test_weighted_candidates_match_brute_force(pad_row):
    rng = np.random.default_rng(1)
    cw = codewords()
    s = split(rng.standard_normal((5, pad_row)).astype(np.float32), 4)
    h = rng.uniform(0.01, 50.0, pad_row).astype(np.float32)
    ((cand, dist),) = candidates([s], cw, 3, weights=[h])
    out, m, d = s.subvectors.shape
    hp = np.concatenate([h / h.mean(), np.zeros(m * d - pad_row)])  # padding positions weigh nothing
    for o in range(out):
        for j in range(m):
            w = hp[j * d : (j + 1) * d]
            brute = ((s.subvectors[o, j] - cw) ** 2 * w).sum(1)
            want = np.argsort(brute, kind="stable")[:3]
            got = cand[o * m + j]
            assert np.allclose(np.sort(brute[got]), np.sort(brute[want]), rtol=1e-4, atol=1e-5)
            assert np.allclose(dist[o * m + j], brute[got], rtol=1e-4, atol=1e-5)


def test_uniform_weights_give_the_plain_search_and_plain_splits_share_one():
    rng = np.random.default_rng(2)
    cw = codewords()
    a, b = (split(rng.standard_normal((6, 9)).astype(np.float32), 4) for _ in range(2))
    plain = candidates([a, b], cw, 2)
    mixed = candidates([a, b], cw, 2, weights=[np.full(9, 3.0, np.float32), None])
    assert np.array_equal(plain[0][0], mixed[0][0]) and np.array_equal(plain[1][0], mixed[1][0])
    with pytest.raises(VQ4AllError, match="position weights must be 9 finite values"):
        candidates([a], cw, 1, weights=[np.ones(8)])
    with pytest.raises(VQ4AllError, match="2 weights for 1 splits"):
        candidates([a], cw, 1, weights=[None, None])


def test_weighting_lowers_the_output_error_when_inputs_have_outliers():
    """A layer whose inputs have a few dimensions 30x larger than the rest (as in transformers):
    the weighted nearest codewords give a smaller output error E||(W - W_q) x||^2 than the plain
    nearest ones, measured on inputs the weights never saw."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    spread = np.ones(32, np.float32)
    spread[[3, 17, 30]] = 30.0
    x = rng.standard_normal((2000, 32)).astype(np.float32) * spread
    h = (x[:1000] ** 2).mean(0)
    cw = codewords(256, 4, seed=4)
    s = split(w, 4)
    errors = []
    for weights in (None, [h]):
        ((cand, _),) = candidates([s], cw, 1, weights=weights)
        wq = join(cw[cand[:, 0]].reshape(s.subvectors.shape), s.scales, s.shape, s.pad)
        errors.append(float((((w - wq) @ x[1000:].T) ** 2).mean()))
    assert errors[1] < 0.8 * errors[0], errors


def test_input_mean_squares_follow_the_definition():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 5 * 5, 6))
    depthwise = torch.nn.Conv2d(3, 3, 3, groups=3)
    x = torch.randn(10, 3, 5, 5)
    keys = ["0.weight", "3.weight", "3.bias"]
    h = input_mean_squares(Net(model), keys, x, 4)
    per_channel = (x**2).mean((0, 2, 3)).numpy()
    assert h["0.weight"].shape == (27,) and np.allclose(h["0.weight"], np.repeat(per_channel, 9), rtol=1e-5)
    with torch.no_grad():
        hidden = model[:3](x)
    assert np.allclose(h["3.weight"], (hidden**2).mean(0).numpy(), rtol=1e-5)
    assert h["3.bias"] is None  # not a weight: no statistic
    assert weighs(conv) and weighs(model[3]) and not weighs(depthwise) and not weighs(torch.nn.Embedding(4, 8))
    with pytest.raises(VQ4AllError, match="the model fails on its calibration inputs"):
        input_mean_squares(Net(model), keys, torch.randn(2, 4, 5, 5), 4)


def test_hard_assignment_by_activations_on_a_zoo_network(tmp_path):
    """api.hard_assign(search="activations") on digits_cnn: the artifact records the search;
    conv1 (one input channel: every position of its rows weighs the same) keeps the plain codes,
    the layers behind it change; a bad search is one line."""
    from vq4all import api, zoo
    from vq4all.artifact import Codebook

    net = zoo.load("digits_cnn")
    cb = Codebook(np.random.default_rng(0).integers(-127, 128, (1024, 8)).astype(np.int8), np.array([0.01], np.float32))
    plain = api.hard_assign(net, cb)
    weighted = api.hard_assign(net, cb, search="activations", calibration=64)
    assert plain.config["search"] == "plain" and weighted.config["search"] == "activations"
    codes = {layer.param: layer.codes for layer in plain.layers}
    changed = {layer.param: not np.array_equal(layer.codes, codes[layer.param]) for layer in weighted.layers}
    assert changed == {"conv1.weight": False, "conv2.weight": True, "fc1.weight": True, "fc2.weight": True}, changed
    with pytest.raises(VQ4AllError, match="search"):
        api.hard_assign(net, cb, search="fast")
