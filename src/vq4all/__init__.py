"""vq4all: universal-codebook neural network compression (VQ4ALL, arXiv 2412.06875).

    import vq4all
    codebook = vq4all.load_codebook("codebook.safetensors")
    student = vq4all.compress(model, calibration, codebook)   # any torch.nn.Module
    vq4all.save(student, "model.safetensors")
    model = vq4all.load("model.safetensors", codebook, model=model)

The chain: real networks -> sub-vectors -> KDE universal codebook (frozen, int8) -> network
artifacts (codes, scales, FP leftovers) -> the numpy reference, which the Triton kernels and the
RTL are checked against. The names below are imported on first use, so `import vq4all` (and the
torch-free hardware side, `vq4all.hw`) never imports torch.
"""

from .errors import ArtifactError, VQ4AllError

__version__ = "0.1.0"

# public name -> module that defines it (imported on first attribute access)
_LAZY = {
    "compress": "vq4all.api",
    "hard_assign": "vq4all.api",
    "save": "vq4all.api",
    "load": "vq4all.api",
    "Network": "vq4all.network",
    "CompressConfig": "vq4all.config",
    "CodebookConfig": "vq4all.config",
    "Codebook": "vq4all.artifact",
    "NetworkArtifact": "vq4all.artifact",
    "load_codebook": "vq4all.artifact",
    "load_network": "vq4all.artifact",
    "save_codebook": "vq4all.artifact",
}

__all__ = ["VQ4AllError", "ArtifactError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vq4all' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
