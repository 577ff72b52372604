"""The usage-ordered codebook (vq4all.usage, `vq4all codebook reorder`, benches/code_usage.py).

Expectations are computed here independently of the library: usage by collections.Counter over
the raw codes, the order by sorting (count desc, old index asc) in plain Python, shares by
counting codes whose new number is below the prefix size. A remapped artifact must decode to the
very same bits as the original (reference decode, integer path), and the ROM of the reordered
codebook must hold the old words in the new order.
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from support.scripts import load_script
from vq4all import artifact, reference
from vq4all.artifact import Codebook, LayerCodes, NetworkArtifact
from vq4all.cli import main
from vq4all.decode import decode_weights
from vq4all.errors import VQ4AllError
from vq4all.hw.rtl.romfiles import rom_file_text
from vq4all.usage import (
    hot_shares,
    inverse_permutation,
    pooled_usage,
    remap_artifact,
    reorder_codebook,
    usage_counts,
    usage_order,
)

K, D = 16, 2


def toy_codebook(rng, k=K, d=D) -> Codebook:
    return Codebook(rng.integers(-127, 128, (k, d), dtype=np.int8), np.array([0.03], np.float32), {"note": "toy"})


def toy_artifact(rng, cb: Codebook, name: str, weights_of_codes: np.ndarray) -> NetworkArtifact:
    """Two layers (one ragged: row 5 with d=2 -> pad 1) whose codes are drawn with the given
    probabilities over 0..k-1, plus an FP leftover."""
    dtype = np.uint8 if cb.k <= 256 else np.uint16
    p = weights_of_codes / weights_of_codes.sum()
    layers = []
    for param, shape in ((f"{name}.a.weight", (6, 4)), (f"{name}.b.weight", (3, 5))):
        row = int(np.prod(shape[1:]))
        m = -(-row // cb.d)
        codes = rng.choice(cb.k, size=(shape[0], m), p=p).astype(dtype)
        scales = rng.uniform(0.5, 2.0, shape[0]).astype(np.float16)
        layers.append(LayerCodes(param, shape, cb.d, m * cb.d - row, "channel", codes, scales))
    leftovers = {f"{name}.a.bias": rng.standard_normal(6).astype(np.float32)}
    return NetworkArtifact(name, cb.sha256, cb.k, layers, leftovers, {"method": "hard"})


def counter_of(*arts) -> Counter:
    c = Counter()
    for art in arts:
        for layer in art.layers:
            c.update(int(v) for v in np.asarray(layer.codes).ravel())
    return c


def expected_order(counter: Counter, k: int) -> list[int]:
    return sorted(range(k), key=lambda old: (-counter.get(old, 0), old))


@pytest.fixture()
def toy(tmp_path):
    rng = np.random.default_rng(7)
    cb = toy_codebook(rng)
    skew_a = np.array([2.0**-i for i in range(K)])[rng.permutation(K)]
    skew_b = np.ones(K)
    skew_b[[3, 5]] = 6.0
    skew_b[[0, 1, 2]] = 0.0  # never used by b
    a = toy_artifact(rng, cb, "net_a", skew_a)
    b = toy_artifact(rng, cb, "net_b", skew_b)
    paths = {"cb": tmp_path / "cb.safetensors", "a": tmp_path / "a.safetensors", "b": tmp_path / "b.safetensors"}
    artifact.save_codebook(paths["cb"], cb)
    artifact.save_network(paths["a"], a)
    artifact.save_network(paths["b"], b)
    return cb, a, b, paths


def test_counts_order_and_shares_match_an_independent_count(toy):
    cb, a, b, _ = toy
    both = counter_of(a, b)
    counts = pooled_usage([usage_counts(a), usage_counts(b)])
    assert [counts[i] for i in range(K)] == [both.get(i, 0) for i in range(K)]
    perm = usage_order(counts)
    assert perm.tolist() == expected_order(both, K)
    assert sorted(perm.tolist()) == list(range(K))  # a permutation
    inverse = inverse_permutation(perm)
    assert all(inverse[perm[i]] == i and perm[inverse[i]] == i for i in range(K))
    # share of b's codes in the hottest 2 and 4 codewords of the pooled order, counted by hand
    codes_b = [int(v) for layer in b.layers for v in np.asarray(layer.codes).ravel()]
    rank = {old: new for new, old in enumerate(expected_order(both, K))}
    want = {s: sum(rank[c] < s for c in codes_b) / len(codes_b) for s in (2, 4, 16)}
    assert hot_shares(usage_counts(b), perm, (2, 4, 16)) == pytest.approx(want, abs=1e-12)
    assert want[16] == 1.0
    # b alone: its own order puts codes 3 and 5 first, its unused codewords (0..2 among them) last
    own = usage_order(usage_counts(b)).tolist()
    unused = sorted(set(range(K)) - set(counter_of(b)))
    assert own == expected_order(counter_of(b), K) and own[-len(unused) :] == unused and {0, 1, 2} <= set(unused)
    assert set(own[:2]) == {3, 5}


def test_network_weighting_counts_every_network_once(toy):
    _, a, b, _ = toy
    ca, cbb = usage_counts(a), usage_counts(b)
    w = pooled_usage([ca, cbb], weighting="network")
    assert w == pytest.approx(ca / ca.sum() + cbb / cbb.sum())
    with pytest.raises(VQ4AllError, match="weighting"):
        pooled_usage([ca], weighting="bytes")


def test_remapped_artifact_decodes_to_exactly_the_same_weights(toy):
    cb, a, b, _ = toy
    perm = usage_order(pooled_usage([usage_counts(a), usage_counts(b)]))
    new = reorder_codebook(cb, perm)
    assert new.sha256 != cb.sha256 and new.manifest["reordered_from"] == cb.sha256
    assert np.array_equal(new.codebook, cb.codebook[perm]) and new.scale == cb.scale
    for art in (a, b):
        moved = remap_artifact(art, perm, new)
        assert moved.codebook_sha256 == new.sha256
        before, after = decode_weights(art, cb), decode_weights(moved, new)
        assert before.keys() == after.keys()
        for key in before:
            assert before[key].dtype == after[key].dtype == np.float32
            assert before[key].tobytes() == after[key].tobytes()  # bit for bit
        # the integer path the RTL computes, on the same int8 inputs
        x = np.random.default_rng(1).integers(-128, 128, (3, 4), dtype=np.int8)
        old_layer, new_layer = art.layers[0], moved.layers[0]
        assert np.array_equal(
            reference.lookup_matmul_int(x, old_layer.codes, cb.codebook),
            reference.lookup_matmul_int(x, new_layer.codes, new.codebook),
        )
        assert not all(np.array_equal(o.codes, n.codes) for o, n in zip(art.layers, moved.layers))
        assert all(n.codes.dtype == o.codes.dtype for o, n in zip(art.layers, moved.layers))
        assert moved.leftovers.keys() == art.leftovers.keys()


def test_hot_codes_get_the_smallest_numbers_on_a_real_network():
    """digits_cnn hard-assigned to a random 4096-codeword codebook: after the reorder the most
    used codeword is number 0, the counts fall with the number, and the weights are unchanged."""
    from vq4all import api, zoo

    rng = np.random.default_rng(0)
    cb = Codebook(rng.integers(-127, 128, (4096, 8), dtype=np.int8), np.array([0.01], np.float32), {})
    art = api.hard_assign(zoo.load("digits_cnn"), cb)
    counts = usage_counts(art)
    perm = usage_order(counts)
    new = reorder_codebook(cb, perm)
    moved = remap_artifact(art, perm, new)
    new_counts = usage_counts(moved)
    assert new_counts[0] == counts.max() and np.all(np.diff(new_counts) <= 0)
    assert sorted(new_counts.tolist()) == sorted(counts.tolist())
    for key, w in decode_weights(art, cb).items():
        assert w.tobytes() == decode_weights(moved, new)[key].tobytes()


def test_cli_reorder_writes_codebook_remapped_artifacts_and_rom(toy, tmp_path, capsys):
    cb, a, b, paths = toy
    out, out_a = tmp_path / "u.safetensors", tmp_path / "a2.safetensors"
    argv = ["codebook", "reorder", "--codebook", str(paths["cb"]), "--by-usage", f"{paths['a']},{paths['b']}"]
    assert main([*argv, "--out", str(out), "--remap", str(paths["a"]), "--out-artifact", str(out_a), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    new = artifact.load_codebook(out)
    perm = expected_order(counter_of(a, b), K)
    assert np.array_equal(new.codebook, cb.codebook[perm])
    assert info["sha256"] == new.sha256 == new.manifest["sha256"] and info["reordered_from"] == cb.sha256
    assert [n["network"] for n in info["usage_networks"]] == ["net_a", "net_b"]
    moved = artifact.load_network(out_a, new)  # bound to the new codebook ...
    with pytest.raises(VQ4AllError, match="built on codebook"):
        artifact.load_network(out_a, cb)  # ... and no longer to the old one
    for key, w in decode_weights(a, cb).items():
        assert w.tobytes() == decode_weights(moved, new)[key].tobytes()
    # shares reported = independent count over both networks
    codes = [c for art in (a, b) for layer in art.layers for c in np.asarray(layer.codes).ravel().tolist()]
    rank = {old: i for i, old in enumerate(perm)}
    assert info["hot_shares"] == {}  # k=16 < every reported prefix: nothing to report
    assert sum(rank[c] < 4 for c in codes) / len(codes) == pytest.approx(
        hot_shares(pooled_usage([usage_counts(a), usage_counts(b)]), np.array(perm), (4,))[4]
    )
    # ROM files follow: word i of the new ROM is word perm[i] of the old one, under the new hash
    assert new.rom_words() == [cb.rom_words()[old] for old in perm]
    text = rom_file_text("hex", new)
    assert new.sha256 in text and cb.sha256 not in text
    # and the RTL generated from the new file carries its ROM and its hash
    pytest.importorskip("amaranth")
    rtl = tmp_path / "rtl"
    assert main(["rtl", "generate", "--codebook", str(out), "--out-dir", str(rtl), "--json"]) == 0
    capsys.readouterr()
    assert json.loads((rtl / "manifest.json").read_text())["codebook_sha256"] == new.sha256
    assert (rtl / "codebook.hex").read_text() == text


def refused(capsys, folder: Path, argv: list[str], *words: str) -> str:
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    status = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("vq4all: error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert after == before, "a file was written or changed"
    return lines[0]


def test_cli_reorder_never_overwrites_an_input(toy, tmp_path, capsys):
    _, _, _, paths = toy
    cb, a, b = str(paths["cb"]), str(paths["a"]), str(paths["b"])
    base = ["codebook", "reorder", "--codebook", cb, "--by-usage", f"{a},{b}"]
    for out in (cb, a, b):
        refused(capsys, tmp_path, [*base, "--out", out], "--out", "is also an input file")
    new = str(tmp_path / "new.safetensors")
    refused(capsys, tmp_path, [*base, "--out", new, "--remap", a, "--out-artifact", a], "--out-artifact")
    refused(capsys, tmp_path, [*base, "--out", new, "--remap", a, "--out-artifact", cb], "--out-artifact")
    refused(capsys, tmp_path, [*base, "--out", new, "--remap", a, "--out-artifact", new], "the same file")


def test_cli_reorder_bad_input_is_one_line(toy, tmp_path, capsys):
    _, _, _, paths = toy
    cb, a = str(paths["cb"]), str(paths["a"])
    new = str(tmp_path / "new.safetensors")
    base = ["codebook", "reorder", "--codebook", cb, "--out", new]
    refused(capsys, tmp_path, [*base, "--by-usage", " , "], "at least one network artifact")
    refused(capsys, tmp_path, [*base, "--by-usage", str(tmp_path / "missing.safetensors")], "missing.safetensors")
    refused(capsys, tmp_path, [*base, "--by-usage", cb], "a network file is needed")
    refused(capsys, tmp_path, [*base, "--by-usage", a, "--remap", a], "one --out-artifact per --remap")
    # an artifact built on another codebook
    other = toy_codebook(np.random.default_rng(99))
    artifact.save_codebook(tmp_path / "other.safetensors", other)
    refused(
        capsys,
        tmp_path,
        ["codebook", "reorder", "--codebook", str(tmp_path / "other.safetensors"), "--by-usage", a, "--out", new],
        "built on codebook",
    )
    with pytest.raises(VQ4AllError, match="not a permutation"):
        inverse_permutation(np.array([0, 0, 1]))
    with pytest.raises(VQ4AllError, match="not a permutation"):
        inverse_permutation(np.array([0, 3, 1]))


def load_bench():
    return load_script(Path(__file__).resolve().parents[1] / "benches" / "code_usage.py", "code_usage")


def test_bench_leave_one_out_shares_match_a_hand_count():
    """benches/code_usage.py's table on three tiny count vectors, against a count by hand."""
    counts = {
        "x": np.array([5, 0, 0, 1, 0, 0, 0, 0], np.int64),
        "y": np.array([0, 4, 0, 1, 0, 0, 2, 0], np.int64),
        "z": np.array([0, 0, 3, 3, 0, 0, 0, 1], np.int64),
    }
    table = load_bench().shares_table(counts, sizes=(1, 2, 8))

    def share(c, rank_source, size):
        order = sorted(range(8), key=lambda i: (-rank_source[i], i))
        return sum(c[i] for i in order[:size]) / sum(c)

    for name, c in counts.items():
        others = [sum(counts[m][i] for m in counts if m != name) for i in range(8)]
        pooled = [sum(counts[m][i] for m in counts) for i in range(8)]
        for size in (1, 2, 8):
            assert table["leave_one_out"][name][size] == pytest.approx(share(c, others, size))
            assert table["pooled"][name][size] == pytest.approx(share(c, pooled, size))
            assert table["own"][name][size] == pytest.approx(share(c, c, size))
    # x's top codeword (0) is used by no other network: leave-one-out ranks it behind 3 (used by y, z)
    # and 1 (y: 4), so the hottest 2 of the others' order hold only x's single use of codeword 3
    assert table["leave_one_out"]["x"][2] == pytest.approx(1 / 6)
    # pooled: codewords 0 and 3 both have 5 uses; the tie goes to the lower old number, 0
    assert table["pooled"]["x"][1] == pytest.approx(5 / 6)
    assert table["pooled"]["y"][2] == pytest.approx(1 / 7)


def test_bench_leave_one_out_leaves_out_every_artifact_of_the_network():
    """A trained artifact of network x is measured under the order of the other networks' hard
    assignments: x's hard counts never rank codewords for it (and never for x itself)."""
    x = np.array([9, 0, 0, 0], np.int64)
    x_trained = np.array([8, 1, 0, 0], np.int64)
    y = np.array([0, 0, 5, 1], np.int64)
    counts = {"x": x, "y": y, "x (trained)": x_trained}
    network = {"x": "x", "y": "y", "x (trained)": "x"}
    table = load_bench().shares_table(counts, (1, 2), network, sources=["x", "y"])
    # the others of x are y alone: order 2, 3, 0, 1
    assert table["leave_one_out"]["x (trained)"] == {1: 0.0, 2: 0.0}
    assert table["leave_one_out"]["x"] == {1: 0.0, 2: 0.0}
    assert table["leave_one_out"]["y"] == {1: 0.0, 2: 0.0}  # y's others: x alone, order 0, 1, 2, 3
    # pooled over the sources x and y only: order 0 (9), 2 (5), 3 (1), 1 (0)
    assert table["pooled"]["x (trained)"] == {1: pytest.approx(8 / 9), 2: pytest.approx(8 / 9)}
    assert table["pooled"]["all codes"] == {1: pytest.approx(9 / 15), 2: pytest.approx(14 / 15)}
