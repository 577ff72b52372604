"""benches/gpu_check.sh on a machine without a GPU, as far as a CPU can take it.

The script gets one try on a GPU machine, so its argument handling, its syntax, its use of
`python -P`, the order of its steps and measurements, the import path of vq4all (this tree's
src/, with no install and a stale `vq4all/` folder at the repository root) and pytest's
collection (the kernel test files only) are checked here through its dry run (--plan), from a
copy of the repository in a temporary folder with the editable install hidden (python -S and
only site-packages on PYTHONPATH: no .pth file is read)."""

import json
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benches" / "gpu_check.sh"
KERNEL_FILES = sorted(p.name for p in (ROOT / "tests").glob("test_kernels*.py")) + ["test_bench_kernels.py"]
GATHER_PATHS = ["triton global"] * 3 + ["cuda global"] * 3 + ["cuda shared"] * 2


def run(args, env=None, cwd=None, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_no_out_dir_is_a_usage_error(tmp_path):
    for args in ([], ["--plan"], ["a", "b"], ["out", "--fast"]):
        r = run(["bash", str(SCRIPT), *args], cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "usage: bash benches/gpu_check.sh OUT_DIR" in lines[0], r
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_syntax_and_python_minus_p_everywhere():
    assert run(["bash", "-n", str(SCRIPT)]).returncode == 0
    text = SCRIPT.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    calls = re.findall(r'(?<!-n )(?<!usable )"\$py"\s+(\S+)', code)  # runs of $py, not tests of it
    assert len(calls) >= 8, calls
    # every Python call starts with -P, directly or through PYTEST_ARGS (whose first word is -P)
    assert all(c in ("-P", '"${PYTEST_ARGS[@]}"') for c in calls), calls
    probes = re.findall(r'"\$1"\s+(\S+)\s+-c', code)  # usable(): the candidate interpreters
    assert probes == ["-P"] * 3, probes
    assert re.search(r"PYTEST_ARGS=\(-P -m pytest ", code)
    assert "pip install" not in code  # the GPU machine has no network
    assert 'PYTHONPATH="$root/src' in code


def test_without_a_gpu_the_real_run_stops_at_once_with_one_reason(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    r = run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env)
    assert r.returncode == 1, r
    assert "seeing a CUDA device" in r.stdout
    assert not (tmp_path / "out" / "bench_kernels.json").exists()


def make_copy(base: Path, stale_root: bool):
    """The parts of the repository the script uses, copied into `base`; with `stale_root`, a
    stale root `vq4all/` package without kernels/ (what `python -m pytest` from the root used to
    import first); and a python wrapper that runs this interpreter with -S (no site-packages
    .pth: no editable install). Returns (repo, env for the script)."""
    repo = base / "repo"
    shutil.copytree(ROOT / "src" / "vq4all", repo / "src" / "vq4all", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "benches").mkdir()
    for name in ("gpu_check.sh", "bench_kernels.py"):
        shutil.copy2(ROOT / "benches" / name, repo / "benches" / name)
    shutil.copytree(ROOT / "tests", repo / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    if stale_root:
        (repo / "vq4all").mkdir()
        (repo / "vq4all" / "__init__.py").write_text("STALE = True  # a stale copy at the root: no kernels/\n")
    wrapper = base / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    packages = os.pathsep.join(site.getsitepackages())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET", "VIRTUAL_ENV")}
    env.update(PYTHON=str(wrapper), PYTHONPATH=packages, GPU_CHECK_DRY_RUN="1")
    return repo.resolve(), env


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    return make_copy(tmp_path_factory.mktemp("gpu_check"), stale_root=True)


def test_the_editable_install_is_hidden_and_minus_p_is_what_avoids_the_stale_root(copy):
    repo, env = copy
    probe = "import vq4all, sys; print(vq4all.__file__)"
    # with -S the .pth of the editable install is never read: without src/ vq4all is not found
    r = run([env["PYTHON"], "-P", "-c", probe], env=env, cwd="/")
    assert r.returncode != 0 and "No module named 'vq4all'" in r.stderr
    src_env = {**env, "PYTHONPATH": f"{repo / 'src'}{os.pathsep}{env['PYTHONPATH']}"}
    # without -P, `python -c`/`python -m` from the root put the root first: the stale copy wins
    stale = run([env["PYTHON"], "-c", probe], env=src_env, cwd=repo)
    assert stale.stdout.strip() == str(repo / "vq4all" / "__init__.py")
    # with -P, src/ wins, and vq4all.kernels is there
    r = run([env["PYTHON"], "-P", "-c", "import vq4all.kernels as k; print(k.__file__)"], env=src_env, cwd=repo)
    assert r.returncode == 0 and r.stdout.strip() == str(repo / "src" / "vq4all" / "kernels" / "__init__.py"), r


@pytest.fixture(scope="module")
def dry_run(copy, tmp_path_factory):
    repo, env = copy
    out = tmp_path_factory.mktemp("out")
    r = run(["bash", str(repo / "benches" / "gpu_check.sh"), str(out)], env=env, cwd="/", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return repo, r.stdout.splitlines(), out


def test_dry_run_shows_the_steps_in_order_with_their_limits(dry_run):
    _, lines, out = dry_run
    steps = [l for l in lines if l.startswith("[gpu_check] plan: ")]
    assert [s.split()[2] for s in steps] == ["1", "2", "3", "4", "5", "6"]
    assert "env" in steps[0] and "import" in steps[1]
    assert "gathers,large" in steps[2] and "<= 170 s" in steps[2]
    assert "-m gpu" in steps[3] and "<= 90 s" in steps[3]
    assert "impls,fused,rest" in steps[4] and "-m 'not gpu'" in steps[5]
    assert "budget 330 s" in lines[0]  # the whole run: well inside 6 minutes
    assert (out / "gpu_check.log").read_text().splitlines()[: len(steps) + 1][1:] == steps


def test_dry_run_imports_vq4all_from_src(dry_run):
    repo, lines, _ = dry_run
    (line,) = [l for l in lines if l.startswith("[gpu_check] import check")]
    assert line.endswith(f"from {repo}/src/vq4all/kernels"), line


def test_dry_run_measures_gathers_then_the_large_shapes_first(dry_run):
    _, lines, _ = dry_run
    entries = [json.loads(l.split("bench: ", 1)[1]) for l in lines if l.startswith("[gpu_check] bench: {")]
    phases = [e["phase"] for e in entries]
    first_other = next(i for i, p in enumerate(phases) if p not in ("gathers", "large"))
    assert phases[:8] == ["gathers"] * 8 and [e["path"] for e in entries[:8]] == GATHER_PATHS
    assert phases[8:first_other] == ["large"] * 18  # 3 shapes x 2 configs x M = 1, 16, 256
    shapes = [(e["out_features"], e["in_features"]) for e in entries[8:first_other]]
    assert list(dict.fromkeys(shapes)) == [(4096, 4096), (8192, 8192), (4096, 14336)]
    assert {e["M"] for e in entries[8:first_other]} == {1, 16, 256}
    rest = phases[first_other:]  # B: every implementation first (the table GEMV's rows among them),
    assert rest == sorted(rest, key=["impls", "fused", "rest"].index) and set(rest) == {"impls", "fused", "rest"}
    assert any(e.get("impl") == "triton_lut" for e in entries[first_other:])
    fused = [e for e in entries if e["phase"] == "fused"]  # then fused siblings, then the zoo
    assert {e["layer"] for e in fused} == {"LLM 4096 Q,K,V (GQA)", "LLM 4096 gate,up"}
    assert all(e["out_features"] == sum(e["siblings"]) for e in fused)


def test_dry_run_collects_only_the_kernel_test_files(dry_run):
    repo, lines, _ = dry_run
    nodes = [l.split("pytest: ", 1)[1] for l in lines if l.startswith("[gpu_check] pytest: tests/")]
    files = {n.split("::")[0] for n in nodes}
    assert files == {f"tests/{name}" for name in KERNEL_FILES}, files
    summary = [l for l in lines if re.search(r"pytest: \d+(/\d+)? tests? collected", l)]
    assert summary, lines[-5:]
    assert not any("mtcnn" in n for n in nodes)  # -k "not mtcnn": facenet-pytorch is not on GPU images
    assert not any("error" in l.lower() for l in lines if l.startswith("[gpu_check] pytest: "))
    # and the collection really is pytest's: the gpu-marked kernel tests are among the nodes
    assert any(n.endswith("-cuda]") for n in nodes)


@pytest.mark.slow
def test_cpu_rehearsal_of_the_real_run(tmp_path):
    """GPU_CHECK_DEVICE=cpu runs the real sequence (env, import check, bench A, pytest -m gpu,
    bench B appending to A's files, pytest -m 'not gpu') with tiny CPU rows, from a copy with
    the editable install hidden: the plumbing of the GPU run, minus the GPU. (No stale root
    package here: test_kernels_compile runs `python -c` in a subprocess, which puts the root
    first on sys.path.)"""
    repo, env = make_copy(tmp_path, stale_root=False)
    env = {k: v for k, v in env.items() if k != "GPU_CHECK_DRY_RUN"}
    env.update(GPU_CHECK_DEVICE="cpu", GPU_CHECK_BUDGET="150")
    out = tmp_path / "out"
    r = run(["bash", str(repo / "benches" / "gpu_check.sh"), str(out)], env=env, cwd="/", timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["env.txt", "bench_kernels.md", "bench_kernels.json", "bench.log", "pytest.log", "gpu_check.log"]
    )
    log = (out / "gpu_check.log").read_text()
    marks = [
        "] import check: vq4all.kernels from",
        "] 3 bench A, time cap",
        "] 4 pytest -m gpu, limit",
        "] 5 bench B, time cap",
        "] 6 pytest -m 'not gpu', limit",
    ]
    positions = [log.index(m) for m in marks]
    assert positions == sorted(positions), log
    done = re.search(r"done in (\d+) s, .*\(status 0\)", log)
    assert done and int(done.group(1)) <= 150, log[-500:]
    data = json.loads((out / "bench_kernels.json").read_text())
    assert [run["phases"] for run in data["runs"]] == [["quick"], ["quick", "fused"]]  # B appended to A
    assert {r["config"] for r in data["rows"]} == {"2^16x8", "256x4"} and len(data["rows"]) == 8 + 2
    fused = [r for r in data["rows"] if r["phase"] == "fused"]  # tiny Q,K,V at M = 1, 16
    assert [r["M"] for r in fused] == [1, 16] and all(r["rel_err"] < 1e-5 for r in fused)
    assert "## Fused siblings" in (out / "bench_kernels.md").read_text()
    pytest_log = (out / "pytest.log").read_text()
    assert re.search(r"\d+ skipped, \d+ deselected", pytest_log)  # -m gpu: collected, skipped here
    # the last step runs to its end, or is cut by the budget (said, and not a failure)
    finished = re.search(r"\d+ passed", pytest_log.split("----- pytest -m 'not gpu'")[1])
    assert finished or "pytest -m 'not gpu': out of time" in log, pytest_log[-1000:]
    assert "CPU rehearsal" in (out / "env.txt").read_text()
