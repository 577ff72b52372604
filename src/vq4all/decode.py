"""Weights from codes: what a network artifact's layers stand for, through the numpy reference.

Used by the loader (dense modules for compressed weights that have no VQ module), evaluation
and hard assignment. numpy only.
"""

from __future__ import annotations

import numpy as np

from .artifact import Codebook, LayerCodes, NetworkArtifact
from .reference import decode


def decode_layer(layer: LayerCodes, codebook: Codebook) -> np.ndarray:
    """The weight a layer stands for: float32 of `layer.shape` (reference.decode, padding dropped)."""
    rows = decode(layer.codes, codebook.codebook, layer.scales, codebook.codebook_scale, in_features=layer.row)
    return rows.reshape(layer.shape)


def decode_weights(art: NetworkArtifact, codebook: Codebook) -> dict[str, np.ndarray]:
    """{state-dict key: float32 weight} for every compressed layer of the artifact."""
    return {layer.param: decode_layer(layer, codebook) for layer in art.layers}
