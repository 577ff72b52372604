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


class CodebookROM(wiring.Component):
    """The inline ROM: `rom_signature` ports over an Amaranth Memory holding `words`, k ints of
    word_bits bits from `reference.rom_words`."""

    def __init__(self, *, k: int, word_bits: int, ports: int, words):
        self._MustUse__silence = True  # a constructor that raises leaves nothing to elaborate
        words = list(words)
        if len(words) != k:
            raise VQ4AllError(f"CodebookROM: {len(words)} words given for k={k}")
        if any(not 0 <= w < 1 << word_bits for w in words):
            raise VQ4AllError(f"CodebookROM: a word does not fit {word_bits} bits (pack them with reference.rom_words)")
        self.k, self.word_bits, self.ports = k, word_bits, ports
        self._words = words
        super().__init__(rom_signature(k=k, word_bits=word_bits, ports=ports))
        self._MustUse__silence = False

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = mem = memory.Memory(shape=unsigned(self.word_bits), depth=self.k, init=self._words)
        for p in range(self.ports):
            port = mem.read_port(domain="sync")
            m.d.comb += [port.addr.eq(self.addr[p]), port.en.eq(self.en), self.data[p].eq(port.data)]
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
