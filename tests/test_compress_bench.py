"""benches/compress.py's table from rows already measured: a finished network's rows and plots,
and the rows so far of a network whose run is still to be resumed (marked *, no plots)."""

import json
from pathlib import Path

from support.scripts import load_script


def row(network, method, value, **extra):
    return {
        "network": network,
        "method": method,
        "metric": "test_accuracy",
        "higher_is_better": True,
        "value": value,
        "fp_value": 1.0,
        "ratio_to_fp": value,
        "bits_per_weight": 2.0,
        "compression_ratio": 16.0,
        "compression_ratio_with_codebook": 4.0,
        "seconds": 1.0,
        "extras": {},
        **extra,
    }


def test_an_unfinished_network_shows_its_rows_so_far(tmp_path):
    bench = load_script(Path(__file__).resolve().parents[1] / "benches" / "compress.py", "compress_bench")
    rows_dir = tmp_path / "rows"
    rows_dir.mkdir()
    pnc = row("digits_cnn", "vq4all 65536x8, PNC", 0.98, steps=300, forced=3, frozen_by_pnc=1)
    finished = {
        "rows": [row("digits_cnn", "FP32", 1.0), pnc],
        "extra": {
            "max_ratios_pnc": [1.0, 0.5],
            "max_ratios_no_pnc": [0.4, 0.95],
            "distinct_codewords": {"fc1.weight": 5},
            "codes_per_layer": {"fc1.weight": 9},
        },
    }
    (rows_dir / "digits_cnn.json").write_text(json.dumps(finished))
    partial = {
        "config": {},
        "baseline_config": {},
        "methods": {"FP32": {"row": row("crepe_full", "FP32", 1.0), "extra": {}}},
    }
    (rows_dir / "crepe_full.partial.json").write_text(json.dumps(partial))
    assert bench.main(["--networks", "", "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "compress.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| network")]
    # zoo order: crepe_full before digits_cnn; only the unfinished one is marked
    assert [line.split(" | ")[0] for line in table] == ["| crepe_full*", "| digits_cnn", "| digits_cnn"]
    assert "| 75% |" in table[2]  # forced share of the PNC row: 3 of 4
    saved = json.loads((tmp_path / "compress.json").read_text())["rows"]
    assert [r.get("unfinished", False) for r in saved] == [True, False, False]
    for plot in ("max_ratios.png", "codewords.png", "pareto.png"):
        assert (tmp_path / plot).stat().st_size > 0
