"""The zoo's task metrics on numpy outputs: evaluation inputs, calibration inputs, scores.

Each function mirrors the zoo network's own `_evaluate` (src/vq4all/zoo/) on the outputs of
the numpy executor, so the integer model, the engine and the float models are scored the same
way: digits_cnn test accuracy (argmax of the logits), crepe_tiny mean absolute pitch error in
cents (CREPE's weighted-argmax decoding), mtcnn_onet face accuracy (face probability > 0.5).
The data come from the zoo network (`eval_data()`) or its caller as torch tensors or arrays and
are handed on as numpy arrays.

A subset of an evaluation set (`subset`) is `count` indices evenly spaced over it: crepe's
tones are sorted by pitch and O-Net's set is faces, then non-faces, then crops, so the first
`count` would not be representative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vq4all.errors import VQ4AllError

CREPE_BINS = 360
CREPE_CENTS_PER_BIN = 20
CREPE_CENTS_OFFSET = 1997.3794084376191  # vq4all.zoo.crepe.CENTS_OFFSET


@dataclass
class Task:
    """An evaluation set: inputs [N, ...] float32 as the executor takes them (crepe: normalised
    frames), truth [N] (labels or Hz), the metric's name and direction."""

    network: str
    metric: str
    higher_is_better: bool
    inputs: np.ndarray
    truth: np.ndarray

    def score(self, outputs: np.ndarray, index: np.ndarray | None = None) -> float:
        """The metric of `outputs` (the executor's, for inputs[index]; default all)."""
        truth = self.truth if index is None else self.truth[index]
        return float(SCORES[self.network](outputs, truth))

    def agreement(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        """How close two output sets are in the task's own terms: the share of equal decisions
        (digits: class, O-Net: face or not), or the mean |difference| in cents (crepe)."""
        if self.network == "crepe_tiny":
            return float(np.abs(1200.0 * np.log2(crepe_hz(outputs) / crepe_hz(reference))).mean())
        return float((decisions(self.network, outputs) == decisions(self.network, reference)).mean())


def subset(n: int, count: int | None) -> np.ndarray:
    """`count` indices evenly spaced over 0..n-1 (all n when count is None or >= n)."""
    if count is None or count >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, count)).astype(np.int64))


def normalize_frames(frames: np.ndarray) -> np.ndarray:
    """CREPE's per-frame normalisation (zoo.crepe.normalize_frames): zero mean, unit std (ddof 1,
    floored at 1e-10). [N, 1024] float32."""
    frames = np.asarray(frames, dtype=np.float64)
    frames = frames - frames.mean(axis=1, keepdims=True)
    return (frames / np.maximum(frames.std(axis=1, ddof=1, keepdims=True), 1e-10)).astype(np.float32)


def crepe_hz(activations: np.ndarray) -> np.ndarray:
    """CREPE's weighted-argmax decoding (zoo.crepe.decode_hz): [N, 360] -> [N] float64 Hz."""
    act = np.asarray(activations, dtype=np.float64)
    centre = act.argmax(axis=1)
    bins = np.arange(CREPE_BINS, dtype=np.float64)
    window = (bins[None, :] >= centre[:, None] - 4) & (bins[None, :] <= centre[:, None] + 4)
    w = act * window
    cents = CREPE_CENTS_PER_BIN * bins + CREPE_CENTS_OFFSET
    est = (w * cents).sum(1) / np.maximum(w.sum(1), 1e-30)
    return 10.0 * 2.0 ** (est / 1200.0)


def decisions(network: str, outputs: np.ndarray) -> np.ndarray:
    """digits: predicted class [N]; O-Net: face decision (probability > 0.5) [N]."""
    if network == "digits_cnn":
        return outputs.argmax(axis=1)
    return outputs[:, 1] > 0.5


SCORES = {
    "digits_cnn": lambda out, y: (decisions("digits_cnn", out) == y).mean(),
    "crepe_tiny": lambda out, f0: np.abs(1200.0 * np.log2(crepe_hz(out) / f0)).mean(),
    "mtcnn_onet": lambda out, y: (decisions("mtcnn_onet", out) == (y == 1)).mean(),
}


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def eval_task(net, inputs=None, truth=None) -> Task:
    """The evaluation set of zoo network `net` (digits_cnn, crepe_tiny or mtcnn_onet): from
    `net.eval_data()` (crepe_tiny, mtcnn_onet), or the given inputs [N, ...] and truth [N]
    (digits_cnn, whose zoo class has no public evaluation data: pass
    `vq4all.zoo.data.digits_split()[2:]`; this package is below the zoo and does not import it)."""
    if inputs is None:
        if not hasattr(net, "eval_data"):
            raise VQ4AllError(f"{net.name}: give its evaluation inputs and truth (the network has no eval_data())")
        inputs, truth = net.eval_data()
    inputs, truth = _numpy(inputs).astype(np.float32), _numpy(truth)
    if net.name == "crepe_tiny":
        return Task(net.name, net.metric, False, normalize_frames(inputs), truth.astype(np.float64))
    return Task(net.name, net.metric, net.higher_is_better, inputs, truth)


def calibration_inputs(net, n: int, seed: int = 0) -> np.ndarray:
    """n calibration inputs of `net` (its `calibration(n, seed)`), as the executor takes them."""
    x = _numpy(net.calibration(n, seed)).astype(np.float32)
    return normalize_frames(x) if net.name == "crepe_tiny" else x
