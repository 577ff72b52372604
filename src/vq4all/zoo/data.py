"""Real data for the zoo, all available offline: photos and faces from scikit-image, digits from
scikit-learn, synthesized tones (exact pitch) and espeak-ng speech (exact speech positions).

Also the project's cache folder and an atomic safetensors writer. Everything here is
deterministic for a given seed; heavy packages are imported inside the functions.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from vq4all.errors import VQ4AllError


# --------------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """The cache folder: $VQ4ALL_CACHE, else ~/.cache/vq4all (created on demand)."""
    path = Path(os.environ.get("VQ4ALL_CACHE") or Path.home() / ".cache" / "vq4all")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_safetensors_atomic(tensors: dict, path: Path, metadata: dict[str, str] | None = None):
    """Write `tensors` (name -> torch.Tensor) to `path` through `vq4all.io.atomic_write_bytes`
    (creating the folder first)."""
    from safetensors.torch import save

    from vq4all.io import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata))


# -------------------------------------------------------------------------------- photos
#: Images bundled inside installed wheels (no download): scikit-image's photos and textures,
#: scikit-learn's two sample photos, matplotlib's portrait. Grey ones are replicated to RGB.
#: Calibration and evaluation draw from DISJOINT sources (the stereo motorcycle pair is one
#: source: both halves are calibration), so no evaluated crop comes from a calibration photo.
CALIBRATION_PHOTOS = (
    "astronaut",
    "motorcycle",
    "motorcycle_right",
    "flower",
    "retina",
    "immunohistochemistry",
    "moon",
    "grass",
    "gravel",
    "cell",
    "page",
    "text",
    "clock",
)
EVAL_PHOTOS = ("chelsea", "coffee", "rocket", "china", "grace_hopper", "camera", "coins", "brick", "hubble_deep_field")
PHOTO_NAMES = CALIBRATION_PHOTOS + EVAL_PHOTOS


@functools.cache
def photo(name: str) -> np.ndarray:
    """One bundled image (see CALIBRATION_PHOTOS, EVAL_PHOTOS): (H, W, 3) uint8 RGB."""
    import skimage.data

    if name == "motorcycle":
        img = skimage.data.stereo_motorcycle()[0]
    elif name == "motorcycle_right":
        img = skimage.data.stereo_motorcycle()[1]
    elif name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        img = load_sample_image(f"{name}.jpg")
    elif name == "grace_hopper":
        import matplotlib.cbook
        import matplotlib.image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            img = matplotlib.image.imread(f, format="jpg")
    elif name in PHOTO_NAMES:
        img = getattr(skimage.data, name)()
    else:
        raise VQ4AllError(f"unknown bundled photo '{name}': choose from {', '.join(PHOTO_NAMES)}")
    img = np.asarray(img)
    if img.dtype != np.uint8:  # float images in [0, 1]
        img = np.clip(np.asarray(img, np.float64) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = np.ascontiguousarray(img[..., :3])
    img.setflags(write=False)
    return img


def random_crops(
    rng: np.random.Generator,
    n: int,
    size: int,
    names=CALIBRATION_PHOTOS,
    min_frac: float = 0.4,
    max_frac: float = 1.0,
    flip: bool = True,
) -> np.ndarray:
    """n square crops of the photos, resized to size x size: (n, size, size, 3) float32 in [0, 1].

    Photo chosen round-robin over `names`; crop side a random fraction [min_frac, max_frac] of
    the photo's short side at a random position; horizontal flip with probability 1/2.
    """
    from skimage.transform import resize

    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        img = photo(names[i % len(names)])
        h, w = img.shape[:2]
        side = int(round(min(h, w) * rng.uniform(min_frac, max_frac)))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        crop = img[y : y + side, x : x + side]
        if flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = resize(crop, (size, size), order=1, anti_aliasing=True, preserve_range=False).astype(np.float32)
    return out


def center_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Central square crop of an (H, W, 3) uint8 image, resized: (size, size, 3) float32 [0, 1]."""
    from skimage.transform import resize

    h, w = img.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return resize(img[y : y + side, x : x + side], (size, size), order=1, anti_aliasing=True).astype(np.float32)


@functools.cache
def lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    """skimage's LFW subset: (faces (100, 25, 25), non_faces (100, 25, 25)), float32 in [0, 1]."""
    import skimage.data

    imgs = skimage.data.lfw_subset().astype(np.float32)
    if imgs.max() > 1.5:
        imgs /= 255.0
    return imgs[:100], imgs[100:]


# -------------------------------------------------------------------------------- digits
@functools.cache
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's digits, fixed stratified split (25 % test, seed 0).

    Returns (x_train (1347, 1, 8, 8) float32 in [0, 1], y_train (1347,) int64,
             x_test (450, 1, 8, 8), y_test (450,)).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return xtr, ytr, xte, yte


# --------------------------------------------------------------------------------- tones
def harmonic_tones(
    freqs_hz: np.ndarray,
    rng: np.random.Generator,
    n_samples: int = 1024,
    sample_rate: int = 16000,
    noise_db: float = -40.0,
) -> np.ndarray:
    """Harmonic tones of exactly known fundamental: (len(freqs_hz), n_samples) float32.

    Each tone: harmonics k*f0 below 0.45*sample_rate (at most 8) with amplitudes k**-1 times a
    random factor in [0.5, 1] and random phases, plus white noise `noise_db` below the signal
    RMS. Peak amplitude normalised to 0.5.
    """
    t = np.arange(n_samples) / sample_rate
    out = np.empty((len(freqs_hz), n_samples), np.float32)
    for i, f0 in enumerate(freqs_hz):
        sig = np.zeros(n_samples)
        for k in range(1, 9):
            if k * f0 >= 0.45 * sample_rate:
                break
            amp = rng.uniform(0.5, 1.0) / k
            sig += amp * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
        rms = np.sqrt(np.mean(sig**2))
        sig += rng.standard_normal(n_samples) * rms * 10 ** (noise_db / 20)
        out[i] = 0.5 * sig / np.abs(sig).max()
    return out


# -------------------------------------------------------------------------------- speech
def espeak(text: str, voice: str = "en", speed: int = 160, pitch: int = 50, sample_rate: int = 16000) -> np.ndarray:
    """Speech for `text` from espeak-ng, resampled to `sample_rate`: (n,) float32 in [-1, 1].

    Raises VQ4AllError if espeak-ng is not installed.
    """
    from math import gcd

    from scipy.io import wavfile
    from scipy.signal import resample_poly

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise VQ4AllError("espeak-ng is not installed: run `apt-get install espeak-ng`")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        try:
            subprocess.run(
                [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
                check=True,
                capture_output=True,
                timeout=60,
            )
        except subprocess.CalledProcessError as e:
            raise VQ4AllError(f"espeak-ng failed: {e.stderr.decode(errors='replace').strip()}") from None
        rate, data = wavfile.read(wav)
    data = data.astype(np.float64)
    if data.ndim > 1:
        data = data.mean(axis=1)
    data /= 32768.0
    g = gcd(int(rate), sample_rate)
    return resample_poly(data, sample_rate // g, int(rate) // g).astype(np.float32)
