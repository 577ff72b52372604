"""The integer model of a compressed network: build it from an artifact, calibrate it, run it.

    model = build(zoo.load("digits_cnn"), art, codebook)        # torch used here, once
    logits = model.forward(x, IntegerBackend())                 # numpy only
    report = compare(net, model, limit=None)                    # FP / float compressed / integer

`build` reads the network's structure from its torch model (`networks.RECIPES`), checks that the
numpy float executor reproduces the torch model on calibration inputs, and calibrates every
activation scale on the network's calibration data (`tasks.calibration_inputs`) run through the
float compressed model: per layer, the `percentile` of |input| (DEFAULT_PERCENTILE: 99.99) / 127,
and for "requant" layers likewise of |product before bias|.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from vq4all.artifact import Codebook, NetworkArtifact
from vq4all.errors import MAX_NAME_CHARS, VQ4AllError, printable

from .layers import OUTPUTS, Backend, CompressedLayer, FloatBackend, IntegerBackend, scale_of
from .networks import build_steps, recipe
from .ops import Heads
from .tasks import Task, calibration_inputs, eval_task, subset

# The 99.99th percentile of |x| (the largest 0.01 % of values clipped): measured against the
# maximum and the 99.9th percentile on digits_cnn, crepe_tiny and mtcnn_onet (benches/run_hw.py,
# calibration tables): with the universal codebook the three lie within one test digit, one face
# and 0.02 cents of each other, and 99.99 agreed best with the float compressed model on
# crepe_tiny (0.33 cents mean difference against 0.47 at the maximum, 0.54 at 99.9) and tied for
# best on the other two; with a k=256 codebook it was one digit behind on digits_cnn.
DEFAULT_PERCENTILE = 99.99
DEFAULT_CALIBRATION = 128  # calibration inputs
RECIPE_TOLERANCE = 1e-3  # numpy float64 vs torch float32 forward of the FP model, relative to max|output|


def all_steps(steps: list) -> list:
    """Every step, Heads' branches expanded, in execution order."""
    out = []
    for step in steps:
        out += step.steps() if isinstance(step, Heads) else [step]
    return out


def run_steps(steps: list, x: np.ndarray, backend: Backend, batch: int, progress: str | None = None) -> np.ndarray:
    """Run `steps` on inputs x [N, ...] in batches of `batch` inputs: float64 outputs [N, ...].
    progress: a tqdm description (None: no bar)."""
    outs = []
    starts = range(0, len(x), batch)
    for i in tqdm(starts, desc=progress, unit="batch", disable=progress is None, leave=False):
        y = np.asarray(x[i : i + batch], dtype=np.float64)
        for step in steps:
            y = backend.step(step, y)
        outs.append(y)
    return np.concatenate(outs)


@dataclass
class IntegerModel:
    """A compressed network ready for integer inference.

    steps: the executor's steps (`networks`); codebook: the int8 artifact.Codebook;
    fp_steps: the same network with its FP weights (float mode only: the FP reference);
    calibration: how the scales were set ({"inputs", "seed", "percentile", "seconds"})."""

    network: str
    steps: list
    fp_steps: list
    codebook: Codebook
    calibration: dict = field(default_factory=dict)

    def layers(self) -> list[CompressedLayer]:
        """The compressed layers in execution order."""
        return [s for s in all_steps(self.steps) if isinstance(s, CompressedLayer)]

    def forward(self, x: np.ndarray, backend: Backend, batch: int = 64, progress: str | None = None) -> np.ndarray:
        """Outputs [N, ...] float64 of inputs x [N, ...] (as `tasks` prepares them), every
        compressed layer's dot products by `backend` (IntegerBackend: the integer model)."""
        return run_steps(self.steps, x, backend, batch, progress)

    def forward_float(self, x: np.ndarray, fp: bool = False, batch: int = 64, progress: str | None = None):
        """The float compressed model (decoded weights, no quantisation), or with fp the FP model."""
        return run_steps(self.fp_steps if fp else self.steps, x, FloatBackend(), batch, progress)

    def describe(self) -> list[dict]:
        """Per compressed layer: name, kind, rows, in_features, m, output, x_scale, y_scale
        and shift (the last two for "requant" layers)."""
        return [
            {
                "name": layer.name,
                "kind": "conv" if layer.conv is not None else "linear",
                "rows": layer.rows,
                "in_features": layer.in_features,
                "m": int(layer.codes.shape[1]),
                "output": layer.output,
                "x_scale": layer.x_scale,
                "y_scale": layer.y_scale,
                "shift": layer.shift if layer.output == "requant" else None,
            }
            for layer in self.layers()
        ]


def check_artifact(net, art: NetworkArtifact, codebook: Codebook) -> None:
    """One-line VQ4AllError unless `art` is a coded form of `net` on int8 `codebook`."""
    from vq4all.network import check_architecture

    if art.network != net.name:
        name = printable(art.network, MAX_NAME_CHARS)
        raise VQ4AllError(f"the artifact holds network '{name}', not '{net.name}': pass --network {name}")
    if codebook.dtype != "int8":
        raise VQ4AllError(f"a {codebook.dtype} codebook has no integer datapath: integer inference needs an int8 one")
    if art.codebook_sha256 != codebook.sha256:
        raise VQ4AllError(
            f"the artifact was built on codebook {printable(art.codebook_sha256, 16)}..., not on this one "
            f"({codebook.sha256[:16]}...)"
        )
    check_architecture(net.model, art)


def _state(net) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in net.model.state_dict().items()}


def check_recipe(net, fp_steps: list, seed: int = 0, n: int = 4) -> float:
    """The numpy float executor with FP weights against the torch model on n calibration inputs:
    VQ4AllError if max|difference| > RECIPE_TOLERANCE x max|torch output|. Returns the ratio."""
    import torch

    with torch.no_grad():
        want = net.forward(net.model, net.calibration(n, seed)).double().numpy()
    got = run_steps(fp_steps, calibration_inputs(net, n, seed), FloatBackend(), n)
    ratio = float(np.abs(got.reshape(want.shape) - want).max() / max(float(np.abs(want).max()), 1e-30))
    if not ratio <= RECIPE_TOLERANCE:
        raise VQ4AllError(
            f"{net.name}: the integer executor's float forward differs from the torch model by {ratio:.2g} "
            f"of its largest output (tolerance {RECIPE_TOLERANCE}): the recipe does not match the model"
        )
    return ratio


def build(
    net,
    art: NetworkArtifact,
    codebook: Codebook,
    *,
    calibration: int = DEFAULT_CALIBRATION,
    percentile: float = DEFAULT_PERCENTILE,
    seed: int = 0,
    hidden_output: str = "requant",
    mult_bits: int = 16,
    batch: int = 32,
) -> IntegerModel:
    """The calibrated integer model of artifact `art` of zoo network `net` on `codebook`.

    hidden_output: "requant" (default: every layer whose output feeds another compressed layer
    returns int8 from the engine's output stage) or "int32" (every layer returns its
    accumulators, dequantised on the host); the network's output layers are always "int32".
    mult_bits: the engine's multiplier width (EngineConfig.mult_bits)."""
    from vq4all.decode import decode_weights

    recipe(net.name)  # an unsupported network fails before anything is decoded
    if hidden_output not in OUTPUTS:
        raise VQ4AllError(f"hidden_output must be one of {', '.join(OUTPUTS)}, got '{printable(hidden_output, 40)}'")
    if not 50.0 <= percentile <= 100.0:
        raise VQ4AllError(f"calibration percentile {percentile} must be between 50 and 100")
    check_artifact(net, art, codebook)
    fp_state = _state(net)
    fp_weights = {k: v for k, v in fp_state.items() if v.ndim >= 2}
    fp_steps = build_steps(net.name, net.model, fp_state, fp_weights, {}, None)
    check_recipe(net, fp_steps, seed)
    layers = {layer.param: layer for layer in art.layers}
    steps = build_steps(net.name, net.model, art.leftovers, decode_weights(art, codebook), layers, codebook)
    model = IntegerModel(net.name, steps, fp_steps, codebook)
    if hidden_output == "int32":
        for layer in model.layers():
            layer.output = "int32"
    start = time.perf_counter()
    x = calibration_inputs(net, calibration, seed)
    observer = FloatBackend(collect=True)
    run_steps(steps, x, observer, batch)
    for layer in model.layers():
        x_scale = scale_of(np.concatenate(observer.inputs[layer.name]), percentile)
        y_scale = scale_of(np.concatenate(observer.products[layer.name]), percentile)
        layer.calibrate(x_scale, y_scale, mult_bits)
    model.calibration = {
        "inputs": int(calibration),
        "seed": int(seed),
        "percentile": float(percentile),
        "hidden_output": hidden_output,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return model


def compare(
    net,
    model: IntegerModel,
    limit: int | None = None,
    batch: int = 32,
    progress: bool = False,
    task: Task | None = None,
) -> dict:
    """The task metric of the FP model, the float compressed model and the integer model on the
    evaluation set of `net` (`task`, default tasks.eval_task(net)), or `limit` inputs evenly
    spaced over it (tasks.subset), each from the numpy executor; plus the integer model's
    agreement with the float compressed one.
    Returns {"metric", "higher_is_better", "inputs", "index", "fp", "float", "integer",
    "integer_vs_float", "seconds": {...}, "outputs": {"float", "integer"}}."""
    task = eval_task(net) if task is None else task
    index = subset(len(task.inputs), limit)
    x = task.inputs[index]
    seconds, outs = {}, {}
    for key in ("fp", "float", "integer"):
        start = time.perf_counter()
        label = f"{net.name} {key}" if progress else None
        if key == "integer":
            outs[key] = model.forward(x, IntegerBackend(), batch, label)
        else:
            outs[key] = model.forward_float(x, fp=key == "fp", batch=batch, progress=label)
        seconds[key] = round(time.perf_counter() - start, 3)
    return {
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "inputs": int(len(index)),
        "index": index,
        **{key: task.score(outs[key], index) for key in outs},
        "integer_vs_float": task.agreement(outs["integer"], outs["float"]),
        "seconds": seconds,
        "outputs": {"float": outs["float"], "integer": outs["integer"]},
    }
