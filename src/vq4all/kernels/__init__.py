"""Codebook-lookup GEMV/GEMM kernels and inference modules (imported as `vq4all.kernels`).

    from vq4all.kernels import lookup_matmul, IMPLS
    y = lookup_matmul(x, codes, codebook, scales, codebook_scale=s)   # x @ decode(...)^T
    y = lookup_matmul(..., impl="triton_gemm")                        # force one of IMPLS

Files: dispatch.py (the entry point and its table), args.py (argument checks), torch_path.py
(decode-then-matmul: the CPU path and the last dispatch row), gemv.py, lut.py (the table GEMV
for k <= 256) and gemm.py (one Triton kernel each), plans.py (per-shape launch plans, cached:
repeated calls are CUDA-graph capturable), triton_support.py (lazy import, heuristics),
modules.py (VQLinear, FusedVQLinear for sibling layers, VQConv2d and the shared CodebookTable),
loader.py (an artifact into a model of its architecture: `build`). Triton is imported only when
a Triton implementation first runs, so this package imports without it. Every implementation is checked
against `vq4all.reference.lookup_matmul`.
"""

from .args import KernelArgumentError
from .dispatch import DISPATCH, IMPLS, choose_impl, lookup_matmul
from .modules import CodebookTable, FusedVQLinear, VQConv2d, VQLinear
from .torch_path import decode
from .triton_support import KernelUnavailableError

__all__ = [
    "lookup_matmul",
    "IMPLS",
    "DISPATCH",
    "choose_impl",
    "decode",
    "CodebookTable",
    "VQLinear",
    "FusedVQLinear",
    "VQConv2d",
    "KernelArgumentError",
    "KernelUnavailableError",
]
