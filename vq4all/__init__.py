"""vq4all: universal-codebook neural network compression (VQ4ALL, arXiv 2412.06875).

The chain: real networks -> sub-vectors -> KDE universal codebook (frozen, int8) -> network
artifacts (codes, scales, FP leftovers) -> the numpy reference, which the Triton kernels and the
RTL are checked against. Heavy modules (torch, the zoo) are imported lazily by their users.
"""

__version__ = "0.1.0"
