"""`lookup_matmul`: one entry point, a small dispatch table by device and M.

    y = x @ decode(codes, codebook, scales)^T

The table is read top to bottom and the first matching row wins; its last row (the torch
decode-then-matmul path) matches everything, so every device has an implementation. `impl=`
forces one row's implementation (tests, benches). Triton rows are skipped, never failed, when
triton is not installed.
"""

from __future__ import annotations

import torch

from .args import KernelArgumentError, LookupArgs, check_args
from .triton_support import require_triton, triton_available

IMPLS = ("triton_gemv", "triton_gemm", "torch")

# (device type or None for any, largest M or None for any, implementation)
DISPATCH = (
    ("cuda", 4, "triton_gemv"),  # memory-bound: CUDA-core multiply-reduce, split-K to fill the SMs
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
    """Run one implementation on checked arguments."""
    if impl == "torch":
        from . import torch_path

        return torch_path.lookup_matmul(args)
    require_triton(impl, args.device)
    if impl == "triton_gemv":
        from . import gemv

        if args.batch > gemv.MAX_M:
            raise KernelArgumentError(
                f"x: impl 'triton_gemv' takes at most {gemv.MAX_M} rows, got {args.batch}; "
                "use 'triton_gemm' or impl=None"
            )
        return gemv.lookup_gemv(args)
    from . import gemm

    return gemm.lookup_gemm(args)
