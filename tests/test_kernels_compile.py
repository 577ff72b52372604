"""The Triton kernels compile for an H100/H200 (sm_90) on a machine without a GPU.

The interpreter runs kernels as numpy and so accepts code the GPU compiler refuses (a global
read that is not a tl.constexpr, a dot whose shapes or dtypes the hardware lacks, a layout that
cannot be built). Triton ships its compiler and ptxas, so each planned launch below (the
launcher's own block sizes for CUDA, every dot dtype, split-K (atomics in the GEMM, the last
slice's sum in the GEMV and the table kernel), d = 8, 4 and 3) is
compiled to a cubin in a subprocess that imports the kernels without TRITON_INTERPRET.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import json, torch
from vq4all.kernels import gemm, gemv, lut
from vq4all.kernels.args import check_args
from vq4all.kernels.triton_support import compile_for_gpu

def operands(batch, x_dtype, cb_dtype, k, d, in_features=100, out_features=48):
    m = -(-in_features // d)
    codes = torch.zeros(out_features, m, dtype=torch.uint16 if k > 256 else torch.uint8)
    codebook = torch.zeros(k, d, dtype=cb_dtype)
    scale = torch.ones(1) if cb_dtype == torch.int8 else None
    return check_args(torch.zeros(batch, in_features, dtype=x_dtype), codes, codebook,
                      torch.ones(out_features, dtype=torch.float16), scale)

f16, bf16, f32, i8 = torch.float16, torch.bfloat16, torch.float32, torch.int8
cases = [  # (kernel module, batch, x dtype, codebook dtype, k, d, split_k)
    (gemv, 1, f16, i8, 1 << 16, 8, 1), (gemv, 4, bf16, f16, 256, 4, 2), (gemv, 2, f32, i8, 512, 3, 1),
    (gemm, 256, f16, i8, 1 << 16, 8, 1), (gemm, 16, f16, i8, 1 << 16, 8, 2), (gemm, 64, bf16, i8, 256, 4, 1),
    (gemm, 32, bf16, f16, 1 << 16, 8, 1), (gemm, 20, f32, i8, 512, 3, 1),
    (lut, 1, f16, i8, 256, 4, 1), (lut, 4, bf16, f16, 256, 4, 2), (lut, 2, f32, i8, 100, 3, 3),
]
# the GEMV's int64-word path (rows of whole 8-byte words): uint16 and uint8 codes, split and not
words_cases = [(1, f16, i8, 1 << 16, 8, 128, 1), (4, bf16, i8, 256, 4, 128, 2), (2, f32, f16, 1 << 16, 8, 256, 3)]
kernels = {gemv: gemv._lookup_gemv_kernel, gemm: gemm._lookup_gemm_kernel, lut: lut._lookup_lut_kernel}
done = []
for module, batch, x_dtype, cb_dtype, k, d, split in cases:
    launch = module.plan(operands(batch, x_dtype, cb_dtype, k, d), split_k=split)
    kernel = kernels[module]
    compiled = compile_for_gpu(kernel, launch, arch=90)
    assert compiled.asm["cubin"], "no cubin"
    done.append(f"{module.__name__.rsplit('.', 1)[1]} M={batch} {x_dtype} {cb_dtype} d={d} split={split} "
                f"{launch.constexprs.get('DOT_KIND')} {launch.constexprs.get('PRECISION')}")
for batch, x_dtype, cb_dtype, k, d, in_features, split in words_cases:
    launch = gemv.plan(operands(batch, x_dtype, cb_dtype, k, d, in_features), split_k=split, use_words=True)
    assert launch.constexprs["WORDS"] and compile_for_gpu(gemv._lookup_gemv_kernel, launch, arch=90).asm["cubin"]
    done.append(f"gemv words M={batch} {x_dtype} d={d} split={split}")
print(json.dumps(done))
"""


def test_kernels_compile_for_sm90_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # triton 3.9 warns when unset; 1 is its current default
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(done) == 14
