"""A compressed layer run on int8 activations, and the backends that compute its dot products.

numpy only. Fixed-point formats (the engine's, `vq4all.hw.rtl.config`):

- activation: int8, symmetric, one scale per layer input (`x_scale`, float64, calibrated):
  q = clip(round_half_even(x / x_scale), -127, 127), x ~= q * x_scale; 0 stays exactly 0, so
  a convolution's zero padding is the same before and after quantisation.
- weight row r: int8 codewords codebook[codes[r, j]] (the ROM) times codebook_scale (float32)
  times scales[r] (float16): one accumulator unit of row r is worth
  `unit[r] = scales[r] * codebook_scale` per activation step.
- accumulator: acc[r] = sum_i q[i] * codeword values, int32 (acc_bits = 32, exact for every
  layer here): `reference.lookup_matmul_int`.
- output "int32": the host dequantises, y[r] = acc[r] * unit[r] * x_scale + bias[r] (float64).
- output "requant": the engine's output stage, `reference.requantize(acc, multipliers, shift)`
  with (multipliers uint16, shift) = `reference.requant_parameters(unit * x_scale / y_scale)`:
  int8 y_q ~= acc * unit * x_scale / y_scale, saturated to -128..127; the host then computes
  y[r] = y_q[r] * y_scale + bias[r] (float64). The engine adds no bias, so `y_scale` is
  calibrated on the layer's product before its bias.

A backend turns a layer's int8 patch matrix into its integer outputs: `IntegerBackend` through
the reference (the integer model), `vq4all.hw.host.EngineBackend` through the simulated engine;
`FloatBackend` skips quantisation altogether (the float compressed model, and calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vq4all.reference import lookup_matmul_int, requant_parameters, requantize

from .ops import cols_to_nchw, im2col

ACT_MAX = 127  # int8 activations use -127..127 (symmetric: -128 is never produced)
OUTPUTS = ("requant", "int32")
CHUNK_VALUES = 1 << 22  # int8 patch values per reference call (its int64 copy is 8x that in bytes)


def quantize(x: np.ndarray, scale: float) -> np.ndarray:
    """int8 activations of float x at `scale`: clip(round_half_even(x / scale), -127, 127)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) / scale), -ACT_MAX, ACT_MAX).astype(np.int8)


def scale_of(values: np.ndarray, percentile: float) -> float:
    """The symmetric int8 scale covering the `percentile` (50..100; 100 = the maximum) of |values|:
    that value / 127 (1.0 when it is 0: an all-zero tensor)."""
    values = np.abs(np.asarray(values, dtype=np.float64).reshape(-1))
    top = float(values.max()) if percentile >= 100 else float(np.percentile(values, percentile))
    return top / ACT_MAX if top > 0 else 1.0


@dataclass(frozen=True)
class ConvGeometry:
    """A Conv2d's kernel, stride, padding (zeros, both sides) and dilation, (h, w) each."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]


@dataclass
class CompressedLayer:
    """One Linear or Conv2d (groups = 1) whose weight is an artifact layer.

    param: its state-dict key (e.g. "conv2.weight"); name: the artifact's layer name;
    weight: [rows, in_features] float32, the decoded weight (float mode only);
    codes: [rows, m] uint8/uint16, codebook: [k, d] int8 (the ROM) and unit: [rows] float64
    (= scales * codebook_scale), all None for a float-only layer (the FP model); bias: [rows] float or None;
    conv: the geometry of a Conv2d, None for a Linear;
    output: "requant" (the engine's int8 output stage) or "int32" (dequantised on the host).
    Calibrated (`calibrate`): x_scale, and for "requant" y_scale, multipliers [rows], shift.
    """

    name: str
    param: str
    weight: np.ndarray
    codes: np.ndarray | None
    codebook: np.ndarray | None
    unit: np.ndarray | None
    bias: np.ndarray | None
    conv: ConvGeometry | None = None
    output: str = "requant"
    x_scale: float | None = None
    y_scale: float | None = None
    multipliers: np.ndarray | None = None
    shift: int = 0

    @property
    def rows(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    def patches(self, x: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
        """The layer's input vectors: (cols [N * positions, in_features], conv output (Ho, Wo)
        or None). x: [N, C, H, W] for a conv, [N, in_features] for a Linear; dtype kept."""
        if self.conv is None:
            cols = x.reshape(x.shape[0], -1)
            hw = None
        else:
            g = self.conv
            cols, hw = im2col(x, g.kernel, g.stride, g.padding, g.dilation)
        if cols.shape[1] != self.in_features:
            raise ValueError(f"layer {self.name}: {cols.shape[1]} inputs per row, the weight has {self.in_features}")
        return cols, hw

    def calibrate(self, x_scale: float, y_scale: float, mult_bits: int = 16) -> None:
        """Set the activation scale and, for "requant", the output scale and the engine's
        multipliers [rows] (< 2^mult_bits) and shift for it."""
        self.x_scale = float(x_scale)
        if self.output == "requant":
            self.y_scale = float(y_scale)
            self.multipliers, self.shift = requant_parameters(self.unit * self.x_scale / self.y_scale, mult_bits)

    def dequantize(self, out: np.ndarray) -> np.ndarray:
        """The real product (before bias) of integer outputs [M, rows]: float64 [M, rows]."""
        if self.output == "requant":
            return out.astype(np.float64) * self.y_scale
        return out.astype(np.float64) * (self.unit * self.x_scale)[None, :]

    def __call__(self, x: np.ndarray, run) -> np.ndarray:
        """y = layer(x) + bias: [N, rows] or [N, rows, Ho, Wo] float64, its dot products by `run`."""
        n = x.shape[0]
        if run.mode == "float":
            cols, hw = self.patches(np.asarray(x, dtype=np.float64))
            y = cols @ self.weight.astype(np.float64).T
            run.observe(self, x, y)
        else:
            if self.codes is None or self.x_scale is None:
                raise ValueError(f"layer {self.name}: not compressed and calibrated, it runs in float mode only")
            cols, hw = self.patches(quantize(x, self.x_scale))
            y = self.dequantize(run.gemv(self, np.ascontiguousarray(cols)))
        if self.bias is not None:
            y = y + self.bias.astype(np.float64)[None, :]
        return y if hw is None else cols_to_nchw(y, n, hw)


class Backend:
    """Computes the compressed layers' dot products; `mode` "integer" (int8 in, integer out:
    the backend has gemv(layer, cols [M, in_features] int8) -> [M, rows], see IntegerBackend)
    or "float" (no quantisation: the layers multiply by their own float weights)."""

    mode = "integer"

    def step(self, step, x: np.ndarray) -> np.ndarray:
        return step(x, self)

    def observe(self, layer: CompressedLayer, x: np.ndarray, y: np.ndarray) -> None:
        """Float mode: sees each compressed layer's input x and product y (before bias)."""


def reference_outputs(layer: CompressedLayer, cols: np.ndarray, acc_bits: int = 32) -> np.ndarray:
    """What the engine must return for `cols` [M, in_features] int8: [M, rows] int32
    (`reference.lookup_matmul_int`) or, for "requant", int8 (then `reference.requantize`),
    computed in chunks of CHUNK_VALUES patch values."""
    step = max(1, CHUNK_VALUES // max(1, cols.shape[1]))
    parts = []
    for i in range(0, cols.shape[0], step):
        acc = lookup_matmul_int(cols[i : i + step], layer.codes, layer.codebook, acc_bits)
        if layer.output == "requant":
            acc = requantize(acc, layer.multipliers, layer.shift, 8)
        parts.append(acc)
    dtype = np.int8 if layer.output == "requant" else np.int32
    return np.concatenate(parts) if parts else np.zeros((0, layer.rows), dtype)


@dataclass
class IntegerBackend(Backend):
    """The integer model: every compressed layer through `reference_outputs`.
    record: keep each layer's (int8 cols, integer outputs) per call in `records[name]` (tests)."""

    acc_bits: int = 32
    record: bool = False
    records: dict = field(default_factory=dict)

    def gemv(self, layer: CompressedLayer, cols: np.ndarray) -> np.ndarray:
        out = reference_outputs(layer, cols, self.acc_bits)
        if self.record:
            self.records.setdefault(layer.name, []).append((cols.copy(), out))
        return out


@dataclass
class FloatBackend(Backend):
    """Float mode: the layers' own float weights, no quantisation. With `collect`, keeps every
    layer's |input| and |product| values per call (calibration)."""

    collect: bool = False
    inputs: dict = field(default_factory=dict)
    products: dict = field(default_factory=dict)
    mode = "float"

    def observe(self, layer: CompressedLayer, x: np.ndarray, y: np.ndarray) -> None:
        if self.collect:
            self.inputs.setdefault(layer.name, []).append(np.abs(x).astype(np.float32).reshape(-1))
            self.products.setdefault(layer.name, []).append(np.abs(y).astype(np.float32).reshape(-1))
