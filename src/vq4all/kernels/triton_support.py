"""What the Triton kernels share: the lazy import with its errors, launch heuristics, dot dtypes.

Nothing here imports triton at module import; `require_triton` does, on first use.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch

from vq4all.errors import VQ4AllError


class KernelUnavailableError(VQ4AllError, RuntimeError):
    """A forced implementation cannot run here (no triton, or no CUDA and no interpreter)."""


def triton_available() -> bool:
    """Whether `import triton` would succeed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1).

    Triton decides this when a kernel is decorated, i.e. when our kernel module is first
    imported: set the variable before the first triton launch of the process.
    """
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def require_triton(impl: str, device: torch.device) -> None:
    """Raise KernelUnavailableError, naming the way out, unless `impl` can launch on `device`."""
    if not triton_available():
        raise KernelUnavailableError(
            f"impl '{impl}' needs triton, which is not installed: pip install 'vq4all[kernels]', or use impl='torch'"
        )
    if device.type == "cuda":
        if interpreting():
            raise KernelUnavailableError(
                f"impl '{impl}': TRITON_INTERPRET=1 runs kernels on the CPU; pass CPU tensors or unset it for CUDA"
            )
        return
    if device.type == "cpu" and interpreting():
        return
    raise KernelUnavailableError(
        f"impl '{impl}' runs on CUDA tensors, got {device.type} tensors: use impl='torch' on {device.type}, "
        "or set TRITON_INTERPRET=1 (Triton's slow CPU interpreter, for tests) before the first launch"
    )


@functools.cache
def num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def split_k_for(tiles: int, k_steps: int, sms: int | None) -> int:
    """How many slices the GEMM cuts the reduction into so that about two programs run per SM
    of a GPU with `sms` SMs (None: no GPU, one slice; tests force more through the launchers'
    `split_k` argument).

    Small-M products of a few thousand rows launch fewer output tiles than an H200 has SMs
    (132); splitting the code columns fills the machine at the price of fp32 atomics. Never
    more slices than k-steps, never more than 16.
    """
    if not sms:
        return 1
    want = -(-2 * sms // max(1, tiles))
    return max(1, min(want, k_steps, 16))


# Which operand dtype tl.dot multiplies in (constexpr codes shared by the GEMM kernel).
DOT_FP32, DOT_FP16, DOT_BF16 = 0, 1, 2


def dot_config(x_dtype: torch.dtype, codebook_dtype: torch.dtype) -> tuple[int, str]:
    """(operand kind, input_precision) for tl.dot of an x tile with a decoded codeword tile.

    The decoded tile holds raw codebook entries (int8 integers, or float16 values); the row and
    codebook scales are applied to the fp32 accumulator afterwards. So:
    - x float16: fp16 operands; int8 and fp16 codewords are exact in fp16.
    - x bfloat16 with an int8 codebook (or its bfloat16 copy): bf16 operands; |int8| <= 128 is
      exact in bf16.
    - x bfloat16 with a float codebook, or x float32: fp32 operands. bf16 x and fp16 codewords
      are both exact in tf32 (10 mantissa bits), so "tf32" loses nothing there; float32 x is
      not exact in tf32, so it takes "ieee" (as torch.matmul does by default).
    Under the interpreter every dot is fp32 "ieee": its bf16 dot gives wrong results.
    """
    if interpreting():
        return DOT_FP32, "ieee"
    if x_dtype == torch.float16 and codebook_dtype in (torch.int8, torch.float16):
        return DOT_FP16, "ieee"
    if x_dtype == torch.bfloat16 and codebook_dtype in (torch.int8, torch.bfloat16):
        return DOT_BF16, "ieee"
    if x_dtype == torch.bfloat16 and codebook_dtype == torch.float16:
        return DOT_FP32, "tf32"
    return DOT_FP32, "ieee"


@dataclass
class Launch:
    """One kernel launch, planned by a kernel module's `plan()` and run by `launch()`.

    grid: program counts per axis; args: the kernel's runtime arguments in order (tensors and
    ints); constexprs: its tl.constexpr arguments; options: num_warps/num_stages; y: the output
    buffer (float32 when split-K accumulates with atomics); out_dtype: what y is cast to after.
    """

    grid: tuple[int, ...]
    args: tuple
    constexprs: dict
    options: dict
    y: torch.Tensor
    out_dtype: torch.dtype

    def run(self, kernel) -> torch.Tensor:
        if self.y.numel():
            kernel[self.grid](*self.args, **self.constexprs, **self.options)
        return self.y if self.y.dtype == self.out_dtype else self.y.to(self.out_dtype)


_SIGNATURE_DTYPES = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.uint16: "u16",
    torch.int32: "i32",
    torch.int64: "i64",
}


def compile_for_gpu(kernel, launch: Launch, arch: int = 90):
    """Compile a planned launch for an NVIDIA GPU of compute capability `arch` without one (the
    compiler and ptxas ship with triton): catches what the interpreter cannot (constexpr rules,
    layouts, dot shapes, register spills) on a CPU-only machine. Returns triton's CompiledKernel
    (its .asm holds ttir, ttgir, ptx, cubin). The kernel must have been imported with
    TRITON_INTERPRET unset."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(kernel.fn).parameters)
    runtime = [n for n in names if n not in launch.constexprs]
    if len(runtime) != len(launch.args):
        raise ValueError(
            f"{kernel.fn.__name__}: {len(runtime)} runtime parameters, the plan has {len(launch.args)} args"
        )
    signature = {n: "constexpr" for n in launch.constexprs}
    for name, value in zip(runtime, launch.args):
        signature[name] = f"*{_SIGNATURE_DTYPES[value.dtype]}" if isinstance(value, torch.Tensor) else "i32"
    signature = {n: signature[n] for n in names}
    constexprs = {(names.index(n),): v for n, v in launch.constexprs.items()}
    # what a real launch specialises on: pointers and ints divisible by 16 (vector loads need it)
    attrs = {}
    for name, value in zip(runtime, launch.args):
        aligned = value.data_ptr() % 16 == 0 if isinstance(value, torch.Tensor) else value % 16 == 0
        if aligned:
            attrs[(names.index(name),)] = [["tt.divisibility", 16]]
    return triton.compile(
        ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs),
        target=GPUTarget("cuda", arch, 32),
        options=launch.options,
    )
