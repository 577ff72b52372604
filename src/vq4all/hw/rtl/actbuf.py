"""The activation buffer: a layer's int8 input vector, loaded once, read once per beat of every row.

One memory word holds one stream beat: `lanes` sub-vectors of d int8 values (lanes * d * 8 bits),
so the lanes of a beat read their activations together through a single synchronous read port,
and loading a layer's input takes ceil(m / lanes) cycles, the time of one output row. The engine
uses it as two slots so the next layer loads while this one computes: address = (slot in the top
bit, beats - 1 - b below) for beat b of a layer of `beats` beats, so that the engine's loader and
computer address it with their down counters.
"""

from __future__ import annotations

from amaranth.hdl import Module, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out


class ActivationBuffer(wiring.Component):
    """depth words of `word_bits`; write: w_addr/w_data/w_en (one cycle); read: r_addr with r_en,
    r_data registered one cycle later and held while r_en is low. With read_ports=N > 1 (the packing
    engine reads 2 * lanes sub-vectors per cycle) ports r1_addr/r1_data .. r{N-1}_addr/r{N-1}_data
    share r_en."""

    def __init__(self, *, depth: int, word_bits: int, read_ports: int = 1):
        self.depth, self.word_bits, self.read_ports = depth, word_bits, read_ports
        ports = {
            "w_en": In(1),
            "w_addr": In(range(depth)),
            "w_data": In(unsigned(word_bits)),
            "r_en": In(1),
            "r_addr": In(range(depth)),
            "r_data": Out(unsigned(word_bits)),
        }
        for i in range(1, read_ports):
            ports |= {f"r{i}_addr": In(range(depth)), f"r{i}_data": Out(unsigned(word_bits))}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = mem = memory.Memory(shape=unsigned(self.word_bits), depth=self.depth, init=[])
        w = mem.write_port(domain="sync")
        # not transparent: reads and writes never touch the same word in the same cycle (the
        # engine writes one slot while it reads the other, and frees a slot only after its last read)
        r = mem.read_port(domain="sync")
        m.d.comb += [
            w.en.eq(self.w_en),
            w.addr.eq(self.w_addr),
            w.data.eq(self.w_data),
            r.en.eq(self.r_en),
            r.addr.eq(self.r_addr),
            self.r_data.eq(r.data),
        ]
        for i in range(1, self.read_ports):
            r = mem.read_port(domain="sync")
            m.d.comb += [
                r.en.eq(self.r_en),
                r.addr.eq(getattr(self, f"r{i}_addr")),
                getattr(self, f"r{i}_data").eq(r.data),
            ]
        return m


def read_port(buf: ActivationBuffer, i: int):
    """(addr, data) of read port i of `buf`: port 0 is r_addr/r_data, port i > 0 r{i}_addr/r{i}_data."""
    if i == 0:
        return buf.r_addr, buf.r_data
    return getattr(buf, f"r{i}_addr"), getattr(buf, f"r{i}_data")
