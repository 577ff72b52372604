"""Row packing (`EngineConfig(pack=True)`): the MAC takes L d real values every cycle across row
ends (L = lanes, 1 or 2).

The lane engine spends ceil(m / L) beats on every row, so a row of `in_features` values that is
not a multiple of d issues padding products: digits_cnn conv1 (rows of 9, d = 8) uses 9 of 16
product slots, MTCNN conv1 (rows of 27) 27 of 32. Every row still needs m codeword reads, so
beating that with L ROM reads per cycle is impossible; this computer reads n = 2 L per cycle
(both ports of the ROM, and at L = 2 of a second copy) and drops the padding before the MAC:

1. **Code beats** carry n codes of the layer's codes flattened row-major (`codes[o, j]`, rows not
   aligned to beats; a layer's last beat may hold fewer). Every codeword and its activation
   sub-vector are read in the cycle the beat is taken (n ROM ports, n activation-buffer ports;
   an activation word holds L sub-vectors, so a read also names its lane).
2. **Value queue**: the next cycle appends the sub-vectors' (codeword value, activation) pairs to
   a queue of `queue_slots` = 6 L d entries, d pairs for a sub-vector and `tail` for a row's last
   (the descriptor's `tail` field: values in a row's last sub-vector), so padding never enters.
   Each entry also carries a row-end flag, a layer-end flag and (requant) the layer's shift. A
   code beat is taken only while the queue's fill plus the values still in flight leave room for
   n more sub-vectors (`count <= queue_slots - n d`), so the queue never overflows; at 6 L d
   that threshold (4 L d) also keeps L d values queued every cycle when beats bring as few as
   L (d + 1) values (measured at L = 1: 4 d starved the MAC to 0.69-0.74 utilisation on rows of
   9 to 90).
3. **MAC beat**: once the queue holds L d entries, its first L d leave for the MAC (products, then
   the registered adder tree); when a layer-end entry is among them, only the entries up to it
   leave (the rest are masked to zero products), so a beat never holds two layers' values.
   Because rows are at least d values long (the descriptor check), a beat holds at most L row
   ends, all of one layer.
4. **Split sums**: beside the tree over all L d products, L more trees sum the products up to the
   beat's first, ..., L-th row end (`MACLanes(splits=L)`). A beat ending e rows emits
   `acc + before[0]`, `before[1] - before[0]`, ... and restarts `acc` with `all - before[e-1]`.
   Rows finish in order. At L = 1 that is one result per beat and the `results` stream is the
   lane engine's; at L = 2 the beat's results are requantised side by side and written to the
   result FIFO as one beat of two results and their count (`EngineConfig.results_bits`).
   Multipliers (requant) arrive L per `scales` beat, rows in pairs within a layer; `_scales`
   hands each row end its own and takes a `scales` beat only when a row end needs it.

Queue arithmetic: the queue is one vector of `queue_slots` entries, entry i in bits
[i * entry_bits, (i + 1) * entry_bits), with every entry at or beyond the fill zero. Each cycle
`queue' = (queue >> popped entries) | (pushed << (fill - popped) entries)`: a pop of a MAC beat
and a push of the in-flight sub-vectors (each placed right after the previous one's kept
values). The zero invariant is what makes a short last beat's empty slots contribute nothing.

Cost model (`sim.packing.pack_schedule`, equal to the engine's cycles at full speed): a layer in a
stream costs ceil(rows * in_features / (L d)) MAC beats instead of rows * ceil(m / L); the code
side takes ceil(rows * m / n) beats and runs ahead.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Signal, signed

from .actbuf import read_port
from .config import ACT_BITS, SHIFT_BITS
from .engine import delayed, greater_than, pick, requant_stages


def packed_computer(engine, m, s, rom, buf, mac, adv, out, rq_valid):
    """Build the packing computer into module `m` of `engine` (an Engine with config.pack), given
    the slot registers and handshakes `s` (per slot: m_m1 = m - 1, pad = (-m) mod lanes (lanes > 1),
    rows_m1, tail_values, shift; cp_slot, computing: the registers the engine keeps; released:
    driven here), the ROM and activation buffer with 2 * lanes read ports each, the split MAC, the
    stall `adv`, the result FIFO `out` (written here) and rq_valid (requant: its second stage's
    valid, which the engine's `adv` reads)."""
    c = engine.config
    d, w, a, L = c.d, c.width, c.code_bits, c.lanes
    lg = L.bit_length() - 1
    n = c.codes_per_beat  # 2 * lanes codes per code beat
    B = L * d  # values per MAC beat
    q_slots = c.queue_slots
    beat_bits = len(buf.r_addr) - 1  # the activation word address below the slot bit
    cp_slot, computing = s.cp_slot, s.computing
    shift_bits = SHIFT_BITS if c.requant else 0
    entry_bits = w + ACT_BITS + 2 + shift_bits  # value, activation, row end, layer end, (shift)

    # ---- the code walker: n codes per beat. cnt[i] = m - 1 - j for code i's sub-vector j of its
    # row (counting down like the lane engine), rows[i] = rows after code i's row; a chain of
    # n steps, each one row wrap at most (a row has at least one sub-vector)
    m_m1 = pick(cp_slot, s.m_m1)
    tail = pick(cp_slot, s.tail_values)
    c0 = Signal(len(s.m_m1[0]), name="pk_c0")
    row_left = Signal(c.rows_bits, name="pk_row_left")
    cnt, rows, has, ends, lends, lens = [c0], [row_left], [Const(1, 1)], [], [], []
    for i in range(n):
        z = cnt[i] == 0  # the code ends its row
        lend = Signal(name=f"pk_lend{i}")
        m.d.comb += lend.eq(has[i] & z & (rows[i] == 0))
        ends.append(has[i] & z)
        lends.append(lend)
        lens.append(Mux(has[i], Mux(z, tail, d), 0))
        nxt_c = Signal(len(c0), name=f"pk_c{i + 1}")
        nxt_r = Signal(c.rows_bits, name=f"pk_rows_after{i + 1}")
        nxt_h = Signal(name=f"pk_has{i + 1}")
        m.d.comb += [
            nxt_c.eq(Mux(z, m_m1, cnt[i] - 1)),
            nxt_r.eq(Mux(z, rows[i] - 1, rows[i])),
            nxt_h.eq(has[i] & ~lend),
        ]
        cnt.append(nxt_c)
        rows.append(nxt_r)
        has.append(nxt_h)
    layer_done = Cat(*lends).any()

    # ---- flow control: count = queue fill + values read but not yet queued
    count_bits = q_slots.bit_length()
    fill = Signal(count_bits, name="pk_fill")
    count = Signal(count_bits, name="pk_count")
    room = ~greater_than(count, q_slots - n * d)
    fire = Signal(name="pk_fire")
    m.d.comb += [
        engine.codes.ready.eq(computing & room),
        fire.eq(computing & engine.codes.valid & room),
        s.released.eq(fire & layer_done),
    ]

    def start_slot(slot):
        m.d.sync += [c0.eq(pick(slot, s.m_m1)), row_left.eq(pick(slot, s.rows_m1))]

    with m.If(fire):
        with m.If(layer_done):
            m.d.sync += cp_slot.eq(~cp_slot)
            start_slot(~cp_slot)
        with m.Else():
            m.d.sync += [c0.eq(cnt[n]), row_left.eq(rows[n])]
    with m.Elif(~computing):
        start_slot(cp_slot)

    # ---- read stage: every codeword and activation sub-vector of the beat, every cycle (a read
    # nobody takes is ignored: the in-flight flags below say which are real). Sub-vector j of a
    # row sits in activation word beats - 1 - (j >> lg), lane j mod lanes; with its down count
    # cnt = m - 1 - j and pad = lanes * beats - m, that is word (cnt + pad) >> lg, lane
    # lanes - 1 - ((cnt + pad) mod lanes).
    m.d.comb += [rom.en.eq(1), buf.r_en.eq(1)]
    pad = pick(cp_slot, s.pad) if L > 1 else 0
    fl_lane = []
    for i in range(n):
        addr, _ = read_port(buf, i)
        at = Signal(len(c0) + 1, name=f"pk_at{i}")
        m.d.comb += [
            at.eq(cnt[i] + pad),
            addr.eq(Cat(at[lg : lg + beat_bits], cp_slot)),
            rom.addr[i].eq(engine.codes.payload[i * a : (i + 1) * a]),
        ]
        if L > 1:
            lane = Signal(lg, name=f"pk_fl_lane{i}")
            m.d.sync += lane.eq(~at[:lg])
            fl_lane.append(lane)
    fl_valid = Signal(name="pk_fl_valid")
    fl_end = [Signal(name=f"pk_fl_end{i}") for i in range(n)]
    fl_lend = [Signal(name=f"pk_fl_lend{i}") for i in range(n)]
    fl_has = [Signal(name=f"pk_fl_has{i}") for i in range(n)]
    fl_tail = Signal(c.tail_bits, name="pk_fl_tail")
    fl_shift = Signal(SHIFT_BITS, name="pk_fl_shift")
    m.d.sync += [fl_valid.eq(fire), fl_tail.eq(tail), fl_shift.eq(pick(cp_slot, s.shift))]
    for i in range(n):
        m.d.sync += [fl_end[i].eq(ends[i]), fl_lend[i].eq(lends[i]), fl_has[i].eq(has[i])]

    # ---- the beat's sub-vectors as queue entries, padding dropped, each placed right after the
    # previous one's kept values
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

    pushed = Signal(n * d * entry_bits, name="pk_pushed")
    push_len = Signal(count_bits, name="pk_push_len")
    parts, offset = [], Const(0, count_bits)
    for i in range(n):
        _, data = read_port(buf, i)
        acts = data.word_select(fl_lane[i], d * ACT_BITS) if L > 1 else data
        parts.append(entries(rom.data[i], acts, fl_end[i], fl_lend[i], fl_has[i]) << (offset * entry_bits))
        nxt = Signal(count_bits, name=f"pk_offset{i + 1}")  # a Signal: the next offset builds on it
        m.d.comb += nxt.eq(offset + Mux(fl_has[i], Mux(fl_end[i], fl_tail, d), 0))
        offset = nxt
    merged = parts[0]
    for part in parts[1:]:
        merged = merged | part
    m.d.comb += [pushed.eq(Mux(fl_valid, merged, 0)), push_len.eq(Mux(fl_valid, offset, 0))]

    # ---- the queue and the MAC beat at its head: B = lanes * d entries, or a layer's last
    # entries (a beat never holds two layers' values, so at most lanes row ends and one shift)
    queue = Signal(q_slots * entry_bits, name="pk_queue")
    head = [queue[i * entry_bits : (i + 1) * entry_bits] for i in range(B)]
    end = [h[w + ACT_BITS] for h in head]
    lend = [h[w + ACT_BITS + 1] for h in head]
    # upto[i]: no layer end among entries 0..i-1, i.e. entry i belongs to the beat
    upto = [Const(1, 1)]
    for i in range(1, B):
        nxt = Signal(name=f"pk_upto{i}")
        m.d.comb += nxt.eq(upto[-1] & ~lend[i - 1])
        upto.append(nxt)
    any_lend = Cat(*lend).any()
    beat_len = Const(B, count_bits)  # entries in the beat: up to the first layer end, else B
    for i in reversed(range(B)):
        beat_len = Mux(lend[i], i + 1, beat_len)
    full = fill >= B
    can = full | any_lend
    # kept row ends, and ends_before[i] = row ends among entries 0..i-1 (at most lanes: rows are
    # at least d values long)
    kept = [end[i] & upto[i] for i in range(B)]
    ends_bits = L.bit_length()
    ends_before = [Const(0, ends_bits)]
    for i in range(1, B + 1):
        nxt = Signal(ends_bits, name=f"pk_ends_before{i}")
        m.d.comb += nxt.eq(ends_before[-1] + kept[i - 1])
        ends_before.append(nxt)
    n_ends = Signal(ends_bits, name="pk_ends")
    m.d.comb += n_ends.eq(ends_before[B])

    pop = Signal(name="pk_pop")
    popped = Signal(count_bits, name="pk_popped")
    base = Signal(count_bits, name="pk_base")
    scale_ok, tag = _scales(engine, m, c, adv, can, pop, n_ends, any_lend, head[0], w) if c.requant else (1, None)
    m.d.comb += [
        pop.eq(adv & can & scale_ok),
        popped.eq(Mux(pop, beat_len, 0)),
        base.eq(fill - popped),
    ]
    m.d.sync += [
        queue.eq((queue >> (popped * entry_bits)) | (pushed << (base * entry_bits))),
        fill.eq(base + push_len),
        count.eq(count + Mux(fire, sum(lens[1:], lens[0]), 0) - popped),
    ]
    m.d.comb += [
        mac.adv.eq(adv),
        mac.valid.eq(pop),
        mac.last.eq(n_ends),
        mac.mask.eq(-1),
        mac.codewords.as_value().eq(Cat(*(Mux(upto[i], head[i][:w], 0) for i in range(B)))),
        mac.acts.eq(Cat(*(head[i][w : w + ACT_BITS] for i in range(B)))),
    ]
    # before[k][i]: entry i is at or before the beat's (k + 1)-th row end
    for k in range(L):
        m.d.comb += mac.before[k].eq(Cat(*(ends_before[i] <= k for i in range(B))))

    # ---- accumulate: a beat ending rows emits them in order (the first is acc + the sum up to
    # its end, the next the sum between the two ends) and keeps the rest
    out_ends = mac.out_last
    upto_end = [mac.out_before[k].as_signed() for k in range(L)]
    acc = Signal(signed(c.acc_bits), name="pk_acc")
    totals = []
    for k in range(L):
        total = Signal(signed(c.acc_bits), name="pk_total" if L == 1 else f"pk_total{k}")
        part = acc + upto_end[0] if k == 0 else upto_end[k] - upto_end[k - 1]
        m.d.comb += total.eq(Mux(out_ends > k, part, 0))  # wraps like the reference
        totals.append(total)
    last_upto = upto_end[0]
    for k in range(1, L):
        last_upto = Mux(out_ends == k + 1, upto_end[k], last_upto)
    with m.If(adv & mac.out_valid):
        with m.If(out_ends == 0):
            m.d.sync += acc.eq(acc + mac.out_sum)
        with m.Else():
            m.d.sync += acc.eq(mac.out_sum - last_upto)
    write = mac.out_valid & (out_ends != 0)
    count_field = [out_ends] if L > 1 else []
    if not c.requant:
        m.d.comb += [out.w_en.eq(write & out.w_rdy), out.w_data.eq(Cat(*totals, *count_field))]
        return
    tag = delayed(m, adv, tag, mac.latency, "rq_tag")  # the MAC's stages
    mults = [tag[k * c.mult_bits : (k + 1) * c.mult_bits] for k in range(L)]
    ys, carried = requant_stages(
        m, c, adv, write, totals, mults, tag[L * c.mult_bits :], rq_valid, Cat(*count_field) if L > 1 else None
    )
    m.d.comb += [out.w_en.eq(rq_valid & out.w_rdy), out.w_data.eq(Cat(*ys, *([carried] if L > 1 else [])))]


def _scales(engine, m, c, adv, can, pop, n_ends, any_lend, first, w):
    """The requant engine's multipliers for a MAC beat ending n_ends rows: (scale_ok, tag).

    `scales` beats hold lanes multipliers each, rows lanes * t .. lanes * t + lanes - 1 of a
    layer in beat t (a layer's last beat may hold fewer), so a beat's row ends may take the rest
    of a partly used `scales` beat and the start of the next. `held` keeps a partly used beat
    (hv) with sl = its next unused lane; the stream's current beat is taken when a row end needs
    it. scale_ok: the multipliers the beat needs are there (so it may pop). tag: Cat(the beat's
    lanes multipliers, for its first n_ends row ends, the layer's shift from its first entry)."""
    L, mb = c.lanes, c.mult_bits
    lg = L.bit_length() - 1
    payload, valid = engine.scales.payload, engine.scales.valid
    shift = first[w + ACT_BITS + 2 :]
    any_end = n_ends != 0
    if L == 1:  # one multiplier per beat and at most one row end per MAC beat: take it with the end
        m.d.comb += engine.scales.ready.eq(adv & can & any_end)
        return valid | ~any_end, Cat(payload, shift)
    held = Signal(L * mb, name="pk_held")
    hv = Signal(name="pk_held_valid")
    sl = Signal(lg, name="pk_held_lane")  # 0 whenever hv is 0
    reach = Signal(lg + 2, name="pk_reach")  # lanes of the current beat used once this beat pops
    m.d.comb += reach.eq(sl + n_ends)
    current = Mux(hv, held, payload)
    mults = []
    for k in range(L):
        lane = sl + k  # lane < 2 L
        mults.append(Mux(lane < L, current.word_select(lane[:lg], mb), payload.word_select(lane[:lg], mb)))
    need = any_end & (~hv | (reach > L))  # the stream's current beat is used by this MAC beat
    m.d.comb += engine.scales.ready.eq(adv & can & need)
    with m.If(pop & any_end):
        # the last scales beat this MAC beat uses is kept, with its next lane reach mod lanes
        # (reach - lanes when the beat ran into the next one), unless it is used up or the layer
        # ends here. At lanes 2 (MAX_PACK_LANES) a beat kept is always the stream's current one:
        # a held beat has one lane left, which any row end uses up.
        with m.If(any_lend | (reach == L)):
            m.d.sync += [hv.eq(0), sl.eq(0)]
        with m.Else():
            m.d.sync += [hv.eq(1), sl.eq(reach[:lg]), held.eq(payload)]
    return valid | ~need, Cat(*mults, shift)
