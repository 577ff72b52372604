"""The packing engine's host side (`EngineConfig(pack=True)`, `rtl.packed`): its code beats and its
cycle model.

Code beats: the layer's codes [rows, m] flattened row-major, two per beat (code 2b in bits
[0, code_bits), code 2b+1 above it), the last beat of a layer with an odd rows * m carrying one
code (the upper half 0). Activation beats and results are the lane engine's at lanes 1.

Cycle model (`pack_schedule`): the packing engine's control replayed cycle by cycle at full speed
(every stream valid whenever it has a beat, every result taken at once): the loader and the two
activation slots as in the lane engine; the computer takes a code beat whenever the queue's
count (fill + values in flight) is at most queue_slots - 2 d; the queue pops d values when it
holds d, or a layer's last values once its layer-end value is among them; a row-end beat's
result is taken latency + 2 cycles after its pop (the MAC pipeline, then the result FIFO). The
simulations compare the engine's cycles with this model (equal at full speed).
numpy only.
"""

from __future__ import annotations

import numpy as np


def pack_codes_flat(codes: np.ndarray, code_bits: int) -> list[int]:
    """codes: [rows, m] -> ceil(rows * m / 2) beat words, two codes of the row-major flattened
    codes per beat (the first in the low code_bits bits); a lone last code has 0 above it."""
    flat = np.asarray(codes, dtype=np.int64).reshape(-1).tolist()
    if len(flat) % 2:
        flat.append(0)
    return [flat[i] | flat[i + 1] << code_bits for i in range(0, len(flat), 2)]


def pack_tail(in_features: int, d: int) -> int:
    """The descriptor's tail field: values in a row's last sub-vector, in_features - (m - 1) * d."""
    return in_features - (-(-in_features // d) - 1) * d


def pack_schedule(config, layers: list) -> tuple[list[int], list[int]]:
    """(taken, finish) of a run on a packing engine at full speed, counted from the first
    descriptor's transfer (cycle 0). layers: per descriptor on `layer`, in order, (rows, m, tail)
    for a layer or None for a bare one (empty or rejected: it only takes its cycle). taken[j]: the
    cycle descriptor j transfers; finish[i]: the cycle layer i's last result is taken."""
    d, q_slots = config.d, config.queue_slots
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
        fire = computing and count <= q_slots - 2 * d
        beat: list[tuple[bool, int | None]] = []
        released = False
        if fire:
            index, rows, m, tail = slot_layer[cp_slot]
            codes = []
            lend0 = c0 == 0 and row_left == 0
            codes.append((c0 == 0, lend0))
            c1 = m - 1 if c0 == 0 else c0 - 1
            rows_after1 = row_left - 1 if c0 == 0 else row_left
            lend1 = False
            if not lend0:
                lend1 = c1 == 0 and rows_after1 == 0
                codes.append((c1 == 0, lend1))
            for row_end, layer_end in codes:
                values = tail if row_end else d
                beat += [(False, None)] * (values - 1) + [(row_end, index if layer_end else None)]
            released = lend0 or lend1
            if not released:
                c0 = m - 1 if c1 == 0 else c1 - 1
                row_left = rows_after1 - 1 if c1 == 0 else rows_after1
        head = queue[:d]
        full = len(queue) >= d
        popped = 0
        if full or any(e[1] is not None for e in head):
            popped = d if full else len(queue)
            for _row_end, layer_end in queue[:popped]:
                if layer_end is not None:
                    finish.append(cycle + result_delay)
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
                ld_busy, ld_left = True, m - 1
        cycle += 1
    origin = taken[0] if taken else 0
    return [t - origin for t in taken], [f - origin for f in finish]
