"""The host's share of integer inference: every operation between two compressed matmuls.

numpy only. Tensors are NCHW (a Conv2d's input and output: [N, C, H, W]) or [N, features]
(a Linear's). Everything here runs in float64 on the host: bias, batch norm, ReLU, PReLU, max
pooling, sigmoid, softmax, padding, permutes. The integer part of a layer (its dot products) is
`vq4all.integer.layers.CompressedLayer`; `im2col` turns a convolution into those dot products.

Each step is a small object with a `name` and `__call__(x, run) -> y` (`run`: the
`vq4all.integer.model.Run` in progress; host steps ignore it), so a network is a plain list of
steps (`vq4all.integer.networks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def im2col(x: np.ndarray, kernel, stride, padding, dilation) -> tuple[np.ndarray, tuple[int, int]]:
    """The receptive-field patches of a Conv2d (groups = 1) as rows of one matrix.

    x: [N, C, H, W] (any dtype; int8 activations stay int8); kernel, stride, dilation: (kh, kw)
    etc.; padding: (ph, pw) zeros on both sides. Returns (cols [N * Ho * Wo, C * kh * kw],
    (Ho, Wo)): row (n, i, j) in that order, its values in the weight's flattening order
    (c, u, v) (what torch's unfold gives, so a weight [Cout, C, kh, kw] reshaped to [Cout, -1]
    is the matching row layout). Padding zeros are 0 in any dtype (an int8 zero is the real 0).
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    win = sliding_window_view(x, (span_h, span_w), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n, c, ho, wo = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
    return cols, (ho, wo)


def cols_to_nchw(y: np.ndarray, n: int, hw: tuple[int, int]) -> np.ndarray:
    """A conv's per-position outputs [N * Ho * Wo, Cout] back to [N, Cout, Ho, Wo]."""
    return y.reshape(n, hw[0], hw[1], -1).transpose(0, 3, 1, 2)


def pool_size(length: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Output length of a max pool along one axis, by torch's rule (with ceil_mode, the last
    window may run past the end but must start inside the input or its left padding)."""
    span = length + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= length + padding:
        out -= 1
    return out


@dataclass
class MaxPool:
    """MaxPool2d over [N, C, H, W] (float): kernel, stride, padding (-inf padded) per axis,
    torch's ceil_mode. Output [N, C, Ho, Wo]."""

    name: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    ceil_mode: bool = False

    def __call__(self, x: np.ndarray, run=None) -> np.ndarray:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        ho = pool_size(x.shape[2], kh, sh, ph, self.ceil_mode)
        wo = pool_size(x.shape[3], kw, sw, pw, self.ceil_mode)
        need_h, need_w = (ho - 1) * sh + kh, (wo - 1) * sw + kw  # rows/cols the windows touch
        xp = np.pad(
            x.astype(np.float64),
            ((0, 0), (0, 0), (ph, max(0, need_h - x.shape[2] - ph)), (pw, max(0, need_w - x.shape[3] - pw))),
            constant_values=-np.inf,
        )
        win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
        return win.max(axis=(4, 5))


@dataclass
class Relu:
    name: str = "relu"

    def __call__(self, x: np.ndarray, run=None) -> np.ndarray:
        return np.maximum(x, 0.0)


@dataclass
class PRelu:
    """PReLU with one slope per channel (axis 1): weight [C] float."""

    name: str
    weight: np.ndarray

    def __call__(self, x: np.ndarray, run=None) -> np.ndarray:
        a = self.weight.astype(np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))
        return np.where(x >= 0, x, a * x)


@dataclass
class BatchNorm:
    """BatchNorm (eval mode) over axis 1: (x - mean) / sqrt(var + eps) * weight + bias, with
    mean, var, weight, bias [C] float (the running statistics)."""

    name: str
    mean: np.ndarray
    var: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    eps: float

    def __call__(self, x: np.ndarray, run=None) -> np.ndarray:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        inv = self.weight.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + self.eps)
        return (x - self.mean.astype(np.float64).reshape(shape)) * inv.reshape(shape) + self.bias.astype(
            np.float64
        ).reshape(shape)


@dataclass
class Sigmoid:
    name: str = "sigmoid"

    def __call__(self, x: np.ndarray, run=None) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + e^-x), without overflow


@dataclass
class Softmax:
    """Softmax over `axis` (max subtracted first)."""

    name: str
    axis: int = 1

    def __call__(self, x: np.ndarray, run=None) -> np.ndarray:
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))
        return e / e.sum(axis=self.axis, keepdims=True)


@dataclass
class Pad:
    """Zero padding of the last two axes of [N, C, H, W]: (left, right, top, bottom), the order
    of torch's F.pad for 2-D."""

    name: str
    pads: tuple[int, int, int, int]

    def __call__(self, x: np.ndarray, run=None) -> np.ndarray:
        left, right, top, bottom = self.pads
        return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


@dataclass
class Permute:
    """x.transpose(axes) (axes includes the batch axis 0)."""

    name: str
    axes: tuple[int, ...]

    def __call__(self, x: np.ndarray, run=None) -> np.ndarray:
        return x.transpose(self.axes)


@dataclass
class Reshape:
    """x reshaped to [N, *shape] (e.g. Flatten: shape = (-1,); Crepe's [N, 1024] frames to
    [N, 1, 1024, 1]: shape = (1, -1, 1))."""

    name: str
    shape: tuple[int, ...]

    def __call__(self, x: np.ndarray, run=None) -> np.ndarray:
        return np.ascontiguousarray(x).reshape((x.shape[0],) + tuple(self.shape))


@dataclass
class Heads:
    """Several branches on one input, their [N, f_i] outputs concatenated along axis 1 in
    `order` (indices into branches): MTCNN's O-Net heads (probabilities, box, landmarks)."""

    name: str
    branches: list[list]
    order: tuple[int, ...]

    def __call__(self, x: np.ndarray, run) -> np.ndarray:
        outs = []
        for branch in self.branches:
            y = x
            for step in branch:
                y = run.step(step, y)
            outs.append(y.reshape(y.shape[0], -1))
        return np.concatenate([outs[i] for i in self.order], axis=1)

    def steps(self):
        """Every step of every branch, in branch order."""
        return [step for branch in self.branches for step in branch]
