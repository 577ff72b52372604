"""What the GPU compiler makes of each kernel config, on a machine without a GPU.

    .venv/bin/python benches/kernel_asm.py [--arch 90] [--in-features 4096]

For the launches the dispatch table plans on CUDA (GEMV at M = 1, 4; GEMM at M = 16, 64, 256;
both codebook configs; fp16 and bf16 x), compiles the kernel for sm_<arch> with Triton's own
compiler and ptxas and prints: block sizes, shared memory, registers and spills (ptxas -v), the
global/async load instructions by width (is the codeword gather one vector load per codeword?),
and whether the dot became Hopper wgmma. A first look between GPU runs; never a substitute for
timing on the GPU (benches/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("kernel_asm.py compiles for the GPU: unset TRITON_INTERPRET")

import torch  # noqa: E402
import triton  # noqa: E402

from vq4all.kernels import gemm, gemv  # noqa: E402
from vq4all.kernels.args import check_args  # noqa: E402
from vq4all.kernels.triton_support import compile_for_gpu  # noqa: E402

CASES = [  # (kernel module, M, k, d, x dtype)
    (gemv, 1, 1 << 16, 8, torch.float16),
    (gemv, 4, 1 << 16, 8, torch.float16),
    (gemv, 1, 256, 4, torch.float16),
    (gemm, 16, 1 << 16, 8, torch.float16),
    (gemm, 64, 1 << 16, 8, torch.float16),
    (gemm, 256, 1 << 16, 8, torch.float16),
    (gemm, 256, 256, 4, torch.float16),
    (gemm, 256, 1 << 16, 8, torch.bfloat16),
]


def ptxas_info(ptx: str, arch: int) -> str:
    """Registers and spills from ptxas -v (the newest ptxas triton ships reads its PTX)."""
    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    tools = [os.path.join(folder, n) for n in ("ptxas-blackwell", "ptxas") if os.path.exists(os.path.join(folder, n))]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        for tool in tools:
            r = subprocess.run(
                [tool, f"-arch=sm_{arch}a", "-v", src, "-o", os.path.join(tmp, "k.cubin")],
                capture_output=True,
                text=True,
            )
            if r.returncode == 0:
                lines = (r.stdout + r.stderr).splitlines()
                return "; ".join(l.split("info    :")[-1].strip() for l in lines if "registers" in l or "spill" in l)
    return "ptxas -v unavailable"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (H100/H200: 90)")
    p.add_argument("--in-features", type=int, default=4096)
    args = p.parse_args(argv)
    for module, batch, k, d, x_dtype in CASES:
        m = -(-args.in_features // d)
        a = check_args(
            torch.zeros(batch, args.in_features, dtype=x_dtype),
            torch.zeros(256, m, dtype=torch.uint16 if k > 256 else torch.uint8),
            torch.zeros(k, d, dtype=torch.int8),
            torch.ones(256, dtype=torch.float16),
            torch.ones(1),
        )
        launch = module.plan(a, split_k=1)
        kernel = module._lookup_gemv_kernel if module is gemv else module._lookup_gemm_kernel
        compiled = compile_for_gpu(kernel, launch, args.arch)
        ptx = compiled.asm["ptx"]
        loads: dict[str, int] = {}
        for op in re.findall(r"(ld\.global[^ \t]*|cp\.async\.c[ag][^ \t]*)", ptx):
            loads[op] = loads.get(op, 0) + 1
        blocks = {key: v for key, v in launch.constexprs.items() if key.startswith(("BLOCK", "DOT", "PRECISION"))}
        print(
            f"{module.__name__.rsplit('.', 1)[1]} M={batch} k={k} d={d} x={str(x_dtype).replace('torch.', '')} "
            f"{blocks} {launch.options} shared={compiled.metadata.shared} B | {ptxas_info(ptx, args.arch)} | "
            f"wgmma={'wgmma' in ptx} | loads {loads}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
