"""Compression training: PNC, frozen sub-vectors, export through the reference, resume."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from vq4all import artifact, zoo
from vq4all.artifact import Codebook
from vq4all.assign import CandidateWeight, quantize_
from vq4all.config import CompressConfig
from vq4all.decode import decode_weights
from vq4all.errors import VQ4AllError
from vq4all.evaluate import artifact_weights
from vq4all.train import compress


@pytest.fixture(scope="module")
def codebook():
    rng = np.random.default_rng(0)
    return Codebook(rng.integers(-127, 128, (4096, 8), dtype=np.int8), np.array([1 / 40], np.float32), {})


@pytest.fixture(scope="module")
def digits():
    return zoo.load("digits_cnn")


def make_param(logits, k=16, d=2):
    values = torch.randn(k, d)
    s, n = logits.shape
    cand = np.stack([np.random.default_rng(i).permutation(k)[:n] for i in range(s)])
    p = CandidateWeight(values, cand, np.ones((s, n), np.float32), np.ones(s, np.float16), (s, d), 0)
    with torch.no_grad():
        p.logits.copy_(logits)
    return p


def test_pnc_freezes_exactly_the_subvectors_past_alpha():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 4.5, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 9.0]])
    p = make_param(logits)
    r = torch.softmax(logits, 1)
    alpha = 0.98
    assert p.freeze_confident(alpha) == int((r.max(1).values > alpha).sum())
    np.testing.assert_array_equal(p.frozen.numpy(), (r.max(1).values > alpha).numpy())  # rows 0 and 3 only
    assert p.frozen.tolist() == [True, False, False, True]
    assert p.chosen[0] == p.cand[0, 0] and p.chosen[3] == p.cand[3, 2]
    # frozen rows use their codeword alone; the rest stay soft
    sub = p.subvectors()
    torch.testing.assert_close(sub[0], p.values[p.chosen[0]])
    torch.testing.assert_close(sub[2], (r[2, :, None] * p.values[p.cand[2].long()]).sum(0))
    assert p.freeze_rest() == 2 and p.frozen.all() and p.chosen[2] == p.cand[2, 0]  # tie -> first (nearest)


def test_frozen_subvectors_get_no_updates():
    p = make_param(torch.zeros(6, 3))
    with torch.no_grad():
        p.logits[:3, 1] = 10.0
    p.freeze_confident(0.99)
    assert p.frozen.tolist() == [True, True, True, False, False, False]
    before = p.subvectors().detach().clone()
    opt = torch.optim.Adam([p.logits, p.log_scales], lr=0.5)
    target = torch.randn(6, 2)
    for _ in range(5):
        opt.zero_grad()
        loss = ((p(torch.empty(6, 2)) - target) ** 2).sum()
        loss.backward()
        assert (p.logits.grad[:3] == 0).all() and (p.logits.grad[3:] != 0).any()
        opt.step()
    after = p.subvectors().detach()
    torch.testing.assert_close(after[:3], before[:3], rtol=0, atol=0)
    assert not torch.allclose(after[3:], before[3:])


def test_quantize_starts_from_equal_ratios_over_the_nearest_codewords(digits, codebook):
    model = digits.with_weights({})
    params = quantize_(model, ["fc2.weight"], codebook, n=3)
    p = params["fc2.weight"]
    assert p.logits.shape == (10 * 8, 3) and torch.equal(p.logits, torch.zeros_like(p.logits))
    # the model now computes with sum_i r_i c_i * scale: equal ratios -> the mean of the candidates
    w = model.fc2.weight
    mean = p.values[p.cand.long()].mean(1).reshape(10, 64) * p.used_scales().detach()[:, None]
    torch.testing.assert_close(w, mean)
    with pytest.raises(VQ4AllError, match="initial ratios"):
        quantize_(digits.with_weights({}), ["fc2.weight"], codebook, n=3, init="random")


@pytest.fixture(scope="module")
def trained(digits, codebook):
    return compress(digits, codebook, CompressConfig(steps=60, calibration=128, checkpoint_every=0))


def test_artifact_decodes_to_the_weights_the_student_used(trained, codebook, digits, tmp_path):
    path = tmp_path / "digits.safetensors"
    artifact.save_network(path, trained.artifact)
    back = artifact.load_network(path, codebook)
    decoded = decode_weights(back, codebook)
    student = trained.model.state_dict()
    assert set(decoded) == set(digits.compressible())
    for key, w in decoded.items():
        np.testing.assert_allclose(w, student[key].numpy(), rtol=1e-6, atol=0)  # same float32 products
    for key, v in back.leftovers.items():
        np.testing.assert_array_equal(v, student[key].numpy())
    # and the rebuilt network computes what the student computes
    x = digits.calibration(16, seed=5)
    rebuilt = digits.with_weights(
        {k: torch.from_numpy(np.array(v)) for k, v in artifact_weights(back, codebook).items()}
    )
    torch.testing.assert_close(rebuilt(x), trained.model(x), rtol=1e-5, atol=1e-5)
    report = trained.report
    assert report["frozen_by_pnc"] + report["forced"] == report["subvectors"] == sum(l.codes.size for l in back.layers)


def test_resume_after_interruption_gives_the_same_artifact(digits, codebook, trained, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    cfg = CompressConfig(steps=60, calibration=128, checkpoint_every=20)
    first = compress(digits, codebook, cfg, checkpoint=ckpt, stop_after=40)
    assert first.artifact is None and ckpt.exists()
    resumed = compress(digits, codebook, cfg, checkpoint=ckpt, resume=True)
    straight = trained.artifact  # the same config without checkpoints, uninterrupted
    assert resumed.report["steps"] == straight.config["report"]["steps"]
    for a, b in zip(resumed.artifact.layers, straight.layers):
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.scales, b.scales)
    for key, v in straight.leftovers.items():
        np.testing.assert_array_equal(resumed.artifact.leftovers[key], v)
    with pytest.raises(VQ4AllError, match="another configuration"):
        compress(
            digits,
            codebook,
            CompressConfig(steps=61, calibration=128, checkpoint_every=20),
            checkpoint=ckpt,
            resume=True,
        )
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # a truncated checkpoint: one clear error, no crash
    with pytest.raises(VQ4AllError, match=str(ckpt)):
        compress(digits, codebook, cfg, checkpoint=ckpt, resume=True)


def test_no_pnc_trains_the_budget_and_forces_everything(digits, codebook):
    result = compress(digits, codebook, CompressConfig(steps=20, calibration=64, pnc=False, checkpoint_every=0))
    assert result.report["steps"] == 20 and result.report["frozen_by_pnc"] == 0
    assert result.report["forced"] == result.report["subvectors"]


def test_cli_compress_and_eval_ratios_match_an_independent_count(tmp_path):
    from vq4all.codebook import build_from_subvectors
    from vq4all.config import CodebookConfig

    rng = np.random.default_rng(1)
    cb = build_from_subvectors(
        {"g": rng.standard_normal((5000, 8)).astype(np.float32)},
        CodebookConfig(networks=("g",), k=1024, per_network=5000),
    )
    cb_path, out = tmp_path / "cb.safetensors", tmp_path / "digits.safetensors"
    artifact.save_codebook(cb_path, cb)

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "vq4all", *args], capture_output=True, text=True, timeout=600)
        return proc

    proc = cli(
        "compress",
        "--network",
        "digits_cnn",
        "--codebook",
        str(cb_path),
        "--out",
        str(out),
        "--steps",
        "30",
        "--calibration-count",
        "64",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "digits.safetensors.ckpt").exists()  # removed when the run finished
    info = json.loads(
        cli("eval", "--network", "digits_cnn", "--artifact", str(out), "--codebook", str(cb_path), "--json").stdout
    )
    # independent count from the raw file: codes at log2(1024) = 10 bits, every other tensor at its width
    tensors = load_file(str(out))
    code_bits = sum(t.size * 10 for n, t in tensors.items() if n.endswith(".codes"))
    other = {n: t for n, t in tensors.items() if not n.endswith(".codes")}
    stored = code_bits + sum(t.size * t.itemsize * 8 for t in other.values())
    scales = sum(t.size for n, t in other.items() if n.endswith(".scales"))
    weights = sum(p.numel() for p in zoo.load("digits_cnn").compressible().values())
    represented = weights + sum(t.size for n, t in other.items() if not n.endswith(".scales"))
    assert info["compression_ratio"] == pytest.approx(32 * represented / stored)
    assert info["compression_ratio_with_codebook"] == pytest.approx(32 * represented / (stored + 1024 * 8 * 8 + 32))
    assert info["bits_per_weight"] == pytest.approx((code_bits + scales * 16) / weights)
    assert info["network"] == "digits_cnn" and 0 <= info["value"] <= 1 and info["fp_value"] > 0.95
    bad = cli("compress", "--network", "digits_cnn", "--codebook", str(cb_path), "--out", str(out), "--alpha", "1.5")
    assert bad.returncode == 2 and "alpha" in bad.stderr and "Traceback" not in bad.stderr
    wrong = cli("eval", "--network", "mtcnn_pnet", "--artifact", str(out), "--codebook", str(cb_path))
    assert wrong.returncode == 2 and "digits_cnn" in wrong.stderr


def test_torchrun_data_parallel_matches_one_process(tmp_path):
    """Two gloo ranks, each on half of every batch, against one process on the whole batch.
    Tolerance: the averaged half-batch gradients equal the whole-batch gradient up to the order
    of float additions, so codes may differ where a ratio sits at alpha or two candidates tie;
    FP leftovers agree to float32 rounding (measured: codes identical, leftovers within 6e-8)."""
    from vq4all.codebook import build_from_subvectors
    from vq4all.config import CodebookConfig

    rng = np.random.default_rng(2)
    cb = build_from_subvectors(
        {"g": rng.standard_normal((5000, 8)).astype(np.float32)},
        CodebookConfig(networks=("g",), k=1024, per_network=5000),
    )
    cb_path = tmp_path / "cb.safetensors"
    artifact.save_codebook(cb_path, cb)
    args = [
        "-m",
        "vq4all",
        "compress",
        "--network",
        "digits_cnn",
        "--codebook",
        str(cb_path),
        "--steps",
        "80",
        "--calibration-count",
        "128",
        "--batch-size",
        "32",
        "--reg",
        "3",
        "--lr",
        "0.2",
        "--json",
    ]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            *args,
            "--out",
            str(tmp_path / "dp.safetensors"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run(
        [sys.executable, *args, "--out", str(tmp_path / "one.safetensors")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    a = artifact.load_network(tmp_path / "dp.safetensors", cb)
    b = artifact.load_network(tmp_path / "one.safetensors", cb)
    codes_a = np.concatenate([l.codes.ravel() for l in a.layers])
    codes_b = np.concatenate([l.codes.ravel() for l in b.layers])
    assert (codes_a == codes_b).mean() >= 0.99
    for key, v in b.leftovers.items():
        np.testing.assert_allclose(a.leftovers[key], v, rtol=1e-4, atol=1e-5)
    assert a.config["report"]["frozen_by_pnc"] > 0  # PNC really ran on both


def test_feature_loss_is_relative_and_zero_on_the_teacher():
    from vq4all.train import feature_loss

    t = {"a": torch.randn(4, 5), "b": 100 * torch.randn(3, 7)}
    assert float(feature_loss(t, t)) == 0.0
    s = {k: v + 0.1 * v.abs().mean() * torch.randn_like(v) for k, v in t.items()}
    scaled = {k: 10 * v for k, v in s.items()}
    # each layer's term is relative to its own mean square: scaling a layer changes nothing
    torch.testing.assert_close(feature_loss(scaled, {k: 10 * v for k, v in t.items()}), feature_loss(s, t))
    want = np.mean([float(((s[k] - t[k]) ** 2).mean() / (t[k] ** 2).mean()) for k in t])
    assert float(feature_loss(s, t)) == pytest.approx(want, rel=1e-5)


def test_feature_weight_adds_the_layer_outputs_mismatch_to_the_first_step_loss(digits, codebook):
    """Step 1's recorded loss with feature_weight=w minus the loss without it equals w x the
    layer-wise feature loss of the untrained student on step 1's batch, computed here with
    hooks of our own on every compressed layer."""
    from vq4all.network import count_inputs, take_rows
    from vq4all.train import _Run, feature_loss

    base = CompressConfig(steps=1, batch_size=8, calibration=64, pnc=False, checkpoint_every=0, search="plain")
    plain = compress(digits, codebook, base)
    weighted = compress(digits, codebook, CompressConfig(**{**base.to_dict(), "feature_weight": 0.5}))
    student = digits.with_weights({})
    params = quantize_(student, digits.compressible_keys(), codebook, n=base.n)
    run = _Run(digits, base, student, params, [p.logits for p in params.values()], codebook.sha256)
    inputs = digits.calibration(base.calibration, seed=base.seed)
    idx = torch.randperm(count_inputs(inputs), generator=run.sampler)[: base.batch_size]
    batch = take_rows(inputs, idx)
    layers = sorted({k.rpartition(".")[0] for k in digits.compressible_keys()})
    outs = {}
    for tag, model in (("t", digits.model), ("s", student)):
        hooks = [
            model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n, tag=tag: outs.__setitem__((tag, n), o))
            for n in layers
        ]
        with torch.no_grad():
            digits.forward(model, batch)
        for h in hooks:
            h.remove()
    expect = float(feature_loss({n: outs["s", n] for n in layers}, {n: outs["t", n] for n in layers}))
    assert expect > 0
    # one step: the final losses are step 1's; the distillation loss alone is the same in both
    diff = weighted.report["final_total_loss"] - plain.report["final_total_loss"]
    assert diff == pytest.approx(0.5 * expect, rel=1e-4)
    assert weighted.report["final_loss"] == pytest.approx(plain.report["final_loss"], rel=1e-6)


def test_finish_nearest_takes_the_candidate_nearest_to_the_mixture():
    torch.manual_seed(3)
    p = make_param(torch.randn(20, 4), k=32, d=3)
    r = p.ratios().detach()
    vals = p.values[p.cand.long()]  # [S, n, d]
    mix = (r.unsqueeze(2) * vals).sum(1)
    want = [
        int(p.cand[s, int(np.argmin([float(((vals[s, i] - mix[s]) ** 2).sum()) for i in range(4)]))]) for s in range(20)
    ]
    argmax = p.cand[torch.arange(20), r.argmax(1)].tolist()
    assert want != argmax  # the two rules differ on this draw, so the test tells them apart
    assert p.freeze_rest("nearest") == 20
    assert p.chosen.tolist() == want
    with pytest.raises(VQ4AllError, match="finish|final rule"):
        make_param(torch.zeros(2, 2)).freeze_rest("median")


def test_finish_nearest_gives_untrained_subvectors_their_nearest_codeword():
    """Rows whose logits are all still equal (never got a gradient) take candidate 0, the
    codeword nearest to the FP sub-vector; rows that trained take the nearest to their mixture."""
    torch.manual_seed(5)
    logits = torch.randn(30, 4)
    logits[::3] = 0.0  # untouched since the equal initialisation
    p = make_param(logits, k=32, d=3)
    vals = p.values[p.cand.long()]
    mix = (p.ratios().detach().unsqueeze(2) * vals).sum(1)
    to_mix = ((vals - mix.unsqueeze(1)) ** 2).sum(2).argmin(1)
    assert (to_mix[::3] != 0).any()  # the centroid's nearest differs from candidate 0 somewhere
    p.freeze_rest("nearest")
    want = p.cand[torch.arange(30), to_mix].clone()
    want[::3] = p.cand[::3, 0]
    assert p.chosen.tolist() == want.tolist()


def test_linear_schedule_freezes_the_most_confident_first_and_ends_constructed(digits, codebook):
    from vq4all.train import _Run

    cfg = CompressConfig(steps=4, schedule="linear", finish="argmax", checkpoint_every=0)
    student = digits.with_weights({})
    params = quantize_(student, digits.compressible_keys(), codebook, n=cfg.n)
    run = _Run(digits, cfg, student, params, [p.logits for p in params.values()], codebook.sha256)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in params.values():
            p.logits.normal_()
    conf = torch.cat([p.confidence() for p in params.values()])
    quota = run.total // 4 + 1
    assert run._freeze_quota(quota) == quota and run.frozen_count() == quota
    frozen = torch.cat([p.frozen for p in params.values()])
    # every frozen sub-vector was at least as confident as every one left active
    assert float(conf[frozen].min()) >= float(conf[~frozen].max())
    assert run._freeze_quota(quota) == 0  # already there
    # a whole compress run with the schedule ends with every sub-vector frozen, the count reported
    result = compress(digits, codebook, CompressConfig(steps=3, schedule="linear", checkpoint_every=0))
    rep = result.report
    assert rep["steps"] == 3 and rep["frozen_by_pnc"] + rep["forced"] == rep["subvectors"]
    assert rep["forced"] > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n": 0}, "n=0"),
        ({"alpha": 1.0}, "alpha"),
        ({"init": "random"}, "init"),
        ({"schedule": "cosine"}, "schedule"),
        ({"finish": "median"}, "finish"),
        ({"steps": 0}, "steps"),
        ({"lr": -1.0}, "lr"),
        ({"feature_weight": float("nan")}, "feature_weight"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_compress_config_errors_say_what_to_change(kwargs, match):
    with pytest.raises(VQ4AllError, match=match):
        CompressConfig(**kwargs)


def test_quota_takes_everything_above_the_cut_before_ties(digits, codebook):
    """Sub-vectors tied at the cut (here: exactly uniform ratios in the first layer) must not
    take the places of more confident ones in later layers."""
    from vq4all.train import _Run

    cfg = CompressConfig(steps=4, schedule="linear", checkpoint_every=0)
    student = digits.with_weights({})
    params = quantize_(student, digits.compressible_keys(), codebook, n=cfg.n)
    run = _Run(digits, cfg, student, params, [p.logits for p in params.values()], codebook.sha256)
    first, *rest = params.values()
    torch.manual_seed(1)
    with torch.no_grad():
        first.logits.zero_()  # every ratio 1/n: all tied
        for p in rest:
            p.logits.normal_()
            p.logits[: p.logits.shape[0] // 2] = 0.0  # half of each later layer tied too
    above = sum(int((p.confidence() > 1.0 / cfg.n + 1e-6).sum()) for p in rest)
    assert run._freeze_quota(above + 3) == above + 3
    for p in rest:  # every sub-vector with a non-uniform ratio vector is frozen
        with torch.no_grad():
            r = p.ratios().max(1).values
        assert bool(p.frozen[r > 1.0 / cfg.n + 1e-6].all())
    assert int(first.frozen.sum()) + sum(int(p.frozen.sum()) for p in rest) == above + 3


def test_report_counts_what_passed_alpha_and_keeps_the_penalty_apart(digits, codebook, monkeypatch):
    """frozen_by_pnc is the number of sub-vectors freeze_confident froze (their largest ratio
    passed alpha), under the linear schedule too, where the quota also freezes; final_loss is the
    distillation loss alone, the penalty and the total beside it."""
    passed = []
    original = CandidateWeight.freeze_confident

    def counting(self, alpha):
        n = original(self, alpha)
        passed.append(n)
        return n

    monkeypatch.setattr(CandidateWeight, "freeze_confident", counting)
    cfg = CompressConfig(steps=60, lr=1.0, schedule="linear", finish="nearest", reg=3.0, checkpoint_every=0)
    rep = compress(digits, codebook, cfg).report
    assert rep["frozen_by_pnc"] == sum(passed) > 0
    assert rep["forced"] == rep["subvectors"] - sum(passed) > 0
    terms = rep["final_terms"]
    assert set(terms) == {"distill", "task", "penalty"}  # digits has labels: the task term is in use
    assert rep["final_loss"] == terms["distill"] and rep["final_penalty"] == terms["penalty"] > 0
    assert rep["final_total_loss"] == pytest.approx(sum(terms.values()), rel=1e-6)


def test_the_soft_path_covers_only_active_subvectors_and_follows_every_freeze():
    """subvectors() equals the plain formula where(frozen, codeword, sum_i r_i c_i) over all S,
    with the same gradient, before and after freezes and after a state-dict load (which changes
    `frozen` and `chosen` in place): the cached frozen part never goes stale."""
    torch.manual_seed(1)
    p = make_param(torch.randn(50, 4), k=32, d=3)

    def plain():
        soft = torch.einsum("sn,snd->sd", p.ratios(), p.values[p.cand.long()])
        return torch.where(p.frozen.unsqueeze(1), p.values[p.chosen], soft)

    def check():
        weights = torch.randn(50, 3)
        got = p.subvectors()
        (g_got,) = torch.autograd.grad((got * weights).sum(), p.logits)
        want = plain()
        (g_want,) = torch.autograd.grad((want * weights).sum(), p.logits)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)
        assert bool((g_got[p.frozen] == 0).all())

    check()
    assert p.active_ratios()[0].numel() == 50
    with torch.no_grad():
        p.logits[:20, 0] += 10.0
    assert p.freeze_confident(0.99) == 20
    assert p.active_ratios()[0].numel() == 30
    check()
    saved = {k: v.clone() for k, v in p.state_dict().items()}
    p.freeze_rest("argmax", torch.arange(50) < 35)
    check()
    p.load_state_dict(saved)  # back to 20 frozen: in-place copies into frozen and chosen
    assert p.active_ratios()[0].numel() == 30
    check()
    p.freeze_rest()
    assert p.active_ratios()[0].numel() == 0
    torch.testing.assert_close(p.subvectors(), p.values[p.chosen])


def test_calibration_left_unset_takes_the_networks_default(digits, codebook, monkeypatch):
    """CompressConfig(calibration=None) asks the network for its default count; the run records
    the count it used, and an explicit count wins."""
    asked = []
    real = type(digits).calibration

    def spy(self, n, seed=0):
        asked.append(n)
        return real(self, n, seed)

    monkeypatch.setattr(type(digits), "calibration", spy)
    monkeypatch.setattr(digits, "default_calibration", 48, raising=False)
    assert CompressConfig().calibration is None
    result = compress(digits, codebook, CompressConfig(steps=1, checkpoint_every=0))
    assert set(asked) == {48} and result.report["config"]["calibration"] == 48
    assert result.artifact.config["compress"]["calibration"] == 48
    asked.clear()
    result = compress(digits, codebook, CompressConfig(steps=1, calibration=40, checkpoint_every=0))
    assert set(asked) == {40} and result.report["config"]["calibration"] == 40


def test_hessian_search_gives_the_training_its_candidates(digits, codebook, monkeypatch):
    """compress(search="hessian"): every weight's candidates are those of the hessian search on
    the run's calibration inputs (the first: the hard-assigned hessian code), and the artifact
    records the search."""
    import vq4all.train as train_module
    from vq4all.hessian import input_moments
    from vq4all.search import candidates
    from vq4all.subvectors import split

    seen = {}
    real = train_module.quantize_

    def spy(*args, **kwargs):
        params = real(*args, **kwargs)
        seen.update({key: p.cand.clone() for key, p in params.items()})
        return params

    monkeypatch.setattr(train_module, "quantize_", spy)
    cfg = CompressConfig(steps=2, calibration=64, n=2, search="hessian", mode="end_to_end", checkpoint_every=0)
    result = compress(digits, codebook, cfg)
    keys = digits.compressible_keys(codebook.d)
    moments = input_moments(digits, keys, digits.calibration(64, seed=0), cfg.batch_size)
    state = digits.model.state_dict()
    assert set(seen) == set(keys)
    for key in keys:
        s = split(state[key].numpy(), codebook.d, name=key)
        ((want, _),) = candidates([s], codebook.values(), 2, weights=[moments[key]])
        assert np.array_equal(seen[key].numpy(), want), key
    assert result.artifact.config["compress"]["search"] == "hessian"
