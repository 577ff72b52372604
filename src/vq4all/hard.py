"""Hard assignment: every sub-vector takes its nearest codeword (no training).

This is the starting point the compression training must beat, and it serves the quality table.
(Weights from codes: `vq4all.decode`.)
"""

from __future__ import annotations

import numpy as np

from .artifact import Codebook, LayerCodes, NetworkArtifact
from .errors import VQ4AllError
from .rules import code_dtype
from .search import candidates
from .subvectors import split


def assign(
    weights: dict,
    codebook: Codebook,
    granularity: str = "channel",
    *,
    position_weights: dict | None = None,
    device=None,
    progress: bool = False,
) -> list[LayerCodes]:
    """Nearest-codeword codes for each weight ({state-dict key: [out_features, ...] array/tensor}).

    One search over the sub-vectors of all layers at once (`vq4all.search.candidates`, which
    matches the ragged tails of rows on their real values only). position_weights: {key: None,
    h [row] (`vq4all.importance`) or H [groups, row, row] (`vq4all.hessian`)}: the statistic
    the search follows; None: plain.
    """
    if not weights:
        raise VQ4AllError(
            "the network has no compressible layer (no weight with >= 2 dimensions to code): nothing to compress"
        )
    splits = {
        key: split(np.asarray(w, dtype=np.float32), codebook.d, granularity, name=f"weight '{key}'")
        for key, w in weights.items()
    }
    per_split = [(position_weights or {}).get(key) for key in splits]
    found = candidates(list(splits.values()), codebook.values(), 1, weights=per_split, device=device, progress=progress)
    dtype = code_dtype(codebook.k)
    layers = []
    for (key, s), (cand, _dist) in zip(splits.items(), found):
        codes = cand[:, 0].reshape(s.subvectors.shape[:2]).astype(dtype)
        layers.append(
            LayerCodes(
                param=key, shape=s.shape, d=s.d, pad=s.pad, scale_granularity=granularity, codes=codes, scales=s.scales
            )
        )
    return layers


def hard_assign(
    network: str,
    state_dict: dict,
    compressible: list[str],
    codebook: Codebook,
    granularity: str = "channel",
    *,
    weights: dict | None = None,
    search: str = "plain",
    device=None,
    progress: bool = False,
) -> NetworkArtifact:
    """A network artifact by hard assignment: `compressible` keys become codes, the rest of
    `state_dict` ({key: tensor/array}) is kept as FP leftovers. weights: {key: statistic or
    None}, what the search follows (`assign`'s position_weights); search: the name the artifact
    records for how they were made (rules.SEARCHES)."""
    tensors = {key: state_dict[key] for key in compressible}
    layers = assign(tensors, codebook, granularity, position_weights=weights, device=device, progress=progress)
    leftovers = {key: np.array(value) for key, value in state_dict.items() if key not in tensors}
    config = {
        "method": "hard",
        "scale_granularity": granularity,
        "search": search,
    }
    return NetworkArtifact(network, codebook.sha256, codebook.k, layers, leftovers, config)
