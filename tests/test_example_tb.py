"""examples/verilog_tb: the plain-Verilog testbench, run exactly as its README says, passes on a
real digits_cnn layer under Icarus with results equal to the reference, and fails on a corrupted
expected-results file or another codebook's ROM file; the worked example of
docs/stream-protocol.md is exactly what worked_example.py prints, and every number in it is what
the RTL does (Icarus through the testbench for the lanes = 1 layer; Amaranth's simulator for
every variant, beat by beat)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.scripts import load_script
from vq4all.hw.rtl.engine import Engine
from vq4all.hw.sim.amaranth_sim import run_engine
from vq4all.hw.sim.streams import Job, StreamDriver

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples" / "verilog_tb"
DOC = ROOT / "docs" / "stream-protocol.md"
README = EX / "README.md"
ROW = re.compile(r"^row (\d+): result (-?\d+) expected (-?\d+) cycle (\d+)( MISMATCH)?$", re.M)


def worked_example():
    """examples/verilog_tb/worked_example.py as a module (the examples are not a package)."""
    return load_script(EX / "worked_example.py", "verilog_tb_worked_example")


def readme_blocks() -> list[str]:
    """The README's ```bash blocks: the layer run, then the worked example's run."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 2 and blocks[0].rstrip().endswith("vvp -n tb.vvp"), blocks
    return blocks


def shell(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """`script` in bash as a user would type it in the README's working folder: EX set to the
    example folder, this environment's vq4all and python first on PATH."""
    env = dict(os.environ, EX=str(EX), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def rows_printed(stdout: str) -> list[tuple[int, int, int, int, bool]]:
    return [(int(o), int(r), int(e), int(c), bool(bad)) for o, r, e, c, bad in ROW.findall(stdout)]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Both README blocks, run in one empty folder: (folder, layer run, worked-example run)."""
    folder = tmp_path_factory.mktemp("verilog_tb")
    first, second = readme_blocks()
    layer = shell(first, folder)
    assert layer.returncode == 0, layer.stdout + layer.stderr
    worked = shell(second, folder)
    assert worked.returncode == 0, worked.stdout + worked.stderr
    return folder, layer, worked


@pytest.mark.sim
def test_the_readme_run_passes_with_the_reference_results(readme_run):
    """The results Icarus printed are the reference's, computed here from the files the README's
    commands wrote (codebook, artifact) and the layer's real input, not from expected.hex."""
    from vq4all import zoo
    from vq4all.artifact import load_codebook, load_network
    from vq4all.hw.layer_inputs import real_input
    from vq4all.hw.sim.streams import quantize_int8
    from vq4all.reference import lookup_matmul_int

    folder, run, _ = readme_run
    cb = load_codebook(folder / "codebook.safetensors")
    layer = next(e for e in load_network(folder / "digits_cnn.safetensors", cb).layers if e.name == "conv1")
    x, _ = quantize_int8(real_input(zoo.load("digits_cnn"), layer.param))
    want = lookup_matmul_int(x[None, :], layer.codes, cb.codebook, 32)[0].tolist()
    rows, m = layer.codes.shape
    printed = rows_printed(run.stdout)
    assert [r[:3] for r in printed] == [(o, v, v) for o, v in enumerate(want)], run.stdout
    assert f"PASS: {rows} results match" in run.stdout and "FAIL" not in run.stdout
    stalls = int(re.search(r"held off by result backpressure on (\d+) cycles", run.stdout).group(1))
    assert stalls > 0, run.stdout  # the backpressure pattern really filled the result FIFO
    # the README's description of the stimulus is this layer's
    text = " ".join(README.read_text().split())
    assert (
        f"({rows} rows of {layer.row} inputs: m = {m} sub-vectors of {cb.d}, the last one ending in "
        f"{layer.pad} pad zeros)" in text
    )
    assert f"`acts.hex` ({m} beats), `codes.hex` ({rows * m} beats), `expected.hex` ({rows} results)" in text
    assert f"PASS: {rows} results match" in text


@pytest.mark.sim
def test_the_worked_example_runs_in_icarus_as_documented(readme_run):
    """The document's lanes = 1 layer through tb_one_layer.v at full speed, from its own ROM
    file on the digits engine: the results and the cycle of every result are the document's."""
    _, _, run = readme_run
    f = worked_example().facts()["lanes1"]
    printed = rows_printed(run.stdout)
    assert [(o, r, e, c) for o, r, e, c, _ in printed] == [
        (o, v, v, t) for o, (v, t) in enumerate(zip(f["results"], f["result_cycles"]))
    ], run.stdout
    assert f"cycles {f['cycles']}, code beats held off by result backpressure on 0 cycles" in run.stdout
    assert f"PASS: {len(f['results'])} results match" in run.stdout


@pytest.mark.sim
def test_a_corrupted_expected_file_or_another_rom_fails(readme_run, tmp_path):
    """The testbench can fail: one expected word off by one, or the ROM of another codebook
    (the worked example's, same k and d), or no ROM file at all, and it says so and exits
    non-zero."""
    folder, _, _ = readme_run
    for name in ("rtl", "stim", "worked"):
        shutil.copytree(folder / name, tmp_path / name)
    shutil.copy(folder / "tb.vvp", tmp_path / "tb.vvp")
    expected = tmp_path / "stim" / "expected.hex"
    lines = expected.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if not line.startswith("//")) + 5  # row 5
    word, rest = lines[i].split(" ", 1)
    lines[i] = f"{int(word, 16) ^ 1:0{len(word)}x} {rest}"
    expected.write_text("\n".join(lines) + "\n")
    run = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "FAIL: 1 of 16 results differ from expected" in run.stdout, run.stdout
    assert [r[0] for r in rows_printed(run.stdout) if r[4]] == [5]
    shutil.copy(folder / "stim" / "expected.hex", expected)

    def with_rom(rom: str) -> subprocess.CompletedProcess:
        vvp = tmp_path / "other.vvp"
        subprocess.run(
            ["iverilog", "-g2012", "-I", "stim", f'-Ptb_one_layer.ROM_FILE="{rom}"', "-o", str(vvp)]
            + [str(EX / "tb_one_layer.v"), "rtl/vq4all_engine_readmemh.v"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )
        return subprocess.run(["vvp", "-n", str(vvp)], cwd=tmp_path, capture_output=True, text=True, timeout=60)

    run = with_rom("rtl/codebook.hex")  # the control: the same command with the right ROM passes
    assert run.returncode == 0 and "PASS: 16 results match" in run.stdout, run.stdout
    run = with_rom("worked/codebook.hex")
    assert run.returncode != 0 and re.search(r"FAIL: \d+ of 16 results differ", run.stdout), run.stdout
    assert sum(r[4] for r in rows_printed(run.stdout)) >= 8, run.stdout
    run = with_rom("rtl/missing.hex")
    assert run.returncode != 0 and 'cannot open the ROM file "rtl/missing.hex"' in run.stdout, run.stdout


def test_the_document_holds_the_generated_worked_example():
    w = worked_example()
    text = DOC.read_text()
    assert text.count(w.BEGIN) == 1 and text.count(w.END) == 1
    assert w.doc_block(text) == w.markdown(), (
        "run: python examples/verilog_tb/worked_example.py --doc docs/stream-protocol.md"
    )


class Recorder(StreamDriver):
    """StreamDriver that also notes the cycle of every transfer, per stream."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.at = {s: [] for s in (*self.streams, "results")}

    def observe(self, **ports):
        for s in self.streams:
            if self.presented[s] and ports.get(f"{s}_ready", 0):
                self.at[s].append(self.cycle)
        if ports["results_valid"] and self._ready:
            self.at["results"].append(self.cycle)
        super().observe(**ports)


def span(first_last) -> list[int]:
    return list(range(first_last[0], first_last[1] + 1))


def test_the_worked_example_numbers_are_what_the_rtl_does():
    """Every variant of the worked example in Amaranth's simulator at full speed: the engine takes
    exactly the documented words on exactly the documented cycles and returns the documented
    results on the documented cycles."""
    F = worked_example().facts()
    cb, x, codes = F["codebook"], F["x"], F["codes"]
    for key in ("lanes1", "lanes2", "requant"):
        f = F[key]
        c = f["config"]
        job = Job(key, x, codes)
        if c.requant:
            job.multipliers, job.shift = np.array(f["multipliers"]), f["shift"]
        driver = Recorder(c, [job], cb)
        report = run_engine(Engine(c, cb), driver)
        assert report["mismatches"] == 0 and not report["timed_out"]
        assert driver.queues["layer"] == [f["descriptor"]]
        assert driver.queues["acts"] == f["acts"] and driver.queues["codes"] == f["codes"]
        assert driver.results == f["results"], key
        assert driver.at["layer"] == [0] and driver.at["acts"] == span(f["act_cycles"]), key
        assert driver.at["codes"] == span(f["code_cycles"]), key
        assert driver.at["results"] == f["result_cycles"], key
        assert report["layers"][0]["cycles"] == f["cycles"], key
        if c.requant:
            assert driver.queues["scales"] == f["multipliers"] and driver.at["scales"] == driver.at["codes"][:: f["B"]]
    # two copies back to back: the early descriptor and the second slot
    f = F["lanes1"]
    driver = Recorder(f["config"], [Job("a", x, codes), Job("b", x, codes)], cb)
    report = run_engine(Engine(f["config"], cb), driver)
    assert report["mismatches"] == 0 and driver.results == f["results"] * 2
    b2b = F["back_to_back"]
    assert driver.at["layer"] == [e["descriptor"] for e in b2b]
    assert driver.at["acts"] == [t for e in b2b for t in span(e["act_cycles"])]
    assert driver.at["codes"] == [t for e in b2b for t in span(e["code_cycles"])]
    assert driver.finished == [e["last"] for e in b2b]
