"""The synthesis flow's parsing and fit logic (vq4all.hw.synth), on real nextpnr outputs kept as
fixtures (tests/fixtures/hw: a routed iCE40 UP5K report of K=256, lanes=1, and the log of
K=256, lanes=4, which does not fit). No synthesis runs here."""

import json
from pathlib import Path

import numpy as np
import pytest

from vq4all.artifact import Codebook
from vq4all.errors import VQ4AllError
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.rtl.engine import Engine
from vq4all.hw.synth import DEVICES, fit_table, harness_rtlil, overflow, parse_report, summarize

FIXTURES = Path(__file__).parent / "fixtures" / "hw"


def test_parse_report_of_a_routed_design():
    report = json.loads((FIXTURES / "nextpnr_up5k_k256_l1_report.json").read_text())
    parsed = parse_report(report, DEVICES["ice40-up5k"])
    assert parsed["utilization"]["ICESTORM_LC"] == {"used": 1028, "available": 5280}
    assert 30 < parsed["fmax_mhz"] < 40  # the fixture's achieved Fmax, 36.1 MHz
    s = summarize(DEVICES["ice40-up5k"], parsed, ffs=745)
    assert (s["lut"], s["bram"], s["dsp"], s["io"], s["ff"]) == (1028, 12, 8, 4, 745)
    assert s["bram_available"] == 30 and s["dsp_available"] == 8
    path = s["critical_path"]  # the fixture's: engine control logic, clk-to-q to a slot flag
    assert path["logic_steps"] > 5 and abs(1000 / path["delay_ns"] - parsed["fmax_mhz"]) < 1.0
    assert path["to_cell"].startswith("engine.")


def test_overflow_names_the_cell_nextpnr_stopped_on():
    over = overflow((FIXTURES / "nextpnr_up5k_k256_l4_nofit.log").read_text())
    assert over["cell"] == "ICESTORM_DSP" and (over["used"], over["available"]) == (32, 8)
    assert ["ICESTORM_LC", 7769, 5280] in over["all"]
    report_log = "Info: Device utilisation:\nInfo: \t ICESTORM_LC:  10/ 5280  0%\n"
    assert overflow(report_log) is None


def _r(device, k, lanes, fits, fmax=None):
    return {"device": device, "k": k, "lanes": lanes, "fits": fits, "fmax_mhz": fmax}


def test_fit_table_picks_largest_k_then_throughput():
    results = [
        _r("a", 256, 1, True, 50.0),
        _r("a", 1024, 1, True, 40.0),
        _r("a", 4096, 1, False),
        _r("a", 256, 2, True, 45.0),
        _r("a", 1024, 2, True, 30.0),
        _r("a", 1024, 4, False),
        _r("b", 256, 1, False),
    ]
    table = fit_table(results)
    assert table["a"]["largest_k"] == {1: 1024, 2: 1024, 4: None}
    best = table["a"]["best"]
    assert (best["k"], best["lanes"]) == (1024, 2)  # 2 x 30 MHz beats 1 x 40 MHz at the same K
    assert table["b"]["best"] is None and table["b"]["largest_k"] == {1: None}


def test_harness_keeps_every_input_bit_in_the_shift_chain():
    config = EngineConfig(k=16, lanes=2, max_m=8, max_rows=15)
    codebook = Codebook(np.arange(16 * 8).reshape(16, 8).astype(np.int8), np.ones(1, np.float32))
    text, width = harness_rtlil(config, codebook)
    engine = Engine(config, codebook)
    engine._MustUse__silence = True  # only its signature is read
    inputs = sum(
        len(v.as_value() if hasattr(v, "as_value") else v)
        for _, member, v in engine.signature.flatten(engine)
        if member.flow.name == "In"
    )
    assert width == inputs
    assert "module \\vq4all_synth_top" in text and "\\sin" in text and "\\sout" in text


def test_sweep_reuses_the_cache_and_implies_larger_k_after_an_overflow(tmp_path):
    from vq4all.hw.synth import DESIGNS, cache_key, memo_key, sweep, synth_config

    sha = "ab" * 32
    fit = {"fits": True, "fmax_mhz": 30.0, "lut": 1000, "ff": 700, "bram": 20, "seconds_yosys": 1, "seconds_nextpnr": 1}
    nofit = {
        "fits": False,
        "overflow": {"cell": "ICESTORM_RAM", "used": 40, "available": 30, "all": [["ICESTORM_RAM", 40, 30]]},
    }
    small, large = synth_config(256, 1), synth_config(1024, 1)
    cache = {
        cache_key("ice40-up5k", small, sha, "d256"): {"device": "ice40-up5k", **fit},
        cache_key("ice40-up5k", large, sha, "d1024"): {"device": "ice40-up5k", **nofit},
        DESIGNS: {memo_key(small, sha): "d256", memo_key(large, sha): "d1024"},
    }
    path = tmp_path / "synth_cache.json"
    path.write_text(json.dumps(cache))
    results = sweep(sha, ["ice40-up5k"], [256, 1024, 4096], [1, 2], path, cache_only=True, progress=lambda s: None)
    by = {(r["k"], r["lanes"]): r for r in results}
    assert by[256, 1]["fits"] and by[1024, 1]["fits"] is False
    assert by[4096, 1]["fits"] is False and by[4096, 1]["implied_by"] == "k=1024 (ICESTORM_RAM)"
    assert by[256, 2]["missing"] and by[256, 2]["fits"] is None
    table = fit_table(results)
    assert table["ice40-up5k"]["largest_k"][1] == 256 and table["ice40-up5k"]["best"]["k"] == 256
    with pytest.raises(VQ4AllError, match="SHA-256 alone"):  # a run needs the codewords
        sweep(sha, ["ice40-up5k"], [256], [2], path, progress=lambda s: None)


def test_variant_runs_read_the_sweep_cache(tmp_path):
    """Split-ROM configurations share the sweep's cache: a cached one is returned with its
    rom_width (no synthesis), a missing one is marked as such under cache_only; the key names
    the split."""
    from vq4all.hw.synth import DESIGNS, cache_key, memo_key, synth_config, variant_runs

    sha = "ab" * 32
    config = synth_config(65536, 1, rom_width=6)
    assert config.key().endswith("_rw6") and synth_config(65536, 1).key() != config.key()
    cached = {"device": "ecp5-85k", "config": config.to_dict(), "fits": True, "bram": 173, "exceptions": 336}
    cache = tmp_path / "cache.json"
    memo = {DESIGNS: {memo_key(config, sha): "rw6design"}}
    cache.write_text(json.dumps({cache_key("ecp5-85k", config, sha, "rw6design"): cached, **memo}))
    got = variant_runs(sha, [("ecp5-85k", 65536, 1, 6), ("ecp5-85k", 65536, 2, 7)], cache, cache_only=True)
    assert got[0]["bram"] == 173 and (got[0]["k"], got[0]["lanes"], got[0]["rom_width"]) == (65536, 1, 6)
    assert got[1]["fits"] is None and got[1]["missing"]
    with pytest.raises(VQ4AllError, match="only with the codebook itself"):
        variant_runs(sha, [("ecp5-85k", 65536, 1, 6)], cache)


def test_a_tool_that_runs_out_of_time_is_a_result_not_a_crash(monkeypatch, tmp_path):
    """yosys or nextpnr past timeout_s: run() returns fits None with what timed out, so a sweep
    records it (the table says "not finished") and goes on with the next configuration."""
    import subprocess

    from vq4all.hw import synth

    def too_slow(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs.get("timeout"))

    monkeypatch.setattr(synth.subprocess, "run", too_slow)
    codebook = Codebook(np.random.default_rng(0).integers(-127, 128, (16, 8)).astype(np.int8))
    out = synth.run(
        DEVICES["ice40-up5k"], EngineConfig(k=16, max_m=8, max_rows=8), codebook, timeout_s=5, workdir=str(tmp_path)
    )
    assert out["fits"] is None and out["timed_out"] == "yosys did not finish within 5 s"


def test_results_are_keyed_by_the_design_so_an_unchanged_design_keeps_them(tmp_path):
    """design_digest: the same for the same (config, codebook) whatever the source lines, different
    for another codebook or config; design_of memoises it in the cache (a SHA-256 alone finds it
    there), and the sweep writes the memo back so a cache-only read generates nothing."""
    from vq4all.artifact import Codebook
    from vq4all.hw.synth import DESIGNS, design_digest, design_of, memo_key, sweep, synth_config

    rng = np.random.default_rng(0)
    cb = Codebook(rng.integers(-128, 128, (256, 8)).astype(np.int8), np.ones(1, np.float32))
    other = Codebook(rng.integers(-128, 128, (256, 8)).astype(np.int8), np.ones(1, np.float32))
    config = synth_config(256, 1)
    digest = design_digest(config, cb)
    assert digest == design_digest(config, cb)
    assert digest != design_digest(config, other) and digest != design_digest(synth_config(256, 2), cb)
    cache = {}
    assert design_of(cache, config, cb.sha256) is None  # not memoised, no codewords to generate from
    assert design_of(cache, config, cb) == digest and cache[DESIGNS] == {memo_key(config, cb.sha256): digest}
    assert design_of(cache, config, cb.sha256) == digest
    path = tmp_path / "synth_cache.json"
    path.write_text("{}")
    results = sweep(cb, ["ice40-up5k"], [256], [1], path, cache_only=True, progress=lambda s: None)
    assert results[0]["missing"]  # nothing measured, but the design digest is kept for next time
    assert json.loads(path.read_text())[DESIGNS] == {memo_key(config, cb.sha256): digest}
