"""ROM init files for FPGA tools, one word per codeword exactly as `reference.rom_words` packs it
(element 0 in the least significant bits, `width`-bit two's complement), hex digits
ceil(d*width/4) wide, the codebook's SHA-256 in a comment where the format has comments.

- hex: `$readmemh` text (Icarus, Verilator, yosys, Vivado): `//` comments, one word per line.
- mem: Lattice memory initialisation (Radiant/Diamond): `#Key=Value` header, `#` comments.
- coe: Xilinx coefficient file: `;` comments, `memory_initialization_vector = w0, w1, ...;`.
- mif: Intel memory initialisation file: `--` comments, `addr: w w w w;` lines.
The .mem, .coe and .mif layouts follow what Debian's `srec_cat` (srecord 1.64) writes for the
same words (tests compare them up to case and comments), so either tool's file serves.
"""

from __future__ import annotations

from vq4all.artifact import Codebook

FORMATS = ("hex", "mem", "coe", "mif")
SUFFIX = {"hex": ".hex", "mem": ".mem", "coe": ".coe", "mif": ".mif"}
_MIF_LINE = 80  # srec_cat packs as many words per MIF line as fit in 80 columns


def _digits(word_bits: int) -> int:
    return -(-word_bits // 4)


def _describe(k: int, d: int, width: int, sha256: str) -> list[str]:
    return [
        f"vq4all universal codebook ROM: k={k} words of d={d} x {width}-bit values ({d * width} bits)",
        f"codebook sha256={sha256}",
        "word i = codeword i; element e in bits [e*width, (e+1)*width), two's complement (element 0 = LSBs)",
    ]


def rom_file_text(fmt: str, codebook: Codebook, width: int = 8) -> str:
    """The ROM init file, in format `fmt`, of an int8 artifact.Codebook [k, d] at `width` bits per
    value: its cached `rom_words(width)` and `sha256`. ValueError for an unknown format or values
    that do not fit `width` bits."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown ROM format '{fmt}': choose one of {', '.join(FORMATS)}")
    words = codebook.rom_words(width)
    k, d = codebook.k, codebook.d
    bits = d * width
    n = _digits(bits)
    hexes = [f"{w:0{n}X}" for w in words]
    about = _describe(k, d, width, codebook.sha256)
    if fmt == "hex":
        lines = [f"// {s}" for s in about] + [h.lower() for h in hexes]
    elif fmt == "mem":
        lines = ["#Format=Hex", f"#Depth={k}", f"#Width={bits}", "#AddrRadix=3", "#DataRadix=3", "#Data"]
        lines += [f"# {s}" for s in about] + hexes
    elif fmt == "coe":
        lines = [f"; {s}" for s in about] + [
            f"; depth = {k}",
            f"; width = {bits}",
            "memory_initialization_radix = 16;",
            "memory_initialization_vector =",
        ]
        lines += [h + ("," if i + 1 < k else ";") for i, h in enumerate(hexes)]
    else:  # mif
        per_line = max(1, (_MIF_LINE - 6) // (n + 1))
        addr_digits = max(4, _digits(max(k - 1, 1).bit_length()))
        lines = [f"-- {s}" for s in about] + [
            f"DEPTH = {k};",
            f"WIDTH = {bits};",
            "ADDRESS_RADIX = HEX;",
            "DATA_RADIX = HEX;",
            "CONTENT BEGIN",
        ]
        for start in range(0, k, per_line):
            lines.append(f"{start:0{addr_digits}X}: " + " ".join(hexes[start : start + per_line]) + ";")
        lines.append("END;")
    return "\n".join(lines) + "\n"


def read_readmemh(text: str) -> list[int]:
    """Words of `$readmemh` text without address jumps (`//` comments and blank lines skipped)."""
    words = []
    for line in text.splitlines():
        line = line.split("//", 1)[0].strip()
        if line:
            if line.startswith("@"):
                raise ValueError("address jumps (@addr) are not used by vq4all ROM files")
            words += [int(tok, 16) for tok in line.split()]
    return words
