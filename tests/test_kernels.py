"""lookup_matmul's implementations against the numpy reference, its dispatch and its errors.

Triton kernels run on CUDA where present (marker gpu) and otherwise on the CPU under Triton's
interpreter (TRITON_INTERPRET=1, set below before any kernel module is imported), on small shapes
with ragged rows.

Tolerance, and why: every implementation multiplies exact inputs (fp16/bf16 x, and int8/fp16
codewords, are exact in fp32, and on tensor cores the operand dtypes are chosen so they stay
exact) and accumulates in fp32, while the reference accumulates in float64. Recursive fp32
summation of n terms errs by at most about n * 2^-24 * sum_k |x_k w_k|; with n <= 200 here that
is 1.2e-5 of the absolute-product sum, so we allow 2e-5 of it. A 16-bit output adds its own
rounding: half an ulp, 2^-11 of |y| for float16 and 2^-8 for bfloat16, except that Triton's
interpreter truncates fp32 -> bf16 casts (a whole ulp, 2^-7), where CUDA rounds to nearest.
The torch path on CUDA is decode-then-cuBLAS in x's dtype: its decoded weight is rounded to
fp16/bf16 (2^-11 / 2^-8 of each |w|, so that much of the absolute-product sum again, doubled for
cuBLAS's reduced-precision split-K reductions).
"""

import os
import zlib

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from vq4all import reference  # noqa: E402
from vq4all.errors import VQ4AllError  # noqa: E402
from vq4all.kernels import (  # noqa: E402
    IMPLS,
    KernelArgumentError,
    KernelUnavailableError,
    choose_impl,
    dispatch,
    lookup_matmul,
    torch_path,
    triton_support,
)
from vq4all.kernels import args as kargs  # noqa: E402

ACC_TOL = 2e-5
OUT_EPS = {torch.float32: 0.0, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def make_case(rng, batch, out_features, in_features, k, d, codebook_dtype):
    """Numpy operands: x float32 [batch, in], codes [out, ceil(in/d)] (uint8 when k <= 256),
    codebook [k, d] (int8 + scale, or float16), scales float16 [out]. For k > 32768 a quarter of
    the codes are forced above 32767 (the int16 sign trap) and one is k - 1."""
    m = -(-in_features // d)
    codes = rng.integers(0, k, (out_features, m)).astype(np.uint8 if k <= 256 else np.uint16)
    if k > 32768:
        codes[::4] = rng.integers(32768, k, codes[::4].shape)
        codes[0, 0] = k - 1
    if codebook_dtype == "int8":
        codebook, scale = rng.integers(-128, 128, (k, d), dtype=np.int8), np.array([1 / 64], np.float32)
    else:
        codebook, scale = (rng.standard_normal((k, d)) * 0.5).astype(np.float16), None
    scales = rng.uniform(0.5, 2.0, out_features).astype(np.float16)
    x = rng.standard_normal((batch, in_features)).astype(np.float32)
    return x, codes, codebook, scales, scale


def to_torch(case, x_dtype, device):
    x, codes, codebook, scales, scale = case
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return t(x).to(x_dtype), t(codes), t(codebook), t(scales), None if scale is None else t(scale)


def check_close(
    y: torch.Tensor, x_used: torch.Tensor, case, interpreted: bool = False, weight_rounded: bool = False
) -> None:
    """y against the reference computed from the x actually passed (after its rounding to x's dtype)."""
    _, codes, codebook, scales, scale = case
    x64 = x_used.float().cpu().numpy().astype(np.float64)
    want = reference.lookup_matmul(x64, codes, codebook, scales, scale).astype(np.float64)
    weight = reference.decode(codes, codebook, scales, scale, in_features=x64.shape[1]).astype(np.float64)
    bound = np.abs(x64) @ np.abs(weight).T
    got = y.float().cpu().numpy().astype(np.float64)
    assert y.dtype == x_used.dtype and got.shape == want.shape
    err = np.abs(got - want)
    out_eps = OUT_EPS[y.dtype]
    if y.dtype == torch.bfloat16 and interpreted:
        out_eps = 2.0**-7
    acc_tol = ACC_TOL + (2 * OUT_EPS[y.dtype] if weight_rounded else 0.0)
    allowed = acc_tol * bound + out_eps * np.abs(want) + 1e-30
    worst = np.unravel_index(np.argmax(err / allowed), err.shape)
    assert (err <= allowed).all(), f"error {err[worst]:.3g} > allowed {allowed[worst]:.3g} at {worst}"


def need_launch(impl, device):
    """Triton impls on CPU need the interpreter: skipped, visibly, on a CUDA machine (where the gpu
    cases run them natively)."""
    if impl != "torch" and device == "cpu" and not triton_support.interpreting():
        pytest.skip("Triton on CPU runs only under TRITON_INTERPRET=1 (set here when CUDA is absent)")


# (batch, out_features, in_features, k, d, codebook dtype): ragged rows everywhere but one
SHAPES = {
    "u16-int8-ragged": (1, 40, 100, 1 << 16, 8, "int8"),  # m = 13, pad 4, codes >= 32768
    "u8-fp16-ragged": (3, 33, 37, 256, 4, "float16"),  # m = 10, pad 3, uint8 codes
    "u16-int8-d3": (2, 21, 50, 512, 3, "int8"),  # d not a power of two
    "u16-fp16-exact": (4, 24, 64, 4096, 8, "float16"),  # no padding
}
GEMM_BATCHES = {"u16-int8-ragged": 20, "u8-fp16-ragged": 33, "u16-int8-d3": 5, "u16-fp16-exact": 16}


# the table kernel takes k <= 256 only: it is run on the shapes it takes
IMPL_SHAPES = [(impl, name) for impl in IMPLS for name in SHAPES if impl != "triton_lut" or SHAPES[name][3] <= 256]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl, name", IMPL_SHAPES)
def test_fp32_matches_reference(device, impl, name):
    need_launch(impl, device)
    batch, out_features, in_features, k, d, cb_dtype = SHAPES[name]
    if impl not in ("triton_gemv", "triton_lut"):
        batch = GEMM_BATCHES[name] if impl == "triton_gemm" else batch
    case = make_case(np.random.default_rng(zlib.crc32(name.encode())), batch, out_features, in_features, k, d, cb_dtype)
    x, codes, codebook, scales, scale = to_torch(case, torch.float32, device)
    y = lookup_matmul(x, codes, codebook, scales, codebook_scale=scale, impl=impl)
    check_close(y, x, case)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("x_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("cb_dtype", ["int8", "float16"])
def test_half_inputs_match_reference(device, impl, x_dtype, cb_dtype):
    need_launch(impl, device)
    batch = 17 if impl == "triton_gemm" else 2
    k, d = (256, 4) if impl == "triton_lut" else (1 << 16, 8)
    case = make_case(np.random.default_rng(7), batch, 36, 45, k, d, cb_dtype)
    x, codes, codebook, scales, scale = to_torch(case, x_dtype, device)
    y = lookup_matmul(x, codes, codebook, scales, codebook_scale=scale, impl=impl)
    check_close(
        y, x, case, interpreted=impl != "torch" and device == "cpu", weight_rounded=impl == "torch" and device == "cuda"
    )


def launch_arg(kernel_fn, launch, name):
    """The runtime argument `name` of a planned launch (the kernel's non-constexpr parameters)."""
    import inspect

    runtime = [p for p in inspect.signature(kernel_fn.fn).parameters if p not in launch.constexprs]
    return dict(zip(runtime, launch.args))[name]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", ["gemv", "lut", "gemm"])
def test_split_k_matches_reference(device, kernel):
    """Reduction slices meet in the last slice's ordered sum of partials (gemv, lut) or at fp32
    atomics (gemm); ragged slices and a ragged row end included. Twice in a row: the GEMV's
    counters must be back at zero after a launch."""
    need_launch("triton_" + kernel, device)
    from vq4all.kernels import gemm, gemv, lut

    batch = 18 if kernel == "gemm" else 3
    k, d = (256, 4) if kernel == "lut" else (1 << 16, 8)
    in_features = 150 if kernel != "lut" else 75  # m = 19 codes, pad 2 (d = 8) or 1 (d = 4)
    case = make_case(np.random.default_rng(11), batch, 50, in_features, k, d, "int8")
    run = {"gemv": gemv.lookup_gemv, "lut": lut.lookup_lut, "gemm": gemm.lookup_gemm}[kernel]
    for x_dtype in (torch.float32, torch.float16):
        x, codes, codebook, scales, scale = to_torch(case, x_dtype, device)
        a = kargs.check_args(x, codes, codebook, scales, scale)
        if kernel == "gemm":
            y = run(a, split_k=3, BLOCK_J=2)  # 10 steps of 2 codes in slices of 4 steps: 4 + 4 + 2
            check_close(y, x, case)
            continue
        launch_plan = (gemv if kernel == "gemv" else lut).plan(a, split_k=3, BLOCK_J=2)
        kernel_fn = gemv._lookup_gemv_kernel if kernel == "gemv" else lut._lookup_lut_kernel
        assert launch_plan.grid[1] == 3 and launch_plan.constexprs["SPLIT"]
        first = launch_plan.run(kernel_fn).clone()
        counters = launch_arg(kernel_fn, launch_plan, "count_ptr")
        assert counters.numel() and bool((counters == 0).all())  # the last slice reset them
        check_close(first, x, case)
        assert torch.equal(launch_plan.run(kernel_fn), first)  # same workspace, same ordered sum


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
def test_strided_operands_and_an_empty_batch(device, impl):
    need_launch(impl, device)
    batch = 17 if impl == "triton_gemm" else 3
    case = make_case(np.random.default_rng(9), batch, 20, 30, 256, 4, "int8")
    x, codes, codebook, scales, scale = to_torch(case, torch.float32, device)
    x_strided = torch.zeros(batch, 60, device=device)[:, ::2]  # strides (60, 2)
    x_strided.copy_(x)
    scales_strided = scales.repeat_interleave(2)[::2]
    y = lookup_matmul(x_strided, codes, codebook, scales_strided, codebook_scale=scale, impl=impl)
    check_close(y, x, case)
    empty = lookup_matmul(x[:0], codes, codebook, scales, codebook_scale=scale, impl=impl)
    assert empty.shape == (0, 20) and empty.dtype == x.dtype
    no_features = lookup_matmul(
        torch.full((batch, 0), float("nan"), device=device),
        codes[:, :0],
        codebook,
        scales,
        codebook_scale=scale,
        impl=impl,
    )  # an empty sum is 0
    assert no_features.shape == (batch, 20) and bool((no_features == 0).all())


def test_torch_decode_is_bit_identical_to_the_reference():
    x, codes, codebook, scales, scale = make_case(np.random.default_rng(3), 1, 30, 61, 1 << 16, 8, "int8")
    got = torch_path.decode(
        torch.from_numpy(codes),
        torch.from_numpy(codebook),
        torch.from_numpy(scales),
        torch.from_numpy(scale),
        in_features=61,
    )
    want = reference.decode(codes, codebook, scales, scale, in_features=61)
    np.testing.assert_array_equal(got.numpy(), want)


def test_torch_path_decodes_in_row_blocks(monkeypatch):
    case = make_case(np.random.default_rng(4), 5, 23, 40, 256, 4, "int8")
    a = kargs.check_args(*to_torch(case, torch.float32, "cpu"))
    decoded_rows = []
    decode_into = torch_path.decode_into
    monkeypatch.setattr(
        torch_path,
        "decode_into",
        lambda weight, picked, codes, *rest, **kw: (
            decoded_rows.append(len(codes)) or decode_into(weight, picked, codes, *rest, **kw)
        ),
    )
    y = torch_path.lookup_matmul(a, block_rows=7)
    assert decoded_rows == [7, 7, 7, 2]
    check_close(y, a.x, case)


def test_dispatch_table():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_impl(cpu, 1) == "torch" and choose_impl(cpu, 4096) == "torch"
    if triton_support.triton_available():
        assert [choose_impl(cuda, m) for m in (1, 4, 5, 256, 4096)] == ["triton_gemv"] * 2 + ["triton_gemm"] * 3
    assert choose_impl(cuda, 100_000) == "torch"  # the last row matches everything
    assert {row[2] for row in dispatch.DISPATCH} == set(IMPLS) - {"triton_lut"}  # forced only (see DISPATCH)


def test_dispatch_skips_triton_when_it_is_not_installed(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    assert choose_impl(torch.device("cuda"), 1) == "torch"


def _operands():
    case = make_case(np.random.default_rng(5), 2, 6, 10, 256, 4, "int8")
    return to_torch(case, torch.float32, "cpu")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: {**a, "x": a["x"][0]}, r"^x: expected \[M, in_features\], got shape \[10\]$"),
        (lambda a: {**a, "x": a["x"].double()}, r"^x: expected dtype float16, bfloat16, float32, got float64$"),
        (
            lambda a: {**a, "x": a["x"][:, :7]},
            r"^codes: x has 7 features, so codes of d=4 need ceil\(7/4\) = 2 columns, got 3$",
        ),
        (lambda a: {**a, "codes": a["codes"].to(torch.int16)}, r"^codes: expected dtype uint8, uint16, got int16$"),
        (
            lambda a: {**a, "codebook": a["codebook"].float()[None]},
            r"^codebook: expected \[k, d\], got shape \[1, 256, 4\]$",
        ),
        (lambda a: {**a, "scales": a["scales"][:5]}, r"^scales: expected shape \[6\] \(one per code row\), got \[5\]$"),
        (lambda a: {**a, "codebook_scale": None}, r"^codebook_scale: an int8 codebook needs its scale"),
        (
            lambda a: {**a, "codebook": a["codebook"].half()},
            r"^codebook_scale: a float16 codebook holds its values; pass None$",
        ),
        (lambda a: {**a, "codebook": a["codebook"][:100]}, r"^codes: expected every code < k=100, found \d+$"),
        (
            lambda a: {**a, "impl": "cuda"},
            r"^impl: unknown 'cuda', choose one of triton_gemv, triton_lut, triton_gemm, torch",
        ),
    ],
)
def test_bad_arguments_name_the_argument(change, match):
    x, codes, codebook, scales, scale = _operands()
    a = change({"x": x, "codes": codes, "codebook": codebook, "scales": scales, "codebook_scale": scale, "impl": None})
    with pytest.raises(KernelArgumentError, match=match) as info:
        lookup_matmul(a.pop("x"), a.pop("codes"), a.pop("codebook"), a.pop("scales"), **a)
    assert isinstance(info.value, VQ4AllError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("impl", ["triton_gemv", "triton_lut"])
def test_gemv_refuses_more_rows_than_it_takes(impl):
    x, codes, codebook, scales, scale = _operands()
    with pytest.raises(KernelArgumentError, match="at most 4 rows, got 5"):
        lookup_matmul(x.repeat(3, 1)[:5], codes, codebook, scales, codebook_scale=scale, impl=impl)


def test_table_kernel_refuses_a_big_codebook():
    x, codes, codebook, scales, scale = to_torch(
        make_case(np.random.default_rng(5), 1, 6, 16, 1 << 16, 8, "int8"), torch.float32, "cpu"
    )
    with pytest.raises(KernelArgumentError, match=r"'triton_lut' takes k <= 256 and d <= 8, got k=65536"):
        lookup_matmul(x, codes, codebook, scales, codebook_scale=scale, impl="triton_lut")


def test_forcing_triton_where_it_cannot_run(monkeypatch):
    x, codes, codebook, scales, scale = _operands()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(
        KernelUnavailableError, match=r"impl 'triton_gemm' runs on CUDA tensors, got cpu tensors: .*TRITON_INTERPRET=1"
    ):
        lookup_matmul(x, codes, codebook, scales, codebook_scale=scale, impl="triton_gemm")
    monkeypatch.setattr(triton_support, "triton_available", lambda: False)
    with pytest.raises(
        KernelUnavailableError, match=r"needs triton, which is not installed: pip install 'vq4all\[kernels\]'"
    ):
        lookup_matmul(x, codes, codebook, scales, codebook_scale=scale, impl="triton_gemv")


# ----------------------------------------------------------------------------- bit for bit
def integer_case(rng, batch, out_features, in_features, k, d):
    """Operands whose every product and partial sum is a small integer (x in [-2, 2], codebook
    entries in [-3, 3], scales and codebook scale 1): exact in fp32 whatever the summation
    order, and |y| <= 6 * in_features < 256, exact in fp16 and bf16 too."""
    m = -(-in_features // d)
    codes = rng.integers(0, k, (out_features, m)).astype(np.uint8 if k <= 256 else np.uint16)
    codebook = rng.integers(-3, 4, (k, d)).astype(np.int8)
    scales = np.ones(out_features, np.float16)
    x = rng.integers(-2, 3, (batch, in_features)).astype(np.float32)
    return x, codes, codebook, scales, np.array([1.0], np.float32)


# (impl, batch, out, in, k, d, split_k, plan options): the GEMV reading codes as int64 words (one
# slice; three slices, the last of an odd number of words; uint8 codes) and as tiles (unsplit,
# split in steps of 2 columns, d = 3), the table kernel unsplit and split, the GEMM; ragged rows
EXACT = {
    "gemv-words": ("triton_gemv", 1, 40, 125, 1 << 16, 8, None, {"use_words": True}),
    "gemv-words-split": ("triton_gemv", 2, 40, 350, 1 << 16, 8, 3, {"use_words": True}),
    "gemv-words-u8": ("triton_gemv", 3, 33, 126, 256, 4, 2, {"use_words": True}),
    "gemv-tiles": ("triton_gemv", 1, 40, 37, 1 << 16, 8, None, {}),
    "gemv-tiles-split": ("triton_gemv", 3, 33, 100, 1 << 16, 8, 3, {"BLOCK_J": 2}),
    "gemv-tiles-d3": ("triton_gemv", 2, 21, 41, 512, 3, 2, {"use_words": False}),
    "lut": ("triton_lut", 1, 70, 37, 256, 4, None, {}),
    "lut-split": ("triton_lut", 4, 50, 64, 256, 4, 3, {"BLOCK_J": 2}),
    "gemm": ("triton_gemm", 20, 24, 37, 1 << 16, 8, None, {}),
}


# every x dtype on the CPU; fp16 only on a GPU, where each case is a fresh compile and the GPU
# check's pytest step has 90 s
EXACT_RUNS = [
    pytest.param("cpu", torch.float32, id="cpu-fp32"),
    pytest.param("cpu", torch.float16, id="cpu-fp16"),
    pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
    pytest.param("cuda", torch.float16, id="cuda-fp16", marks=pytest.mark.gpu),
]


@pytest.mark.parametrize("device, x_dtype", EXACT_RUNS)
@pytest.mark.parametrize("name", list(EXACT))
def test_integer_exact_inputs_match_the_torch_path_bit_for_bit(device, x_dtype, name):
    impl, batch, out_features, in_features, k, d, split, options = EXACT[name]
    need_launch(impl, device)
    case = integer_case(np.random.default_rng(zlib.crc32(name.encode())), batch, out_features, in_features, k, d)
    x, codes, codebook, scales, scale = to_torch(case, x_dtype, device)
    want = lookup_matmul(x, codes, codebook, scales, codebook_scale=scale, impl="torch")
    if split is None and not options:
        got = lookup_matmul(x, codes, codebook, scales, codebook_scale=scale, impl=impl)
    else:
        from vq4all.kernels import gemv, lut

        module, kernel_fn = (gemv, gemv._lookup_gemv_kernel) if impl == "triton_gemv" else (lut, lut._lookup_lut_kernel)
        launch = module.plan(kargs.check_args(x, codes, codebook, scales, scale), split_k=split, **options)
        if "use_words" in options:
            assert launch.constexprs["WORDS"] == options["use_words"]
        assert launch.grid[1] == (split or 1)
        got = launch.run(kernel_fn)
    assert got.dtype == want.dtype == x_dtype
    assert torch.equal(got, want), (got - want).abs().max()
    exact = x.double().cpu() @ torch.from_numpy(reference_weight(case, in_features)).T
    assert torch.equal(got.double().cpu(), exact)  # and both are the exact product


def test_the_gemv_reads_words_only_where_rows_are_whole_aligned_words():
    from vq4all.kernels import gemv

    codes = torch.zeros(5, 12, dtype=torch.uint16)  # 24-byte rows: 3 words
    assert gemv.codes_as_words(codes).shape == (5, 3)
    assert gemv.codes_as_words(torch.zeros(5, 13, dtype=torch.uint16)) is None  # 26-byte rows
    assert gemv.codes_as_words(codes.view(-1)[4:].view(-1, 4)[:14]).shape == (14, 1)  # starts 8 bytes in
    assert gemv.codes_as_words(codes.view(-1)[1:57].view(14, 4)) is None  # starts 2 bytes in
    assert gemv.codes_as_words(torch.zeros(5, 16, dtype=torch.uint8)).shape == (5, 2)


def reference_weight(case, in_features):
    _, codes, codebook, scales, scale = case
    return reference.decode(codes, codebook, scales, scale, in_features=in_features).astype(np.float64)


# ----------------------------------------------------------------------------- plans
@pytest.fixture
def fresh_plans():
    from vq4all.kernels import plans

    plans.clear()
    yield plans
    plans.clear()


TRITON_IMPLS = ["triton_gemv", "triton_lut", "triton_gemm"]


def _call(impl, x, case_t, scale_value=None):
    _, codes, codebook, scales, scale = case_t
    return lookup_matmul(
        x, codes, codebook, scales, codebook_scale=scale if scale_value is None else scale_value, impl=impl
    )


@pytest.mark.parametrize("impl", TRITON_IMPLS)
def test_plans_are_cached_per_shape_and_dtype(fresh_plans, impl):
    need_launch(impl, "cpu")
    batch = 17 if impl == "triton_gemm" else 2
    case = make_case(np.random.default_rng(21), batch, 30, 45, 256, 4, "int8")
    ops = to_torch(case, torch.float32, "cpu")
    first = _call(impl, ops[0], ops)
    assert len(fresh_plans.PLANS) == 1
    (key,) = fresh_plans.PLANS
    assert key[:6] == (impl, batch, 30, 45, 256, 4) and key[6] == torch.float32
    plan = fresh_plans.PLANS[key]
    assert torch.equal(_call(impl, ops[0], ops), first)
    assert len(fresh_plans.PLANS) == 1 and fresh_plans.PLANS[key] is plan  # reused, not rebuilt
    _call(impl, ops[0].half(), ops)  # another x dtype: another plan
    _call(impl, ops[0][:1] if impl != "triton_gemm" else ops[0][:16], ops)  # another M
    assert len(fresh_plans.PLANS) == 3
    check_close(_call(impl, ops[0], ops), ops[0], case)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("impl", TRITON_IMPLS)
def test_a_repeated_call_makes_no_host_tensor_and_allocates_only_its_output(fresh_plans, monkeypatch, impl, x_dtype):
    """What CUDA-graph capture needs, checked on the CPU: after the first call of a shape, a call
    (with a Python-float codebook scale, the case that used to build a tensor from host data per
    call) creates no tensor from host values and allocates nothing but its output."""
    need_launch(impl, "cpu")
    batch = 17 if impl == "triton_gemm" else 1
    case = make_case(np.random.default_rng(22), batch, 30, 48, 256, 4, "int8")  # 48 = 12 x 4: not ragged
    ops = to_torch(case, x_dtype, "cpu")  # fp16 x: the GEMM reads the codebook's float16 copy too
    first = _call(impl, ops[0], ops, scale_value=1 / 64)
    calls = []
    for name in ("tensor", "as_tensor", "from_numpy", "zeros", "ones", "full", "empty", "zeros_like", "empty_like"):
        original = getattr(torch, name)

        def counting(*a, _name=name, _original=original, **kw):
            calls.append(_name)
            return _original(*a, **kw)

        monkeypatch.setattr(torch, name, counting)
    second = _call(impl, ops[0], ops, scale_value=1 / 64)
    monkeypatch.undo()
    assert calls == ["empty"], calls  # the output
    assert torch.equal(second, first)
    check_close(second, ops[0], case, interpreted=True)


def test_no_cache_entry_is_made_during_capture(fresh_plans, monkeypatch):
    """Inside CUDA-graph capture a captured fill only runs at replay: a plan, codebook copy or
    scale tensor made then would hold garbage for later calls, so a first call of a shape (or a
    new codebook or scale) refuses with one line, and a warmed-up one runs. (Capture is
    simulated on the CPU here; tests marked gpu capture for real.)"""
    need_launch("triton_gemv", "cpu")
    case = make_case(np.random.default_rng(24), 1, 20, 32, 4096, 8, "int8")
    x, codes, codebook, scales, _ = to_torch(case, torch.float32, "cpu")
    warm = lookup_matmul(x, codes, codebook, scales, codebook_scale=0.25, impl="triton_gemv")
    monkeypatch.setattr(kargs, "capturing", lambda device: True)
    with pytest.raises(kargs.CaptureWarmupError, match=r"^lookup_matmul: the triton_gemv plan of this shape"):
        lookup_matmul(x.repeat(2, 1), codes, codebook, scales, codebook_scale=0.25, impl="triton_gemv")  # M = 2
    with pytest.raises(kargs.CaptureWarmupError, match=r"the tensor of codebook scale 0.5 would be made inside"):
        lookup_matmul(x, codes, codebook, scales, codebook_scale=0.5, impl="triton_gemv")
    with pytest.raises(kargs.CaptureWarmupError, match=r"the float16 copy of this codebook"):
        lookup_matmul(x, codes, codebook.clone(), scales, codebook_scale=0.25, impl="triton_gemv")
    again = lookup_matmul(x, codes, codebook, scales, codebook_scale=0.25, impl="triton_gemv")
    assert torch.equal(again, warm)


def test_the_codebook_copy_follows_the_codebook(fresh_plans):
    """The GEMV reads a cached float16 copy of the codebook: an in-place change of the codebook,
    or another codebook, must not be served the old copy."""
    need_launch("triton_gemv", "cpu")
    case = make_case(np.random.default_rng(23), 1, 20, 32, 4096, 8, "int8")
    x, codes, codebook, scales, scale = to_torch(case, torch.float32, "cpu")
    lookup_matmul(x, codes, codebook, scales, codebook_scale=scale, impl="triton_gemv")
    copy = fresh_plans.kernel_codebook(codebook)
    assert copy.dtype == torch.float16 and torch.equal(copy.float(), codebook.float())
    assert fresh_plans.kernel_codebook(codebook, torch.bfloat16).dtype == torch.bfloat16  # another entry
    assert fresh_plans.kernel_codebook(codebook) is copy  # cached
    codebook.mul_(-1)  # in place (the numpy codebook of `case` shares its memory): the version moves
    check_close(lookup_matmul(x, codes, codebook, scales, codebook_scale=scale, impl="triton_gemv"), x, case)
    assert fresh_plans.kernel_codebook(codebook) is not copy


@pytest.mark.gpu
@pytest.mark.parametrize(
    "impl, batch, k, d",
    [
        ("triton_gemv", 1, 1 << 16, 8),
        ("triton_gemv", 4, 256, 4),
        ("triton_lut", 1, 256, 4),
        ("triton_gemm", 16, 1 << 16, 8),
    ],
)
def test_cuda_graph_replays_match_eager_calls(fresh_plans, impl, batch, k, d):
    """lookup_matmul captured in a CUDA graph (after a warm-up call on a side stream, as PyTorch's
    CUDA-graph recipe does, with a Python-float codebook scale) replays to the eager result for
    new x; 1000 x 2000 is split-K on any GPU. The GEMV and the table kernel sum their slices in a
    fixed order, so replay and eager agree bit for bit."""
    rng = np.random.default_rng(31)
    case = make_case(rng, batch, 1000, 2000, k, d, "int8")
    x, codes, codebook, scales, _ = to_torch(case, torch.float16, "cuda")
    call = lambda t: lookup_matmul(t, codes, codebook, scales, codebook_scale=1 / 64, impl=impl)  # noqa: E731
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        call(static_x)  # warm-up: compiles and plans
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = call(static_x)
    fresh = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32)).to("cuda", torch.float16)
    static_x.copy_(fresh)
    graph.replay()
    torch.cuda.synchronize()
    eager = call(fresh)
    if impl == "triton_gemm":
        torch.testing.assert_close(static_y, eager, rtol=2e-3, atol=2e-3)  # fp32 atomics: any order
    else:
        assert torch.equal(static_y, eager)
    graph.replay()  # again: the split-K counters were left at zero
    assert torch.equal(static_y, call(fresh)) or impl == "triton_gemm"
