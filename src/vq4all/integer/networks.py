"""The networks the integer executor runs, written out step by step (no tracer).

Each recipe lists a zoo network's forward pass as it is written in its torch source: the modules
by name, in order, with the functional operations between them (F.relu, F.pad, F.max_pool2d,
permutes, flattening). `module_step` turns one module into a step by its type; a module type it
does not know is a one-line VQ4AllError naming the module. Supported: digits_cnn, crepe_tiny,
mtcnn_onet (`RECIPES`).

torch is used here only to read the model's structure (module types and their geometry); every
number a step holds comes from the `params` dict (numpy) the caller gives: the artifact's FP
leftovers for the compressed model, the model's own state for the FP one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vq4all.errors import VQ4AllError, printable

from .layers import CompressedLayer, ConvGeometry
from .ops import BatchNorm, Heads, MaxPool, Pad, Permute, PRelu, Relu, Reshape, Sigmoid, Softmax

MODULE_TYPES = "Conv2d (groups=1, zero padding), Linear, BatchNorm2d, ReLU, PReLU, MaxPool2d, Softmax, Sigmoid"


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


class Builder:
    """Turns modules of `model` (a torch.nn.Module) into steps.

    params: {state-dict key: np.ndarray} for biases, norms and PReLU slopes; weights:
    {weight key: [rows, in_features] float32} (decoded or FP); layers: {weight key: LayerCodes}
    of the artifact (empty for the FP model); codebook: the int8 artifact.Codebook (None for FP).
    `used` collects the module names the recipe touched."""

    def __init__(self, network: str, model, params: dict, weights: dict, layers: dict, codebook):
        self.network, self.model = network, model
        self.modules = dict(model.named_modules())
        self.params, self.weights, self.layers, self.codebook = params, weights, layers, codebook
        self.used: list[str] = []

    def _param(self, key: str) -> np.ndarray:
        if key not in self.params:
            raise VQ4AllError(f"{self.network}: '{printable(key, 200)}' is missing from the artifact's FP leftovers")
        return np.asarray(self.params[key])

    def _compressed(self, name: str, module, conv: ConvGeometry | None, output: str) -> CompressedLayer:
        key = f"{name}.weight"
        weight = np.asarray(self.weights[key], dtype=np.float32).reshape(module.weight.shape[0], -1)
        bias = self._param(f"{name}.bias") if module.bias is not None else None
        layer = self.layers.get(key)
        if self.codebook is not None and layer is None:
            raise VQ4AllError(
                f"{self.network}: weight '{key}' is not coded in the artifact (left FP): "
                "the integer executor runs every Conv2d/Linear on codes"
            )
        return CompressedLayer(
            name=name,
            param=key,
            weight=weight,
            codes=None if layer is None else layer.codes,
            codebook=None if layer is None else self.codebook.codebook,
            unit=None if layer is None else layer.scales.astype(np.float64) * self.codebook.scale,
            bias=bias,
            conv=conv,
            output=output,
        )

    def step(self, name: str, output: str = "requant"):
        """The step for module `name`; output: for a Conv2d/Linear, "requant" or "int32"."""
        import torch.nn as nn

        module = self.modules.get(name)
        if module is None:
            raise VQ4AllError(f"{self.network}: the model has no module '{name}' (the recipe is out of date)")
        self.used.append(name)
        kind = type(module).__name__
        if isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
            if isinstance(module.padding, str):
                raise VQ4AllError(f"{self.network}: module '{name}' uses padding='{module.padding}': not supported")
            geometry = ConvGeometry(
                _pair(module.kernel_size), _pair(module.stride), _pair(module.padding), _pair(module.dilation)
            )
            return self._compressed(name, module, geometry, output)
        if isinstance(module, nn.Linear):
            return self._compressed(name, module, None, output)
        if isinstance(module, nn.BatchNorm2d) and module.track_running_stats:
            return BatchNorm(
                name,
                self._param(f"{name}.running_mean"),
                self._param(f"{name}.running_var"),
                self._param(f"{name}.weight") if module.affine else np.ones(module.num_features),
                self._param(f"{name}.bias") if module.affine else np.zeros(module.num_features),
                float(module.eps),
            )
        if isinstance(module, nn.ReLU):
            return Relu(name)
        if isinstance(module, nn.PReLU):
            return PRelu(name, self._param(f"{name}.weight"))
        if isinstance(module, nn.MaxPool2d) and _pair(module.dilation) == (1, 1):
            return MaxPool(
                name, _pair(module.kernel_size), _pair(module.stride), _pair(module.padding), bool(module.ceil_mode)
            )
        if isinstance(module, nn.Softmax):
            return Softmax(name, int(module.dim))
        if isinstance(module, nn.Sigmoid):
            return Sigmoid(name)
        detail = f" with groups={module.groups}" if isinstance(module, nn.Conv2d) else ""
        raise VQ4AllError(
            f"{self.network}: module '{name}' is a {kind}{detail}, which the integer executor does not run "
            f"(it runs {MODULE_TYPES})"
        )

    def check_all_used(self) -> None:
        """Every module that holds parameters is in the recipe (else the recipe would silently
        skip part of the network)."""
        for name, module in self.modules.items():
            if name and not list(module.children()) and list(module.parameters(recurse=False)):
                if name not in self.used:
                    raise VQ4AllError(
                        f"{self.network}: module '{name}' ({type(module).__name__}) is not in the integer "
                        "executor's recipe: the model differs from the one the recipe was written for"
                    )


def digits_cnn(b: Builder) -> list:
    """DigitsNet.forward: conv1, ReLU, conv2, ReLU, 2x2 max-pool, flatten, fc1, ReLU, fc2."""
    return [
        b.step("conv1"),
        Relu("relu1"),
        b.step("conv2"),
        Relu("relu2"),
        MaxPool("pool", (2, 2), (2, 2)),
        Reshape("flatten", (-1,)),
        b.step("fc1"),
        Relu("relu3"),
        b.step("fc2", output="int32"),
    ]


CREPE_PADS = {1: (0, 0, 254, 254)}  # Crepe.layer's F.pad: (0, 0, 254, 254) for conv1, else (0, 0, 31, 32)


def crepe_tiny(b: Builder) -> list:
    """Crepe.forward on normalised frames [N, 1024]: x[:, None, :, None], then per layer i = 1..6
    F.pad, conv_i, ReLU, conv_i_BN, max-pool (2, 1); permute (0, 2, 1, 3), flatten, classifier,
    sigmoid."""
    steps: list = [Reshape("frames", (1, -1, 1))]
    for i in range(1, 7):
        steps += [
            Pad(f"pad{i}", CREPE_PADS.get(i, (0, 0, 31, 32))),
            b.step(f"conv{i}"),
            Relu(f"relu{i}"),
            b.step(f"conv{i}_BN"),
            MaxPool(f"pool{i}", (2, 1), (2, 1)),
        ]
    return steps + [
        Permute("permute", (0, 2, 1, 3)),
        Reshape("flatten", (-1,)),
        b.step("classifier", output="int32"),
        Sigmoid("sigmoid"),
    ]


def mtcnn_onet(b: Builder) -> list:
    """ONet.forward: conv1..4 each with PReLU (pools after 1..3), permute (0, 3, 2, 1), flatten,
    dense5, PReLU; heads dense6_1 + softmax (face probabilities), dense6_2 (box), dense6_3
    (landmarks), concatenated as MTCNNNet.forward does: [prob, box, landmarks] (16 values)."""
    steps: list = []
    for i in range(1, 5):
        steps += [b.step(f"conv{i}"), b.step(f"prelu{i}")]
        if i < 4:
            steps.append(b.step(f"pool{i}"))
    steps += [Permute("permute", (0, 3, 2, 1)), Reshape("flatten", (-1,)), b.step("dense5"), b.step("prelu5")]
    heads = [
        [b.step("dense6_1", output="int32"), b.step("softmax6_1")],
        [b.step("dense6_2", output="int32")],
        [b.step("dense6_3", output="int32")],
    ]
    return steps + [Heads("heads", heads, (0, 1, 2))]


RECIPES: dict[str, Callable[[Builder], list]] = {
    "digits_cnn": digits_cnn,
    "crepe_tiny": crepe_tiny,
    "mtcnn_onet": mtcnn_onet,
}


def recipe(network: str) -> Callable[[Builder], list]:
    """The recipe of `network`; VQ4AllError naming the supported ones otherwise."""
    if network not in RECIPES:
        raise VQ4AllError(
            f"the integer executor has no recipe for '{printable(network, 200)}': it runs {', '.join(RECIPES)}"
        )
    return RECIPES[network]


def build_steps(network: str, model, params: dict, weights: dict, layers: dict, codebook) -> list:
    """The steps of `network` (see Builder for the arguments), every parameterised module used."""
    builder = Builder(network, model, params, weights, layers, codebook)
    steps = recipe(network)(builder)
    builder.check_all_used()
    return steps
