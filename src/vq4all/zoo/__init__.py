"""The zoo: real pretrained networks that load offline, each with a real task metric.

    from vq4all import zoo
    net = zoo.load("crepe_tiny")          # a ZooNetwork (cached per process)
    w = net.compressible()                # {state-dict key: float32 weight}
    model = net.with_weights(w)           # a new model with those weights
    net.evaluate(model)                   # {"metric": "pitch_error_cents", "value": ..., ...}
    net.forward(model, net.calibration(8))  # distillation output, gradients flow

Networks (ZOO.md): EfficientNet-Lite0, all-MiniLM-L6-v2, CREPE tiny/full, Silero VAD v6,
MTCNN P/R/O-Net, and digits_cnn (a small CNN trained here on sklearn's digits and cached).
Importing this package is cheap (no torch): each family's module and its packages load on
first use.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from vq4all.errors import VQ4AllError

if TYPE_CHECKING:
    from vq4all.zoo.base import ZooNetwork

NAMES: tuple[str, ...] = (
    "efficientnet_lite0",
    "minilm_l6",
    "crepe_tiny",
    "crepe_full",
    "silero_vad",
    "mtcnn_pnet",
    "mtcnn_rnet",
    "mtcnn_onet",
    "digits_cnn",
)

# name -> (module, class, constructor args)
_REGISTRY = {
    "efficientnet_lite0": ("efficientnet", "EfficientNetLite0", ()),
    "minilm_l6": ("minilm", "MiniLM", ()),
    "crepe_tiny": ("crepe", "Crepe", ("tiny",)),
    "crepe_full": ("crepe", "Crepe", ("full",)),
    "silero_vad": ("silero", "SileroVAD", ()),
    "mtcnn_pnet": ("mtcnn", "MTCNNNet", ("pnet",)),
    "mtcnn_rnet": ("mtcnn", "MTCNNNet", ("rnet",)),
    "mtcnn_onet": ("mtcnn", "MTCNNNet", ("onet",)),
    "digits_cnn": ("digits", "DigitsCNN", ()),
}

__all__ = ["NAMES", "ZooNetwork", "load", "list_networks"]


@functools.cache
def load(name: str) -> ZooNetwork:
    """The zoo network `name` (one of NAMES), loaded once per process.

    Leaves torch's global RNG as it was. Raises VQ4AllError for an unknown name or a missing
    package.
    """
    if name not in _REGISTRY:
        raise VQ4AllError(f"unknown network '{name}': choose one of {', '.join(NAMES)}")
    import torch

    module, cls, args = _REGISTRY[name]
    mod = importlib.import_module(f"vq4all.zoo.{module}")
    with torch.random.fork_rng(devices=[]):  # building modules draws init weights from the RNG
        return getattr(mod, cls)(*args)


def list_networks() -> list[dict]:
    """One dict per network, in NAMES order:
    {"name", "parameters", "compressible_parameters", "metric"} (loads each network once)."""
    rows = []
    for name in NAMES:
        net = load(name)
        rows.append(
            {
                "name": name,
                "parameters": net.num_parameters(),
                "compressible_parameters": net.num_compressible(),
                "metric": net.metric,
            }
        )
    return rows


def __getattr__(name):
    # ZooNetwork is imported on first use, so that `import vq4all.zoo` does not import torch.
    if name == "ZooNetwork":
        from vq4all.zoo.base import ZooNetwork

        return ZooNetwork
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
