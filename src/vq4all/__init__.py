"""vq4all: universal-codebook neural network compression (VQ4ALL, arXiv 2412.06875).

The chain: real networks -> sub-vectors -> KDE universal codebook (frozen, int8) -> network
artifacts (codes, scales, FP leftovers) -> the numpy reference, which the Triton kernels and the
RTL are checked against. Heavy modules (torch, the zoo) are imported lazily by their users.
"""

__version__ = "0.1.0"


def load(path, codebook=None, *, impl=None):
    """A runnable torch model (eval mode, CPU) from a network artifact and its codebook.

    Compressed Linear/Conv2d layers become `vq4all.kernels.VQLinear`/`VQConv2d` (lookup
    kernels on CUDA, the torch path on CPU) sharing one codebook; other compressed weights are
    decoded into their dense modules. `codebook` is the codebook file (or Codebook) the artifact
    was built on; `impl` forces one of `vq4all.kernels.IMPLS`. Imports torch on first call only.
    """
    from vq4all.kernels.loader import load as _load

    return _load(path, codebook, impl=impl)
