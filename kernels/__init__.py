"""Triton codebook-lookup GEMV/GEMM kernels (imported as `vq4all.kernels`).

The kernels themselves arrive with the kernels issue; until then the numpy reference
(`vq4all.reference.lookup_matmul`) is the only implementation of y = x @ decode(codes)^T.
"""
