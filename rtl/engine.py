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
   The next layer's descriptor may be sent as soon as the last code beat is accepted.

Lanes take L sub-vectors of the SAME row per beat (L ROM read ports), rather than L rows in
parallel: the code stream stays in the artifact's natural row-major order, every lane shares one
activation-buffer word (one read port), and one accumulator serves all lanes. The price is that a
row whose m is not a multiple of L wastes the idle lanes of its last beat.

Pipeline (one beat per cycle, everything advances together on `adv`): accept a code beat and
issue the ROM reads and the activation read -> products -> adder tree levels -> accumulate; the
row's last beat writes acc + partial sum into the result FIFO. `adv` is low only while that write
finds the FIFO full, so a slow result consumer costs cycles only when fifo_depth results wait.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import VQ4AllError
from ..reference import rom_words
from .actbuf import ActivationBuffer
from .config import ACT_BITS, EngineConfig
from .mac import MACLanes
from .rom import CodebookROM


def layer_layout(config: EngineConfig) -> data.StructLayout:
    """The `layer` descriptor: m in the least significant m_bits, rows above it."""
    return data.StructLayout({"m": unsigned(config.m_bits), "rows": unsigned(config.rows_bits)})


def check_codebook(config: EngineConfig, codebook) -> list[int]:
    """ROM words of an int8 codebook [k, d] for this config (k, d and value range checked)."""
    import numpy as np

    codebook = np.asarray(codebook)
    if codebook.dtype != np.int8 or codebook.ndim != 2:
        raise VQ4AllError(f"the engine needs an int8 codebook [k, d], got {codebook.dtype} {list(codebook.shape)} "
                          "(a float16 codebook has no integer datapath)")
    if codebook.shape != (config.k, config.d):
        raise VQ4AllError(f"codebook shape {list(codebook.shape)} does not match the engine's k={config.k}, d={config.d}")
    try:
        return rom_words(codebook, config.width)
    except ValueError as e:
        raise VQ4AllError(f"codebook does not fit the engine's width={config.width}: {e}") from None


class Engine(wiring.Component):
    """The generated accelerator. codebook: [k, d] int8 (inline ROM), or None with rom_init_file
    (the ROM is the `$readmemh` module `vq4all_codebook_rom`, see rtl.rom)."""

    def __init__(self, config: EngineConfig, codebook=None, *, rom_init_file: str | None = None):
        self._MustUse__silence = True  # a constructor that raises leaves nothing to elaborate
        if not isinstance(config, EngineConfig):
            raise VQ4AllError("Engine needs an EngineConfig")
        if (codebook is None) == (rom_init_file is None):
            raise VQ4AllError("Engine needs exactly one of codebook (inline ROM) or rom_init_file ($readmemh ROM)")
        self.config = config
        self._words = None if codebook is None else check_codebook(config, codebook)
        self._rom_init_file = rom_init_file
        c = config
        super().__init__({
            "layer": In(stream.Signature(layer_layout(c))),
            "acts": In(stream.Signature(unsigned(c.lanes * c.d * ACT_BITS))),
            "codes": In(stream.Signature(unsigned(c.lanes * c.code_bits))),
            "results": Out(stream.Signature(signed(c.acc_bits))),
        })
        self._MustUse__silence = False

    def elaborate(self, platform):
        c = self.config
        L, a = c.lanes, c.code_bits
        m = Module()
        m.submodules.rom = rom = CodebookROM(k=c.k, word_bits=c.word_bits, ports=L, words=self._words,
                                             init_file=self._rom_init_file)
        m.submodules.actbuf = buf = ActivationBuffer(depth=c.beats_max, word_bits=L * c.d * ACT_BITS)
        m.submodules.mac = mac = MACLanes(d=c.d, width=c.width, lanes=L)
        m.submodules.fifo = out = fifo.SyncFIFOBuffered(width=c.acc_bits, depth=c.fifo_depth)

        lg = L.bit_length() - 1
        rows = Signal(c.rows_bits)
        beats = Signal(range(c.beats_max + 1))      # ceil(m / lanes) of the current layer
        tail_mask = Signal(L)                        # lanes used by a row's last beat
        beat = Signal(range(c.beats_max))            # beat index within the row (and buffer address)
        row = Signal(c.rows_bits)

        # the one stall: the row's last beat reaches the accumulator and the FIFO is full
        adv = Signal()
        write = mac.out_valid & mac.out_last
        m.d.comb += adv.eq(~(write & ~out.w_rdy))

        fire = Signal()            # a code beat is accepted this cycle
        last_beat = Signal()       # ...and it is its row's last
        m.d.comb += last_beat.eq(beat == beats - 1)

        # Comb outputs are plain expressions of the state, outside the FSM's `with` blocks: a comb
        # signal assigned under If/State becomes an `always @*` that Icarus never runs at time 0
        # when all its inputs are registers (amaranth-lang/amaranth#1629), leaving e.g.
        # layer.ready at X until the first state change; an expression becomes an `assign`.
        with m.FSM(name="phase") as fsm:
            with m.State("IDLE"):
                with m.If(self.layer.valid):
                    lm, lr = self.layer.payload.m, self.layer.payload.rows
                    m.d.sync += [
                        rows.eq(lr), beat.eq(0), row.eq(0),
                        beats.eq((lm + (L - 1)) >> lg),
                    ]
                    # lane l works in a row's last beat iff l <= (m - 1) mod L
                    for lane in range(L):
                        m.d.sync += tail_mask[lane].eq(((lm - 1) & (L - 1)) >= lane)
                    with m.If((lm != 0) & (lr != 0)):
                        m.next = "LOAD"
            with m.State("LOAD"):
                with m.If(self.acts.valid):
                    with m.If(last_beat):
                        m.d.sync += beat.eq(0)
                        m.next = "COMPUTE"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("COMPUTE"):
                with m.If(fire):
                    with m.If(last_beat):
                        m.d.sync += [beat.eq(0), row.eq(row + 1)]
                        with m.If(row == rows - 1):
                            m.next = "IDLE"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
        idle, loading, computing = fsm.ongoing("IDLE"), fsm.ongoing("LOAD"), fsm.ongoing("COMPUTE")
        m.d.comb += [
            self.layer.ready.eq(idle),
            self.acts.ready.eq(loading),
            buf.w_en.eq(loading & self.acts.valid), buf.w_addr.eq(beat), buf.w_data.eq(self.acts.payload),
            self.codes.ready.eq(computing & adv),
            fire.eq(computing & self.codes.valid & adv),
        ]

        # stage 0 -> 1: synchronous ROM and activation reads, with the beat's flags alongside
        m.d.comb += [rom.en.eq(adv), buf.r_en.eq(adv), buf.r_addr.eq(beat)]
        for lane in range(L):
            m.d.comb += rom.addr[lane].eq(self.codes.payload[lane * a:(lane + 1) * a])
        valid1, last1, mask1 = Signal(), Signal(), Signal(L)
        with m.If(adv):
            m.d.sync += [valid1.eq(fire), last1.eq(last_beat), mask1.eq(Mux(last_beat, tail_mask, (1 << L) - 1))]
        m.d.comb += [
            mac.adv.eq(adv), mac.valid.eq(valid1), mac.last.eq(last1), mac.mask.eq(mask1),
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
        m.d.comb += [out.w_en.eq(write & out.w_rdy), out.w_data.eq(total)]
        m.d.comb += [
            self.results.valid.eq(out.r_rdy), self.results.payload.eq(out.r_data), out.r_en.eq(self.results.ready),
        ]
        return m
