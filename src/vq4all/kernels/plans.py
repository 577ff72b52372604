"""Per-shape launch plans for the Triton implementations, cached: a call's fixed costs once.

A `Plan` holds what depends only on the shapes and dtypes of a call, never on its data: block
sizes, grid, split-K slices and the split-K workspace (fp32 partials and zeroed counters that
the kernels leave at zero). `plan_for` finds it in `PLANS`, a dict keyed by `plan_key` (impl,
sizes, dtypes, device, forced split-K). Two more caches keep per-call host work
out of `lookup_matmul`:
- `kernel_codebook`: the float16 copy of an int8/float16 codebook that the GEMV reads (and the
  float16/bfloat16 copy of an int8 codebook that the GEMM reads with such x), made once per
  codebook tensor (keyed by identity and checked against its version counter and storage, so
  an in-place edit or a new tensor at a reused address makes a new copy);
- `args.scale_tensor`: the [1] float32 device tensor of a Python-float codebook scale.
So a repeated call allocates only its output (on the device, by torch's caching allocator; the
GEMM also its zeroed split-K buffer and, for a ragged row, a padded x; any kernel a contiguous
copy of a strided x) and makes no tensor from host data: it can be captured in a CUDA graph after one warm-up call with
the same shapes on the capturing stream, as CUDA graphs require anyway (the warm-up compiles the
kernel and builds the plan). A cache entry is never made during capture (CaptureWarmupError):
a captured fill does not run until the graph is replayed, so the entry would hold garbage for
every call outside the graph.

A plan's split-K workspace serves one launch at a time: calls of one shape run one after the
other on one stream (as a model's forward does, eager or replayed from a graph) share it safely;
the same shape launched concurrently on two streams would need two plans, so the stream is
deliberately not in the key (CUDA-graph tools warm up on one stream and capture on another, and
the warm-up must build the plan the capture uses).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from .args import LookupArgs, refuse_during_capture

PLANS: dict[tuple, Plan] = {}
_CODEBOOKS: dict[tuple, tuple] = {}  # (id(codebook), dtype) -> (weakref, version, data_ptr, copy)


@dataclass
class Plan:
    """impl; module: the kernel module (gemv, lut, gemm); geo: its `geometry`; work: the
    split-K workspace (gemv and lut) or None."""

    impl: str
    module: object
    geo: dict
    work: tuple[torch.Tensor, torch.Tensor] | None

    def launch(self, args: LookupArgs) -> torch.Tensor:
        """Run the planned kernel on `args` (same key as the plan): [M, out_features] in x's dtype."""
        if self.impl == "triton_gemv":
            launch = self.module.plan(args, codebook16=kernel_codebook(args.codebook), work=self.work, geo=self.geo)
            return launch.run(self.module._lookup_gemv_kernel)
        if self.impl == "triton_lut":
            return self.module.plan(args, work=self.work, geo=self.geo).run(self.module._lookup_lut_kernel)
        dtype = self.module.copy_dtype(args)
        copy = None if dtype is None else kernel_codebook(args.codebook, dtype)
        return self.module.plan(args, geo=self.geo, codebook16=copy).run(self.module._lookup_gemm_kernel)


def plan_key(impl: str, args: LookupArgs, split_k: int | None = None) -> tuple:
    """What a plan depends on: impl, (M, out_features, in_features, k, d), the dtypes of x,
    codes, codebook and scales, whether there is a codebook scale, the device and a forced
    split-K."""
    return (
        impl,
        args.batch,
        args.out_features,
        args.in_features,
        args.k,
        args.d,
        args.x.dtype,
        args.codes.dtype,
        args.codebook.dtype,
        args.scales.dtype,
        args.codebook_scale is not None,
        str(args.device),
        split_k,
    )


def plan_for(impl: str, args: LookupArgs, split_k: int | None = None) -> Plan:
    """The cached plan of `impl` for `args`' key, made on first use."""
    key = plan_key(impl, args, split_k)
    plan = PLANS.get(key)
    if plan is None:
        refuse_during_capture(f"the {impl} plan of this shape on this stream", args.device)
        plan = PLANS[key] = make_plan(impl, args, split_k)
    return plan


def make_plan(impl: str, args: LookupArgs, split_k: int | None = None) -> Plan:
    """A new plan (geometry and workspace) for `impl` on `args`."""
    if impl == "triton_gemv":
        from . import gemv as module
    elif impl == "triton_lut":
        from . import lut as module
    elif impl == "triton_gemm":
        from . import gemm as module
    else:
        raise ValueError(f"no plan for impl '{impl}'")
    geo = module.geometry(args, split_k)
    work = module.workspace(args, geo["grid"]) if impl != "triton_gemm" else None
    return Plan(impl, module, geo, work)


def kernel_codebook(codebook: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A kernel's copy of `codebook` (`gemv.kernel_codebook`: float16 for the GEMV, the dot dtype
    for the GEMM), cached per (codebook tensor, dtype) while the codebook lives and is unchanged."""
    from .gemv import kernel_codebook as convert

    key = (id(codebook), dtype)
    entry = _CODEBOOKS.get(key)
    if entry is not None:
        ref, version, data_ptr, converted = entry
        if ref() is codebook and version == codebook._version and data_ptr == codebook.data_ptr():
            return converted
    refuse_during_capture(f"the {'float16' if dtype is None else dtype} copy of this codebook", codebook.device)
    converted = convert(codebook, dtype)
    _CODEBOOKS[key] = (
        weakref.ref(codebook, lambda _, key=key: _CODEBOOKS.pop(key, None)),
        codebook._version,
        codebook.data_ptr(),
        converted,
    )
    return converted


def clear() -> None:
    """Forget every plan and converted codebook (their workspaces are freed with them)."""
    PLANS.clear()
    _CODEBOOKS.clear()
