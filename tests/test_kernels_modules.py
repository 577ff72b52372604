"""VQLinear / VQConv2d against dense torch layers holding the reference-decoded weight, and
vq4all.load against the model rebuilt from reference-decoded weights on real zoo networks.

Tolerance, and why: the decoded weights are the reference's bit for bit (test_kernels checks
the decode); what differs is the float32 summation order of the product (torch's conv/linear
kernels vs a lookup matmul or an im2col matmul), about n * 2^-24 relative to the sum of
absolute products for n-term dot products; rtol 1e-4 / atol 1e-5 of outputs of order 1-10 is a
comfortable margin above that for the layers here (n <= 600).
"""

import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import vq4all  # noqa: E402
from vq4all import artifact, zoo  # noqa: E402
from vq4all.artifact import Codebook  # noqa: E402
from vq4all.errors import VQ4AllError  # noqa: E402
from vq4all.evaluate import artifact_weights  # noqa: E402
from vq4all.hard import hard_assign  # noqa: E402
from vq4all.kernels import (  # noqa: E402
    CodebookTable,
    FusedVQLinear,
    KernelArgumentError,
    VQConv2d,
    VQLinear,
    triton_support,
)

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def codebook():
    """A K=2^16, d=8 int8 codebook (random: these tests check arithmetic, not quality)."""
    rng = np.random.default_rng(0)
    return Codebook(rng.integers(-127, 128, (1 << 16, 8), dtype=np.int8), np.array([1 / 40], np.float32), {})


def random_layer(rng, out_features, row, table):
    m = -(-row // table.d)
    codes = torch.from_numpy(rng.integers(0, table.k, (out_features, m)).astype(np.uint16))
    scales = torch.from_numpy(rng.uniform(0.01, 0.05, out_features).astype(np.float16))
    return codes, scales


def triton_or_skip():
    if not triton_support.interpreting() and not torch.cuda.is_available():
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("impl", ["torch", "triton_gemv", "triton_gemm"])
def test_vq_linear_matches_linear_with_the_decoded_weight(codebook, impl):
    device = "cpu" if impl == "torch" else triton_or_skip()
    rng = np.random.default_rng(1)
    table = CodebookTable.from_codebook(codebook)
    codes, scales = random_layer(rng, 24, 45, table)  # 45 features: ragged, m = 6
    bias = torch.from_numpy(rng.standard_normal(24).astype(np.float32))
    layer = VQLinear(codes, scales, table, 45, bias, impl=impl).to(device)
    dense = torch.nn.Linear(45, 24).to(device)
    with torch.no_grad():
        dense.weight.copy_(layer.decoded_weight())
        dense.bias.copy_(bias)
    x = torch.from_numpy(rng.standard_normal((2, 2 if impl == "triton_gemv" else 9, 45)).astype(np.float32)).to(device)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense(x), rtol=RTOL, atol=ATOL)


def sibling_layers(rng, table, in_features, outs=(24, 16, 8), biases=(True, False, True), integer=False):
    """Q/K/V-like VQLinears on one input; integer=True: scales 1 (with an integer codebook, every
    output is an exact integer)."""
    layers = []
    for out_features, has_bias in zip(outs, biases):
        codes, scales = random_layer(rng, out_features, in_features, table)
        if integer:
            scales = torch.ones_like(scales)
        bias = torch.from_numpy(rng.integers(-3, 4, out_features).astype(np.float32)) if has_bias else None
        layers.append(VQLinear(codes, scales, table, in_features, bias))
    return layers


@pytest.mark.parametrize("impl", ["torch", "triton_gemv", "triton_lut", "triton_gemm"])
def test_fused_siblings_equal_the_separate_layers(impl):
    """One launch for Q, K and V: bit for bit equal to three launches on integer-exact inputs
    (a 256 x 4 codebook of small integers, scales 1, integer x); within RTOL/ATOL on float ones."""
    device = "cpu" if impl == "torch" else triton_or_skip()
    rng = np.random.default_rng(6)
    cb = Codebook(rng.integers(-3, 4, (256, 4), dtype=np.int8), np.array([1.0], np.float32), {})
    table = CodebookTable.from_codebook(cb)
    layers = sibling_layers(rng, table, 45, integer=True)
    for layer in layers:
        layer.impl = impl
    fused = VQLinear.fuse(layers)
    assert isinstance(fused, FusedVQLinear) and fused.splits == [24, 16, 8] and fused.codes.shape == (48, 12)
    fused, layers = fused.to(device), [layer.to(device) for layer in layers]
    rows = 2 if impl in ("triton_gemv", "triton_lut") else 9
    x = torch.from_numpy(rng.integers(-2, 3, (rows, 45)).astype(np.float32)).to(device)
    with torch.no_grad():
        outs = fused(x)
        assert len(outs) == 3
        for out, layer in zip(outs, layers):
            assert torch.equal(out, layer(x))
        x = torch.from_numpy(rng.standard_normal((rows, 45)).astype(np.float32)).to(device)
        for out, layer in zip(fused(x), layers):
            torch.testing.assert_close(out, layer(x), rtol=RTOL, atol=ATOL)


def test_fuse_refuses_layers_that_are_not_siblings(codebook):
    table = CodebookTable.from_codebook(codebook)
    rng = np.random.default_rng(7)
    a, b = sibling_layers(rng, table, 16, outs=(4, 4), biases=(False, False))
    (c,) = sibling_layers(rng, table, 24, outs=(4,), biases=(False,))
    with pytest.raises(KernelArgumentError, match="share in_features and their CodebookTable"):
        VQLinear.fuse([a, c])
    (d,) = sibling_layers(rng, CodebookTable.from_codebook(codebook), 16, outs=(4,), biases=(False,))
    with pytest.raises(KernelArgumentError, match="share in_features and their CodebookTable"):
        VQLinear.fuse([a, d])
    with pytest.raises(KernelArgumentError, match="expected one or more VQLinear layers"):
        VQLinear.fuse([])
    assert VQLinear.fuse([a, b]).bias is None


CONVS = {  # in_channels, out_channels, kernel, stride, padding, dilation, groups, padding_mode
    "plain": (3, 8, 3, 1, 0, 1, 1, "zeros"),  # row 27: ragged at d=8
    "strided": (4, 6, (3, 2), 2, (1, 2), (2, 1), 1, "zeros"),
    "reflect": (2, 5, 3, 1, 1, 1, 1, "reflect"),
}


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("impl", [None, "triton_gemm"])
def test_vq_conv2d_matches_conv2d_with_the_decoded_weight(codebook, name, impl):
    device = "cpu" if impl is None else triton_or_skip()
    c_in, c_out, kernel, stride, padding, dilation, groups, mode = CONVS[name]
    conv = torch.nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, padding_mode=mode)
    table = CodebookTable.from_codebook(codebook)
    rng = np.random.default_rng(2)
    row = c_in // groups * conv.kernel_size[0] * conv.kernel_size[1]
    codes, scales = random_layer(rng, c_out, row, table)
    layer = VQConv2d.from_conv(conv, codes, scales, table, impl=impl).to(device)
    conv = conv.to(device)
    with torch.no_grad():
        conv.weight.copy_(layer.decoded_weight())
        x = torch.from_numpy(rng.standard_normal((2, c_in, 9, 8)).astype(np.float32)).to(device)
        torch.testing.assert_close(layer(x), conv(x), rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(layer(x[0]), conv(x[0]), rtol=RTOL, atol=ATOL)  # unbatched input


def test_vq_conv2d_groups_decode_or_refuse(codebook):
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
    table = CodebookTable.from_codebook(codebook)
    codes, scales = random_layer(np.random.default_rng(3), 6, 2 * 9, table)
    layer = VQConv2d.from_conv(conv, codes, scales, table)
    with torch.no_grad():
        conv.weight.copy_(layer.decoded_weight())
        x = torch.randn(1, 4, 5, 5)
        torch.testing.assert_close(layer(x), conv(x), rtol=RTOL, atol=ATOL)
        layer.impl = "triton_gemm"
        with pytest.raises(KernelArgumentError, match=r"im2col, which takes groups=1 .*got groups=2"):
            layer(x)


def test_modules_check_their_codes(codebook):
    table = CodebookTable.from_codebook(codebook)
    codes, scales = random_layer(np.random.default_rng(4), 4, 16, table)
    with pytest.raises(KernelArgumentError, match=r"rows of 20 values need ceil\(20/8\) = 3 codes, got 2"):
        VQLinear(codes, scales, table, 20)
    small = CodebookTable(table.codebook[:100], table.codebook_scale)
    with pytest.raises(KernelArgumentError, match=r"codes must be < k=100"):
        VQLinear(codes, scales, small, 16)


def test_codebook_table_keeps_its_dtypes_under_casts(codebook):
    table = CodebookTable.from_codebook(codebook)
    layer = VQLinear(*random_layer(np.random.default_rng(5), 4, 16, table), table, 16)
    layer.half()
    assert table.codebook.dtype == torch.int8 and table.codebook_scale.dtype == torch.float32
    assert layer(torch.randn(3, 16, dtype=torch.float16)).dtype == torch.float16
    assert "codebook" not in " ".join(layer.state_dict())  # the codebook is its own artifact


# ----------------------------------------------------------------------------- vq4all.load
@pytest.fixture(scope="module")
def artifacts(codebook, tmp_path_factory):
    """(codebook file, artifact_of): artifact_of(name) writes the hard-assignment artifact of a
    zoo network once and returns its path. Networks used: mtcnn_pnet (Conv2d only), digits_cnn
    (Conv2d + Linear), mtcnn_rnet (Conv2d, Linear, PReLU)."""
    folder = tmp_path_factory.mktemp("artifacts")
    cb_path = folder / "codebook.safetensors"
    artifact.save_codebook(cb_path, codebook)
    paths = {}

    def artifact_of(name):
        if name not in paths:
            net = zoo.load(name)
            state = {k: v.numpy() for k, v in net.model.state_dict().items()}
            paths[name] = folder / f"{name}.safetensors"
            artifact.save_network(paths[name], hard_assign(name, state, net.compressible_keys(), codebook))
        return paths[name]

    return cb_path, artifact_of


@pytest.mark.parametrize("name", ["mtcnn_pnet", "digits_cnn", "mtcnn_rnet"])
def test_load_matches_the_reference_decoded_model(artifacts, name):
    cb_path, artifact_of = artifacts
    model = vq4all.load(artifact_of(name), codebook=cb_path)
    net = zoo.load(name)
    cb = artifact.load_codebook(cb_path)
    art = artifact.load_network(artifact_of(name), cb)
    reference = net.with_weights({k: torch.from_numpy(np.array(v)) for k, v in artifact_weights(art, cb).items()})
    vq = [m for m in model.modules() if isinstance(m, (VQLinear, VQConv2d))]
    assert len(vq) == len(art.layers)  # every compressed weight of these nets is a plain Linear/Conv2d
    assert len({id(m.table) for m in vq}) == 1  # one shared codebook
    x = net.calibration(32)
    with torch.no_grad():
        torch.testing.assert_close(net.forward(model, x), net.forward(reference, x), rtol=RTOL, atol=ATOL)


@pytest.mark.gpu
def test_loaded_model_on_cuda_runs_the_kernels(artifacts):
    """On CUDA the VQ modules take the Triton kernels (im2col for convs); same tolerance.
    digits_cnn: its zoo entry needs only scikit-learn, which GPU images tend to have."""
    cb_path, artifact_of = artifacts
    net = zoo.load("digits_cnn")
    model = vq4all.load(artifact_of("digits_cnn"), codebook=cb_path)
    x = net.calibration(32)
    with torch.no_grad():
        want = net.forward(model, x)
        got = net.forward(model.to("cuda"), x.to("cuda")).cpu()
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_load_refuses_another_codebook(artifacts, codebook, tmp_path):
    _, artifact_of = artifacts
    other = Codebook(codebook.codebook.copy(), codebook.codebook_scale * 2, {})
    with pytest.raises(VQ4AllError, match="not on the given codebook"):
        vq4all.load(artifact_of("digits_cnn"), codebook=other)
    with pytest.raises(VQ4AllError, match="pass codebook="):
        vq4all.load(artifact_of("digits_cnn"))


def test_load_decodes_weights_of_other_modules(codebook):
    """An Embedding has no VQ module: its weight is decoded densely; a missing leftover is named."""
    from vq4all.kernels.loader import build

    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"emb": torch.nn.Embedding(10, 12), "fc": torch.nn.Linear(12, 5)})
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    art = hard_assign("toy", state, ["emb.weight", "fc.weight"], codebook)
    weights = artifact_weights(art, codebook)
    built = build(model, art, codebook)
    assert isinstance(built["fc"], VQLinear) and type(built["emb"]) is torch.nn.Embedding
    np.testing.assert_array_equal(built["emb"].weight.detach().numpy(), weights["emb.weight"])
    del art.leftovers["fc.bias"]
    with pytest.raises(VQ4AllError, match=r"the model has .fc.bias. \[5\], the artifact has no such entry"):
        build(torch.nn.ModuleDict({"emb": torch.nn.Embedding(10, 12), "fc": torch.nn.Linear(12, 5)}), art, codebook)
