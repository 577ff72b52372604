"""Inference modules that hold codes instead of weights: VQLinear, VQConv2d.

Each holds its layer's codes [out_features, m] (uint8/uint16) and scales [out_features] (float16)
as buffers, its FP bias as a parameter, and the universal codebook through a `CodebookTable`
submodule. One table instance is shared by every module of a model, so the codebook exists once
in memory and `model.to(device)` moves it once (later modules find it already there).

Forward passes go through `lookup_matmul` (Triton kernels on CUDA, the torch path on CPU); a
module's `impl` attribute forces one implementation (None: the dispatch table). Sibling
VQLinears that read the same input (attention's Q, K and V; an MLP's gate and up) can be fused
into one `FusedVQLinear`: their codes are stacked along out_features, so one launch computes all
of them and the outputs are views of its result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .args import KernelArgumentError
from .dispatch import lookup_matmul
from .torch_path import decode


class CodebookTable(nn.Module):
    """The universal codebook as buffers: codebook [k, d] int8/float16, codebook_scale [1]
    float32 (int8 only) or None.

    The buffers are not persistent (not in state_dict): the codebook is its own artifact, named
    by hash from every network artifact. Device moves apply; dtype casts (model.half(),
    model.float()) do not, because the codebook's dtypes are part of its definition.
    """

    def __init__(self, codebook: torch.Tensor, codebook_scale: torch.Tensor | None = None):
        super().__init__()
        if codebook.dim() != 2:
            raise KernelArgumentError(f"codebook: expected [k, d], got shape {list(codebook.shape)}")
        if (codebook.dtype == torch.int8) != (codebook_scale is not None):
            raise KernelArgumentError("codebook_scale: required with an int8 codebook, and only then")
        self.register_buffer("codebook", codebook, persistent=False)
        scale = None if codebook_scale is None else codebook_scale.reshape(1).to(torch.float32)
        self.register_buffer("codebook_scale", scale, persistent=False)

    @classmethod
    def from_codebook(cls, cb) -> CodebookTable:
        """From a `vq4all.artifact.Codebook` (numpy arrays)."""
        scale = None if cb.codebook_scale is None else torch.from_numpy(cb.codebook_scale.copy())
        return cls(torch.from_numpy(cb.codebook.copy()), scale)

    @property
    def k(self) -> int:
        return int(self.codebook.shape[0])

    @property
    def d(self) -> int:
        return int(self.codebook.shape[1])

    def _apply(self, fn, recurse=True):
        for name, buf in self._buffers.items():
            if buf is not None:
                moved = fn(buf)
                self._buffers[name] = moved if moved.dtype == buf.dtype else buf.to(device=moved.device)
        return self

    def extra_repr(self) -> str:
        return f"k={self.k}, d={self.d}, dtype={str(self.codebook.dtype).replace('torch.', '')}"


def _check_codes(codes: torch.Tensor, scales: torch.Tensor, table: CodebookTable, row: int, what: str) -> None:
    """The checks `lookup_matmul` leaves out on CUDA (codes < k), done once at construction."""
    if codes.dim() != 2 or codes.dtype not in (torch.uint8, torch.uint16):
        raise KernelArgumentError(
            f"{what}: codes must be [out_features, m] uint8/uint16, got {codes.dtype} {list(codes.shape)}"
        )
    m = -(-row // table.d)
    if codes.shape[1] != m:
        raise KernelArgumentError(
            f"{what}: rows of {row} values need ceil({row}/{table.d}) = {m} codes, got {codes.shape[1]}"
        )
    if scales.shape != (codes.shape[0],):
        raise KernelArgumentError(f"{what}: scales must be [{codes.shape[0]}], got {list(scales.shape)}")
    if codes.numel() and int(codes.to(torch.int32).max()) >= table.k:
        raise KernelArgumentError(f"{what}: codes must be < k={table.k}, found {int(codes.to(torch.int32).max())}")


def _bias(bias) -> nn.Parameter | None:
    return None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)


def _lookup_linear(layer, x: torch.Tensor) -> torch.Tensor:
    """x [..., in_features] -> [..., out_features] in x's dtype: the lookup matmul of `layer`'s
    codes, scales and codebook table, plus its bias (VQLinear, FusedVQLinear)."""
    lead = x.shape[:-1]
    y = lookup_matmul(
        x.reshape(-1, layer.in_features),
        layer.codes,
        layer.table.codebook,
        layer.scales,
        codebook_scale=layer.table.codebook_scale,
        impl=layer.impl,
    )
    y = y.reshape(*lead, layer.out_features)
    return y if layer.bias is None else y + layer.bias.to(y.dtype)


class VQLinear(nn.Module):
    """y = x @ W^T + bias with W = decode(codes, codebook, scales): [out_features, in_features].

    x: [..., in_features] float16/bfloat16/float32 -> y: [..., out_features] in x's dtype.
    """

    def __init__(
        self,
        codes: torch.Tensor,
        scales: torch.Tensor,
        table: CodebookTable,
        in_features: int,
        bias: torch.Tensor | None = None,
        impl: str | None = None,
    ):
        super().__init__()
        _check_codes(codes, scales, table, in_features, "VQLinear")
        self.in_features, self.out_features = int(in_features), int(codes.shape[0])
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.table = table
        self.bias = _bias(bias)
        self.impl = impl

    @classmethod
    def from_linear(cls, linear: nn.Linear, codes, scales, table: CodebookTable, impl=None) -> VQLinear:
        """Replace `linear`'s weight by codes/scales (torch tensors), keeping its bias."""
        if tuple(codes.shape[:1]) != (linear.out_features,):
            raise KernelArgumentError(
                f"VQLinear: codes have {codes.shape[0]} rows, the Linear has {linear.out_features} outputs"
            )
        return cls(codes, scales, table, linear.in_features, linear.bias, impl)

    def decoded_weight(self) -> torch.Tensor:
        """W: [out_features, in_features] float32 (the reference's decode, in torch)."""
        return decode(self.codes, self.table.codebook, self.scales, self.table.codebook_scale, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _lookup_linear(self, x)

    @staticmethod
    def fuse(layers) -> FusedVQLinear:
        """One module computing every layer of `layers` (VQLinears on one input) in one launch."""
        return FusedVQLinear(layers)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class FusedVQLinear(nn.Module):
    """Sibling VQLinears (same in_features, same CodebookTable) as one lookup: codes [sum of
    out_features, m] and scales stacked in the given order, biases too (zeros for a layer
    without one: adding 0 changes no output).

    forward(x): x [..., in_features] -> a tuple of [..., out_features_i] in x's dtype, views of
    one [..., sum of out_features] result. Each output row is computed as the separate layer
    computes it (the same codes, scales and x); only the launch geometry (and so, for inputs
    that are not integer-exact, the split-K summation order) may differ.
    """

    def __init__(self, layers):
        super().__init__()
        layers = list(layers)
        if not layers or not all(isinstance(layer, VQLinear) for layer in layers):
            raise KernelArgumentError("FusedVQLinear: expected one or more VQLinear layers")
        first = layers[0]
        for layer in layers[1:]:
            if layer.in_features != first.in_features or layer.table is not first.table:
                raise KernelArgumentError(
                    "FusedVQLinear: the layers must share in_features and their CodebookTable, got "
                    f"in_features {[lay.in_features for lay in layers]}"
                )
            if layer.impl != first.impl or layer.codes.dtype != first.codes.dtype:
                raise KernelArgumentError("FusedVQLinear: the layers must share impl and codes dtype")
        self.in_features = first.in_features
        self.splits = [layer.out_features for layer in layers]
        self.out_features = sum(self.splits)
        self.register_buffer("codes", torch.cat([layer.codes for layer in layers]))
        self.register_buffer("scales", torch.cat([layer.scales for layer in layers]))
        self.table = first.table
        self.impl = first.impl
        if any(layer.bias is not None for layer in layers):
            biases = [
                layer.bias.detach() if layer.bias is not None else first.codes.new_zeros(n, dtype=torch.float32)
                for layer, n in zip(layers, self.splits)
            ]
            self.bias = _bias(torch.cat([b.to(torch.float32) for b in biases]))
        else:
            self.bias = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.split(_lookup_linear(self, x), self.splits, dim=-1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.splits}, bias={self.bias is not None}"


class VQConv2d(nn.Module):
    """A 2-D convolution whose weight [out_channels, in_channels/groups, kh, kw] is stored as codes
    over its flattened rows (order [in, kh, kw], as the artifact splits them).

    Two ways to run: im2col (F.unfold) + `lookup_matmul`, the lookup kernels' path, used on CUDA
    and whenever a Triton impl is forced; or decode-then-conv (the weight decoded in torch, then
    F.conv2d), used on CPU, where a decoded weight is cheaper than an unfolded input, and for
    what unfold cannot express (groups > 1, string paddings 'same'/'valid').
    x: [B, C, H, W] or [C, H, W] float -> y in x's dtype.
    """

    def __init__(
        self,
        codes: torch.Tensor,
        scales: torch.Tensor,
        table: CodebookTable,
        in_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        padding_mode: str = "zeros",
        bias: torch.Tensor | None = None,
        impl: str | None = None,
    ):
        super().__init__()
        pair = torch.nn.modules.utils._pair
        self.kernel_size, self.stride, self.dilation = pair(kernel_size), pair(stride), pair(dilation)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(codes.shape[0]), int(groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise KernelArgumentError(
                f"VQConv2d: groups={groups} must divide in_channels={in_channels} and out_channels={self.out_channels}"
            )
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise KernelArgumentError(f"VQConv2d: unknown padding_mode '{padding_mode}'")
        if padding_mode != "zeros" and isinstance(self.padding, str):
            raise KernelArgumentError(
                f"VQConv2d: padding='{self.padding}' with padding_mode='{padding_mode}' is not supported"
            )
        self.padding_mode = padding_mode
        self.row = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        _check_codes(codes, scales, table, self.row, "VQConv2d")
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.table = table
        self.bias = _bias(bias)
        self.impl = impl

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, codes, scales, table: CodebookTable, impl=None) -> VQConv2d:
        """Replace `conv`'s weight by codes/scales (torch tensors), keeping its geometry and bias."""
        if codes.shape[0] != conv.out_channels:
            raise KernelArgumentError(
                f"VQConv2d: codes have {codes.shape[0]} rows, the Conv2d has {conv.out_channels} outputs"
            )
        return cls(
            codes,
            scales,
            table,
            conv.in_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.padding_mode,
            conv.bias,
            impl,
        )

    def decoded_weight(self) -> torch.Tensor:
        """The weight: [out_channels, in_channels/groups, kh, kw] float32."""
        rows = decode(self.codes, self.table.codebook, self.scales, self.table.codebook_scale, self.row)
        return rows.reshape(self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def _im2col(self, x: torch.Tensor) -> bool:
        forced_triton = self.impl is not None and self.impl != "torch"
        if self.groups != 1 or isinstance(self.padding, str):
            if forced_triton:
                raise KernelArgumentError(
                    f"VQConv2d: impl '{self.impl}' runs convolutions as im2col, which takes groups=1 and numeric "
                    f"padding (got groups={self.groups}, padding={self.padding!r}); use impl=None to decode them"
                )
            return False
        return forced_triton or (self.impl is None and x.is_cuda)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unbatched = x.dim() == 3
        if unbatched:
            x = x[None]
        padding = self.padding
        if self.padding_mode != "zeros":
            pads = [p for p in reversed(self.padding) for _ in range(2)]  # (left, right, top, bottom)
            x, padding = F.pad(x, pads, mode=self.padding_mode), (0, 0)
        if self._im2col(x):
            y = self._forward_im2col(x, padding)
        else:
            y = F.conv2d(x, self.decoded_weight().to(x.dtype), None, self.stride, padding, self.dilation, self.groups)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)[:, None, None]
        return y[0] if unbatched else y

    def _forward_im2col(self, x: torch.Tensor, padding) -> torch.Tensor:
        batch, _, height, width = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, padding, self.dilation
        out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        cols = F.unfold(
            x, self.kernel_size, self.dilation, padding, self.stride
        )  # [B, C*kh*kw, L], rows in [c, kh, kw] order
        cols = cols.transpose(1, 2).reshape(batch * out_h * out_w, self.row)
        y = lookup_matmul(
            cols, self.codes, self.table.codebook, self.scales, codebook_scale=self.table.codebook_scale, impl=self.impl
        )
        return (
            y.reshape(batch, out_h * out_w, self.out_channels)
            .transpose(1, 2)
            .reshape(batch, self.out_channels, out_h, out_w)
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}"
        )
