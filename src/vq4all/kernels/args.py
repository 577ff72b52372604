"""Checks the arguments of `lookup_matmul` once, for every implementation.

Each failure is one `KernelArgumentError` line naming the argument, what was expected and what
was got. The checked form, `LookupArgs`, carries the sizes every implementation needs
(`m_codes`, `in_features`, `out_features`, `k`, `d`) so the kernels' wrappers stay thin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vq4all.errors import VQ4AllError

X_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
CODE_DTYPES = (torch.uint8, torch.uint16)
CODEBOOK_DTYPES = (torch.int8, torch.float16, torch.float32)
SCALE_DTYPES = (torch.float16, torch.float32)


class KernelArgumentError(VQ4AllError, ValueError):
    """A `lookup_matmul` argument has the wrong shape, dtype or device."""


@dataclass(frozen=True)
class LookupArgs:
    """Checked arguments of y = x @ decode(codes, codebook, scales)^T.

    x: [M, in_features] float16/bfloat16/float32; codes: [out_features, m_codes] uint8/uint16
    with m_codes = ceil(in_features / d); codebook: [k, d] int8 (value = codebook *
    codebook_scale) or float16/float32 (value = codebook); codebook_scale: [1] float32 on the
    codebook's device, or None for a float codebook; scales: [out_features] float16/float32.
    """

    x: torch.Tensor
    codes: torch.Tensor
    codebook: torch.Tensor
    scales: torch.Tensor
    codebook_scale: torch.Tensor | None

    @property
    def batch(self) -> int:
        return int(self.x.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.codes.shape[0])

    @property
    def m_codes(self) -> int:
        return int(self.codes.shape[1])

    @property
    def k(self) -> int:
        return int(self.codebook.shape[0])

    @property
    def d(self) -> int:
        return int(self.codebook.shape[1])

    @property
    def device(self) -> torch.device:
        return self.x.device


def _names(dtypes) -> str:
    return ", ".join(str(t).replace("torch.", "") for t in dtypes)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


_SCALES: dict[tuple[float, str], torch.Tensor] = {}


class CaptureWarmupError(KernelArgumentError):
    """A cached tensor of `lookup_matmul` would first be made inside CUDA-graph capture."""


def capturing(device: torch.device) -> bool:
    """Whether the current CUDA stream of `device` is being captured into a CUDA graph."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def refuse_during_capture(what: str, device: torch.device) -> None:
    """Raise CaptureWarmupError if `what` (a cache entry about to be made) would be made during
    capture: a tensor filled by a captured kernel holds nothing until the graph is replayed, so
    a cache entry made then would serve garbage to calls outside the graph."""
    if capturing(device):
        raise CaptureWarmupError(
            f"lookup_matmul: {what} would be made inside CUDA-graph capture; call it once with these "
            "shapes (and this codebook and scale) before capturing"
        )


def scale_tensor(value: float, device: torch.device) -> torch.Tensor:
    """The [1] float32 tensor holding `value` on `device`, made once (torch.full: a fill on the
    device, no copy from host memory) and reused, so a call with a float codebook scale creates
    no tensor from host data (CUDA-graph capture forbids that)."""
    key = (value, str(device))
    t = _SCALES.get(key)
    if t is None:
        refuse_during_capture(f"the tensor of codebook scale {value}", device)
        t = _SCALES[key] = torch.full((1,), value, dtype=torch.float32, device=device)
    return t


def check_args(x, codes, codebook, scales, codebook_scale=None) -> LookupArgs:
    """Validate and normalise the arguments (see `LookupArgs`); raises KernelArgumentError.

    `codebook_scale` may be a Python float, a 0-d or [1] tensor; it becomes a [1] float32 tensor
    on the codebook's device (no host sync: a CUDA tensor stays on the GPU; a float's tensor is
    made once per value and device, see `scale_tensor`). Codes >= k are
    rejected here for CPU tensors only, and only where the code dtype can hold a code >= k (a
    pass over the codes); on CUDA that check would cost a device sync per call, so it is left
    to whoever built the codes (the artifact reader and the VQ modules check it).
    """
    for name, t in (("x", x), ("codes", codes), ("codebook", codebook), ("scales", scales)):
        if not isinstance(t, torch.Tensor):
            raise KernelArgumentError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 2:
        raise KernelArgumentError(f"x: expected [M, in_features], got shape {list(x.shape)}")
    if x.dtype not in X_DTYPES:
        raise KernelArgumentError(f"x: expected dtype {_names(X_DTYPES)}, got {_dtype(x)}")
    if codebook.dim() != 2:
        raise KernelArgumentError(f"codebook: expected [k, d], got shape {list(codebook.shape)}")
    if codebook.dtype not in CODEBOOK_DTYPES:
        raise KernelArgumentError(f"codebook: expected dtype {_names(CODEBOOK_DTYPES)}, got {_dtype(codebook)}")
    k, d = codebook.shape
    if k < 1 or d < 1:
        raise KernelArgumentError(f"codebook: expected k >= 1 and d >= 1, got shape {list(codebook.shape)}")
    if codes.dim() != 2:
        raise KernelArgumentError(f"codes: expected [out_features, m], got shape {list(codes.shape)}")
    if codes.dtype not in CODE_DTYPES:
        raise KernelArgumentError(f"codes: expected dtype {_names(CODE_DTYPES)}, got {_dtype(codes)}")
    out_features, m_codes = codes.shape
    in_features = x.shape[1]
    if m_codes != -(-in_features // d):
        raise KernelArgumentError(
            f"codes: x has {in_features} features, so codes of d={d} need ceil({in_features}/{d}) = "
            f"{-(-in_features // d)} columns, got {m_codes}"
        )
    if scales.shape != (out_features,):
        raise KernelArgumentError(
            f"scales: expected shape [{out_features}] (one per code row), got {list(scales.shape)}"
        )
    if scales.dtype not in SCALE_DTYPES:
        raise KernelArgumentError(f"scales: expected dtype {_names(SCALE_DTYPES)}, got {_dtype(scales)}")
    if codebook.dtype == torch.int8:
        if codebook_scale is None:
            raise KernelArgumentError(
                "codebook_scale: an int8 codebook needs its scale (value = codebook * codebook_scale)"
            )
        if isinstance(codebook_scale, torch.Tensor):
            if codebook_scale.numel() != 1:
                raise KernelArgumentError(f"codebook_scale: expected one value, got shape {list(codebook_scale.shape)}")
            codebook_scale = codebook_scale.reshape(1).to(device=codebook.device, dtype=torch.float32)
        else:
            codebook_scale = scale_tensor(float(codebook_scale), codebook.device)
    elif codebook_scale is not None:
        raise KernelArgumentError(f"codebook_scale: a {_dtype(codebook)} codebook holds its values; pass None")
    devices = {t.device for t in (x, codes, codebook, scales)}
    if len(devices) > 1:
        raise KernelArgumentError(
            f"x, codes, codebook, scales: expected one device, got {sorted(str(v) for v in devices)}"
        )
    code_limit = 1 << (8 * codes.element_size())
    if codes.device.type == "cpu" and codes.numel() and k < code_limit:  # else every code is < k by its dtype
        top = int(codes.to(torch.int32).max())  # torch has no max() for uint16
        if top >= k:
            raise KernelArgumentError(f"codes: expected every code < k={k}, found {top}")
    return LookupArgs(x, codes, codebook, scales, codebook_scale)
