"""Off-chip weight traffic per inference, in bytes, for the ways a network's weights can be stored.

Counted from a network artifact (its compressed layers' shapes and codes), per scheme:
- fp16: 2 bytes per weight;
- int8: 1 byte per weight + one fp16 scale per output row;
- per-layer VQ (k=256, d=4, the usual per-layer codebook baseline, e.g. baselines.kmeans_layer):
  an 8-bit code per 4 weights of a row (the row's tail zero-padded to 4) + each layer's own
  codebook of 256 x 4 int8 values, loaded once per layer per inference + one fp16 scale per row;
- VQ4ALL: the artifact's codes at log2(K) bits each + one fp16 scale per row; the universal
  codebook sits in ROM and is never loaded.
Each layer's bits are rounded up to whole bytes. FP leftovers (biases, norms, anything not
compressed) are the same in every scheme and are NOT counted in any column; `leftover_bytes`
gives their size at fp16 for reference. Activations are not weight traffic and are not counted.

Also the on-chip codebook storage each scheme needs: per-layer VQ holds the current layer's
codebook in SRAM (256 x 4 x 8 bits, reloaded per layer), VQ4ALL holds K x d x 8 bits of ROM.

numpy only.
"""

from __future__ import annotations

import math

PER_LAYER_K = 256
PER_LAYER_D = 4
PER_LAYER_CODEBOOK_BITS = 8  # int8 codewords (an fp16 codebook would double this part)
SCALE_BITS = 16  # one fp16 scale per output row, every scheme but fp16


def _bytes(bits: int) -> int:
    return -(-bits // 8)


def layer_traffic(shape, code_count: int, k: int) -> dict:
    """Bytes of one compressed layer per scheme.

    shape: the weight's shape [out_features, ...]; code_count: codes the artifact stores for it
    (rows x m); k: the universal codebook's size. Returns {weights, rows, fp16, int8,
    per_layer_vq, vq4all} (weights and rows are counts, the rest bytes)."""
    rows = int(shape[0])
    row = math.prod(shape[1:]) if len(shape) > 1 else 1
    weights = rows * row
    scale_bits = rows * SCALE_BITS
    per_layer_codes = rows * -(-row // PER_LAYER_D) * int(math.log2(PER_LAYER_K))
    per_layer_book = PER_LAYER_K * PER_LAYER_D * PER_LAYER_CODEBOOK_BITS
    return {
        "weights": weights,
        "rows": rows,
        "fp16": _bytes(16 * weights),
        "int8": _bytes(8 * weights + scale_bits),
        "per_layer_vq": _bytes(per_layer_codes + per_layer_book + scale_bits),
        "vq4all": _bytes(code_count * int(math.log2(k)) + scale_bits),
    }


SCHEMES = ("fp16", "int8", "per_layer_vq", "vq4all")


def network_traffic(art) -> dict:
    """Per-inference weight traffic of an artifact.NetworkArtifact: totals per scheme (bytes),
    ratios fp16 / scheme, per-layer rows, leftover_bytes, and on-chip codebook bits."""
    layers = [{"layer": layer.name, **layer_traffic(layer.shape, int(layer.codes.size), art.k)} for layer in art.layers]
    total = {s: sum(entry[s] for entry in layers) for s in SCHEMES}
    weights = sum(entry["weights"] for entry in layers)
    return {
        "network": art.network,
        "k": art.k,
        "layers": layers,
        "weights": weights,
        "bytes": total,
        "ratio_vs_fp16": {s: total["fp16"] / total[s] for s in SCHEMES},
        "leftover_bytes": 2 * sum(int(t.size) for t in art.leftovers.values()),
        "per_layer_codebook_loads": len(layers),
        "sram_codebook_bits_per_layer_vq": PER_LAYER_K * PER_LAYER_D * PER_LAYER_CODEBOOK_BITS,
        "rom_codebook_bits_vq4all": art.k * art.layers[0].d * 8 if art.layers else 0,
    }


def stream_bits(code_beats: int, lanes: int, code_bits: int, scale_beats: int, mult_bits: int) -> int:
    """Weight bits an engine run took in: code beats x (lanes x log2 K) + scale beats x
    mult_bits. With lanes=1 every code beat carries exactly one code, so this equals the
    artifact's code bits + 16 bits per row when mult_bits=16."""
    return code_beats * lanes * code_bits + scale_beats * mult_bits
