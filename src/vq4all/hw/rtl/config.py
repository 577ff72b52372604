"""The engine's parameters, validated once: every impossible combination is a one-line error.

Shapes and formats the RTL uses (all integers two's complement unless said otherwise):
- codebook ROM: `k` words of `d * width` bits, element e of codeword i in bits
  [e*width, (e+1)*width) (`vq4all.reference.rom_words`).
- codes: log2(k)-bit unsigned indices, `lanes` of them per stream beat (lane l in bits
  [l*code_bits, (l+1)*code_bits)).
- activations: int8, `lanes` sub-vectors of d values per stream beat (value i of the beat in bits
  [8*i, 8*i+8)), i.e. the layer's input vector flattened, zero-padded to whole beats.
- results: one signed `acc_bits`-bit accumulator per output row, wrapped like
  `vq4all.reference.lookup_matmul_int(..., acc_bits)`; with `requant`, that accumulator times the
  row's unsigned `mult_bits`-bit multiplier, rounded and shifted right by the layer's shift
  (6 bits, 1..62) and saturated to signed `out_bits` (`vq4all.reference.requantize`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vq4all.artifact import Codebook
from vq4all.errors import VQ4AllError
from vq4all.rules import code_bits, d_problem, is_power_of_two, k_problem

ACT_BITS = 8  # activations are int8: the reference's exact integer path (lookup_matmul_int)
SHIFT_BITS = 6  # the requantization shift (1..62) in the layer descriptor
MAX_SHIFT = 62  # the largest shift reference.requantize accepts (the 6-bit field also holds 63)
REJECTED_BITS = 8  # the `rejected` output: rejected descriptors since reset, modulo 256
MAX_LANES = 16
MAX_PACK_LANES = 2  # row packing reads 2 * lanes codewords per cycle: one two-port ROM copy per lane
STREAMS = ("layer", "acts", "codes", "scales")  # the input streams; "scales" only with requant


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one generated engine.

    k: codewords in the ROM (power of two, 2..65536); d: values per codeword (1..64);
    width: bits per stored codeword value (1..8, int8 codebooks at their stored precision);
    lanes: codes consumed per cycle, all from the same output row (power of two, 1..16);
    acc_bits: accumulator width (width+8 .. 64: at least one product must fit);
    max_m: most sub-vectors per row the activation buffer holds (in_features <= max_m * d);
    max_rows: most output rows per layer (sets the row counter's width);
    fifo_depth: result FIFO entries (>= 2), so a slow result consumer stalls the pipeline only
    when several results wait;
    requant: add the output stage (a `scales` stream of one multiplier per row, a shift per
    layer, results saturated to out_bits); mult_bits: multiplier width (2..32); out_bits: result
    width after requantization (2..acc_bits);
    rom_width: 0 (the ROM memory holds whole `width`-bit values), or 1..width: bits per value held
    in the ROM memory, the low rom_width bits of each value; the rest of a value is the sign
    extension of those bits except where the codebook says otherwise, and those exceptions are
    logic beside the memory (`rtl.rom.split_words`). Exact for every codebook; it saves block RAM
    when few values fall outside rom_width bits (the inline ROM only: the $readmemh file holds
    whole words);
    pack: pack rows (lanes 1 or 2, `rtl.packed`): 2 * lanes codes per code beat from the layer's
    codes flattened row-major, 2 * lanes ROM read ports (lanes 2: two copies of the two-port
    ROM), and a queue that drops each row's last sub-vector's padding, so the MAC takes lanes * d
    real values per cycle across row ends; the descriptor gains a `tail` field (values in a row's
    last sub-vector, 1..d), rows must be at least d values long, and at lanes 2 a results beat
    carries 1 or 2 results and a scales beat 2 multipliers (docs/stream-protocol.md).
    """

    k: int
    d: int = 8
    width: int = 8
    lanes: int = 1
    acc_bits: int = 32
    max_m: int = 2048
    max_rows: int = 65535
    fifo_depth: int = 4
    requant: bool = False
    mult_bits: int = 16
    out_bits: int = 8
    rom_width: int = 0
    pack: bool = False

    def __post_init__(self):
        for name in ("requant", "pack"):
            if not isinstance(getattr(self, name), bool):
                raise VQ4AllError(f"engine {name}={getattr(self, name)!r} must be True or False")
        for name in (
            "k",
            "d",
            "width",
            "lanes",
            "acc_bits",
            "max_m",
            "max_rows",
            "fifo_depth",
            "mult_bits",
            "out_bits",
            "rom_width",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise VQ4AllError(f"engine {name}={value!r} must be an integer")
        for problem in (k_problem(self.k), d_problem(self.d)):
            if problem:
                raise VQ4AllError(f"engine {problem}")
        if not 1 <= self.width <= 8:
            raise VQ4AllError(f"engine codeword width={self.width} must be between 1 and 8 bits (int8 codebooks)")
        if not (is_power_of_two(self.lanes) and self.lanes <= MAX_LANES):
            raise VQ4AllError(f"engine lanes={self.lanes} must be a power of two between 1 and {MAX_LANES}")
        if not ACT_BITS + self.width <= self.acc_bits <= 64:
            raise VQ4AllError(
                f"engine acc_bits={self.acc_bits} must be between {ACT_BITS + self.width} "
                f"(one int8 x {self.width}-bit product) and 64"
            )
        if not 1 <= self.max_m <= 1 << 20:
            raise VQ4AllError(f"engine max_m={self.max_m} (sub-vectors per row) must be between 1 and {1 << 20}")
        if not 1 <= self.max_rows <= (1 << 24) - 1:
            raise VQ4AllError(f"engine max_rows={self.max_rows} must be between 1 and {(1 << 24) - 1}")
        if not 2 <= self.fifo_depth <= 64:
            raise VQ4AllError(f"engine fifo_depth={self.fifo_depth} must be between 2 and 64")
        if not 2 <= self.mult_bits <= 32:
            raise VQ4AllError(f"engine mult_bits={self.mult_bits} must be between 2 and 32")
        if not 2 <= self.out_bits <= self.acc_bits:
            raise VQ4AllError(f"engine out_bits={self.out_bits} must be between 2 and acc_bits={self.acc_bits}")
        if not 0 <= self.rom_width <= self.width:
            raise VQ4AllError(
                f"engine rom_width={self.rom_width} must be 0 (whole values in the ROM) or between 1 and width={self.width}"
            )
        if self.pack and self.lanes > MAX_PACK_LANES:
            raise VQ4AllError(
                f"engine pack=True needs lanes 1 or {MAX_PACK_LANES}, got lanes={self.lanes} (row packing reads "
                "2 * lanes codewords per cycle: lanes 4 would need four copies of the ROM)"
            )

    # ---- derived widths
    @property
    def code_bits(self) -> int:
        """Bits of one code: log2(k)."""
        return code_bits(self.k)

    @property
    def word_bits(self) -> int:
        """Bits of one ROM word: d * width."""
        return self.d * self.width

    @property
    def stored_width(self) -> int:
        """Bits per value in the ROM memory: rom_width, or width when rom_width is 0."""
        return self.rom_width or self.width

    @property
    def split_rom(self) -> bool:
        """Whether the ROM memory holds narrowed values (stored_width < width), with the values'
        high bits as logic beside it."""
        return self.stored_width < self.width

    @property
    def beats_max(self) -> int:
        """Activation buffer depth: stream beats of the longest row, ceil(max_m / lanes)."""
        return -(-self.max_m // self.lanes)

    @property
    def m_bits(self) -> int:
        """Width of the layer descriptor's m field (holds 0..max_m)."""
        return self.max_m.bit_length()

    @property
    def rows_bits(self) -> int:
        """Width of the layer descriptor's rows field (holds 0..max_rows)."""
        return self.max_rows.bit_length()

    @property
    def tail_bits(self) -> int:
        """Width of the packing engine's descriptor `tail` field (holds 0..d)."""
        return self.d.bit_length()

    @property
    def codes_per_beat(self) -> int:
        """Codes in one `codes` beat: 2 * lanes when packing rows, else lanes."""
        return 2 * self.lanes if self.pack else self.lanes

    @property
    def results_per_beat(self) -> int:
        """Most results in one `results` beat: lanes when packing rows (a MAC beat of lanes * d
        values ends up to lanes rows, rows being at least d values long), else 1."""
        return self.lanes if self.pack else 1

    @property
    def count_bits(self) -> int:
        """Width of a `results` beat's count field (results in the beat, 1..results_per_beat):
        0 when a beat always carries one result."""
        return self.results_per_beat.bit_length() if self.results_per_beat > 1 else 0

    @property
    def results_bits(self) -> int:
        """Width of a `results` beat: results_per_beat results of result_bits (result i in bits
        [i * result_bits, (i + 1) * result_bits)), then the count field above them."""
        return self.results_per_beat * self.result_bits + self.count_bits

    @property
    def scales_per_beat(self) -> int:
        """Multipliers in one `scales` beat (requant): lanes when packing rows, else 1."""
        return self.lanes if self.pack else 1

    @property
    def queue_slots(self) -> int:
        """The packing engine's value queue: 6 * lanes * d values. A code beat is taken while the
        queue's fill plus the values in flight is at most 4 * lanes * d, which keeps at least
        lanes * d values queued for every MAC beat even when a beat brings only lanes * (d + 1)
        (sub-vectors alternating with 1-value tails)."""
        return 6 * self.lanes * self.d

    @property
    def tree_levels(self) -> int:
        """Registered adder-tree levels over the d * lanes products: ceil(log2(d * lanes))."""
        return (self.d * self.lanes - 1).bit_length()

    @property
    def result_bits(self) -> int:
        """Width of a result: out_bits with requantization, else acc_bits."""
        return self.out_bits if self.requant else self.acc_bits

    @property
    def streams(self) -> tuple[str, ...]:
        """The engine's input streams: layer, acts, codes, and with requant scales."""
        return STREAMS if self.requant else STREAMS[:3]

    @property
    def latency(self) -> int:
        """Cycles from a code beat's acceptance to its result's write into the result FIFO:
        ROM/activation read (1) + product register (1) + tree levels (+ 2 requantization stages).
        With pack: from a MAC beat leaving the value queue to its result's write (no read stage)."""
        return (1 if self.pack else 2) + self.tree_levels + (2 if self.requant else 0)

    @property
    def shift_cap(self) -> int:
        """The largest shift the requant stage computes with: min(MAX_SHIFT, acc_bits + mult_bits).
        |acc * multiplier| < 2^(acc_bits + mult_bits - 1), so every shift >= acc_bits + mult_bits
        rounds it to 0; the engine computes larger shifts as this one, which keeps its rounding
        constant 2^(shift-1) inside its acc_bits + mult_bits + 2-bit adder."""
        return min(MAX_SHIFT, self.acc_bits + self.mult_bits)

    def descriptor_problem(self, m: int, rows: int, shift: int = 0, tail: int = 0) -> str | None:
        """Why the engine rejects a layer descriptor with these field values (it raises its
        `error` output and counts it in `rejected`; docs/stream-protocol.md), or None when it takes
        it: as a layer, or as an empty descriptor (m = 0 or rows = 0, ignored). The rule the RTL
        applies (`Engine.elaborate`): m > max_m, rows > max_rows, or, on a requantizing engine and
        for a non-empty layer, a shift outside 1..MAX_SHIFT; on a packing engine and for a
        non-empty layer, a tail outside 1..d, or a row shorter than d values (m = 1, tail < d). The
        values must fit their fields (m_bits, rows_bits, tail_bits, SHIFT_BITS bits)."""
        if m > self.max_m:
            return f"m={m} > max_m={self.max_m}"
        if rows > self.max_rows:
            return f"rows={rows} > max_rows={self.max_rows}"
        if self.requant and m and rows and not 1 <= shift <= MAX_SHIFT:
            return f"shift={shift} outside 1..{MAX_SHIFT}"
        if self.pack and m and rows:
            if not 1 <= tail <= self.d:
                return f"tail={tail} outside 1..d={self.d}"
            if m == 1 and tail < self.d:
                return (
                    f"rows of {tail} values, shorter than d={self.d} (a packing engine needs rows of at least d values)"
                )
        return None

    def check_codebook(self, codebook: Codebook) -> list[int]:
        """The ROM's k words of `codebook` (an int8 artifact.Codebook [k, d] of this engine's k and
        d, its values within `width` bits): its cached `rom_words(width)`; VQ4AllError otherwise."""
        if not isinstance(codebook, Codebook):
            raise VQ4AllError(f"the engine takes a vq4all.artifact.Codebook, got {type(codebook).__name__}")
        if codebook.dtype != "int8" or codebook.codebook.ndim != 2:
            raise VQ4AllError(
                f"the engine needs an int8 codebook [k, d], got {codebook.codebook.dtype} "
                f"{list(codebook.codebook.shape)} (a float16 codebook has no integer datapath)"
            )
        if (codebook.k, codebook.d) != (self.k, self.d):
            raise VQ4AllError(
                f"codebook shape {[codebook.k, codebook.d]} does not match the engine's k={self.k}, d={self.d}"
            )
        try:
            return codebook.rom_words(self.width)
        except ValueError as e:
            raise VQ4AllError(f"codebook does not fit the engine's width={self.width}: {e}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """A short, file-name-safe description, e.g. k256_d8_w8_l2_acc32_m2048_r65535_f4 (+ _rq16x8,
        + _rw6 for a split ROM, + _pack for row packing)."""
        return (
            f"k{self.k}_d{self.d}_w{self.width}_l{self.lanes}_acc{self.acc_bits}"
            f"_m{self.max_m}_r{self.max_rows}_f{self.fifo_depth}"
            + (f"_rq{self.mult_bits}x{self.out_bits}" if self.requant else "")
            + (f"_rw{self.stored_width}" if self.split_rom else "")
            + ("_pack" if self.pack else "")
        )
