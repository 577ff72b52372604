"""Put a network artifact into a torch model of its architecture: the loader behind `vq4all.load`.

`build(model, art, codebook)` checks that the model's state dict and the artifact hold the same
entries with the same shapes (naming the first that differs, with both shapes), then places:
- the FP leftovers (biases, norms, ...) into their tensors;
- the weight of a plain nn.Linear / nn.Conv2d: the module is swapped for VQLinear / VQConv2d
  holding the codes, scales and the one shared CodebookTable (kernels on CUDA, torch on CPU);
- any other compressed weight (embeddings, LSTM matrices, Conv1d, subclasses of Linear/Conv2d
  with their own forward): decoded once through the numpy reference into its dense module.
Which model to build is the caller's business (`vq4all.api.load`): nothing here knows the zoo.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vq4all.artifact import Codebook, NetworkArtifact
from vq4all.decode import decode_layer
from vq4all.errors import VQ4AllError
from vq4all.network import check_architecture

from .modules import CodebookTable, VQConv2d, VQLinear


def build(model: nn.Module, art: NetworkArtifact, cb: Codebook, *, impl: str | None = None) -> nn.Module:
    """Put `art` into `model` (mutated and returned, eval mode); see the module docstring.

    `art` must have been checked against `cb` (artifact.load_network(path, cb) does)."""
    if art.codebook_sha256 != cb.sha256:
        raise VQ4AllError(
            f"the artifact was built on codebook {art.codebook_sha256[:16]}..., not on the given "
            f"codebook {cb.sha256[:16]}...: pass the codebook it was built with"
        )
    check_architecture(model, art)
    state = model.state_dict()
    table = CodebookTable.from_codebook(cb)
    with torch.no_grad():
        for key, value in art.leftovers.items():
            _copy_into(state[key], np.array(value), key)  # np.array keeps 0-d shapes
        for layer in art.layers:
            owner_name, _, attr = layer.param.rpartition(".")
            owner = model.get_submodule(owner_name)
            codes, scales = torch.from_numpy(layer.codes.copy()), torch.from_numpy(layer.scales.copy())
            if attr == "weight" and type(owner) is nn.Linear:
                model = _swap(model, owner_name, VQLinear.from_linear(owner, codes, scales, table, impl))
            elif attr == "weight" and type(owner) is nn.Conv2d:
                model = _swap(model, owner_name, VQConv2d.from_conv(owner, codes, scales, table, impl))
            else:
                _copy_into(state[layer.param], decode_layer(layer, cb), layer.param)
    return model.eval()


def _copy_into(target: torch.Tensor, value: np.ndarray, key: str) -> None:
    if tuple(value.shape) != tuple(target.shape):
        raise VQ4AllError(
            f"artifact tensor '{key}' has shape {list(value.shape)}, the network needs {list(target.shape)}"
        )
    target.copy_(torch.from_numpy(value).to(target.dtype))


def _swap(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put `module` at `name` in `model` (the model itself when name is '')."""
    if not name:
        return module
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)
    return model
