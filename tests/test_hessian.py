"""The "hessian" candidate search (vq4all.hessian): input second moments equal their definition
for linear, ungrouped, "same"-padded and depthwise convolutions; with uncorrelated inputs the
search is the plain one; its distances are the output error left after the rest of the row
compensates (a Schur complement computed independently); and on correlated inputs it leaves a
much smaller output error than the plain nearest codewords."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from support.toynet import Net
from vq4all.errors import VQ4AllError
from vq4all.hessian import DAMP, input_moments, sequential_candidates
from vq4all.search import candidates
from vq4all.subvectors import join, split


def codewords(k=256, d=4, seed=0):
    return np.random.default_rng(seed).standard_normal((k, d)).astype(np.float32)


def moments_of(rows: torch.Tensor) -> np.ndarray:
    """E[x x^T] of rows [N, row], float64."""
    rows = rows.double()
    return (rows.T @ rows / rows.shape[0]).numpy()


def test_moments_of_linear_and_convolutions_follow_the_definition():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),  # ungrouped: rows of 3 x 3 x 3
        torch.nn.Conv2d(4, 4, 3, padding="same", groups=4),  # depthwise: a moment per channel
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 5 * 5, 6),
    )
    x = torch.randn(7, 3, 5, 5)
    keys = ["0.weight", "1.weight", "3.weight", "3.bias"]
    with pytest.warns(UserWarning, match="no input moments for 3.bias .*the plain search codes them"):
        h = input_moments(Net(model), keys, x, 3)
    with torch.no_grad():  # in the same batches of 3, so float32 rounds the same way
        hidden = torch.cat([model[0](x[i : i + 3]) for i in range(0, 7, 3)])
        flat = torch.cat([model[:3](x[i : i + 3]) for i in range(0, 7, 3)])
    patches = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 27)  # channel-major, as the rows
    assert h["0.weight"].shape == (1, 27, 27)
    assert np.allclose(h["0.weight"][0], moments_of(patches), rtol=1e-9, atol=1e-12)
    assert h["1.weight"].shape == (4, 9, 9)
    for c in range(4):
        cols = F.unfold(hidden[:, c : c + 1], 3, padding=1).transpose(1, 2).reshape(-1, 9)
        assert np.allclose(h["1.weight"][c], moments_of(cols), rtol=1e-9, atol=1e-12)
    lin = model[3]
    tokens = []  # each batch's samples weighed by 1 / mean square of their output (bias removed)
    for i in range(0, 7, 3):
        ms = (F.linear(flat[i : i + 3], lin.weight.detach()).double() ** 2).mean(1)
        tokens.append(flat[i : i + 3].double() / ms.clamp_min(0.01 * ms.median()).sqrt()[:, None])
    # (the code subtracts the bias from the float32 output: equal to float32 rounding)
    assert np.allclose(h["3.weight"][0], moments_of(torch.cat(tokens)), rtol=1e-6, atol=1e-6)
    assert h["3.bias"] is None  # not a weight a layer multiplies by: no statistic
    assert F.conv2d.__name__ == "conv2d" and F.linear.__name__ == "linear"  # the interception is undone
    with pytest.raises(VQ4AllError, match="the model fails on its calibration inputs"):
        input_moments(Net(model), keys[:3], torch.randn(2, 5, 5, 5), 4)
    assert F.conv2d.__name__ == "conv2d"  # undone after a failure too


def test_moments_past_the_memory_bound_leave_the_plain_search(monkeypatch):
    """Once the moments held reach MAX_BYTES, later layers get None (the plain search) and the
    warning names them; the earlier ones keep theirs."""
    import vq4all.hessian as hessian

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    monkeypatch.setattr(hessian, "MAX_BYTES", 8 * 8 * 8)  # room for the first 8 x 8 float64 only
    with pytest.warns(UserWarning, match=r"no input moments for 1\.weight"):
        h = input_moments(Net(model), ["0.weight", "1.weight"], torch.randn(4, 8), 4)
    assert h["0.weight"].shape == (1, 8, 8) and h["1.weight"] is None


def test_a_linear_layers_tokens_count_by_their_relative_error():
    """Scaling a few tokens by 50 (massive activations) leaves a Linear layer's H unchanged:
    each token weighs 1 / its output's mean square, so only its direction counts."""
    torch.manual_seed(3)
    lin = torch.nn.Linear(6, 5)
    x = torch.randn(40, 6, dtype=torch.float64)
    big = x.clone()
    big[[3, 17]] *= 50.0
    h, hb = (input_moments(Net(lin.double()), ["weight"], t, 40)["weight"][0] for t in (x, big))
    assert np.allclose(h, hb, rtol=1e-9, atol=1e-12)
    assert not np.allclose(moments_of(x), moments_of(big), rtol=0.1)  # the unweighted moments change


def test_moments_see_padding_applied_before_the_call_and_conv1d():
    """A module that pads its input itself before F.conv2d (EfficientNet's static "same"
    padding) is seen through the call, not the module's input; Conv1d rows are channel-major."""

    class PadConv(torch.nn.Conv2d):
        def forward(self, x):
            return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias)

    torch.manual_seed(1)
    conv = PadConv(2, 3, 3)
    conv1 = torch.nn.Conv1d(2, 3, 4, stride=2)
    x, s = torch.randn(5, 2, 6, 6), torch.randn(5, 2, 16)
    h = input_moments(Net(conv), ["weight"], x, 2)["weight"][0]
    assert np.allclose(h, moments_of(F.unfold(F.pad(x, (1, 1, 1, 1)), 3).transpose(1, 2).reshape(-1, 18)))
    h1 = input_moments(Net(conv1), ["weight"], s, 5)["weight"][0]
    cols = s.unfold(2, 4, 2).permute(0, 2, 1, 3).reshape(-1, 8)  # [N * positions, C * kernel]
    assert np.allclose(h1, moments_of(cols), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("row", [12, 11])  # whole rows, and a ragged last sub-vector
def test_uncorrelated_inputs_give_the_plain_search(row):
    rng = np.random.default_rng(2)
    cw = codewords()
    s = split(rng.standard_normal((9, row)).astype(np.float32), 4)
    ((plain, pdist),) = candidates([s], cw, 3)
    ((hess, hdist),) = candidates([s], cw, 3, weights=[np.eye(row)[None] * 2.5])
    assert np.array_equal(plain, hess)
    assert np.allclose(hdist, pdist * (1 + DAMP) * 2.5, rtol=1e-4, atol=1e-6)  # the metric is H's scale


@pytest.mark.parametrize("ordered", [False, True])
def test_distances_are_the_error_left_after_the_rest_of_the_row_compensates(ordered):
    """For the first sub-vector coded in each row (the leftmost, or with `ordered` the one whose
    inputs carry the most energy), the reported distance of every candidate c equals min over
    the rest of the row of (w' - w)^T H (w' - w) with that sub-vector of w' = c: the Schur
    complement e^T (H_bb - H_br H_rr^-1 H_rb) e, computed here directly from the damped H."""
    rng = np.random.default_rng(3)
    cw = codewords(64, 4, seed=5)
    w = rng.standard_normal((3, 12)).astype(np.float32)
    mix = np.repeat([0.5, 1.0, 2.0], 4)[:, None] * rng.standard_normal((12, 12))  # block 2 carries the most
    h = mix @ mix.T / 12 + 0.05 * np.eye(12)
    s = split(w, 4)
    cand, dist = sequential_candidates(s, cw, 5, h[None], ordered=ordered)
    first = 2 if ordered else 0
    assert np.argmax([np.trace(h[j * 4 : j * 4 + 4, j * 4 : j * 4 + 4]) for j in range(3)]) == 2
    hd = h + DAMP * np.mean(np.diag(h)) * np.eye(12)
    b, r = np.arange(first * 4, first * 4 + 4), np.setdiff1d(np.arange(12), np.arange(first * 4, first * 4 + 4))
    schur = hd[np.ix_(b, b)] - hd[np.ix_(b, r)] @ np.linalg.solve(hd[np.ix_(r, r)], hd[np.ix_(r, b)])
    m = s.subvectors.shape[1]
    for o in range(3):
        v = s.subvectors[o, first]
        e = cw[cand[o * m + first]].astype(np.float64) - v
        want = np.einsum("ci,ij,cj->c", e, schur, e)
        assert np.allclose(dist[o * m + first], want, rtol=1e-4, atol=1e-6)
        brute = np.einsum("ci,ij,cj->c", cw - v, schur, cw - v)
        assert np.allclose(np.sort(brute)[:5], want, rtol=1e-4, atol=1e-6)  # and they are the 5 best


def test_correlated_inputs_the_search_lowers_the_output_error():
    """Smooth inputs (neighbouring positions nearly equal, as image patches): the hessian codes
    leave a much smaller output error E||(W - W_q) x||^2 on held-out inputs than the plain
    nearest codewords; the groups of a depthwise layer each follow their own moments."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((32, 16)).astype(np.float32)
    base = rng.standard_normal((4000, 1))
    x = (base + 0.1 * rng.standard_normal((4000, 16))).astype(np.float32)  # strongly correlated
    h = (x[:2000].T.astype(np.float64) @ x[:2000]) / 2000
    cw = codewords(256, 4, seed=6)
    s = split(w, 4)
    errors = []
    for weights in (None, [h[None]], [np.repeat(h[None], 32, 0)], [np.repeat(h[None], 4, 0)]):
        ((cand, _),) = candidates([s], cw, 1, weights=weights)
        wq = join(cw[cand[:, 0]].reshape(s.subvectors.shape), s.scales, s.shape, s.pad)
        errors.append(float((((w - wq) @ x[2000:].T) ** 2).mean()))
    assert errors[1] < 0.3 * errors[0], errors
    assert errors[2] == pytest.approx(errors[1], rel=1e-6) and errors[3] == pytest.approx(errors[1], rel=1e-6)


def test_bad_moments_are_one_line():
    s = split(np.ones((4, 8), np.float32), 4)
    with pytest.raises(VQ4AllError, match=r"input moments must be \[groups, 8, 8\] with groups dividing 4"):
        sequential_candidates(s, codewords(), 1, np.ones((3, 8, 8)))
    with pytest.raises(VQ4AllError, match="input moments must be"):
        sequential_candidates(s, codewords(), 1, np.ones((1, 7, 7)))


def test_hard_assignment_by_hessian_on_a_zoo_network():
    """api.hard_assign(search="hessian") on digits_cnn: the artifact records the search, every
    layer gets moments (conv1's rows too, which "activations" cannot weigh), and the codes leave
    a smaller error at the network's output than the plain ones on held-out digits."""
    from vq4all import api, zoo
    from vq4all.decode import decode_weights
    from vq4all.evaluate import numpy_weights, task_metric

    net = zoo.load("digits_cnn")
    cb = _small_codebook(net)
    plain = api.hard_assign(net, cb)
    hess = api.hard_assign(net, cb, search="hessian", calibration=128)
    assert hess.config["search"] == "hessian"
    codes = {layer.param: layer.codes for layer in plain.layers}
    assert all(not np.array_equal(layer.codes, codes[layer.param]) for layer in hess.layers)
    w = numpy_weights(net)
    ce = [task_metric(net, {**w, **decode_weights(a, cb)})["cross_entropy"] for a in (plain, hess)]
    assert ce[1] < ce[0], ce


def _small_codebook(net):
    """A 4096 x 8 universal codebook built from digits_cnn alone."""
    from vq4all.codebook import build
    from vq4all.config import CodebookConfig

    return build(CodebookConfig(networks=("digits_cnn",), k=4096, per_network=8192), {"digits_cnn": net})


def test_sequential_moments_see_the_earlier_blocks_coded():
    """search = "sequential": the first block's H is the teacher's; a later block's H is
    input_moments of the network whose earlier block holds its hard-assigned weights (assign on
    its own H, then decode), computed here independently; the teacher is left unchanged."""
    from vq4all.artifact import Codebook
    from vq4all.decode import decode_layer
    from vq4all.hard import assign
    from vq4all.hessian import sequential_moments

    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU()),
        torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh()),
        torch.nn.Linear(8, 4),
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cb = Codebook((codewords(64, 4, seed=3) * 0.5).astype(np.float16), None)
    x = torch.randn(40, 8)
    keys = ["0.0.weight", "1.0.weight", "2.weight"]
    net = Net(model)
    h = sequential_moments(net, keys, x, 16, cb)
    teacher = input_moments(net, keys, x, 16)
    assert np.array_equal(h["0.0.weight"], teacher["0.0.weight"])
    coded = Net(copy.deepcopy(model))
    weight = {"0.0.weight": model[0][0].weight.detach().numpy()}
    layer = assign(weight, cb, position_weights={"0.0.weight": teacher["0.0.weight"]})[0]
    with torch.no_grad():
        coded.model[0][0].weight.copy_(torch.from_numpy(decode_layer(layer, cb).reshape(16, 8)))
    want = input_moments(coded, ["1.0.weight"], x, 16)["1.0.weight"]
    assert np.allclose(h["1.0.weight"], want, rtol=1e-9, atol=1e-12)
    assert not np.allclose(h["1.0.weight"], teacher["1.0.weight"], rtol=1e-3)  # the coding is seen
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # the teacher is untouched
    from vq4all.importance import search_statistics

    with pytest.raises(VQ4AllError, match="sequential search .* needs the codebook"):
        search_statistics("sequential", net, keys, x, 16)
