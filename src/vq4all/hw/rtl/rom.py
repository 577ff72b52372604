"""The codebook ROM: k words of d*width bits, `ports` synchronous read ports sharing one enable.

Two forms of the same ROM:
- inline (default, `CodebookROM`): `amaranth.lib.memory.Memory` initialised with
  `vq4all.reference.rom_words`, so the generated Verilog/RTLIL carries the codebook itself;
- readmemh (`readmemh_rom`): an instance of the hand-written Verilog module `vq4all_codebook_rom`
  (see `readmemh_module`) that loads its words with `$readmemh` at elaboration, so an FPGA flow can
  swap the codebook (a new .hex file) without regenerating the RTL. The engine instantiates it in
  its own top module, so that the file name can become a parameter of the top
  (`generate.engine_verilog`: `ROM_INIT_FILE`), overridable where FPGA flows and testbenches set
  parameters, without reaching into the hierarchy.

A split ROM (`EngineConfig.rom_width`, inline form only): the memory holds the low rom_width
bits of every value, and a value's high bits are the sign extension of those bits XOR an
exception pattern that is zero for every value that fits rom_width bits; the non-zero patterns
are a `Switch` on the address beside the memory (logic, registered like the memory's data). The
universal codebook (K = 65536, d = 8) has 24 of its 524,288 values outside 7 bits and 430
outside 6, so a 6-bit memory plus a few hundred cases of logic replaces the 8-bit one.

Reads are synchronous (registered data, one cycle after the address) because FPGA block RAM has
no asynchronous read; a ROM has no write port, so several read ports are legal (an FPGA tool
duplicates the block RAM beyond its two native ports).
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Instance, Module, ResetSignal, Signal, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from vq4all.errors import VQ4AllError

ROM_MODULE = "vq4all_codebook_rom"


def rom_signature(*, k: int, word_bits: int, ports: int) -> wiring.Signature:
    """The ROM's ports: en (1 bit) in; addr: [ports] x log2(k) bits in; data: [ports] x word_bits
    bits out, valid one cycle after `en` was high with that address (held while `en` is low)."""
    return wiring.Signature(
        {
            "en": In(1),
            "addr": In(data.ArrayLayout(unsigned(k.bit_length() - 1), ports)),
            "data": Out(data.ArrayLayout(unsigned(word_bits), ports)),
        }
    )


def split_words(words, *, d: int, width: int, rom_width: int) -> tuple[list[int], dict[int, int]]:
    """The split ROM's contents: (low, exceptions).

    words: k ROM words of d values of `width` bits (`reference.rom_words`, element e in bits
    [e*width, (e+1)*width)). low[i]: word i's values cut to their low rom_width bits, element e
    in bits [e*rom_width, (e+1)*rom_width). exceptions: {i: pattern} for the words with a value
    outside rom_width-bit two's complement; element e's (width - rom_width)-bit field of the
    pattern, in bits [e*h, (e+1)*h) with h = width - rom_width, is the value's high bits XOR the
    sign extension of its low ones (zero for every value that fits, so absent words read 0).
    A value is exactly Cat(low_e, replicate(low_e[rom_width-1], h) ^ pattern_e)."""
    h = width - rom_width
    lo_mask, hi_mask = (1 << rom_width) - 1, (1 << h) - 1
    low, exceptions = [], {}
    for i, word in enumerate(words):
        lw, pattern = 0, 0
        for e in range(d):
            value = (word >> (e * width)) & ((1 << width) - 1)
            lo = value & lo_mask
            sign_ext = hi_mask if (lo >> (rom_width - 1)) & 1 else 0
            lw |= lo << (e * rom_width)
            pattern |= ((value >> rom_width) ^ sign_ext) << (e * h)
        low.append(lw)
        if pattern:
            exceptions[i] = pattern
    return low, exceptions


class CodebookROM(wiring.Component):
    """The inline ROM: `rom_signature` ports over an Amaranth Memory holding `words`, k ints of
    word_bits bits from `reference.rom_words`.

    split=(d, width, rom_width) with rom_width < width: the memory holds each value's low
    rom_width bits (k words of d*rom_width bits) and the values outside that range come from
    logic (`split_words`); the ports and their timing are the same as the whole ROM's."""

    def __init__(self, *, k: int, word_bits: int, ports: int, words, split: tuple[int, int, int] | None = None):
        self._MustUse__silence = True  # a constructor that raises leaves nothing to elaborate
        words = list(words)
        if len(words) != k:
            raise VQ4AllError(f"CodebookROM: {len(words)} words given for k={k}")
        if any(not 0 <= w < 1 << word_bits for w in words):
            raise VQ4AllError(f"CodebookROM: a word does not fit {word_bits} bits (pack them with reference.rom_words)")
        if split is not None:
            d, width, rom_width = split
            if d * width != word_bits or not 1 <= rom_width < width:
                raise VQ4AllError(f"CodebookROM: split {split} does not divide {word_bits}-bit words")
        self.k, self.word_bits, self.ports, self.split = k, word_bits, ports, split
        self._words = words
        super().__init__(rom_signature(k=k, word_bits=word_bits, ports=ports))
        self._MustUse__silence = False

    def elaborate(self, platform):
        m = Module()
        if self.split is None:
            m.submodules.memory = mem = memory.Memory(shape=unsigned(self.word_bits), depth=self.k, init=self._words)
            for p in range(self.ports):
                port = mem.read_port(domain="sync")
                m.d.comb += [port.addr.eq(self.addr[p]), port.en.eq(self.en), self.data[p].eq(port.data)]
            return m
        d, width, rom_width = self.split
        h = width - rom_width
        low, exceptions = split_words(self._words, d=d, width=width, rom_width=rom_width)
        m.submodules.memory = mem = memory.Memory(shape=unsigned(d * rom_width), depth=self.k, init=low)
        for p in range(self.ports):
            port = mem.read_port(domain="sync")
            m.d.comb += [port.addr.eq(self.addr[p]), port.en.eq(self.en)]
            # the exception patterns, registered on the same enable as the memory's data
            pattern = Signal(d * h, name=f"exception_{p}")
            with m.If(self.en):
                with m.Switch(self.addr[p]):
                    for index, value in sorted(exceptions.items()):
                        with m.Case(index):
                            m.d.sync += pattern.eq(value)
                    with m.Default():
                        m.d.sync += pattern.eq(0)
            values = []
            for e in range(d):
                lo = port.data[e * rom_width : (e + 1) * rom_width]
                values += [lo, lo[rom_width - 1].replicate(h) ^ pattern[e * h : (e + 1) * h]]
            m.d.comb += self.data[p].eq(Cat(*values))
        return m


def readmemh_rom(*, k: int, word_bits: int, ports: int, init_file: str):
    """The readmemh form, for the parent to add as its own submodule: (rom, instance), where rom
    holds the `rom_signature` signals (the parent drives rom.en and rom.addr, reads rom.data) and
    instance is the `vq4all_codebook_rom` Instance wired to them, its INIT_FILE = init_file."""
    rom = rom_signature(k=k, word_bits=word_bits, ports=ports).create(path=("rom",))
    instance = Instance(
        ROM_MODULE,
        p_INIT_FILE=init_file,
        i_clk=ClockSignal("sync"),
        i_rst=ResetSignal("sync"),
        i_en=rom.en,
        i_addr=rom.addr.as_value(),
        o_data=rom.data.as_value(),
    )
    return rom, instance


def readmemh_module(*, k: int, word_bits: int, ports: int) -> str:
    """Verilog text of `vq4all_codebook_rom` for the readmemh form (same ports as CodebookROM;
    addr and data are the ports' fields concatenated, port 0 in the least significant bits).
    The INIT_FILE parameter names the $readmemh file (the engine passes its top's ROM_INIT_FILE).

    In simulation (the code is inside `ifndef SYNTHESIS`, which yosys and Vivado define when they
    synthesize) a file that cannot be opened, or that leaves a word unloaded or X (too few words,
    a non-hex word), stops the simulation with $fatal and the file name: Icarus would otherwise
    only warn and simulate an all-X ROM."""
    a = k.bit_length() - 1
    lines = [
        f"// {ROM_MODULE}: k={k} words of {word_bits} bits, {ports} synchronous read port(s), contents from $readmemh(INIT_FILE).",
        "// Word i = codeword i, element 0 in the least significant bits (vq4all.reference.rom_words).",
        f'module {ROM_MODULE} #(parameter INIT_FILE = "codebook.hex") (',
        "  input wire clk,",
        "  input wire rst,  // unused: a ROM has no state to reset (kept so every form has the same ports)",
        "  input wire en,",
        f"  input wire [{ports * a - 1}:0] addr,",
        f"  output reg [{ports * word_bits - 1}:0] data",
        ");",
        f"  reg [{word_bits - 1}:0] words [0:{k - 1}];",
        "`ifndef SYNTHESIS",
        "  integer fd, i;",
        "`endif",
        "  initial begin",
        "`ifndef SYNTHESIS",
        "    // simulation only: a missing file must stop the run, not leave an all-X ROM behind",
        '    fd = $fopen(INIT_FILE, "r");',
        "    if (fd == 0)",
        f'      $fatal(1, "{ROM_MODULE}: cannot open the ROM file \\"%0s\\": set the ROM_INIT_FILE parameter of the '
        'top to the codebook .hex file (a relative path starts in the simulator working folder)", INIT_FILE);',
        "    $fclose(fd);",
        "`endif",
        "    $readmemh(INIT_FILE, words);",
        "`ifndef SYNTHESIS",
        f"    for (i = 0; i < {k}; i = i + 1)",
        "      if (^words[i] === 1'bx)",
        f'        $fatal(1, "{ROM_MODULE}: the ROM file \\"%0s\\" leaves word %0d of {k} unloaded or not hex: '
        f'it is not a codebook .hex of k={k} words of {word_bits} bits", INIT_FILE, i);',
        "`endif",
        f"    data = {ports * word_bits}'d0;",
        "  end",
        "  always @(posedge clk) begin",
        "    if (en) begin",
    ]
    for p in range(ports):
        lines.append(
            f"      data[{(p + 1) * word_bits - 1}:{p * word_bits}] <= words[addr[{(p + 1) * a - 1}:{p * a}]];"
        )
    lines += ["    end", "  end", "endmodule", ""]
    return "\n".join(lines)
