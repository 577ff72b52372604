"""Measure a network rebuilt from quantized weights: weight SQNR and the zoo's task metric.

The quality table (benches/quality.py, the demo) compares, per zoo network at ~2 bits/weight:
hard assignment to a universal codebook (built with or without that network), per-layer k-means
codebooks, and round-to-nearest scalar quantization. Everything here is hard assignment: the
honest starting point the compression training has to improve on.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .artifact import Codebook, network_sizes
from .baselines import kmeans_layer, rtn
from .decode import decode_weights
from .hard import hard_assign


def sqnr_db(weights: dict, rebuilt: dict) -> float:
    """10 log10(sum w^2 / sum (w - rebuilt)^2) over all tensors of `weights` together."""
    signal = noise = 0.0
    for key, w in weights.items():
        w = np.asarray(w, dtype=np.float64)
        signal += float((w**2).sum())
        noise += float(((w - np.asarray(rebuilt[key], dtype=np.float64)) ** 2).sum())
    return 10 * math.log10(signal / noise) if noise > 0 else float("inf")


def task_metric(net, rebuilt: dict) -> dict:
    """The zoo network's evaluation ({"metric", "value", ...extras}) with the given weights
    ({key: array}) put in."""
    import torch

    model = net.with_weights(
        {k: torch.from_numpy(np.array(v)) for k, v in rebuilt.items()}
    )  # np.array keeps 0-d shapes
    return net.evaluate(model)


@dataclass
class Row:
    """One (network, method) line of the quality table."""

    network: str
    method: str
    metric: str
    value: float
    fp_value: float
    sqnr_db: float
    bits_per_weight: float
    seconds: float
    extras: dict = field(default_factory=dict)

    @classmethod
    def measured(cls, net, method: str, weights: dict, rebuilt: dict, bits_per_weight: float, start: float) -> Row:
        """A row for `rebuilt` weights: SQNR against `weights`, the task metric, the time since `start`."""
        result = task_metric(net, rebuilt)
        extras = {k: v for k, v in result.items() if k not in ("metric", "value")}
        return cls(
            net.name,
            method,
            net.metric,
            float(result["value"]),
            net.fp_value,
            sqnr_db(weights, rebuilt),
            bits_per_weight,
            time.perf_counter() - start,
            extras,
        )


def numpy_weights(net) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in net.compressible().items()}


def universal_row(net, codebook: Codebook, method: str, weights=None, *, progress=False) -> Row:
    """Hard assignment of `net` to a universal codebook (the ROM codebook not charged)."""
    start = time.perf_counter()
    weights = numpy_weights(net) if weights is None else weights
    art = hard_assign(net.name, weights, list(weights), codebook, progress=progress)
    rebuilt = decode_weights(art, codebook)
    return Row.measured(net, method, weights, rebuilt, network_sizes(art)["bits_per_weight"], start)


def per_layer_row(net, method: str, quantize, weights=None) -> Row:
    """A row for a per-layer baseline: quantize(w) -> (rebuilt w, stored bits) for each weight;
    bits_per_weight charges everything the baseline stores."""
    start = time.perf_counter()
    weights = numpy_weights(net) if weights is None else weights
    rebuilt, stored = quantize_per_layer(weights, quantize)
    count = sum(w.size for w in weights.values())
    return Row.measured(net, method, weights, rebuilt, stored / count, start)


def quantize_per_layer(weights: dict, quantize) -> tuple[dict, int]:
    """({key: rebuilt weight}, total stored bits) of quantize(w) -> (rebuilt, bits) per weight."""
    rebuilt, stored = {}, 0
    for key, w in weights.items():
        rebuilt[key], bits = quantize(w)
        stored += bits
    return rebuilt, stored


def kmeans_row(net, k: int = 256, d: int = 4, weights=None) -> Row:
    """Per-layer k-means codebooks; their bits are charged in bits_per_weight."""
    return per_layer_row(net, f"per-layer k-means {k}x{d}", lambda w: kmeans_layer(w, k=k, d=d), weights)


def rtn_row(net, bits: int = 2, weights=None) -> Row:
    """Per-channel round-to-nearest scalar quantization; scale and zero point charged."""
    return per_layer_row(net, f"RTN {bits}-bit per channel, MSE clip", lambda w: rtn(w, bits), weights)


def fp_row(net) -> Row:
    return Row.measured(net, "FP32", {}, {}, 32.0, time.perf_counter())


def _details(extras: dict) -> str:
    """The graded extras of an evaluation (floats only, e.g. top-5 agreement and KL), compact."""
    return ", ".join(f"{k} {v:.3g}" for k, v in extras.items() if isinstance(v, float))


def rows_to_markdown(rows: list[Row]) -> str:
    """The quality table: one line per (network, method)."""
    lines = [
        "| network | method | bits/weight | weight SQNR (dB) | metric | value | FP value | details |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        sq = "inf" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:.2f}"
        lines.append(
            f"| {r.network} | {r.method} | {r.bits_per_weight:.3f} | {sq} | {r.metric} | {r.value:.4f} "
            f"| {r.fp_value:.4f} | {_details(r.extras)} |"
        )
    return "\n".join(lines)


def rows_to_json(rows: list[Row]) -> list[dict]:
    out = []
    for r in rows:
        item = asdict(r)
        item["sqnr_db"] = None if math.isinf(r.sqnr_db) else r.sqnr_db
        out.append(item)
    return out


def quality_table(
    nets: dict,
    networks,
    sources,
    *,
    per_network: int = 1 << 18,
    seed: int = 0,
    leave_one_out: bool = True,
    lloyd_iters: int = 0,
    progress: bool = True,
    log=print,
    codebooks: dict[str, Codebook] | None = None,
) -> tuple[list[Row], dict[str, Codebook]]:
    """Hard-assignment quality of each of `networks` against every method of the table.

    nets: {name: ZooNetwork} for every name in `networks` and `sources` (e.g. zoo.load(name)).

    Universal codebooks are built from the zoo networks `sources` (equal pooling): K=2^16, d=8
    from all of them, and, per evaluated network that is a source, the same without it
    (leave-one-out); K=256, d=4 from all of them; with `lloyd_iters`, also the leave-one-out
    K=2^16, d=8 codebook refined by that many Lloyd steps over its pool. Returns the rows and the
    codebooks built ({"u16_all", "u256_all", "u16_loo_<name>", "u16_lloyd_loo_<name>": Codebook}).
    `codebooks` may hand in any of them already built (from the same sources and settings).
    """
    from .codebook import build_from_subvectors, network_subvectors
    from .config import CodebookConfig

    names = list(dict.fromkeys(list(sources) + list(networks)))
    weights = {name: numpy_weights(nets[name]) for name in names}
    sub8 = {name: network_subvectors(weights[name], 8, "channel") for name in sources}
    sub4 = {name: network_subvectors(weights[name], 4, "channel") for name in sources}

    def universal(subvectors, k, d, key, lloyd=0):
        start = time.perf_counter()
        config = CodebookConfig(
            networks=tuple(subvectors), k=k, d=d, per_network=per_network, seed=seed, lloyd_iters=lloyd
        )
        cb = build_from_subvectors(subvectors, config, progress=progress)
        log(
            f"[quality] codebook {key}: k={k} d={d} from {len(subvectors)} networks in {time.perf_counter() - start:.1f} s"
        )
        return cb

    codebooks = dict(codebooks or {})
    if "u16_all" not in codebooks:
        codebooks["u16_all"] = universal(sub8, 1 << 16, 8, "u16_all")
    if "u256_all" not in codebooks:
        codebooks["u256_all"] = universal(sub4, 256, 4, "u256_all")
    rows: list[Row] = []
    for name in networks:
        net, w = nets[name], weights[name]
        log(f"[quality] {name}: {sum(v.size for v in w.values()):,} compressible weights")
        rows.append(fp_row(net))
        if leave_one_out:
            if name in sources and len(sources) > 1:
                others = {n: s for n, s in sub8.items() if n != name}
                codebooks[f"u16_loo_{name}"] = universal(others, 1 << 16, 8, f"u16_loo_{name}")
                loo = codebooks[f"u16_loo_{name}"]
            elif name not in sources:
                loo = codebooks["u16_all"]  # it never contributed: the all-sources codebook is already leave-one-out
            else:
                loo = None
            if loo is not None:
                rows.append(universal_row(net, loo, "universal 65536x8, leave-one-out", w, progress=progress))
        if name in sources:
            rows.append(
                universal_row(net, codebooks["u16_all"], "universal 65536x8, all sources", w, progress=progress)
            )
        if lloyd_iters:
            # Lloyd steps pull codewords onto the pooled sub-vectors themselves, so a network in
            # the pool would be partly memorised: the refined codebook is judged leave-one-out.
            others = {n: s for n, s in sub8.items() if n != name}
            key = f"u16_lloyd_loo_{name}"
            codebooks[key] = universal(others, 1 << 16, 8, key, lloyd_iters)
            rows.append(
                universal_row(
                    net, codebooks[key], f"universal 65536x8 + {lloyd_iters} Lloyd, leave-one-out", w, progress=progress
                )
            )
        rows.append(universal_row(net, codebooks["u256_all"], "universal 256x4", w, progress=progress))
        rows.append(kmeans_row(net, 256, 4, w))
        rows.append(rtn_row(net, 2, w))
        first = max(i for i, r in enumerate(rows) if r.method == "FP32")
        for r in rows[first + 1 :]:
            log(
                f"[quality]   {r.method:<36} SQNR {r.sqnr_db:6.2f} dB  {r.metric} {r.value:.4f} (FP {r.fp_value:.4f})  {r.seconds:.1f} s"
            )
    return rows, codebooks


def plot_sqnr(rows: list[Row], path) -> None:
    """Grouped bars: weight SQNR per network and method (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(r.network for r in rows))
    methods = [m for m in dict.fromkeys(r.method for r in rows) if m != "FP32"]
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 * len(nets) + 2), 4.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs, ys = [], []
        for j, net in enumerate(nets):
            hit = [r for r in rows if r.network == net and r.method == method]
            if hit:
                xs.append(j + i * width)
                ys.append(hit[0].sqnr_db)
        ax.bar(xs, ys, width, label=method)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(nets))], nets, rotation=20, ha="right")
    ax.set_ylabel("weight SQNR (dB), hard assignment")
    ax.set_title("~2 bits/weight: universal codebook vs per-layer k-means vs RTN")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    from .io import save_figure

    save_figure(fig, path, dpi=120)
    plt.close(fig)


def codebook_bits(codebook: Codebook) -> int:
    """Bits the codebook itself occupies: k * d * element width (+ the float32 scale)."""
    bits = codebook.codebook.size * codebook.codebook.itemsize * 8
    return bits + (32 if codebook.codebook_scale is not None else 0)


def artifact_weights(art, codebook: Codebook) -> dict[str, np.ndarray]:
    """Every state-dict entry an artifact stands for: decoded layers (through the reference) and
    the FP leftovers."""
    weights = decode_weights(art, codebook)
    weights.update(art.leftovers)
    return weights


def evaluate_artifact(net, art, codebook: Codebook) -> dict:
    """What `vq4all eval --artifact` prints: the task metric of the network the artifact
    rebuilds, bits per compressed weight, and the compression ratio without and with the
    codebook's bits (32 bits x every value represented / bits stored)."""
    from .errors import MAX_NAME_CHARS, VQ4AllError, printable
    from .network import check_architecture

    if art.network != net.name:
        name = printable(art.network, MAX_NAME_CHARS)
        raise VQ4AllError(f"the artifact holds network '{name}', not '{net.name}': pass --network {name}")
    # every entry of the network must come from the artifact: a layer missing from the file must
    # not be filled in silently with the zoo's own FP weights
    check_architecture(net.model, art)
    result = task_metric(net, artifact_weights(art, codebook))
    return {"network": net.name, **result, "fp_value": net.fp_value, **artifact_report(art, codebook)}


def artifact_report(art, codebook: Codebook) -> dict:
    """The sizes `vq4all eval` prints for an artifact: method, bits per compressed weight, the
    compression ratio without and with the codebook's bits (32 bits x every value represented /
    bits stored), k and the codebook's hash."""
    sizes = network_sizes(art)
    represented = sizes["compressed_weights"] + sizes["leftover_values"]
    return {
        "method": art.config.get("method", "vq4all"),
        "bits_per_weight": sizes["bits_per_weight"],
        "compression_ratio": sizes["compression_ratio"],
        "compression_ratio_with_codebook": 32 * represented / (sizes["stored_bits"] + codebook_bits(codebook)),
        "k": art.k,
        "codebook_sha256": art.codebook_sha256,
    }


BASELINES = ("fp", "rtn2", "kmeans")


def evaluate_baseline(net, name: str) -> dict:
    """The same report for a baseline: fp (nothing compressed), rtn2 (2-bit per-channel RTN),
    kmeans (per-layer k-means 256x4, its codebooks charged in every column)."""
    from .errors import VQ4AllError

    if name not in BASELINES:
        raise VQ4AllError(f"unknown baseline '{name}': choose one of {', '.join(BASELINES)}")
    weights = numpy_weights(net)
    state = net.model.state_dict()
    left = [v for k, v in state.items() if k not in weights]
    left_values = sum(int(v.numel()) for v in left)
    left_bits = sum(int(v.numel()) * v.element_size() * 8 for v in left)
    count = sum(w.size for w in weights.values())
    if name == "fp":
        rebuilt, stored = weights, count * 32
    else:
        quantize = (lambda w: rtn(w, 2)) if name == "rtn2" else (lambda w: kmeans_layer(w, 256, 4))
        rebuilt, stored = quantize_per_layer(weights, quantize)
    result = task_metric(net, rebuilt)
    ratio = 32 * (count + left_values) / (stored + left_bits)
    return {
        "network": net.name,
        **result,
        "fp_value": net.fp_value,
        "method": name,
        "bits_per_weight": stored / count,
        "compression_ratio": ratio,
        "compression_ratio_with_codebook": ratio,
    }


def output_agreement(teacher, student) -> dict:
    """How closely a student's outputs follow the teacher's on the same inputs.

    teacher, student: [N, ...] float tensors or arrays of the same shape. Returns
    cosine (mean over the N samples of the cosine of their flattened outputs), relative_mse
    (mean squared difference / the teacher's variance: 0 is exact, 1 is predicting the mean),
    sqnr_db (10 log10 of teacher power over difference power), and, for [N, C] outputs with
    C > 1 (logits), top1_agreement (fraction of samples whose argmax agrees).
    """
    t = np.asarray(teacher, dtype=np.float64)
    s = np.asarray(student, dtype=np.float64)
    if t.shape != s.shape or t.ndim == 0 or t.shape[0] == 0:
        raise ValueError(f"teacher {list(t.shape)} and student {list(s.shape)} outputs must have one shape [N, ...]")
    tf, sf = t.reshape(len(t), -1), s.reshape(len(s), -1)
    norms = np.linalg.norm(tf, axis=1) * np.linalg.norm(sf, axis=1)
    cosine = np.where(norms > 0, (tf * sf).sum(1) / np.where(norms > 0, norms, 1), 1.0)
    noise = float(((t - s) ** 2).sum())
    out = {
        "cosine": float(cosine.mean()),
        "relative_mse": float(((t - s) ** 2).mean() / max(float(t.var()), 1e-30)),
        "sqnr_db": 10 * math.log10(float((t**2).sum()) / noise) if noise > 0 else float("inf"),
    }
    if t.ndim == 2 and t.shape[1] > 1:
        out["top1_agreement"] = float((t.argmax(1) == s.argmax(1)).mean())
    return out


def evaluate_model_artifact(net, art, codebook: Codebook, inputs) -> dict:
    """What `vq4all eval --model` prints: the teacher-vs-student output agreement
    (`output_agreement`) of a user's network (`vq4all.network.Network`) and the model an
    artifact rebuilds (decoded through the reference), on `inputs`, with the artifact's sizes."""
    import torch

    from .network import check_architecture

    check_architecture(net.model, art)
    student = net.with_weights({k: torch.from_numpy(np.array(v)) for k, v in artifact_weights(art, codebook).items()})
    with torch.no_grad():
        teacher_out = net.forward(net.model, inputs)
        student_out = net.forward(student.eval(), inputs)
    return {
        "network": art.network,
        **output_agreement(teacher_out.float().numpy(), student_out.float().numpy()),
        "inputs": int(teacher_out.shape[0]),
        **artifact_report(art, codebook),
    }
