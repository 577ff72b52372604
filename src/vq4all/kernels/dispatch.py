"""`lookup_matmul`: one entry point, a small dispatch table by device and M.

    y = x @ decode(codes, codebook, scales)^T

The table is read top to bottom and the first matching row wins; its last row (the torch
decode-then-matmul path) matches everything, so every device has an implementation. `impl=`
forces one row's implementation (tests, benches). Triton rows are skipped, never failed, when
triton is not installed.

The Triton implementations run through cached per-shape plans (`plans.py`): after the first
call of a shape, a call makes no tensor from host data and allocates only its output, so it
can be captured in a CUDA graph.
"""

from __future__ import annotations

import torch

from .args import KernelArgumentError, LookupArgs, check_args
from .triton_support import require_triton, triton_available

MAX_GEMV_M = 4  # gemv.MAX_M and lut's (not imported here: they import triton)

IMPLS = ("triton_gemv", "triton_lut", "triton_gemm", "torch")

# (device type or None for any, largest M or None for any, implementation)
DISPATCH = (
    ("cuda", 4, "triton_gemv"),  # memory-bound: CUDA-core multiply-add, split-K to fill the SMs
    # (triton_lut, the table kernel for k <= 256, is not a row: in the sm_90 proxy its tl.gather
    # costs more per weight than decoding (docs/gpu.md); impl='triton_lut' runs it, and the GPU
    # check times it against the GEMV)
    ("cuda", 4096, "triton_gemm"),  # decode fused into tensor-core tiles
    (None, None, "torch"),  # CPU path; on CUDA above 4096 rows one decode + cuBLAS amortises
)  # (the 4 and 4096 thresholds are untuned starting points)


def choose_impl(device: torch.device, batch: int) -> str:
    """The implementation the dispatch table picks for `batch` rows of x on `device`."""
    for device_type, max_batch, impl in DISPATCH:
        if device_type is not None and device_type != device.type:
            continue
        if max_batch is not None and batch > max_batch:
            continue
        if impl.startswith("triton") and not triton_available():
            continue
        return impl
    raise AssertionError("the last row of DISPATCH matches everything")


def lookup_matmul(
    x: torch.Tensor,
    codes: torch.Tensor,
    codebook: torch.Tensor,
    scales: torch.Tensor,
    *,
    codebook_scale=None,
    impl: str | None = None,
) -> torch.Tensor:
    """y = x @ decode(codes, codebook, scales)^T: [M, out_features] in x's dtype.

    x: [M, in_features] float16, bfloat16 or float32.
    codes: [out_features, ceil(in_features / d)] uint8 (k <= 256) or uint16; row o of the weight
        is codebook[codes[o, 0]], ..., codebook[codes[o, -1]] concatenated and cut to
        in_features (a ragged row's last codeword is zero-padded).
    codebook: [k, d] int8 (value = codebook * codebook_scale), or float16/float32 (value = codebook).
    scales: [out_features] float16/float32, multiplies row o.
    codebook_scale: the int8 codebook's scale (float, or a one-element tensor); None otherwise.
    impl: None (dispatch table) or one of IMPLS.

    Accumulation is fp32 in every implementation. Raises KernelArgumentError (a one-line
    VQ4AllError/ValueError) for a bad argument or an unknown impl, KernelUnavailableError when a
    forced Triton impl cannot run here.
    """
    args = check_args(x, codes, codebook, scales, codebook_scale)
    if impl is None:
        impl = choose_impl(args.device, args.batch)
    elif impl not in IMPLS:
        raise KernelArgumentError(f"impl: unknown '{impl}', choose one of {', '.join(IMPLS)} (or None to dispatch)")
    return run(impl, args)


def run(impl: str, args: LookupArgs) -> torch.Tensor:
    """Run one implementation on checked arguments (Triton ones through their cached plan)."""
    if impl == "torch":
        from . import torch_path

        return torch_path.lookup_matmul(args)
    require_triton(impl, args.device)
    if impl in ("triton_gemv", "triton_lut") and args.batch > MAX_GEMV_M:
        raise KernelArgumentError(
            f"x: impl '{impl}' takes at most {MAX_GEMV_M} rows, got {args.batch}; use 'triton_gemm' or impl=None"
        )
    if impl == "triton_lut" and (args.k > 256 or args.d > 8):
        raise KernelArgumentError(
            f"codebook: impl 'triton_lut' takes k <= 256 and d <= 8, got k={args.k}, d={args.d}; use 'triton_gemv'"
        )
    from .plans import plan_for

    return plan_for(impl, args).launch(args)
