"""Silero VAD v6, 16 kHz branch (0.24 M parameters; the wheel's 0.46 M counts its 8 kHz branch
too), as a pure-PyTorch module.

`SileroVADNet` is the network in plain PyTorch (the wheel's tinygrad_model.py, translated), so
weights are ordinary parameters and gradients flow. Its weights are read from the wheel's
TorchScript model (silero_vad/data/silero_vad.jit, what `load_silero_vad()` returns): the
wheel's silero_vad_16k.safetensors holds different (older) weights. With the TorchScript
weights the module matches the TorchScript model's probabilities to ~1e-5 (checked in
tests/test_zoo.py). We never import the `silero_vad` package: its __init__ sets torch's thread
count to 1 for the whole process.

The network reads 512-sample chunks (32 ms) with the previous chunk's last 64 samples as
context, a fixed STFT basis (a buffer, not compressible), four Conv1d + ReLU, an LSTMCell whose
state runs across chunks, and a 1x1 Conv1d + sigmoid: one speech probability per chunk.

Metric: speech/non-speech accuracy per chunk (probability > 0.5) against ground truth on about
54 s of espeak-ng speech (12 sentences, several voices) separated by gaps of silence, noise and
hum at known positions; extra: agreement with the FP model's decisions and mean |p - p_FP|. The
synthesized audio is cached (safetensors) under the vq4all cache folder, so espeak-ng runs once.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from vq4all.errors import VQ4AllError
from vq4all.zoo import data
from vq4all.zoo.base import ZooNetwork, package_dir

SAMPLE_RATE = 16000
CHUNK = 512
CONTEXT = 64
CALIBRATION_SAMPLES = 16384  # 1.024 s = 32 chunks per calibration clip
TRACK_VERSION = "v2"

EVAL_SENTENCES = (
    ("en", "The quick brown fox jumps over the lazy dog"),
    ("en-us+f3", "Please leave your message after the tone"),
    ("en-gb-scotland", "The weather will be cold and windy tomorrow morning"),
    ("en+m3", "Turn left at the next intersection and continue straight ahead"),
    ("en-us+f5", "Our flight to Boston departs at half past seven"),
    ("en", "She sells sea shells by the sea shore"),
    ("en-us", "Can you tell me where the nearest train station is"),
    ("en+f2", "Remember to save your work before closing the program"),
    ("en-gb-x-rp", "Scientists have discovered a new species of frog in the rain forest"),
    ("en-us+m5", "I will call you back as soon as the meeting is over"),
    ("en+f4", "Seven green apples fell from the tree during the storm"),
    ("en-us", "The library will be closed on Monday for the public holiday"),
)

CALIBRATION_SENTENCES = (
    ("en-us+f1", "Welcome to the evening news at nine o'clock"),
    ("en", "A large dog barked at the postman this morning"),
    ("en-gb-scotland+f3", "Bring a warm coat and sturdy boots for the hike"),
    ("en-us+m2", "The recipe needs two eggs and a cup of flour"),
    ("en+m4", "Traffic is heavy on the bridge into the city"),
    ("en-us+f4", "Thank you for calling customer support"),
    ("en-gb-x-rp+m1", "The committee will announce its decision next week"),
    ("en+f5", "Open the window and let some fresh air in"),
)


class _FixedConv(torch.nn.Module):
    """Holds the STFT basis (258, 1, 256) as a buffer: a fixed transform, not a learned
    weight, so it is in the state dict but not in `compressible()`."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.zeros(258, 1, 256))


class SileroVADNet(torch.nn.Module):
    """Silero VAD v6, 16 kHz. `forward(audio (B, T) float32, T a multiple of 512)` -> speech
    probabilities (B, T // 512) float32, the LSTM state starting at zero, the first chunk's
    context zeros (as the wheel's model after reset_states())."""

    def __init__(self):
        super().__init__()
        self.stft_conv = _FixedConv()
        self.conv1 = torch.nn.Conv1d(129, 128, kernel_size=3, stride=1, padding=1)
        self.conv2 = torch.nn.Conv1d(128, 64, kernel_size=3, stride=2, padding=1)
        self.conv3 = torch.nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1)
        self.conv4 = torch.nn.Conv1d(64, 128, kernel_size=3, stride=1, padding=1)
        self.lstm_cell = torch.nn.LSTMCell(128, 128)
        self.final_conv = torch.nn.Conv1d(128, 1, 1)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Encoder output for every chunk: (B, T) -> (B, T // 512, 128)."""
        b, t = audio.shape
        if t % CHUNK:
            raise VQ4AllError(f"silero_vad: audio length {t} is not a multiple of {CHUNK}")
        n = t // CHUNK
        windows = F.pad(audio, (CONTEXT, 0)).unfold(1, CHUNK + CONTEXT, CHUNK)  # (B, n, 576)
        x = windows.reshape(b * n, 1, CHUNK + CONTEXT)
        x = F.pad(x, (0, CONTEXT), mode="reflect")  # (B*n, 1, 640)
        x = F.conv1d(x, self.stft_conv.weight, stride=128)  # (B*n, 258, 4)
        half = x.shape[1] // 2
        x = torch.sqrt(x[:, :half] ** 2 + x[:, half:] ** 2)  # magnitude (B*n, 129, 4)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))  # (B*n, 128, 1)
        return x.reshape(b, n, 128)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        feats = self.features(audio)
        b, n, _ = feats.shape
        h = feats.new_zeros(b, 128)
        c = feats.new_zeros(b, 128)
        hs = []
        for i in range(n):
            h, c = self.lstm_cell(feats[:, i], (h, c))
            hs.append(h)
        x = torch.stack(hs, 1).reshape(b * n, 128, 1)
        x = torch.sigmoid(self.final_conv(F.relu(x)))  # (B*n, 1, 1)
        return x.reshape(b, n)


def jit_path():
    """The wheel's TorchScript model file (v6; 16 kHz branch at `_model`)."""
    return package_dir("silero_vad", "`pip install silero-vad`") / "data" / "silero_vad.jit"


# TorchScript state-dict prefixes (16 kHz branch) -> SileroVADNet's
_JIT_NAMES = {
    "stft.forward_basis_buffer": "stft_conv.weight",
    "encoder.0.reparam_conv.": "conv1.",
    "encoder.1.reparam_conv.": "conv2.",
    "encoder.2.reparam_conv.": "conv3.",
    "encoder.3.reparam_conv.": "conv4.",
    "decoder.rnn.": "lstm_cell.",
    "decoder.decoder.2.": "final_conv.",
}


def load_jit_state_dict() -> dict[str, torch.Tensor]:
    """The TorchScript model's 16 kHz weights under SileroVADNet's state-dict names."""
    path = jit_path()
    if not path.is_file():
        raise VQ4AllError(f"{path}: not found; reinstall silero-vad")
    with warnings.catch_warnings():  # torch 2.9+ marks torch.jit.load deprecated; it works
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        jit = torch.jit.load(str(path), map_location="cpu")
    out = {}
    for key, value in jit._model.state_dict().items():
        for old, new in _JIT_NAMES.items():
            if key.startswith(old):
                out[new + key[len(old) :]] = value.detach().clone().float()
                break
        else:
            raise VQ4AllError(f"{path}: unexpected tensor '{key}'; unsupported silero-vad version")
    return out


# ---------------------------------------------------------------------------- audio tracks
def _gap(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Non-speech audio of `n` samples: "silence", "noise" (white, -35 dBFS), "hum" (50 Hz +
    harmonics, -30 dBFS) or "brown" (integrated noise, -30 dBFS)."""
    if kind == "silence":
        return np.zeros(n)
    if kind == "noise":
        return rng.standard_normal(n) * 10 ** (-35 / 20)
    if kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        sig = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3))
        return sig * 10 ** (-30 / 20) / 1.5
    x = np.cumsum(rng.standard_normal(n))
    x -= np.convolve(x, np.ones(801) / 801, mode="same")  # remove the drift
    return x / (np.abs(x).max() + 1e-12) * 10 ** (-30 / 20)


def build_track(sentences, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Speech separated by non-speech gaps, with per-chunk ground truth.

    Returns (audio (T,) float32 at 16 kHz, T a multiple of 512; labels (T // 512,) float32,
    1.0 where at least half the chunk lies inside an utterance). An utterance spans from
    espeak's first to last sample above 1 % of its peak. Gaps are 1.0..2.5 s of silence, noise,
    hum or brown noise; a -60 dBFS white noise floor covers everything.
    """
    rng = np.random.default_rng(seed)
    kinds = ("silence", "noise", "hum", "brown")
    parts, spans, pos = [], [], 0

    def add(x):
        nonlocal pos
        parts.append(x)
        pos += len(x)

    add(_gap("silence", int(0.5 * SAMPLE_RATE), rng))
    for i, (voice, text) in enumerate(sentences):
        speech = data.espeak(text, voice=voice, speed=int(rng.integers(140, 190)))
        loud = np.flatnonzero(np.abs(speech) > 0.01 * np.abs(speech).max())
        speech = speech[loud[0] : loud[-1] + 1] * rng.uniform(0.3, 0.9) / np.abs(speech).max()
        spans.append((pos, pos + len(speech)))
        add(speech)
        add(_gap(kinds[i % len(kinds)], int(rng.uniform(1.0, 2.5) * SAMPLE_RATE), rng))
    audio = np.concatenate(parts)
    audio = np.pad(audio, (0, -len(audio) % CHUNK))
    audio = audio + rng.standard_normal(len(audio)) * 10 ** (-60 / 20)
    inside = np.zeros(len(audio))
    for a, b in spans:
        inside[a:b] = 1.0
    labels = (inside.reshape(-1, CHUNK).mean(1) >= 0.5).astype(np.float32)
    return audio.astype(np.float32), labels


def cached_track(kind: str, sentences, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`build_track`, cached in the vq4all cache folder (safetensors, atomic write).

    Returns (audio (T,) float32, labels (T // 512,) float32)."""
    from safetensors.torch import load_file

    key = hashlib.sha256(repr((TRACK_VERSION, sentences, seed)).encode()).hexdigest()[:16]
    path = data.cache_dir() / f"silero_vad_{kind}_{key}.safetensors"
    if path.is_file():
        try:
            t = load_file(str(path))
            return t["audio"], t["labels"]
        except Exception:  # a damaged cache file is rebuilt
            path.unlink(missing_ok=True)
    audio, labels = build_track(sentences, seed)
    audio_t, labels_t = torch.from_numpy(audio), torch.from_numpy(labels)
    data.save_safetensors_atomic(
        {"audio": audio_t, "labels": labels_t}, path, metadata={"sample_rate": str(SAMPLE_RATE), "chunk": str(CHUNK)}
    )
    return audio_t, labels_t


class SileroVAD(ZooNetwork):
    """Inputs: audio (n, T) float32 at 16 kHz, T a multiple of 512. Output: speech
    probabilities (n, T // 512) float32."""

    def __init__(self):
        model = SileroVADNet()
        model.load_state_dict(load_jit_state_dict())
        super().__init__("silero_vad", model, "vad_accuracy", True)
        self._fp_probs: torch.Tensor | None = None

    def eval_track(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio (T,) float32, labels (T // 512,) float32) of the evaluation track."""
        return cached_track("eval", EVAL_SENTENCES, 1)

    def calibration(self, n: int, seed: int = 0) -> torch.Tensor:
        """n clips of 16384 samples (1.024 s) at random offsets of the calibration track
        (other sentences and voices than the evaluation track): (n, 16384) float32."""
        audio, _ = cached_track("calibration", CALIBRATION_SENTENCES, 2)
        rng = np.random.default_rng([seed, 4])
        starts = rng.integers(0, (len(audio) - CALIBRATION_SAMPLES) // CHUNK + 1, n) * CHUNK
        return torch.stack([audio[s : s + CALIBRATION_SAMPLES] for s in starts])

    def forward(self, model, inputs: torch.Tensor) -> torch.Tensor:
        """Speech probabilities (n, T // 512) float32."""
        return model(inputs)

    def _evaluate(self, model) -> dict:
        audio, labels = self.eval_track()
        if self._fp_probs is None:
            self._fp_probs = self.model(audio[None])[0]
        fp = self._fp_probs
        p = fp if model is self.model else model(audio[None])[0]
        pred, fp_pred, truth = p > 0.5, fp > 0.5, labels > 0.5
        return {
            "value": float((pred == truth).float().mean()),
            "fp_agreement": float((pred == fp_pred).float().mean()),
            "prob_diff": float((p - fp).abs().mean()),
            "n": int(len(labels)),
        }
