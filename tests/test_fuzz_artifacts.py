"""Fuzzing the artifact reader: damaged files end in one ArtifactError (file, tensor, rule) or
load as valid; never another exception, a multi-line message, a traceback on the command line,
or an allocation out of proportion to the file. The longer run is benches/fuzz_artifacts.py."""

import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import fuzzing
from vq4all import artifact
from vq4all.errors import ArtifactError, VQ4AllError

SEEDS = fuzzing.seed_files()
ROOT = Path(__file__).resolve().parents[1]
# numpy copies of the tensors, the read buffer and temporaries (isfinite masks, the hash's copy)
# stay within a few times the file; the constant covers the JSON header's Python objects
ALLOC_FACTOR, ALLOC_CONST = 8, 2 << 20


def load_case(path: Path, codebook) -> None:
    """What `vq4all inspect` does, then the network loaded against its codebook (hash rules)."""
    artifact.summarize(path)
    if artifact.read_manifest(path).get("kind") == "network":
        artifact.load(path, codebook)


def check_outcome(path: Path, codebook) -> str:
    """Load under tracemalloc; returns 'valid' or the error's rule. Fails on anything else."""
    size = path.stat().st_size
    tracemalloc.start()
    try:
        load_case(path, codebook)
        outcome = "valid"
    except ArtifactError as e:
        assert e.path == str(path)
        message = str(e)
        assert message.startswith(str(path)) and message.isprintable() and e.rule, message
        outcome = e.rule
    except VQ4AllError as e:  # e.g. "no such file": still one printable line naming the file
        assert str(path) in str(e) and "\n" not in str(e)
        outcome = str(e)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= ALLOC_FACTOR * size + ALLOC_CONST, f"peak allocation {peak} B for a {size}-byte file"
    return outcome


@pytest.fixture(scope="module")
def codebook(tmp_path_factory):
    path = tmp_path_factory.mktemp("seed") / "cb.safetensors"
    path.write_bytes(SEEDS["codebook"])
    return artifact.load_codebook(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from(sorted(SEEDS)), kind=st.sampled_from(fuzzing.KINDS), seed=st.integers(0, 2**32 - 1))
def test_damaged_files_end_in_one_clear_error(source, kind, seed, codebook, tmp_path):
    path = tmp_path / f"{source}-{kind}.safetensors"
    path.write_bytes(fuzzing.mutate(SEEDS[source], kind, np.random.default_rng(seed)))
    check_outcome(path, codebook)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    source=st.sampled_from(sorted(SEEDS)),
    kind=st.sampled_from(fuzzing.EXTRA_FILE_KINDS),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_attack_classes_end_in_one_clear_error(source, kind, seed, codebook, tmp_path):
    """Huge-integer shapes, JSON amplification and hostile names: one printable line or a valid
    load, within the reader's stated bound (2 x file + MAX_HEADER_MEMORY)."""
    path = tmp_path / f"{source}-{kind}.safetensors"
    path.write_bytes(fuzzing.mutate_extra(SEEDS[source], kind, np.random.default_rng(seed)))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        load_case(path, codebook)
    except ArtifactError as e:
        assert str(e).isprintable() and len(str(e)) < 2000, str(e)[:300]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= 2 * size + artifact.MAX_HEADER_MEMORY, peak


@pytest.mark.parametrize(
    "kind,rule",
    [
        ("codes_ge_k", "is >= k=16"),
        ("wrong_hash", "built on codebook"),
        ("nan_inf", "NaN or Inf"),
    ],
)
def test_each_damage_is_caught_by_its_rule(kind, rule, codebook, tmp_path):
    """The mutators that always break a rule do break the one they aim at (on the network file)."""
    path = tmp_path / "net.safetensors"
    for seed in range(20):
        path.write_bytes(fuzzing.mutate(SEEDS["network"], kind, np.random.default_rng(seed)))
        outcome = check_outcome(path, codebook)
        assert rule in outcome or (kind == "nan_inf" and "finite" in outcome), outcome


def test_header_declaring_huge_sizes_is_refused_before_allocating(tmp_path, codebook):
    header, body = fuzzing.split(SEEDS["codebook"])
    header["codebook"].update(shape=[1 << 20, 1 << 20], data_offsets=[0, 1 << 40])  # 1 TiB
    path = tmp_path / "huge.safetensors"
    path.write_bytes(fuzzing.join(header, body))
    assert "fall outside" in check_outcome(path, codebook)
    path.write_bytes(b"\xff" * 8 + SEEDS["codebook"][8:])  # a length prefix of 2**64 - 1
    assert "header declares" in check_outcome(path, codebook)


def test_regressions_found_by_fuzzing(tmp_path, codebook):
    """Each of these once escaped as a non-ArtifactError exception or a multi-line message."""
    _, body = fuzzing.split(SEEDS["codebook"])
    cases = {
        "nested": b"[" * 100000 + b"]" * 100000,  # RecursionError in json
        "digits": b'{"a": ' + b"9" * 5000 + b"}",  # ValueError: int digit limit
        "empty_huge": None,  # an empty tensor with dimensions numpy cannot hold
        "newline_name": None,
    }
    for name, h in cases.items():
        if h is not None:
            data = len(h).to_bytes(8, "little") + h
        elif name == "empty_huge":
            header, _ = fuzzing.split(SEEDS["codebook"])
            header["extra"] = {"dtype": "U8", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}
            data = fuzzing.join(header, body)
        else:
            header, _ = fuzzing.split(SEEDS["codebook"])
            header["a\nb\ud800"] = {"dtype": "Q", "shape": [1], "data_offsets": [0, 1]}
            data = fuzzing.join(header, body)
        path = tmp_path / name
        path.write_bytes(data)
        assert check_outcome(path, codebook) != "valid", name
    # format_version 1.0 (a float equal to 1) is not version 1
    path.write_bytes(fuzzing._with_manifest(SEEDS["codebook"], lambda m: m.update(format_version=1.0)))
    assert "format_version" in check_outcome(path, codebook)


def inspect(path, *extra):
    return subprocess.run(
        [sys.executable, "-m", "vq4all", "inspect", str(path), *extra], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_is_refused_not_read_forever(tmp_path):
    """In a subprocess with a timeout: reading a FIFO with no writer would block for ever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = inspect(fifo)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr, proc.stderr


def test_inspect_cli_on_damaged_files(tmp_path):
    """A handful of real `vq4all inspect` runs: exit 2, one line naming the file, no traceback."""
    rng = np.random.default_rng(7)
    for kind in ("truncate", "garbage_header", "codes_ge_k", "nan_inf", "format_version", "huge_sizes"):
        path = tmp_path / f"{kind}.safetensors"
        while True:  # a damaged file that really is invalid
            path.write_bytes(fuzzing.mutate(SEEDS["network"], kind, rng))
            try:
                artifact.summarize(path)
            except VQ4AllError:
                break
        proc = inspect(path)
        out = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 2 and len(out) == 1, (kind, proc.stdout, proc.stderr)
        assert out[0].startswith(f"vq4all: error: {path}") and "Traceback" not in proc.stderr


def test_inspect_into_a_closed_pipe_exits_quietly(tmp_path):
    """`vq4all inspect F --json | true`: the reader is gone before Python starts writing, so the
    write meets a closed pipe (once a BrokenPipeError traceback); now a quiet exit 141."""
    path = tmp_path / "net.safetensors"
    path.write_bytes(SEEDS["network"])
    proc = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m vq4all inspect {path} --json | true; echo ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stderr == "", proc.stderr
    assert proc.stdout.strip() in ("0", "141"), proc.stdout  # 0 only if the write beat the reader's exit


def test_nothing_is_ever_unpickled():
    """No pickle-based loader anywhere in the package: torch.load only with weights_only=True,
    no pickle, no np.load with allow_pickle (the testbench's own .npz is numeric: allow_pickle
    stays at its default False)."""
    offenders = []
    for folder in ("vq4all", "kernels", "rtl", "sim"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for pattern in (
                r"\bimport pickle\b",
                r"\bpickle\.load",
                r"allow_pickle\s*=\s*True",
                r"\bdill\b",
                r"torch\.load\((?!.*weights_only\s*=\s*True)",
            ):
                if re.search(pattern, text):  # line by line: `.` stops at the end of the call's line
                    offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert not offenders, offenders
