"""Nothing is ever lost: SIGKILL during writes leaves the old file or the new one, never a mix;
a killed `vq4all compress` resumes from its checkpoint to the artifact of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vq4all import artifact
from vq4all.artifact import Codebook

KILLS = 4  # per kind of file; each kill lands at a random moment of a write loop

# A child that writes two valid versions of one file over each other, for ever, through the
# project's own writers; it says "ready" once the file first exists.
WRITER = r"""
import contextlib
import sys
import numpy as np
from vq4all import artifact
from vq4all.artifact import Codebook, LayerCodes, NetworkArtifact
from vq4all.cli import main

kind, path = sys.argv[1], sys.argv[2]
versions = []
for seed in (1, 2):
    rng = np.random.default_rng(seed)
    cb = Codebook(rng.integers(-127, 128, (65536 if kind == "rom" else 16, 8), dtype=np.int8), np.array([0.1], np.float32), {})
    if kind == "artifact":  # 16 MiB of FP leftovers make each write take a while
        layer = LayerCodes("fc.weight", (4, 8), 8, 0, "channel", np.zeros((4, 1), np.uint8), np.ones(4, np.float16))
        versions.append(NetworkArtifact(f"v{seed}", cb.sha256, 16, [layer], {"big": rng.standard_normal(1 << 22).astype(np.float32)}))
    else:  # a K=65536 codebook: a 1.1 MB .hex ROM file
        artifact.save_codebook(f"{path}.cb{seed}", cb)
        versions.append(f"{path}.cb{seed}")
i = 0
while True:
    if kind == "artifact":
        artifact.save_network(path, versions[i % 2])
    else:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only "ready"
            main(["rom", "export", "--codebook", versions[i % 2], "--format", "hex", "--out", path])
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


def expected_versions(kind, path):
    """The two complete files the writer alternates between (made by the same code, in-process)."""
    out = []
    for seed in (1, 2):
        if kind == "artifact":
            out.append(f"v{seed}")
        else:
            from vq4all.hw.rtl.romfiles import rom_file_text

            cb = artifact.load_codebook(f"{path}.cb{seed}")
            out.append(rom_file_text("hex", cb, 8))
    return out


@pytest.mark.parametrize("kind", ["artifact", "rom"])
def test_sigkill_during_a_write_leaves_a_complete_file(kind, tmp_path):
    path = tmp_path / ("net.safetensors" if kind == "artifact" else "codebook.hex")
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, kind, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 0.6)))  # somewhere inside the write loop
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        versions = expected_versions(kind, path)
        if kind == "artifact":
            art = artifact.load_network(path)  # fully validated: complete, not a mix
            assert art.network in versions and art.leftovers["big"].size == 1 << 22
            seen.add(art.network)
        else:
            text = path.read_text()
            assert text in versions, f"partial ROM file: {len(text)} characters"
            seen.add(versions.index(text))
        # a write the kill interrupted may leave its temporary file: `.<name>.<random>.tmp`,
        # never the artifact's own name, so nothing reads it by mistake
        for other in tmp_path.iterdir():
            assert (
                other == path
                or other.name.startswith(f".{path.name}.")
                and other.name.endswith(".tmp")
                or other.name.startswith(f"{path.name}.cb")
            ), other.name
    assert seen  # (both versions usually appear; one is enough to show the file was always whole)


def test_interrupted_compress_resumes_to_the_same_artifact(tmp_path):
    """Kill `vq4all compress` (SIGKILL) once its checkpoint exists, resume it, and compare with an
    uninterrupted run of the same seed: every tensor bit-identical, the manifest identical except
    the report's wall-clock `seconds` (the only thing that depends on when it ran, so the files'
    bytes differ there)."""
    rng = np.random.default_rng(0)
    cb_path = tmp_path / "cb.safetensors"
    artifact.save_codebook(
        cb_path, Codebook(rng.integers(-127, 128, (4096, 8), dtype=np.int8), np.array([1 / 40], np.float32), {})
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # same thread count: same float sums

    def compress(out, *extra):
        return [
            sys.executable,
            "-m",
            "vq4all",
            "compress",
            "--network",
            "digits_cnn",
            "--codebook",
            str(cb_path),
            "--out",
            str(out),
            "--steps",
            "30",
            "--checkpoint-every",
            "3",
            "--seed",
            "0",
            "--calibration-count",
            "128",
            "--json",
            *extra,
        ]

    straight = tmp_path / "straight.safetensors"
    subprocess.run(compress(straight), check=True, env=env, capture_output=True, timeout=300)

    out = tmp_path / "resumed.safetensors"
    ckpt = tmp_path / "resumed.safetensors.ckpt"
    child = subprocess.Popen(compress(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not ckpt.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # a few more steps: the kill lands while later checkpoints are being written
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert not out.exists()
    step = artifact.read_container(ckpt)[0]["step"]  # the checkpoint is whole even if a write was cut
    assert 3 <= step < 30
    proc = subprocess.run(compress(out, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not ckpt.exists()  # the finished run removes its default checkpoint

    a, b = artifact.read_container(straight), artifact.read_container(out)
    assert sorted(a[1]) == sorted(b[1])
    for name, t in a[1].items():
        assert t.dtype == b[1][name].dtype and t.tobytes() == b[1][name].tobytes(), name
    for m in (a[0], b[0]):
        m["config"]["report"].pop("seconds")
        m.pop("sha256")  # the content hash covers the report, wall-clock seconds included
    assert a[0] == b[0]
    assert json.loads(proc.stdout)["steps"] == a[0]["config"]["report"]["steps"]
