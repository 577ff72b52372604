"""benches/bench_kernels.py runs end to end on CPU (--quick) and writes its table; timings are
never asserted, only the rows it promises and the sanity of its products."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benches" / "bench_kernels.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
