"""The codebook ROM: k words of d*width bits, `ports` synchronous read ports sharing one enable.

Two forms of the same ROM:
- inline (default): `amaranth.lib.memory.Memory` initialised with `vq4all.reference.rom_words`,
  so the generated Verilog/RTLIL carries the codebook itself;
- readmemh: an instance of the hand-written Verilog module `vq4all_codebook_rom` (see
  `readmemh_module`) that loads its words with `$readmemh` at elaboration, so an FPGA flow can
  swap the codebook (a new .hex file) without regenerating the RTL.

Reads are synchronous (registered data, one cycle after the address) because FPGA block RAM has
no asynchronous read; a ROM has no write port, so several read ports are legal (an FPGA tool
duplicates the block RAM beyond its two native ports).
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from vq4all.errors import VQ4AllError

ROM_MODULE = "vq4all_codebook_rom"


class CodebookROM(wiring.Component):
    """addr: [ports] x log2(k) bits in; data: [ports] x (d*width) bits out, valid one cycle after
    `en` was high with that address (the data holds while `en` is low).

    words: k ints from `reference.rom_words` (inline form), or None with `init_file` (readmemh
    form: the $readmemh file name the Verilog module opens).
    """

    def __init__(self, *, k: int, word_bits: int, ports: int, words=None, init_file: str | None = None):
        self._MustUse__silence = True  # a constructor that raises leaves nothing to elaborate
        if (words is None) == (init_file is None):
            raise VQ4AllError("CodebookROM needs exactly one of words (inline ROM) or init_file ($readmemh ROM)")
        if words is not None:
            words = list(words)
            if len(words) != k:
                raise VQ4AllError(f"CodebookROM: {len(words)} words given for k={k}")
            if any(not 0 <= w < 1 << word_bits for w in words):
                raise VQ4AllError(
                    f"CodebookROM: a word does not fit {word_bits} bits (pack them with reference.rom_words)"
                )
        self.k, self.word_bits, self.ports = k, word_bits, ports
        self.addr_bits = k.bit_length() - 1
        self._words, self._init_file = words, init_file
        super().__init__(
            {
                "en": In(1),
                "addr": In(data.ArrayLayout(unsigned(self.addr_bits), ports)),
                "data": Out(data.ArrayLayout(unsigned(word_bits), ports)),
            }
        )
        self._MustUse__silence = False

    def elaborate(self, platform):
        m = Module()
        if self._words is not None:
            m.submodules.memory = mem = memory.Memory(shape=unsigned(self.word_bits), depth=self.k, init=self._words)
            for p in range(self.ports):
                port = mem.read_port(domain="sync")
                m.d.comb += [port.addr.eq(self.addr[p]), port.en.eq(self.en), self.data[p].eq(port.data)]
        else:
            m.submodules.rom = Instance(
                ROM_MODULE,
                p_INIT_FILE=self._init_file,
                i_clk=ClockSignal("sync"),
                i_rst=ResetSignal("sync"),
                i_en=self.en,
                i_addr=self.addr.as_value(),
                o_data=self.data.as_value(),
            )
        return m


def readmemh_module(*, k: int, word_bits: int, ports: int) -> str:
    """Verilog text of `vq4all_codebook_rom` for the readmemh form (same ports as CodebookROM;
    addr and data are the ports' fields concatenated, port 0 in the least significant bits).
    The INIT_FILE parameter names the $readmemh file (override it per instance or per build)."""
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
        "  initial begin",
        "    $readmemh(INIT_FILE, words);",
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
