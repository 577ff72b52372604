"""ROM init files: one word per codeword exactly as reference.rom_words packs it, checked against
independent readers/writers: Icarus's $readmemh reads the .hex back, Debian's srec_cat writes the
same .coe/.mif/.mem (up to case and comments) from the same words."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vq4all.artifact import Codebook, codebook_sha256, save_codebook
from vq4all.hw.rtl.romfiles import FORMATS, read_readmemh, rom_file_text
from vq4all.reference import rom_words, unpack_rom_words

SCALE = np.array([0.01], np.float32)


def codebook(k=64, d=8, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, (k, d)).astype(np.int8)


def test_hex_round_trip_and_hash_in_every_format():
    cb = codebook()
    words = rom_words(cb)
    text = rom_file_text("hex", Codebook(cb, SCALE), 8)
    assert read_readmemh(text) == words
    np.testing.assert_array_equal(unpack_rom_words(read_readmemh(text), 8), cb)
    sha = codebook_sha256(cb, SCALE)
    for fmt in FORMATS:
        assert sha in rom_file_text(fmt, Codebook(cb, SCALE), 8)
    with pytest.raises(ValueError, match="unknown ROM format 'bin'"):
        rom_file_text("bin", Codebook(cb, SCALE), 8)
    with pytest.raises(ValueError, match="do not fit 4 bits"):
        rom_file_text("hex", Codebook(cb, SCALE), 4)


def _strip(fmt: str, text: str) -> list[str]:
    """Lines without comments, case folded: ';' (coe), '--' (mif), '# ' or a lone '#' (mem, whose
    '#Key=Value' header lines are content)."""
    out = []
    for line in text.lower().splitlines():
        line = line.strip()
        if fmt == "coe":
            line = line.split(";", 1)[0] + (";" if ";" in line and not line.startswith(";") else "")
        elif fmt == "mif":
            line = line.split("--", 1)[0].strip()
        elif fmt == "mem" and (line == "#" or line.startswith("# ")):
            line = ""
        if line.strip():
            out.append(line.strip())
    return out


@pytest.mark.parametrize("d,width", [(8, 8), (4, 8), (8, 4)])
@pytest.mark.parametrize(
    "fmt,option",
    [
        ("coe", "-Xilinx_Coefficient_File"),
        ("mif", "-Memory_Initialization_File"),
        ("mem", "-Lattice_Memory_Initialization_Format"),
    ],
)
def test_matches_srec_cat(tmp_path, fmt, option, d, width):
    if shutil.which("srec_cat") is None:
        pytest.skip("srec_cat not installed (scripts/setup installs Debian's srecord)")
    lo = -(1 << (width - 1))
    bits = d * width
    # 200 words leave a partial last MIF line. srecord 1.64's COE writer stops with "unable to cope
    # with holes in the data" once its binary input spans more than one 32-byte record, so the
    # .coe cross-check covers 32 bytes of words (the layout is the same for any depth).
    k = 256 // bits if fmt == "coe" else 200
    cb = np.random.default_rng(d * width).integers(lo, -lo, (k, d)).astype(np.int8)
    words = rom_words(cb, width)
    (tmp_path / "words.bin").write_bytes(b"".join(w.to_bytes(bits // 8, "big") for w in words))
    theirs = subprocess.run(
        ["srec_cat", str(tmp_path / "words.bin"), "-binary", "-o", "-", option, str(bits)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ours = rom_file_text(fmt, Codebook(cb, SCALE), width)
    assert _strip(fmt, ours) == _strip(fmt, theirs)


@pytest.mark.sim
def test_icarus_readmemh_reads_the_words(tmp_path):
    cb = codebook(k=128, seed=4)
    words = rom_words(cb)
    (tmp_path / "codebook.hex").write_text(rom_file_text("hex", Codebook(cb, SCALE), 8))
    (tmp_path / "tb.v").write_text(
        "module tb; reg [63:0] rom [0:127]; integer i;\n"
        'initial begin $readmemh("codebook.hex", rom); for (i = 0; i < 128; i = i + 1) $display("%h", rom[i]); end\n'
        "endmodule\n"
    )
    subprocess.run(["iverilog", "-o", "tb.vvp", "tb.v"], cwd=tmp_path, check=True)
    out = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert [int(line, 16) for line in out.split()] == words


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vq4all", *args], capture_output=True, text=True, timeout=300)


def test_cli_rom_export(tmp_path):
    cb = codebook(k=256, seed=9)
    path = tmp_path / "cb.safetensors"
    save_codebook(path, Codebook(cb, SCALE))
    sha = codebook_sha256(cb, SCALE)
    for fmt in FORMATS:
        out = tmp_path / f"rom.{fmt}"
        proc = run_cli("rom", "export", "--codebook", str(path), "--format", fmt, "--out", str(out), "--json")
        assert proc.returncode == 0, proc.stderr
        info = json.loads(proc.stdout)
        assert info["sha256"] == sha and info["word_bits"] == 64
        assert out.read_text() == rom_file_text(fmt, Codebook(cb, SCALE), 8)
        assert sha in out.read_text()
    for args, words in [
        (("--format", "bin", "--out", str(tmp_path / "x")), "unknown ROM format 'bin'"),
        (("--format", "hex", "--out", str(tmp_path / "no" / "x")), "does not exist"),
        (("--format", "hex", "--width", "4", "--out", str(tmp_path / "x")), "do not fit 4 bits"),
    ]:
        proc = run_cli("rom", "export", "--codebook", str(path), *args)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr
    proc = run_cli(
        "rom",
        "export",
        "--codebook",
        str(tmp_path / "missing.safetensors"),
        "--format",
        "hex",
        "--out",
        str(tmp_path / "x"),
    )
    assert proc.returncode == 2 and "no such file" in proc.stderr
    f16 = tmp_path / "f16.safetensors"
    save_codebook(f16, Codebook(cb.astype(np.float16)))
    proc = run_cli("rom", "export", "--codebook", str(f16), "--format", "hex", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "int8 codebook" in proc.stderr
