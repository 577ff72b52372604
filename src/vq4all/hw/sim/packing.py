"""The packing engine's host side (`EngineConfig(pack=True)`, `rtl.packed`): its code beats and its
cycle model.

Code beats: the layer's codes [rows, m] flattened row-major, n = 2 * lanes per beat (code n b + i
in bits [i code_bits, (i + 1) code_bits)), the last beat of a layer holding the rest (the unused
codes 0). Activation beats are the lane engine's at the same lanes. At lanes 1 a `results` beat
holds one result and a `scales` beat one multiplier, as on the lane engine; at lanes 2 a
`scales` beat holds two multipliers, rows 2t and 2t + 1 of a layer (`pack_scales`), and a
`results` beat 1 or 2 results with their count (`unpack_results`).

Cycle model (`pack_schedule`): the packing engine's control replayed cycle by cycle at full speed
(every stream valid whenever it has a beat, every result taken at once): the loader and the two
activation slots as in the lane engine; the computer takes a code beat whenever the queue's
count (fill + values in flight) is at most queue_slots - 2 lanes d; the queue pops the values up
to a layer end when one is among its first lanes * d, else lanes * d values once it holds them;
a beat's results are taken latency + 2 cycles after its pop (the MAC pipeline, then the result
FIFO). The simulations compare the engine's cycles with this model (equal at full speed).
numpy only.
"""

from __future__ import annotations

import numpy as np


def pack_words(values, per_beat: int, bits: int) -> list[int]:
    """values (ints, each < 2^bits) -> ceil(len / per_beat) beat words of per_beat fields of `bits`
    bits (value i of a beat in bits [i * bits, (i + 1) * bits)); the last beat's unused fields 0."""
    flat = [int(v) for v in values]
    words = []
    for at in range(0, len(flat), per_beat):
        word = 0
        for i, v in enumerate(flat[at : at + per_beat]):
            word |= v << (i * bits)
        words.append(word)
    return words


def pack_codes_flat(codes: np.ndarray, code_bits: int, per_beat: int = 2) -> list[int]:
    """codes: [rows, m] -> ceil(rows * m / per_beat) beat words of per_beat (2 * lanes) codes of
    the row-major flattened codes (the first in the low code_bits bits)."""
    return pack_words(np.asarray(codes, dtype=np.int64).reshape(-1).tolist(), per_beat, code_bits)


def pack_scales(multipliers, per_beat: int, mult_bits: int) -> list[int]:
    """One layer's multipliers [rows] -> ceil(rows / per_beat) `scales` beat words (row
    per_beat t + i in bits [i mult_bits, (i + 1) mult_bits) of beat t; a layer's beats never hold
    another layer's rows)."""
    return pack_words(np.asarray(multipliers, dtype=np.int64).reshape(-1).tolist(), per_beat, mult_bits)


def unpack_results(payload: int, per_beat: int, result_bits: int) -> list[int]:
    """A `results` beat -> its results as signed ints. per_beat 1: the beat is one signed result;
    per_beat > 1: `count` (1..per_beat) in the bits above per_beat results, result i in bits
    [i result_bits, (i + 1) result_bits); a count of 0 or above per_beat raises ValueError."""
    mask = (1 << result_bits) - 1
    payload = int(payload)
    if per_beat == 1:
        count = 1
    else:
        count = payload >> (per_beat * result_bits)
        if not 1 <= count <= per_beat:
            raise ValueError(f"results beat with count={count}, outside 1..{per_beat}")
    out = []
    for i in range(count):
        value = (payload >> (i * result_bits)) & mask
        out.append(value - (1 << result_bits) if value >> (result_bits - 1) else value)
    return out


def pack_tail(in_features: int, d: int) -> int:
    """The descriptor's tail field: values in a row's last sub-vector, in_features - (m - 1) * d."""
    return in_features - (-(-in_features // d) - 1) * d


def pack_schedule(config, layers: list) -> tuple[list[int], list[int]]:
    """(taken, finish) of a run on a packing engine at full speed, counted from the first
    descriptor's transfer (cycle 0). layers: per descriptor on `layer`, in order, (rows, m, tail)
    for a layer or None for a bare one (empty or rejected: it only takes its cycle). taken[j]: the
    cycle descriptor j transfers; finish[i]: the cycle layer i's last result is taken."""
    d, q_slots, n = config.d, config.queue_slots, config.codes_per_beat
    B = config.lanes * d  # values per MAC beat
    result_delay = config.latency + 2
    taken: list[int] = []
    finish: list[int] = []
    # loader
    next_desc, ld_busy, ld_slot, ld_left = 0, False, 0, 0
    owned, loaded = [False, False], [False, False]
    slot_layer: list = [None, None]  # (layer index, rows, m, tail) of the layer in each slot
    # computer
    cp_slot, computing, c0, row_left = 0, False, 0, 0
    layer_count = 0
    # queue: entries (row_end, layer_index or None for a layer end); in flight: the last beat's
    queue: list[tuple[bool, int | None]] = []
    in_flight: list[tuple[bool, int | None]] = []
    count = 0
    n_layers = sum(x is not None for x in layers)
    cycle = 0
    limit = 100 + 4 * sum(1 + (x[0] * x[1] * (d + 2) if x else 0) for x in layers) + 4 * len(layers)
    while len(finish) < n_layers or next_desc < len(layers):
        if cycle > limit:
            raise RuntimeError("pack_schedule did not finish (a model error)")
        # ---- this cycle's decisions, from the registers at its start
        layer_ready = not ld_busy and not owned[ld_slot]
        take_desc = layer_ready and next_desc < len(layers)
        loaded_last = ld_busy and ld_left == 0
        fire = computing and count <= q_slots - n * d
        beat: list[tuple[bool, int | None]] = []
        released = False
        if fire:
            index, rows, m, tail = slot_layer[cp_slot]
            for _ in range(n):  # the beat's codes, up to the layer's last
                row_end = c0 == 0
                layer_end = row_end and row_left == 0
                values = tail if row_end else d
                beat += [(False, None)] * (values - 1) + [(row_end, index if layer_end else None)]
                if layer_end:
                    released = True
                    break
                c0, row_left = (m - 1, row_left - 1) if row_end else (c0 - 1, row_left)
        head = queue[:B]
        ends = [i for i, e in enumerate(head) if e[1] is not None]
        popped = 0
        if ends:  # a beat never holds two layers' values
            popped = ends[0] + 1
            finish.append(cycle + result_delay)
        elif len(queue) >= B:
            popped = B
        # ---- the edge
        queue = queue[popped:] + in_flight
        in_flight = beat
        count += len(beat) - popped
        if released:
            owned[cp_slot] = loaded[cp_slot] = False
            other = 1 - cp_slot
            computing = loaded[other] or (loaded_last and ld_slot != cp_slot)
            cp_slot = other
            if computing:
                _, rows, m, _ = slot_layer[cp_slot]
                c0, row_left = m - 1, rows - 1
        elif loaded_last and ld_slot == cp_slot:
            computing = True
            _, rows, m, _ = slot_layer[cp_slot]
            c0, row_left = m - 1, rows - 1
        if ld_busy:
            if loaded_last:
                loaded[ld_slot] = True
                ld_busy, ld_slot = False, 1 - ld_slot
            else:
                ld_left -= 1
        if take_desc:
            taken.append(cycle)
            entry = layers[next_desc]
            next_desc += 1
            if entry is not None:
                rows, m, tail = entry
                slot_layer[ld_slot] = (layer_count, rows, m, tail)
                layer_count += 1
                owned[ld_slot] = True
                ld_busy, ld_left = True, -(-m // config.lanes) - 1  # ceil(m / lanes) activation beats
        cycle += 1
    origin = taken[0] if taken else 0
    return [t - origin for t in taken], [f - origin for f in finish]
