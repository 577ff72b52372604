"""The engine's top: codebook ROM + activation buffer + MAC lanes + accumulator + result FIFO.

Protocol (valid/ready streams, a transfer on a rising edge where both are high):
1. `layer`: one descriptor {m: sub-vectors per row (1..max_m), rows: output rows (1..max_rows)}.
   (m = 0 or rows = 0 is accepted and does nothing.)
2. `acts`: ceil(m / lanes) beats, the input vector x (int8, zero-padded to ceil(m/lanes)*lanes*d
   values), value i of beat b = x[b*lanes*d + i] in bits [8i, 8i+8).
3. `codes`: rows * ceil(m / lanes) beats, the layer's codes [rows, m] row by row, lane l of beat
   b of row o = codes[o, b*lanes + l] (log2(k) bits each, lane 0 in the LSBs); the idle lanes of a
   row's last beat (m not a multiple of lanes) are ignored.
4. `results`: rows values, signed acc_bits: results[o] = wrap_acc(sum_j sum_e x[j*d+e] *
   codebook[codes[o, j], e]), i.e. `reference.lookup_matmul_int(x, codes, codebook, acc_bits)`.
   The next layer's descriptor and activations are taken while this layer computes (two
   activation slots), so back-to-back layers stream without a bubble.
5. With `requant`: the descriptor also carries the layer's shift (1..62), a `scales` stream
   brings one unsigned multiplier per row (taken together with the row's first code beat), and
   results[o] = reference.requantize(acc, multiplier[o], shift, out_bits), signed out_bits.
6. A descriptor outside the engine's limits (m > max_m, rows > max_rows, requant: a non-empty
   layer's shift outside 1..62; `EngineConfig.descriptor_problem`) is taken and rejected: no slot,
   no activations, codes or results; `error` (sticky until reset) rises and `rejected` (a count
   modulo 2^REJECTED_BITS) steps on the cycle after its transfer, and the next valid descriptor
   runs normally. The host sends nothing else for a rejected descriptor.

With `pack` (EngineConfig.pack, lanes L = 1 or 2, `rtl/packed.py`) the descriptor also carries
`tail` (values in a row's last sub-vector, 1..d; rows of at least d values), a `codes` beat
carries 2 L codes of the layer's codes flattened row-major, the rows' multipliers (requant) are
taken with the MAC beats that end the rows (L per `scales` beat), the MAC takes L d values per
cycle across row ends, with no padding products, and at L = 2 a `results` beat carries 1 or 2
results and their count.

Lanes take L sub-vectors of the SAME row per beat (L ROM read ports), rather than L rows in
parallel: the code stream stays in the artifact's natural row-major order, every lane shares one
activation-buffer word (one read port), and one accumulator serves all lanes. The price is that a
row whose m is not a multiple of L wastes the idle lanes of its last beat.

Activation buffer: two slots (ping-pong). A loader takes a descriptor into a free slot and fills
it; the computer walks the loaded slot and frees it with the layer's last code beat. Alone, a
layer of R rows costs (R + 1) * ceil(m / L) beats (the +1 is its load); in a stream of layers the
load hides behind the previous layer's compute and a layer costs R * ceil(m / L).

Control: every decision the walkers take (last activation beat, last beat of a row, last row of
a layer, whether the computer's slot is loaded) is a flag register prepared a cycle ahead from
down counters and per-slot flags written with the descriptor, so no counter arithmetic or slot
multiplexer sits between a register and `fire` (iCE40 UP5K, K = 1024, lanes 1: 6 logic levels
and 49.5 MHz, against 14 levels and 33.8 MHz when `beat == beats - 1` was compared each cycle).
Activation beat b of a layer sits at buffer address (slot, beats - 1 - b): both walkers count
down, and their counters are the addresses.

Pipeline (one beat per cycle, everything advances together on `adv`): accept a code beat and
issue the ROM reads and the activation read -> products -> adder tree levels -> accumulate; the
row's last beat writes acc + partial sum into the result FIFO. `adv` is low only while that write
finds the FIFO full, so a slow result consumer costs cycles only when fifo_depth results wait.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from vq4all.artifact import Codebook
from vq4all.errors import VQ4AllError

from .actbuf import ActivationBuffer
from .config import ACT_BITS, MAX_SHIFT, REJECTED_BITS, SHIFT_BITS, EngineConfig
from .mac import MACLanes
from .rom import CodebookROM, readmemh_rom


def greater_than(value, const: int):
    """value > const for an unsigned Value and a constant, as plain AND/OR logic over the bits.

    Why not `value > const`: yosys maps that comparison onto a carry chain (iCE40 SB_CARRY), and
    entering and leaving the chain cost two logic levels on the path from the descriptor to the
    slot registers; this form lets the LUT mapper build a balanced tree."""
    const = int(const)
    if const < 0:
        return Const(1, 1)
    if const >= (1 << len(value)) - 1:
        return Const(0, 1)
    result = Const(0, 1)  # over the bits below: value[:i] > const[:i]
    for i in range(len(value)):
        bit = value[i]
        result = (bit & result) if (const >> i) & 1 else (bit | result)
    return result


def pick(sel, pair):
    """A 2-way Mux over a pair of slot registers: an `assign` in Verilog (an Array read may not be)."""
    return Mux(sel, pair[1], pair[0])


def delayed(m, adv, value, stages: int, name: str):
    """`value` registered `stages` times on `adv` (Signals name_1 .. name_<stages>): a beat's tag
    travelling beside a pipeline that advances on the same stall."""
    for i in range(stages):
        nxt = Signal(len(value), name=f"{name}_{i + 1}")
        with m.If(adv):
            m.d.sync += nxt.eq(value)
        value = nxt
    return value


def requant_stages(m, c: EngineConfig, adv, valid, totals, mults, shift, rq_valid, carry=None):
    """The requantization stages (reference.requantize) for totals[i] (signed acc_bits) with
    mults[i] (unsigned mult_bits) and one shift (1..62), side by side: (1) the exact product
    total * multiplier, registered; (2) + 2^(shift-1), arithmetic shift right, saturate to
    out_bits, registered. rq_valid (a Signal made by the caller) is `valid` two stages later;
    `carry` (any Value) travels alongside. Returns (ys: signed out_bits Signals, the carried
    Signal or None). Everything advances on `adv`."""
    one = len(totals) == 1
    # stage 1: the exact products (acc_bits + mult_bits bits, signed)
    v1 = Signal(name="rq_valid_1")
    shift1 = Signal(SHIFT_BITS, name="shift1" if one else "rq_shift_1")
    prods = [
        Signal(signed(c.acc_bits + c.mult_bits + 1), name="prod" if one else f"rq_{i}_prod") for i in range(len(totals))
    ]
    with m.If(adv):
        m.d.sync += [
            v1.eq(valid),
            *(p.eq(t * u.as_unsigned()) for p, t, u in zip(prods, totals, mults)),
            shift1.eq(shift),
        ]
    carried = None
    if carry is not None:
        c1, carried = Signal(len(carry), name="rq_carry_1"), Signal(len(carry), name="rq_carry_2")
        with m.If(adv):
            m.d.sync += [c1.eq(carry), carried.eq(c1)]
    # stage 2: round half up, shift, saturate
    lo, hi = -(1 << (c.out_bits - 1)), (1 << (c.out_bits - 1)) - 1
    half = Const(1, 1) << (shift1 - 1)[:SHIFT_BITS]  # 2^(shift-1); shift is 1..62
    ys, outs = [], []
    for i, prod in enumerate(prods):
        tag = "" if one else f"rq_{i}_"  # (one total keeps the names the lane engine always had)
        rounded = Signal(signed(c.acc_bits + c.mult_bits + 2), name=f"{tag}rounded")
        shifted = Signal(signed(c.acc_bits + c.mult_bits + 2), name=f"{tag}shifted")
        m.d.comb += [rounded.eq(prod + half), shifted.eq(rounded >> shift1)]
        y = Signal(signed(c.out_bits), name=f"{tag}y")
        outs.append(y.eq(Mux(shifted > hi, hi, Mux(shifted < lo, lo, shifted))))
        ys.append(y)
    with m.If(adv):
        m.d.sync += [rq_valid.eq(v1), *outs]
    return ys, carried


def layer_layout(config: EngineConfig) -> data.StructLayout:
    """The `layer` descriptor: m in the least significant m_bits, rows above it, then (with pack)
    the values in a row's last sub-vector in tail_bits bits, then (with requant) the layer's
    shift in SHIFT_BITS bits."""
    fields = {"m": unsigned(config.m_bits), "rows": unsigned(config.rows_bits)}
    if config.pack:
        fields["tail"] = unsigned(config.tail_bits)
    if config.requant:
        fields["shift"] = unsigned(SHIFT_BITS)
    return data.StructLayout(fields)


class Engine(wiring.Component):
    """The generated accelerator. codebook: an int8 artifact.Codebook [k, d] (inline ROM of its
    cached ROM words, `EngineConfig.check_codebook`), or None with rom_init_file (the ROM is the
    `$readmemh` module `vq4all_codebook_rom`, see rtl.rom).

    Ports: the streams layer (layer_layout), acts (lanes*d*8 bits), codes (codes_per_beat*code_bits),
    scales (requant: mult_bits), results (signed result_bits, out); the status outputs error
    (1 bit) and rejected (REJECTED_BITS), registered. docs/stream-protocol.md has the contract."""

    def __init__(self, config: EngineConfig, codebook: Codebook | None = None, *, rom_init_file: str | None = None):
        self._MustUse__silence = True  # a constructor that raises leaves nothing to elaborate
        if not isinstance(config, EngineConfig):
            raise VQ4AllError("Engine needs an EngineConfig")
        if (codebook is None) == (rom_init_file is None):
            raise VQ4AllError("Engine needs exactly one of codebook (inline ROM) or rom_init_file ($readmemh ROM)")
        self.config = config
        if rom_init_file is not None and config.split_rom:
            raise VQ4AllError(
                f"engine rom_width={config.rom_width}: the split ROM exists only inline (its exceptions are logic), "
                "not as a $readmemh ROM file"
            )
        self._words = None if codebook is None else config.check_codebook(codebook)
        self._rom_init_file = rom_init_file
        c = config
        ports = {
            "layer": In(stream.Signature(layer_layout(c))),
            "acts": In(stream.Signature(unsigned(c.lanes * c.d * ACT_BITS))),
            "codes": In(stream.Signature(unsigned(c.codes_per_beat * c.code_bits))),
        }
        if c.requant:  # one multiplier per output row, taken with the row's first code beat
            ports["scales"] = In(stream.Signature(unsigned(c.scales_per_beat * c.mult_bits)))
        # one signed result per beat, or (packing at lanes > 1) results_per_beat results and a count
        results_shape = signed(c.result_bits) if c.results_per_beat == 1 else unsigned(c.results_bits)
        ports["results"] = Out(stream.Signature(results_shape))
        # status, registered: `error` is sticky from the first rejected descriptor to reset,
        # `rejected` counts them (mod 2^REJECTED_BITS) so that each one is visible to the host
        ports["error"] = Out(1)
        ports["rejected"] = Out(REJECTED_BITS)
        super().__init__(ports)
        self._MustUse__silence = False

    def elaborate(self, platform):
        c = self.config
        L, a = c.lanes, c.code_bits
        m = Module()
        if self._words is not None:
            split = (c.d, c.width, c.stored_width) if c.split_rom else None
            m.submodules.rom = rom = CodebookROM(
                k=c.k, word_bits=c.word_bits, ports=c.codes_per_beat, words=self._words, split=split
            )
        else:  # in this (top) module, so that generate.engine_verilog can make its file a top parameter
            rom, m.submodules.rom = readmemh_rom(
                k=c.k, word_bits=c.word_bits, ports=c.codes_per_beat, init_file=self._rom_init_file
            )
        # two activation slots (ping-pong): the next layer's input loads while this one computes
        beat_bits = max(1, (c.beats_max - 1).bit_length())
        m.submodules.actbuf = buf = ActivationBuffer(
            depth=2 << beat_bits, word_bits=L * c.d * ACT_BITS, read_ports=c.codes_per_beat if c.pack else 1
        )
        m.submodules.mac = mac = MACLanes(
            d=c.d, width=c.width, lanes=L, splits=L if c.pack else 0, last_bits=L.bit_length() if c.pack else 1
        )
        m.submodules.fifo = out = fifo.SyncFIFOBuffered(width=c.results_bits, depth=c.fifo_depth)

        lg = L.bit_length() - 1
        # Control without arithmetic between a register and a decision: every "is this the last
        # beat / row / activation beat" is a flag register computed a cycle ahead from down
        # counters, because comparing an up counter with a slot's count minus one (a carry chain
        # behind a slot mux) was the engine's critical path (UP5K: 14-18 logic levels, 32-34 MHz).
        # The schedule is unchanged cycle for cycle: the same beats are taken on the same edges.
        #
        # per slot: its layer's descriptor as (beats - 1, rows - 1) with beats = ceil(m / lanes),
        # flags for beats == 1 and rows == 1, the lanes used by a row's last beat; `owned` from
        # descriptor to the layer's last code beat, `loaded` once its activations are all in
        slot_beats_m1 = [Signal(beat_bits, name=f"beats_m1_{i}") for i in range(2)]
        slot_rows_m1 = [Signal(c.rows_bits, name=f"rows_m1_{i}") for i in range(2)]
        slot_one_beat = [Signal(name=f"one_beat_{i}") for i in range(2)]
        slot_one_row = [Signal(name=f"one_row_{i}") for i in range(2)]
        slot_tail = [Signal(L, name=f"tail_mask_{i}") for i in range(2)]
        slot_shift = [Signal(SHIFT_BITS, name=f"shift_{i}") for i in range(2)]
        # with pack: the values in a row's last sub-vector (the descriptor's tail field)
        slot_tail_values = [Signal(c.tail_bits, name=f"tail_values_{i}") for i in range(2)] if c.pack else None
        # with pack at lanes > 1: sub-vectors per row - 1 (the beat count is per lanes sub-vectors),
        # and the padding sub-vectors of a row's last activation word, (-m) mod lanes
        sub_bits = max(1, (c.max_m - 1).bit_length())
        pack_wide = c.pack and L > 1
        slot_m_m1 = [Signal(sub_bits, name=f"m_m1_{i}") for i in range(2)] if pack_wide else slot_beats_m1
        slot_pad = [Signal(lg, name=f"pad_{i}") for i in range(2)] if pack_wide else None
        owned = [Signal(name=f"owned_{i}") for i in range(2)]
        loaded = [Signal(name=f"loaded_{i}") for i in range(2)]

        # Both walkers count down, and beat b of a row lives at activation address beats-1-b, so
        # the down counters are the buffer addresses themselves (no up counter alongside).
        # loader: takes a descriptor into the free slot, then its ceil(m / lanes) activation beats;
        # ld_left = beats still to come after the current one, ld_last = (ld_left == 0)
        ld_slot = Signal(name="ld_slot")
        ld_busy = Signal(name="ld_busy")
        ld_left = Signal(beat_bits, name="ld_left")
        ld_last = Signal(name="ld_last")
        # computer: walks the loaded slot's rows x beats code beats; beat_left / row_left = beats /
        # rows after the current one, last_beat / last_row their "== 0" as registers, row_first
        # = "this beat is its row's first" (the requant multiplier is taken with it)
        cp_slot = Signal(name="cp_slot")
        beat_left = Signal(beat_bits, name="beat_left")
        row_left = Signal(c.rows_bits, name="row_left")
        last_beat = Signal(name="last_beat")
        last_row = Signal(name="last_row")
        last_all = Signal(name="last_all")  # last_beat & last_row: the slot's last code beat
        row_first = Signal(name="row_first", init=1)

        tail_mask = pick(cp_slot, slot_tail)

        # the one stall: a result is due in the FIFO and the FIFO is full
        adv = Signal()
        # a beat ending a row reaches the accumulator (out_last: a flag, or the packing engine's count)
        write = mac.out_valid & (mac.out_last.any() if len(mac.out_last) > 1 else mac.out_last)
        rq_valid = Signal()  # (requant) a result leaves the second requant stage
        m.d.comb += adv.eq(~((rq_valid if c.requant else write) & ~out.w_rdy))

        # a register equal to loaded[cp_slot] (kept alongside, below), so that no slot mux sits
        # between the registers and `fire`
        computing = Signal(name="computing")
        fire = Signal()  # a code beat is accepted this cycle
        # Comb signals are plain expressions (no If/Switch in the comb domain): a comb signal
        # assigned under If becomes an `always @*` that Icarus never runs at time 0 when all its
        # inputs are registers (amaranth-lang/amaranth#1629), leaving e.g. layer.ready at X.
        # with requant, a row's first code beat is taken together with the row's multiplier
        scale_ok = (self.scales.valid | ~row_first) if c.requant else 1
        m.d.comb += [
            self.layer.ready.eq(~ld_busy & ~pick(ld_slot, owned)),
            self.acts.ready.eq(ld_busy),
            buf.w_en.eq(ld_busy & self.acts.valid),
            buf.w_addr.eq(Cat(ld_left, ld_slot)),
            buf.w_data.eq(self.acts.payload),
        ] + (
            []  # the packing computer drives codes.ready (rtl/packed.py)
            if c.pack
            else [
                self.codes.ready.eq(computing & adv & scale_ok),
                fire.eq(computing & self.codes.valid & adv & scale_ok),
            ]
        )
        if c.requant and not c.pack:
            m.d.comb += self.scales.ready.eq(computing & adv & self.codes.valid & row_first)

        # the descriptor check (EngineConfig.descriptor_problem): the m and rows fields can hold
        # more than max_m and max_rows (they are max_m.bit_length(), max_rows.bit_length() bits),
        # and a larger m would overrun the beat counter and the activation slot, so such a
        # descriptor is taken, flagged and otherwise ignored like an empty one; so is a requant
        # shift the reference refuses (0, 63); with pack, a tail outside 1..d or a row shorter than d
        lm, lr = self.layer.payload.m, self.layer.payload.rows
        empty, bad = Signal(name="layer_empty"), Signal(name="layer_bad")
        bad_shift = 0
        if c.requant:
            ls = self.layer.payload.shift
            bad_shift = ~empty & ((ls == 0) | greater_than(ls, MAX_SHIFT))
        if c.pack:
            lt = self.layer.payload.tail
            bad_tail = ~empty & ((lt == 0) | greater_than(lt, c.d) | ((lm == 1) & (lt != c.d)))

        def limits():
            return greater_than(lm, c.max_m) | greater_than(lr, c.max_rows) | bad_shift

        m.d.comb += [
            empty.eq((lm == 0) | (lr == 0)),
            bad.eq(limits() | bad_tail if c.pack else limits()),
        ]
        taken = self.layer.valid & self.layer.ready
        take = taken & ~empty & ~bad  # an empty layer is taken and ignored
        with m.If(taken & bad):
            m.d.sync += [self.error.eq(1), self.rejected.eq(self.rejected + 1)]
        loaded_last = ld_busy & self.acts.valid & ld_last
        # the computed slot's last code beat (the packing computer drives its own)
        released = Signal(name="released") if c.pack else fire & last_all
        # (m - 1) >> log2(lanes) = ceil(m / lanes) - 1 for m >= 1 (a taken layer has m >= 1)
        new_beats_m1 = ((lm - 1) >> lg)[:beat_bits]
        with m.If(take):
            m.d.sync += [ld_busy.eq(1), ld_left.eq(new_beats_m1), ld_last.eq(lm <= L)]
        with m.If(ld_busy & self.acts.valid):
            m.d.sync += [ld_left.eq(ld_left - 1), ld_last.eq(ld_left == 1)]
            with m.If(ld_last):
                m.d.sync += [ld_busy.eq(0), ld_slot.eq(~ld_slot)]
        # (the loader and the computer never change the same slot in one cycle: the loader only
        # takes a slot that is not owned, the computer only releases a loaded one)
        for i in range(2):
            with m.If(take & (ld_slot == i)):
                m.d.sync += owned[i].eq(1)
            # A slot's descriptor registers take every descriptor transferred while the loader
            # points at it, empty and rejected ones included (their values are never used: the
            # slot stays free, and the next descriptor overwrites them), so that the descriptor
            # check is not on the path to their enables.
            with m.If(taken & (ld_slot == i)):
                m.d.sync += [
                    slot_beats_m1[i].eq(new_beats_m1),
                    slot_rows_m1[i].eq(lr - 1),
                    slot_one_beat[i].eq(lm <= L),
                    slot_one_row[i].eq(lr == 1),
                    # lane l works in a row's last beat iff l <= (m - 1) mod L
                    slot_tail[i].eq(Cat(((lm - 1) & (L - 1)) >= lane for lane in range(L))),
                ]
                if c.pack:
                    m.d.sync += slot_tail_values[i].eq(self.layer.payload.tail)
                if pack_wide:
                    m.d.sync += [slot_m_m1[i].eq(lm - 1), slot_pad[i].eq(-lm)]
                if c.requant:  # a shift above shift_cap rounds to 0 like shift_cap itself (EngineConfig.shift_cap)
                    ls = self.layer.payload.shift
                    m.d.sync += slot_shift[i].eq(Mux(ls > c.shift_cap, c.shift_cap, ls))
            with m.If(loaded_last & (ld_slot == i)):
                m.d.sync += loaded[i].eq(1)
            with m.If(released & (cp_slot == i)):
                m.d.sync += [owned[i].eq(0), loaded[i].eq(0)]
        with m.If(released):  # the computer moves to the other slot: is it loaded (or loading its last beat)?
            m.d.sync += computing.eq(pick(~cp_slot, loaded) | (loaded_last & (ld_slot != cp_slot)))
        with m.Elif(loaded_last & (ld_slot == cp_slot)):
            m.d.sync += computing.eq(1)

        if c.pack:  # the packing computer (rtl/packed.py) instead of the lane computer below
            from .packed import packed_computer

            slots = SimpleNamespace(
                m_m1=slot_m_m1,
                pad=slot_pad,
                rows_m1=slot_rows_m1,
                tail_values=slot_tail_values,
                shift=slot_shift,
                cp_slot=cp_slot,
                computing=computing,
                released=released,
            )
            packed_computer(self, m, slots, rom, buf, mac, adv, out, rq_valid)
            m.d.comb += [
                self.results.valid.eq(out.r_rdy),
                self.results.payload.eq(out.r_data),
                out.r_en.eq(self.results.ready),
            ]
            return m

        # The computer's counters start a slot from its registers: on the edge that releases the
        # previous slot (the next one's descriptor was taken at least a cycle earlier, or it is
        # not loaded yet), and on every cycle it waits for a slot to load (a slot's registers are
        # written on its descriptor's edge, and `loaded` rises no earlier than one cycle later,
        # so the last waiting cycle always copies the final values).
        def start_slot(slot):
            m.d.sync += [
                beat_left.eq(pick(slot, slot_beats_m1)),
                row_left.eq(pick(slot, slot_rows_m1)),
                last_beat.eq(pick(slot, slot_one_beat)),
                last_row.eq(pick(slot, slot_one_row)),
                last_all.eq(pick(slot, slot_one_beat) & pick(slot, slot_one_row)),
            ]

        with m.If(fire):
            m.d.sync += row_first.eq(last_beat)
            with m.If(last_all):
                m.d.sync += cp_slot.eq(~cp_slot)
                start_slot(~cp_slot)
            with m.Elif(last_beat):  # the next row of the same slot
                m.d.sync += [
                    beat_left.eq(pick(cp_slot, slot_beats_m1)),
                    last_beat.eq(pick(cp_slot, slot_one_beat)),
                    row_left.eq(row_left - 1),
                    last_row.eq(row_left == 1),
                    last_all.eq(pick(cp_slot, slot_one_beat) & (row_left == 1)),
                ]
            with m.Else():
                m.d.sync += [
                    beat_left.eq(beat_left - 1),
                    last_beat.eq(beat_left == 1),
                    last_all.eq((beat_left == 1) & last_row),
                ]
        with m.Elif(~computing):
            start_slot(cp_slot)

        # stage 0 -> 1: synchronous ROM and activation reads, with the beat's flags alongside
        m.d.comb += [rom.en.eq(adv), buf.r_en.eq(adv), buf.r_addr.eq(Cat(beat_left, cp_slot))]
        for lane in range(L):
            m.d.comb += rom.addr[lane].eq(self.codes.payload[lane * a : (lane + 1) * a])
        valid1, last1, mask1 = Signal(), Signal(), Signal(L)
        with m.If(adv):
            m.d.sync += [valid1.eq(fire), last1.eq(last_beat), mask1.eq(Mux(last_beat, tail_mask, (1 << L) - 1))]
        m.d.comb += [
            mac.adv.eq(adv),
            mac.valid.eq(valid1),
            mac.last.eq(last1),
            mac.mask.eq(mask1),
            mac.acts.eq(buf.r_data),
        ]
        for lane in range(L):
            m.d.comb += mac.codewords[lane].eq(rom.data[lane])

        # accumulate; a row's last beat emits acc + partial sum (wrapped to acc_bits) and clears acc
        acc = Signal(signed(c.acc_bits))
        total = Signal(signed(c.acc_bits))
        m.d.comb += total.eq(acc + mac.out_sum)  # truncation = two's-complement wrap, as the reference
        with m.If(adv & mac.out_valid):
            with m.If(mac.out_last):
                m.d.sync += acc.eq(0)
            with m.Else():
                m.d.sync += acc.eq(total)
        if not c.requant:
            m.d.comb += [out.w_en.eq(write & out.w_rdy), out.w_data.eq(total)]
        else:
            self._requant(m, adv, fire, row_first, cp_slot, slot_shift, write, total, rq_valid, out, mac.latency)
        m.d.comb += [
            self.results.valid.eq(out.r_rdy),
            self.results.payload.eq(out.r_data),
            out.r_en.eq(self.results.ready),
        ]
        return m

    def _requant(self, m, adv, fire, row_first, cp_slot, slot_shift, write, total, rq_valid, out, mac_latency):
        """The lane engine's output stage (reference.requantize): the row's multiplier and the
        layer's shift travel with every beat through the read and MAC stages (rows may be shorter
        than the pipeline), then `requant_stages`; the FIFO takes stage 2's result."""
        c = self.config
        row_mult = Signal(c.mult_bits)  # the current row's multiplier, held after its first beat
        with m.If(fire & row_first):
            m.d.sync += row_mult.eq(self.scales.payload)
        tag = Signal(c.mult_bits + SHIFT_BITS, name="rq_tag_0")
        m.d.comb += tag.eq(Cat(Mux(row_first, self.scales.payload, row_mult), pick(cp_slot, slot_shift)))
        tag = delayed(m, adv, tag, 1 + mac_latency, "rq_tag")  # the read stage, then the MAC's stages
        mult, shift = tag[: c.mult_bits], tag[c.mult_bits :]
        (y,), _ = requant_stages(m, c, adv, write, [total], [mult], shift, rq_valid)
        m.d.comb += [out.w_en.eq(rq_valid & out.w_rdy), out.w_data.eq(y)]
