"""The decoder + MAC lanes: codewords x activations, summed by a registered balanced adder tree.

Per beat (all lanes of one output row): lane l brings one codeword (d values of `width` bits,
already read from the ROM: that read is the "decode" of a code) and its activation sub-vector
(d int8 values). The d * lanes products (int8 x int`width`, exact in 8 + width bits) go into a
register, then a balanced tree of registered pairwise adders (one level per cycle, one bit wider
per level) reduces them to one partial sum of 8 + width + ceil(log2(d * lanes)) bits.

Why a registered tree and not `sum()`: Python's sum builds a chain of d adders in one cycle
(measured 35 MHz vs 65 MHz for the pipelined tree on iCE40 UP5K, HARDWARE.md). Idle lanes (the
tail of a row whose m is not a multiple of lanes) are masked to a zero product, so whatever their
ROM port or activation word holds never reaches the sum.

Everything advances together on `adv` (the engine's single stall signal); `out_valid` and
`out_last` travel with each beat, `latency` = 1 + tree levels cycles after the inputs.

With `splits` = S > 0 (the packing engine, whose beats may hold the ends of up to S rows and the
start of the next) S more trees beside the first sum only the products flagged in `before[s]`
(those up to the beat's (s+1)-th row end) into `out_before[s]`; the products themselves are
registered once, for every tree. `last` is then `last_bits` wide (the packing engine's row-end
count) and travels with the beat like a flag.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ACT_BITS


class MACLanes(wiring.Component):
    """codewords: [lanes] x (d*width) bits (ROM words); acts: lanes*d int8 packed (value i in bits
    [8i, 8i+8)); mask: [lanes] lane enables; valid/last: the beat's flags.
    out_sum: signed(sum_bits), the masked sum of the beat's d*lanes products, with out_valid and
    out_last, `latency` cycles of `adv` later. splits = S > 0: also `before` ([S] x d*lanes bits,
    product i in bit i) and out_before ([S] sums of the flagged products only). last_bits: width
    of last / out_last (1: a flag)."""

    def __init__(self, *, d: int, width: int, lanes: int, splits: int = 0, last_bits: int = 1):
        self.d, self.width, self.lanes, self.splits, self.last_bits = d, width, lanes, splits, last_bits
        self.levels = (d * lanes - 1).bit_length()
        self.latency = 1 + self.levels
        self.sum_bits = ACT_BITS + width + self.levels
        ports = {
            "adv": In(1),
            "valid": In(1),
            "last": In(last_bits),
            "mask": In(lanes),
            "codewords": In(data.ArrayLayout(unsigned(d * width), lanes)),
            "acts": In(unsigned(lanes * d * ACT_BITS)),
            "out_valid": Out(1),
            "out_last": Out(last_bits),
            "out_sum": Out(signed(self.sum_bits)),
        }
        if splits:
            ports |= {
                "before": In(data.ArrayLayout(unsigned(d * lanes), splits)),
                "out_before": Out(data.ArrayLayout(signed(self.sum_bits), splits)),
            }
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        d, w = self.d, self.width
        # stage 1: the products, registered
        terms = []
        for lane in range(self.lanes):
            for e in range(d):
                cw = self.codewords[lane][e * w : (e + 1) * w].as_signed()
                i = lane * d + e
                act = self.acts[i * ACT_BITS : (i + 1) * ACT_BITS].as_signed()
                product = Signal(signed(ACT_BITS + w), name=f"product_l{lane}_e{e}")
                with m.If(self.adv):
                    m.d.sync += product.eq(Mux(self.mask[lane], act * cw, 0))
                terms.append(product)
        valid, last = Signal(name="valid_p"), Signal(self.last_bits, name="last_p")
        with m.If(self.adv):
            m.d.sync += [valid.eq(self.valid), last.eq(self.last)]
        befores = []
        for s in range(self.splits):  # split tree s's terms: the products up to row end s + 1, the rest zero
            flags = Signal(len(terms), name=f"before{s}_p" if self.splits > 1 else "before_p")
            with m.If(self.adv):
                m.d.sync += flags.eq(self.before[s])
            befores.append([Mux(flags[i], t, 0) for i, t in enumerate(terms)])
        # stages 2..: one registered level of pairwise sums per cycle (an odd term passes through
        # its register unchanged, so every path has the same length)
        for level in range(self.levels):
            terms = self._level(m, terms, level, "tree")
            befores = [
                self._level(m, b, level, f"tree_before{s}" if self.splits > 1 else "tree_before")
                for s, b in enumerate(befores)
            ]
            v, la = Signal(name=f"valid_t{level}"), Signal(self.last_bits, name=f"last_t{level}")
            with m.If(self.adv):
                m.d.sync += [v.eq(valid), la.eq(last)]
            valid, last = v, la
        assert len(terms) == 1
        m.d.comb += [self.out_sum.eq(terms[0]), self.out_valid.eq(valid), self.out_last.eq(last)]
        for s, b in enumerate(befores):
            m.d.comb += self.out_before[s].eq(b[0])
        return m

    def _level(self, m, terms, level, name):
        """One registered level of pairwise sums over `terms` (an odd last term passes through)."""
        bits = ACT_BITS + self.width + level + 1
        nxt = []
        for i in range(0, len(terms), 2):
            s = Signal(signed(bits), name=f"{name}{level}_{i // 2}")
            pair = terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
            with m.If(self.adv):
                m.d.sync += s.eq(pair)
            nxt.append(s)
        return nxt
