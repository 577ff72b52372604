"""Row packing (`EngineConfig(pack=True)`): the MAC takes d real values every cycle, across row ends.

The lane engine spends ceil(m / lanes) beats on every row, so a row of `in_features` values that is
not a multiple of d issues padding products: digits_cnn conv1 (rows of 9, d = 8) uses 9 of 16
product slots, MTCNN conv1 (rows of 27) 27 of 32. Every row still needs m codeword reads, so
beating that with one ROM read per cycle is impossible; this computer reads two per cycle (the
ROM's second port) and drops the padding before the MAC:

1. **Code beats** carry two codes of the layer's codes flattened row-major (`codes[o, j]`, rows
   not aligned to beats; a layer of odd `rows * m` ends with a one-code beat). Both codewords and
   their activation sub-vectors are read in the cycle the beat is taken (two ROM ports, two
   activation-buffer ports).
2. **Value queue**: the next cycle appends the two sub-vectors' (codeword value, activation) pairs
   to a queue of `queue_slots` = 6 d entries, d pairs for a sub-vector and `tail` for a row's last
   (the descriptor's `tail` field: values in a row's last sub-vector), so padding never enters.
   Each entry also carries a row-end flag, a layer-end flag and (requant) the layer's shift.
   A code beat is taken only while the queue's fill plus the values still in flight leave room
   for two more sub-vectors (`count <= queue_slots - 2 d`), so the queue never overflows; at
   6 d that threshold (4 d) also keeps d values queued every cycle when beats bring as few as
   d + 1 values (measured: 4 d starved the MAC to 0.69-0.74 utilisation on rows of 9 to 90).
3. **MAC beat**: once the queue holds d entries, its first d leave for the MAC (products, then the
   registered adder tree). A layer's last entries leave as a shorter beat once its layer-end
   entry is in the first d and nothing more is queued (the empty slots are zero). Because rows
   are at least d values long (the descriptor check), a beat holds at most one row end.
4. **Two sums**: beside the tree over all d products, a second tree sums the products up to the
   beat's row end (`MACLanes(split=True)`). A row-end beat writes `acc + before` into the result
   FIFO and restarts `acc` with `all - before`, the next row's first values; rows finish one at a
   time and in order, so the FIFO, the requant stage (the row's multiplier is taken from `scales`
   with its row-end beat) and the `results` stream are the lane engine's.

Queue arithmetic: the queue is one vector of `queue_slots` entries, entry i in bits
[i * entry_bits, (i + 1) * entry_bits), with every entry at or beyond the fill zero. Each cycle
`queue' = (queue >> popped entries) | (pushed << (fill - popped) entries)`: a pop of d (or of the
whole fill for a layer's last beat) and a push of the in-flight sub-vectors (the second placed
right after the first's kept values). The zero invariant is what makes a short last beat's
empty slots contribute nothing.

Cost model (`sim.packing.pack_schedule`, equal to the engine's cycles at full speed): a layer alone or in a stream costs about ceil(rows * in_features / d)
MAC beats instead of rows * m; the code side takes ceil(rows * m / 2) beats and runs ahead.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Signal, signed

from .config import ACT_BITS, SHIFT_BITS
from .engine import greater_than, pick


def packed_computer(engine, m, s, rom, buf, mac, adv):
    """Build the packing computer into module `m` of `engine` (an Engine with config.pack), given
    the slot registers and handshakes `s` (beats_m1, rows_m1, tail_values, shift: per slot;
    cp_slot, computing: the registers the engine keeps; released: driven here), the two-port ROM
    and activation buffer, the split MAC and the stall `adv`. Returns (total: the row's wrapped
    sum when a row-end beat reaches the accumulator, tag: with requant the row's multiplier and
    the layer's shift at the MAC's input, for `Engine._requant`, else None)."""
    c = engine.config
    d, w, a = c.d, c.width, c.code_bits
    q_slots = c.queue_slots
    beat_bits = len(s.beats_m1[0])
    cp_slot, computing = s.cp_slot, s.computing
    shift_bits = SHIFT_BITS if c.requant else 0
    entry_bits = w + ACT_BITS + 2 + shift_bits  # value, activation, row end, layer end, (shift)

    # ---- the code walker: two codes per beat. c0 = activation address of the beat's first code
    # (m - 1 - j for sub-vector j, counting down like the lane engine), row_left = rows after
    # the first code's row.
    m_m1 = pick(cp_slot, s.beats_m1)  # m - 1 (lanes 1: one sub-vector per activation word)
    tail = pick(cp_slot, s.tail_values)
    c0 = Signal(beat_bits, name="pk_c0")
    c1 = Signal(beat_bits, name="pk_c1")
    row_left = Signal(c.rows_bits, name="pk_row_left")
    rows_after1 = Signal(c.rows_bits, name="pk_rows_after1")
    z0, z1 = c0 == 0, c1 == 0  # the code ends its row
    lend0 = Signal(name="pk_lend0")
    has1 = Signal(name="pk_has1")
    lend1 = Signal(name="pk_lend1")
    m.d.comb += [
        c1.eq(Mux(z0, m_m1, c0 - 1)),
        rows_after1.eq(Mux(z0, row_left - 1, row_left)),
        lend0.eq(z0 & (row_left == 0)),
        has1.eq(~lend0),
        lend1.eq(has1 & z1 & (rows_after1 == 0)),
    ]
    layer_done = lend0 | lend1
    len0 = Mux(z0, tail, d)
    len1 = Mux(has1, Mux(z1, tail, d), 0)

    # ---- flow control: count = queue fill + values read but not yet queued
    count_bits = q_slots.bit_length()
    fill = Signal(count_bits, name="pk_fill")
    count = Signal(count_bits, name="pk_count")
    room = ~greater_than(count, q_slots - 2 * d)
    fire = Signal(name="pk_fire")
    m.d.comb += [
        engine.codes.ready.eq(computing & room),
        fire.eq(computing & engine.codes.valid & room),
        s.released.eq(fire & layer_done),
    ]

    def start_slot(slot):
        m.d.sync += [c0.eq(pick(slot, s.beats_m1)), row_left.eq(pick(slot, s.rows_m1))]

    with m.If(fire):
        with m.If(layer_done):
            m.d.sync += cp_slot.eq(~cp_slot)
            start_slot(~cp_slot)
        with m.Else():
            m.d.sync += [
                c0.eq(Mux(z1, m_m1, c1 - 1)),
                row_left.eq(Mux(z1, rows_after1 - 1, rows_after1)),
            ]
    with m.Elif(~computing):
        start_slot(cp_slot)

    # ---- read stage: both codewords and both activation sub-vectors, every cycle (a read nobody
    # takes is ignored: the in-flight flags below say which are real)
    m.d.comb += [
        rom.en.eq(1),
        buf.r_en.eq(1),
        buf.r_addr.eq(Cat(c0, cp_slot)),
        buf.r1_addr.eq(Cat(c1, cp_slot)),
        rom.addr[0].eq(engine.codes.payload[:a]),
        rom.addr[1].eq(engine.codes.payload[a : 2 * a]),
    ]
    fl_valid = Signal(name="pk_fl_valid")
    fl_end = [Signal(name=f"pk_fl_end{i}") for i in range(2)]
    fl_lend = [Signal(name=f"pk_fl_lend{i}") for i in range(2)]
    fl_has1 = Signal(name="pk_fl_has1")
    fl_tail = Signal(c.tail_bits, name="pk_fl_tail")
    fl_shift = Signal(SHIFT_BITS, name="pk_fl_shift")
    m.d.sync += [
        fl_valid.eq(fire),
        fl_end[0].eq(z0),
        fl_end[1].eq(has1 & z1),
        fl_lend[0].eq(lend0),
        fl_lend[1].eq(lend1),
        fl_has1.eq(has1),
        fl_tail.eq(tail),
        fl_shift.eq(pick(cp_slot, s.shift)),
    ]

    # ---- the two sub-vectors as queue entries, padding dropped
    def entries(word, acts, end, lend, present):
        """d entries (value e of the codeword `word` with activation e of `acts`), those past a
        row end's tail zeroed; the row-end and layer-end flags on the row's last value."""
        out = []
        for e in range(d):
            last = end & (fl_tail == e + 1)
            keep = present & (~end | (e < fl_tail))
            fields = [word[e * w : (e + 1) * w], acts[e * ACT_BITS : (e + 1) * ACT_BITS], last, lend & last]
            if c.requant:
                fields.append(fl_shift)
            out.append(Mux(keep, Cat(*fields), 0))
        return Cat(*out)

    first = entries(rom.data[0], buf.r_data, fl_end[0], fl_lend[0], 1)
    second = entries(rom.data[1], buf.r1_data, fl_end[1], fl_lend[1], fl_has1)
    len0_fl = Mux(fl_end[0], fl_tail, d)
    len1_fl = Mux(fl_has1, Mux(fl_end[1], fl_tail, d), 0)
    pushed = Signal(2 * d * entry_bits, name="pk_pushed")
    push_len = Signal(count_bits, name="pk_push_len")
    m.d.comb += [
        pushed.eq(Mux(fl_valid, first | (second << (len0_fl * entry_bits)), 0)),
        push_len.eq(Mux(fl_valid, len0_fl + len1_fl, 0)),
    ]

    # ---- the queue and the MAC beat at its head
    queue = Signal(q_slots * entry_bits, name="pk_queue")
    head = [queue[i * entry_bits : (i + 1) * entry_bits] for i in range(d)]
    value = [h[:w] for h in head]
    act = [h[w : w + ACT_BITS] for h in head]
    end = [h[w + ACT_BITS] for h in head]
    lend = [h[w + ACT_BITS + 1] for h in head]
    any_end = Cat(*end).any()
    full = fill >= d
    can = full | Cat(*lend).any()  # d entries, or a layer's last (shorter) beat
    scale_ok = (engine.scales.valid | ~any_end) if c.requant else 1
    pop = Signal(name="pk_pop")
    popped = Signal(count_bits, name="pk_popped")
    base = Signal(count_bits, name="pk_base")
    m.d.comb += [
        pop.eq(adv & can & scale_ok),
        popped.eq(Mux(pop, Mux(full, d, fill), 0)),
        base.eq(fill - popped),
    ]
    m.d.sync += [
        queue.eq((queue >> (popped * entry_bits)) | (pushed << (base * entry_bits))),
        fill.eq(base + push_len),
        count.eq(count + Mux(fire, len0 + len1, 0) - popped),
    ]
    # before[i]: entry i is at or before the beat's row end (no row end among entries 0..i-1)
    before = [Const(1, 1)]
    for i in range(1, d):
        before.append(before[-1] & ~end[i - 1])
    m.d.comb += [
        mac.adv.eq(adv),
        mac.valid.eq(pop),
        mac.last.eq(any_end),
        mac.mask.eq(1),
        mac.codewords[0].eq(Cat(*value)),
        mac.acts.eq(Cat(*act)),
        mac.before.eq(Cat(*before)),
    ]

    # ---- accumulate: a row-end beat emits acc + the sum up to its row end and keeps the rest
    acc = Signal(signed(c.acc_bits), name="pk_acc")
    total = Signal(signed(c.acc_bits), name="pk_total")
    m.d.comb += total.eq(acc + Mux(mac.out_last, mac.out_before, mac.out_sum))  # wraps like the reference
    with m.If(adv & mac.out_valid):
        with m.If(mac.out_last):
            m.d.sync += acc.eq(mac.out_sum - mac.out_before)
        with m.Else():
            m.d.sync += acc.eq(total)
    tag = None
    if c.requant:  # the row's multiplier is taken with its row-end beat; the shift rides in its entry
        m.d.comb += engine.scales.ready.eq(adv & can & any_end)
        end_shift = 0
        for i in range(d):
            end_shift = end_shift | Mux(end[i], head[i][w + ACT_BITS + 2 :], 0)
        tag = Cat(engine.scales.payload, end_shift)
    return total, tag
