"""benches/bench_kernels.py runs end to end on CPU (--quick) and writes its table; timings are
never asserted, only the rows it promises and the sanity of its products."""

import json
from pathlib import Path

import pytest

from support.scripts import load_script

BENCH = Path(__file__).resolve().parents[1] / "benches" / "bench_kernels.py"


def load_bench():
    return load_script(BENCH, "bench_kernels")


def test_quick_cpu_run_writes_every_row(tmp_path):
    assert load_bench().main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_kernels.json").read_text())
    rows = data["rows"]
    # 2 shapes x 2 codebook configs x M in {1, 16}
    assert {(r["layer"], r["config"], r["M"]) for r in rows} == {
        (layer, config, m) for layer in ("tiny", "tiny ragged") for config in ("2^16x8", "256x4") for m in (1, 16)
    }
    assert all(r["rel_err"] < 1e-5 for r in rows)  # the CPU path computes the dense product of the same weight
    assert all(r["vq_bytes"] < r["dense_weight_bytes"] for r in rows)
    md = (tmp_path / "bench_kernels.md").read_text()
    assert md.count("\n| 2^16x8 |") + md.count("\n| 256x4 |") == len(rows)
    assert "stopped" not in data["meta"]


def test_time_cap_stops_the_sweep_and_says_so(tmp_path):
    assert load_bench().main(["--device", "cpu", "--quick", "--time-cap", "0", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_kernels.json").read_text())
    assert data["rows"] == [] and data["meta"]["stopped"].startswith("time cap 0 s reached")


def plan_of(*argv):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert load_bench().main([*argv, "--plan"]) == 0
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_plan_measures_gathers_then_the_large_shapes_first():
    """The order gpu_check.sh relies on: every gathers entry, then the large shapes (out x in
    4096x4096, 8192x8192, 4096x14336; M = 1, 16, 256; both configs), then the rest."""
    entries = plan_of("--device", "cuda", "--phases", "gathers,large,rest,impls")
    phases = [e["phase"] for e in entries]
    assert phases == sorted(phases, key=["gathers", "large", "rest", "impls"].index)  # grouped, in order
    gathers = [e for e in entries if e["phase"] == "gathers"]
    assert {(e["path"], e["table_rows"]) for e in gathers} == {
        ("triton global", 4096),
        ("triton global", 16384),
        ("triton global", 65536),
        ("cuda global", 4096),
        ("cuda global", 16384),
        ("cuda global", 65536),
        ("cuda shared", 4096),
        ("cuda shared", 16384),
    }
    large = [e for e in entries if e["phase"] == "large"]
    assert [(e["out_features"], e["in_features"]) for e in large[::6]] == [(4096, 4096), (8192, 8192), (4096, 14336)]
    assert {(e["config"], e["M"]) for e in large} == {(c, m) for c in ("2^16x8", "256x4") for m in (1, 16, 256)}
    assert len(large) == 18 and all(e["impl"] is None for e in large)
    rest = [e for e in entries if e["phase"] == "rest"]
    assert {(e["out_features"], e["in_features"]) for e in rest}.isdisjoint({(4096, 4096)})
    impls = [e for e in entries if e["phase"] == "impls"]
    assert {e["impl"] for e in impls if e["M"] <= 4} == {"triton_gemv", "triton_lut", "triton_gemm", "torch"}
    assert {e["impl"] for e in impls if e["M"] > 4} == {"triton_gemm", "torch"}
    assert {e["config"] for e in impls if e["impl"] == "triton_lut"} == {"256x4"}  # the table kernel: k <= 256


def test_quick_fused_siblings_on_cpu(tmp_path):
    """The fused phase: separate sibling lookups against one lookup over their stacked codes; on
    the CPU (torch path) the fused result equals the separate ones to float32 rounding."""
    bench = load_bench()
    argv = ["--device", "cpu", "--quick", "--phases", "fused", "--configs", "256x4", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    data = json.loads((tmp_path / "bench_kernels.json").read_text())
    fused = [r for r in data["rows"] if r["phase"] == "fused"]
    assert [(r["siblings"], r["M"]) for r in fused] == [([24, 16, 8], 1), ([24, 16, 8], 16)]
    assert all(r["rel_err"] < 1e-6 and r["separate_us"] > 0 and r["fused_us"] > 0 for r in fused)
    md = (tmp_path / "bench_kernels.md").read_text()
    assert md.count("| 256x4 | tiny Q,K,V | 24+16+8x37 |") == 2


def test_plan_refuses_an_unknown_phase(capsys):
    assert load_bench().main(["--phases", "large,warp", "--plan"]) == 2
    assert "unknown phase 'warp'" in capsys.readouterr().err


def test_append_keeps_the_rows_of_the_earlier_run(tmp_path):
    bench = load_bench()
    assert bench.main(["--device", "cpu", "--quick", "--configs", "256x4", "--out", str(tmp_path)]) == 0
    first = json.loads((tmp_path / "bench_kernels.json").read_text())["rows"]
    assert bench.main(["--device", "cpu", "--quick", "--configs", "2^16x8", "--out", str(tmp_path), "--append"]) == 0
    data = json.loads((tmp_path / "bench_kernels.json").read_text())
    assert data["rows"][: len(first)] == first and len(data["rows"]) == 2 * len(first)
    assert [r["phases"] for r in data["runs"]] == [["quick"], ["quick"]]


GATHER_SCRIPT = r"""
import importlib.util, json, sys
import numpy as np, torch
spec = importlib.util.spec_from_file_location("bench_kernels", sys.argv[1])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
kernel = bench.triton_gather_kernel()
rows, block, unroll, programs, iters, seed = 64, 16, 4, 3, 5, 12345
table = torch.from_numpy(np.random.default_rng(3).integers(-(2**62), 2**62, rows, dtype=np.int64))
out = torch.zeros(programs * block * unroll, dtype=torch.int64)
kernel[(programs,)](table, out, iters, rows - 1, seed, BLOCK=block, U=unroll, num_warps=1)
print(json.dumps({"table": table.tolist(), "out": out.tolist()}))
"""


def test_triton_gather_kernel_under_the_interpreter():
    """The gathers microbenchmark's Triton kernel computes what its docstring says: per lane, U
    LCG streams of row indices, each stream's gathered int64 rows XOR-ed (checked in Python).
    In a fresh process with TRITON_INTERPRET=1 from the start: the interpreter only runs
    triton's own library functions (tl.zeros, ...) when triton is first imported under it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run(
        [sys.executable, "-c", GATHER_SCRIPT, str(BENCH)], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(r.stdout.strip().splitlines()[-1])
    table, out = data["table"], data["out"]
    rows, block, unroll, programs, iters, seed = 64, 16, 4, 3, 5, 12345
    mask32 = (1 << 32) - 1
    want = []
    for lane in range(programs * block):
        for u in range(unroll):
            acc = 0
            h = ((lane * unroll + u + seed) * 747796405) & mask32
            for _ in range(iters):
                h = (h * 1664525 + 1013904223) & mask32
                acc ^= table[(h >> 9) & (rows - 1)]
            want.append(acc)
    assert out == want


@pytest.mark.gpu
def test_cuda_quick_run_and_gathers(tmp_path):
    """On a GPU: the CUDA rows and the gathers phase run and report finite numbers."""
    bench = load_bench()
    assert bench.main(["--device", "cuda", "--quick", "--rep-ms", "5", "--warmup-ms", "2", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench_kernels.json").read_text())["rows"]
    assert len(rows) == 8 and all(r["rel_err"] < 1e-2 and r["vq_us_flushed"] > 0 for r in rows)
    out = tmp_path / "g"
    assert bench.main(["--device", "cuda", "--phases", "gathers", "--gather-cap", "10", "--out", str(out)]) == 0
    gathers = json.loads((out / "bench_kernels.json").read_text())["gathers"]
    assert len(gathers) == 8 and gathers[0]["path"] == "triton global"
    assert gathers[0].get("ggathers_s", 0) > 0, gathers[0]  # the first one runs whatever the cap
