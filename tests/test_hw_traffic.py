"""Off-chip traffic counts (vq4all.hw.traffic) against an independent count on a tiny artifact."""

import numpy as np

from vq4all.artifact import LayerCodes, NetworkArtifact
from vq4all.hw.traffic import network_traffic, stream_bits


def tiny_artifact(k: int = 65536) -> NetworkArtifact:
    """Two layers: a conv [4, 3, 3, 3] (rows of 27 = 4 sub-vectors of 8, the last ragged) and a
    linear [5, 16] (2 sub-vectors), codes of log2(k) bits, plus one bias leftover."""
    rng = np.random.default_rng(0)
    layers = []
    for param, shape in (("conv.weight", (4, 3, 3, 3)), ("fc.weight", (5, 16))):
        row = int(np.prod(shape[1:]))
        m = -(-row // 8)
        layers.append(
            LayerCodes(
                param,
                shape,
                8,
                m * 8 - row,
                "channel",
                rng.integers(0, k, (shape[0], m)).astype(np.uint16),
                np.ones(shape[0], np.float16),
            )
        )
    return NetworkArtifact("tiny", "0" * 64, k, layers, {"fc.bias": np.zeros(5, np.float32)})


def test_counts_match_a_hand_count():
    t = network_traffic(tiny_artifact())
    # weights: 4*27 + 5*16 = 188; rows: 9
    assert t["weights"] == 188
    b = t["bytes"]
    assert b["fp16"] == 2 * 188
    assert b["int8"] == 188 + 2 * 9
    # per-layer VQ: conv rows of 27 -> 7 codes of 8 bits; fc rows of 16 -> 4 codes; + 1024 B codebook
    # per layer + 2 B scale per row
    assert b["per_layer_vq"] == (4 * 7 + 1024 + 8) + (5 * 4 + 1024 + 10)
    # VQ4ALL: 16-bit codes (K=65536): conv 4 x 4 codes, fc 5 x 2 codes; + 2 B per row
    assert b["vq4all"] == (4 * 4 * 2 + 8) + (5 * 2 * 2 + 10)
    assert t["leftover_bytes"] == 10  # 5 bias values at fp16, reported, counted in no column
    assert t["per_layer_codebook_loads"] == 2
    assert t["rom_codebook_bits_vq4all"] == 65536 * 8 * 8


def test_small_k_packs_codes_into_bits():
    t = network_traffic(tiny_artifact(k=256))
    assert t["bytes"]["vq4all"] == (16 + 8) + (10 + 10)  # one byte per code at K=256


def test_stream_bits_equals_artifact_bits_at_one_lane():
    art = tiny_artifact()
    code_beats = sum(layer.codes.size for layer in art.layers)  # lanes=1: one code per beat
    scale_beats = sum(layer.shape[0] for layer in art.layers)  # one multiplier per row
    assert stream_bits(code_beats, 1, 16, scale_beats, 16) == 8 * network_traffic(art)["bytes"]["vq4all"]
