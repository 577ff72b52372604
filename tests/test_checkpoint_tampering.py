"""--resume from a checkpoint whose fields were edited: every field is checked against the live
run before anything of it is used, and a bad one is refused with ONE line
`<path>: damaged checkpoint (<what>): delete it and run without --resume`, never a traceback
later in training and never a silently accepted value (a negative learning rate, a step count
past the budget). The checkpoints are real ones of digits_cnn, edited field by field."""

import json

import numpy as np
import pytest
from safetensors.numpy import save

from vq4all import artifact, zoo
from vq4all.artifact import Codebook
from vq4all.cli import main
from vq4all.config import CompressConfig
from vq4all.errors import VQ4AllError
from vq4all.train import compress

CONFIG = CompressConfig(steps=6, calibration=32, checkpoint_every=2, n=2, seed=3)
LOGITS = "student.fc1.parametrizations.weight.0.logits"
CAND = "student.fc1.parametrizations.weight.0.cand"
CHOSEN = "student.fc1.parametrizations.weight.0.chosen"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(codebook, network, the checkpoint's manifest and tensors) after 2 of 6 steps."""
    folder = tmp_path_factory.mktemp("ckpt")
    rng = np.random.default_rng(1)
    cb = Codebook(rng.integers(-127, 128, (256, 8), dtype=np.int8), np.array([0.02], np.float32), {})
    net = zoo.load("digits_cnn")
    ckpt = folder / "run.ckpt"
    assert compress(net, cb, CONFIG, checkpoint=ckpt, stop_after=2).artifact is None
    meta, arrays = artifact.read_container(ckpt)
    assert meta["step"] == 2 and arrays["history"].shape[0] == 2 and meta["history_columns"][0] == "step"
    return cb, net, meta, {k: np.array(v) for k, v in arrays.items()}


def write(path, meta, arrays):
    path.write_bytes(save(arrays, metadata={"vq4all": json.dumps(meta)}))


def tampered(setup, path, edit):
    cb, net, meta, arrays = setup
    meta, arrays = json.loads(json.dumps(meta)), dict(arrays)
    edit(meta, arrays)
    write(path, meta, arrays)
    return cb, net


def set_group(i, key, value):
    return lambda m, t: m["param_groups"][i].__setitem__(key, value)


def set_meta(key, value):
    return lambda m, t: m.__setitem__(key, value)


def set_tensor(name, value):
    return lambda m, t: t.__setitem__(name, value)


def drop_tensor(name):
    return lambda m, t: t.pop(name)


def scaled(name, fn):
    return lambda m, t: t.__setitem__(name, fn(t[name]))


def not_candidates(cand):
    """For every row of cand [S, n], a codeword index that is none of the row's."""
    return np.array([next(v for v in range(256) if v not in row) for row in cand.tolist()], np.int64)


CASES = [
    # the optimiser's hyper-parameters (the reported tracebacks, and silently accepted values)
    ("lr 'x'", set_group(0, "lr", "x"), "optimiser lr='x' in group 0, not this run's 0.05"),
    ("lr -1", set_group(0, "lr", -1), "optimiser lr=-1 in group 0"),
    ("lr of the FP group", set_group(1, "lr", 1e300), "optimiser lr=1e+300 in group 1, not this run's 0.0001"),
    ("lr NaN", set_group(0, "lr", float("nan")), "optimiser lr=nan"),
    ("betas [5]", set_group(0, "betas", [5]), "optimiser betas=[5] in group 0, not this run's [0.9, 0.999]"),
    ("eps 'y'", set_group(0, "eps", "y"), "optimiser eps='y'"),
    ("amsgrad", set_group(0, "amsgrad", True), "optimiser amsgrad=True"),
    ("unknown key", set_group(0, "evil\n\x1b[2J", 1), "optimiser evil\\n\\x1b[2J=1"),
    ("params", set_group(0, "params", [0, 1, 99]), "optimiser params="),
    ("groups missing", set_meta("param_groups", []), "2 optimiser parameter groups expected"),
    ("group not a dict", set_meta("param_groups", [1, 2]), "optimiser parameter group 0 is not a mapping"),
    # the step counter: within 0..steps, an integer, the history as long
    ("step -5", set_meta("step", -5), "step=-5 must be >= 0"),
    ("step 1e9", set_meta("step", 10**9), "step=1000000000 must be <= 6"),
    ("step 1e300", set_meta("step", 1e300), "step=1e+300 must be an integer"),
    ("step '2'", set_meta("step", "2"), "step='2' must be an integer"),
    ("step true", set_meta("step", True), "step=True must be an integer"),
    ("step missing", lambda m, t: m.pop("step"), "step=None must be an integer"),
    ("step 4 of 2", set_meta("step", 4), "tensor 'history' must be float64 [4,"),
    (
        "history nan",
        lambda m, t: t.__setitem__("history", np.full_like(t["history"], np.nan)),
        "not the record of steps",
    ),
    ("history steps", lambda m, t: t.__setitem__("history", t["history"][::-1].copy()), "not the record of steps"),
    ("history dtype", lambda m, t: t.__setitem__("history", t["history"].astype(np.float32)), "must be float64"),
    ("history missing", lambda m, t: t.pop("history"), "tensor 'history' is missing"),
    ("history columns", set_meta("history_columns", "loss"), "history_columns must be a list"),
    ("history names", set_meta("history_columns", ["a", "b", "c", "d", "e", "f"]), "must start with step"),
    ("forced", set_meta("forced", -1), "forced=-1 must be >= 0"),
    ("passed_alpha", set_meta("passed_alpha", 10**12), "passed_alpha=1000000000000 must be <="),
    ("blocks_done", set_meta("blocks_done", 3), "blocks_done=3 must be <= 0"),
    ("block_reports", set_meta("block_reports", [{}]), "block reports do not match blocks_done=0"),
    ("config", lambda m, t: m["config"].__setitem__("steps", "x"), "configuration: steps='x' must be an integer"),
    # tensors: names, dtypes and shapes of the live run, values in range
    ("huge state", set_tensor("optimizer.2.exp_avg", np.zeros((1 << 20, 2), np.float32)), "[1048576, 2]"),
    (
        "huge logits",
        set_tensor(LOGITS, np.zeros((1 << 20, 2), np.float32)),
        f"tensor '{LOGITS}' is float32 [1048576, 2]",
    ),
    ("dtype", scaled(LOGITS, lambda a: a.astype(np.float64)), f"tensor '{LOGITS}' is float64"),
    ("logits NaN", scaled(LOGITS, lambda a: np.full_like(a, np.nan)), f"tensor '{LOGITS}' holds NaN or Inf"),
    ("exp_avg inf", scaled("optimizer.0.exp_avg", lambda a: a + np.inf), "optimizer.0.exp_avg holds impossible values"),
    ("exp_avg_sq < 0", scaled("optimizer.0.exp_avg_sq", lambda a: a - 1), "optimizer.0.exp_avg_sq holds impossible"),
    ("adam step 1e9", set_tensor("optimizer.0.step", np.array(1e9, np.float32)), "optimizer.0.step=1e+09"),
    ("adam step -1", set_tensor("optimizer.0.step", np.array(-1, np.float32)), "optimizer.0.step=-1"),
    ("adam step 1.5", set_tensor("optimizer.0.step", np.array(1.5, np.float32)), "optimizer.0.step=1.5"),
    ("adam state 99", set_tensor("optimizer.99.step", np.array(1, np.float32)), "optimiser state 99 of a parameter"),
    ("adam partial", drop_tensor("optimizer.3.exp_avg"), "optimiser state 3 lacks exp_avg"),
    (
        "adam unknown",
        set_tensor("optimizer.0.momentum", np.zeros(1, np.float32)),
        "'optimizer.0.momentum' is no optimiser",
    ),
    ("cand", scaled(CAND, lambda a: a + 1000), "candidates of fc1.weight outside the codebook's 0..255"),
    ("chosen", lambda m, t: t.__setitem__(CHOSEN, not_candidates(t[CAND])), "chosen codeword of fc1.weight is none"),
    ("missing", drop_tensor(LOGITS), f"tensor '{LOGITS}' is missing"),
    ("unknown", set_tensor("student.evil\x1b", np.zeros(1, np.float32)), "tensor 'student.evil\\x1b' is no part"),
    ("other", set_tensor("x", np.zeros(1, np.float32)), "unknown tensor 'x'"),
    ("sampler", drop_tensor("sampler"), "tensor 'sampler' is missing"),
    ("sampler size", scaled("sampler", lambda a: a[:100]), "tensor 'sampler' is uint8 [100]"),
]


@pytest.mark.parametrize("edit,what", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_tampered_checkpoint_is_refused_in_one_line(setup, tmp_path, edit, what):
    path = tmp_path / "run.ckpt"
    cb, net = tampered(setup, path, edit)
    data = path.read_bytes()
    with pytest.raises(VQ4AllError) as err:
        compress(net, cb, CONFIG, checkpoint=path, resume=True)
    message = str(err.value)
    assert message.startswith(f"{path}: damaged checkpoint (") and message.endswith(
        "): delete it and run without --resume"
    ), message
    assert what in message, message
    assert message.isprintable() and len(message) < 600, message
    assert path.read_bytes() == data  # refused, not rewritten


def test_the_untouched_checkpoint_still_resumes(setup, tmp_path):
    """The checks refuse nothing a real run writes: the same checkpoint, re-saved unchanged,
    resumes to the artifact of an uninterrupted run."""
    path = tmp_path / "run.ckpt"
    cb, net = tampered(setup, path, lambda m, t: None)
    resumed = compress(net, cb, CONFIG, checkpoint=path, resume=True)
    straight = compress(net, cb, CompressConfig(**{**CONFIG.to_dict(), "checkpoint_every": 0}))
    assert resumed.report["steps"] == straight.report["steps"]
    for a, b in zip(resumed.artifact.layers, straight.artifact.layers):
        np.testing.assert_array_equal(a.codes, b.codes)


def test_the_cli_refuses_it_in_one_line_and_writes_nothing(setup, tmp_path, capsys):
    cb, _, _, _ = setup
    cb_path = tmp_path / "cb.safetensors"
    artifact.save_codebook(cb_path, cb)
    out, ckpt = tmp_path / "net.safetensors", tmp_path / "net.safetensors.ckpt"
    tampered(setup, ckpt, set_group(0, "betas", [5]))
    data = ckpt.read_bytes()
    argv = ["compress", "--network", "digits_cnn", "--codebook", str(cb_path), "--out", str(out), "--resume"]
    argv += [
        "--steps",
        "6",
        "--calibration-count",
        "32",
        "--checkpoint-every",
        "2",
        "--n",
        "2",
        "--seed",
        "3",
        "--json",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"vq4all: error: {ckpt}: damaged checkpoint (optimiser betas=")
    assert err.endswith("delete it and run without --resume\n"), err
    assert ckpt.read_bytes() == data and not out.exists()
