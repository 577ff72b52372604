"""benches/kernel_asm.py, the CPU-side SASS proxy: its loop finder and counters on hand-written
SASS and PTX, and one real sm_90 compile whose loop counts must be consistent with the plan."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benches" / "kernel_asm.py"

SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/               @P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0020*/                   LDG.E.EL.64 R8, desc[UR6][R2.64] ;
        /*0030*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0040*/                   I2F.S8 R4, R8 ;
        /*0050*/                   I2FP.F32.S32 R5, R9 ;
        /*0060*/                   SHFL.BFLY PT, R6, R5, 0x1, 0x1f ;
        /*0070*/                   FFMA R7, R4, R5, R7 ;
        /*0080*/                   NOP ;
        /*0090*/              @!P0 BRA `(.L_x_1) ;
.L_x_0:
        /*00a0*/                   STG.E desc[UR4][R2.64], R7 ;
        /*00b0*/                   EXIT ;
.L_x_2:
        /*00c0*/                   BRA `(.L_x_2);
"""

PTX = """
$L__BB0_1:
	ld.global.v2.b32 	{%r1, %r2}, [%rd1];
	bar.sync 	0;
	cvt.rn.f32.s16 	%f1, %rs1;
	cvt.u16.u32 	%rs2, %r3;
	shfl.sync.bfly.b32	%r4, %r5, 1, 31, -1;
	@%p1 bra 	$L__BB0_1;
	st.global.b32 	[%rd2], %r6;
	ret;
"""


@pytest.fixture(scope="module")
def kasm():
    """The bench as a module: loading it imports neither triton nor the kernels (they decide at
    import whether the interpreter runs them, which other tests of this process rely on)."""
    before = set(sys.modules)
    module = load_script(BENCH, "kernel_asm_bench")
    loaded = set(sys.modules) - before
    assert not {"triton", "vq4all.kernels.gemm", "vq4all.kernels.gemv"} & loaded, loaded
    return module


def test_the_loop_is_the_longest_backward_branch(kasm):
    instrs, loop = kasm.parse_sass(SASS)
    ops = [op for op, _ in instrs]
    assert ops[loop[0]] == "LDG" and ops[loop[1]] == "BRA" and loop[1] - loop[0] == 7  # not the trap loop
    body = kasm.count_sass(instrs[loop[0] : loop[1] + 1])
    # 8 instructions in the body, 7 without the NOP
    assert body["instructions"] == 7
    assert (body["barriers"], body["shuffles"], body["int_to_float"], body["global_loads"]) == (1, 1, 2, 1)
    assert body["fp32_math"] == 1 and body["global_stores_atomics"] == 0
    assert kasm.count_sass(instrs)["global_stores_atomics"] == 1


def test_ptx_loop_counts(kasm):
    counts = kasm.ptx_loop_counts(PTX)
    assert counts["instructions"] == 6
    assert (counts["barriers"], counts["shuffles"], counts["cvt"], counts["cvt_to_float_from_int"]) == (1, 1, 2, 1)
    assert counts["global_loads"] == 1


@pytest.mark.slow
def test_real_compile_gives_consistent_per_weight_figures(tmp_path):
    """One GEMV config compiled for sm_90 (no GPU): the per-weight figures follow from the loop
    counts and the plan's block sizes, and the JSON holds what the table shows."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run(
        [sys.executable, str(BENCH), "--out", str(tmp_path), "--only", "gemv M=1 k=65536"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = json.loads((tmp_path / "kernel_asm.json").read_text())["rows"]
    b, loop = row["blocks"], row["sass_loop"]
    threads = 32 * row["options"]["num_warps"]
    assert row["weights_per_step"] == b["BLOCK_N"] * b["BLOCK_J"] * 8
    assert row["per_weight"]["instructions"] == pytest.approx(loop["instructions"] * threads / row["weights_per_step"])
    assert 0 < loop["global_loads"] <= loop["instructions"] and loop["barriers"] <= loop["instructions"]
    assert row["per_weight"]["whole_program_instructions"] >= row["per_weight"]["instructions"] * 0.9
    assert "| gemv | 1 | 65536x8 |" in (tmp_path / "kernel_asm.md").read_text()


def test_compare_shows_before_and_now_per_weight_and_a_new_kernel_beside_the_one_it_replaces(kasm):
    """--compare: per weight instructions / barriers / shuffles / conversions, before and now; a
    table-kernel (lut) row is compared with the GEMV row of the same case."""

    def row(kernel, per_weight):
        return {
            "kernel": kernel,
            "M": 1,
            "k": 256,
            "d": 4,
            "x": "float16",
            "shape": "64x64",
            "blocks": {"BLOCK_N": 8, "BLOCK_J": 4},
            "options": {"num_warps": 4},
            "split_k": 1,
            "programs_per_sm": 0.1,
            "ptxas": "Used 40 registers, 0 bytes spill stores",
            "wgmma": False,
            "sass_loop": {
                "instructions": 10,
                "barriers": 1,
                "shuffles": 2,
                "int_to_float": 3,
                "global_loads": 1,
                "async_copies": 0,
            },
            "per_weight": per_weight,
            "issue_bound_gweights_s": 1.0,
            "conversion_bound_gweights_s": None,
        }

    old = {
        "instructions": 9.05,
        "barriers": 0.625,
        "shuffles": 0.875,
        "int_to_float": 1.0,
        "whole_program_instructions": 9.5,
    }
    new = {
        "instructions": 4.28,
        "barriers": 0.0625,
        "shuffles": 0.0,
        "int_to_float": 0.0,
        "whole_program_instructions": 8.0,
    }
    before = {kasm.case_key(row("gemv", old)): old}
    md = kasm.markdown([row("gemv", new), row("lut", new)], {"cublas_m1_gweights_s": 2400.0}, before)
    gemv_line, lut_line = [line for line in md.splitlines() if line.startswith(("| gemv", "| lut"))]
    assert gemv_line.endswith("| 9.05 / 0.625 / 0.875 / 1 | 4.28 / 0.0625 / 0 / 0 |"), gemv_line
    assert lut_line.endswith("| 9.05 / 0.625 / 0.875 / 1 | 4.28 / 0.0625 / 0 / 0 |"), lut_line
    assert kasm.per_weight_text(None) == "–"
