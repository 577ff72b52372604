"""`vq4all.load`: a network artifact + its codebook -> a runnable torch model.

The zoo network named in the artifact is built (a copy of its FP model: the zoo's is never
mutated), its FP leftovers are put in, and every compressed weight is placed:
- the weight of a plain nn.Linear / nn.Conv2d: the module is swapped for VQLinear / VQConv2d
  holding the codes, scales and the one shared CodebookTable (kernels on CUDA, torch on CPU);
- any other compressed weight (embeddings, LSTM matrices, Conv1d, subclasses of Linear/Conv2d
  with their own forward): decoded once through the numpy reference into its dense module.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from vq4all.artifact import Codebook, NetworkArtifact, load_codebook, load_network
from vq4all.errors import VQ4AllError
from vq4all.hard import decode_layer

from .modules import CodebookTable, VQConv2d, VQLinear


def load(path, codebook, *, impl: str | None = None) -> nn.Module:
    """The model a network artifact stands for, in eval mode, on CPU (move it with .to()).

    path: a network artifact file (or a NetworkArtifact already read).
    codebook: the codebook file it was built on (or a Codebook); another is refused.
    impl: forwarded to every VQ module (None: the dispatch table).
    Raises VQ4AllError for a bad file, the wrong codebook, or an artifact that does not fit its
    network.
    """
    if codebook is None:
        raise VQ4AllError("codebook: a network artifact needs the codebook it was built on: pass codebook=<file>")
    cb = codebook if isinstance(codebook, Codebook) else load_codebook(codebook)
    if isinstance(path, NetworkArtifact):
        art = path
        if art.codebook_sha256 != cb.sha256:
            raise VQ4AllError(f"the artifact was built on codebook {art.codebook_sha256[:16]}..., not on the given "
                              f"codebook {cb.sha256[:16]}...: pass the codebook it was built with")
    else:
        art = load_network(path, cb)
    from vq4all import zoo

    model = copy.deepcopy(zoo.load(art.network).model)
    return build(model, art, cb, impl=impl)


def build(model: nn.Module, art: NetworkArtifact, cb: Codebook, *, impl: str | None = None) -> nn.Module:
    """Put `art` into `model` (mutated and returned, eval mode); see the module docstring."""
    state = model.state_dict()
    compressed = {layer.param for layer in art.layers}
    missing = sorted(set(state) - compressed - set(art.leftovers))
    unknown = sorted((compressed | set(art.leftovers)) - set(state))
    if unknown:
        raise VQ4AllError(f"artifact of '{art.network}': {', '.join(unknown[:5])} not in the network's state dict")
    if missing:
        raise VQ4AllError(f"artifact of '{art.network}': no value for {', '.join(missing[:5])}"
                          f"{' ...' if len(missing) > 5 else ''} (neither compressed nor an FP leftover)")
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
        raise VQ4AllError(f"artifact tensor '{key}' has shape {list(value.shape)}, the network needs {list(target.shape)}")
    target.copy_(torch.from_numpy(value).to(target.dtype))


def _swap(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put `module` at `name` in `model` (the model itself when name is '')."""
    if not name:
        return module
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)
    return model
