"""MTCNN's P-Net (12x12 input), R-Net (24x24) and O-Net (48x48) from the `facenet-pytorch` wheel.

Only `facenet_pytorch/models/mtcnn.py` is run (its `detect_face` import swapped for nothing, so
the package __init__ and its extra dependencies are never imported); the weights are the
wheel's data/{pnet,rnet,onet}.pt, read with torch.load(weights_only=True).

Metric: face/no-face classification accuracy (face probability > 0.5) against ground truth on
skimage's LFW subset (100 faces, 100 non-faces from the same photos' backgrounds) plus 100
fixed-seed random crops of skimage photos without people (negatives); all grayscale (the LFW
subset is grayscale, so colour is no cue), replicated to RGB, resized to the net's input size,
scaled as MTCNN does: (pixel - 127.5) / 128. Extras: accuracy on faces and on non-faces,
agreement with the FP model's decisions, and the mean probability given to the true class (a
graded score: the FP accuracy is near 1).
"""

from __future__ import annotations

import numpy as np
import torch

from vq4all.zoo import data
from vq4all.zoo.base import ZooNetwork, load_source_module, load_state_dict_file, package_dir

INPUT_SIZE = {"pnet": 12, "rnet": 24, "onet": 48}
CLASSES = {"pnet": "PNet", "rnet": "RNet", "onet": "ONet"}
#: LFW images 0-49 of each kind calibrate, 50-99 evaluate; photo crops likewise come from
#: disjoint photo lists (data.CALIBRATION_PHOTOS, data.EVAL_PHOTOS)
LFW_CALIBRATION = slice(0, 50)
LFW_EVAL = slice(50, 100)
#: evaluation negatives: the evaluation photos without a human face
NEGATIVE_PHOTOS = tuple(p for p in data.EVAL_PHOTOS if p != "grace_hopper")
EVAL_SEED = 20241130


def _module():
    root = package_dir("facenet_pytorch", "`pip install --no-deps facenet-pytorch`")
    mod = load_source_module(
        root / "models" / "mtcnn.py",
        "vq4all.zoo._vendor_facenet_mtcnn",
        replace={"from .utils.detect_face import detect_face, extract_face\n": "\n"},
    )
    return mod, root


def _gray(images: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) float in [0, 1] -> (n, H, W) luminance."""
    return images @ np.array([0.299, 0.587, 0.114], dtype=images.dtype)


def to_input(gray: np.ndarray, size: int) -> torch.Tensor:
    """(n, H, W) float32 in [0, 1] -> (n, 3, size, size) float32, MTCNN scaling."""
    from skimage.transform import resize

    out = np.stack([resize(g, (size, size), order=1, anti_aliasing=True) for g in gray])
    x = torch.from_numpy(out.astype(np.float32))[:, None].expand(-1, 3, -1, -1)
    return (x * 255.0 - 127.5) * 0.0078125


def face_set(rng: np.random.Generator, n_crops: int) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation set: LFW faces and non-faces 50-99 + `n_crops` crops of the evaluation
    photos: (images (100 + n_crops, 25, 25) float32 [0, 1], labels int64, 1 = face)."""
    faces, non_faces = (part[LFW_EVAL] for part in data.lfw_faces())
    crops = _gray(data.random_crops(rng, n_crops, 25, names=NEGATIVE_PHOTOS, min_frac=0.08, max_frac=0.5))
    images = np.concatenate([faces, non_faces, crops]).astype(np.float32)
    labels = np.concatenate([np.ones(len(faces)), np.zeros(len(non_faces) + n_crops)])
    return images, labels.astype(np.int64)


class MTCNNNet(ZooNetwork):
    """Inputs: (n, 3, s, s) float32 (s = 12, 24, 48 for P/R/O-Net), MTCNN-scaled.
    Output: (n, 6) float32 = [p_no_face, p_face, 4 box regressions] (P-Net, R-Net), O-Net
    (n, 16) with its 10 landmark coordinates appended."""

    def __init__(self, which: str):
        mod, root = _module()
        model = getattr(mod, CLASSES[which])(pretrained=False)
        model.load_state_dict(load_state_dict_file(root / "data" / f"{which}.pt"))
        super().__init__(f"mtcnn_{which}", model, "face_accuracy", True)
        self.which = which
        self.input_size = INPUT_SIZE[which]
        self._eval: tuple[torch.Tensor, torch.Tensor] | None = None
        self._fp_pred: torch.Tensor | None = None

    def calibration(self, n: int, seed: int = 0) -> torch.Tensor:
        """n crops, half LFW faces/non-faces 0-49 (random, flipped at random), half random crops
        of the calibration photos: (n, 3, s, s) float32. None is in the evaluation set."""
        rng = np.random.default_rng([seed, 5])
        faces, non_faces = data.lfw_faces()
        lfw = np.concatenate([faces[LFW_CALIBRATION], non_faces[LFW_CALIBRATION]])
        k = (n + 1) // 2
        picks = lfw[rng.integers(0, len(lfw), k)]
        flips = rng.random(k) < 0.5
        picks = np.where(flips[:, None, None], picks[:, :, ::-1], picks)
        crops = _gray(data.random_crops(rng, n - k, 25, names=data.CALIBRATION_PHOTOS, min_frac=0.08, max_frac=0.5))
        return to_input(np.concatenate([picks, crops]).astype(np.float32), self.input_size)

    def forward(self, model, inputs: torch.Tensor) -> torch.Tensor:
        """Face probabilities and regressions concatenated: (n, 6) or (n, 16) for O-Net."""
        out = model(inputs)
        if self.which == "onet":
            box, landmarks, prob = out
            parts = [prob, box, landmarks]
        else:
            box, prob = out
            parts = [prob, box]
        return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)

    def eval_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs (200, 3, s, s) float32, labels (200,) int64, 1 = face)."""
        if self._eval is None:
            images, labels = face_set(np.random.default_rng(EVAL_SEED), 100)
            self._eval = (to_input(images, self.input_size), torch.from_numpy(labels))
        return self._eval

    def _evaluate(self, model) -> dict:
        x, y = self.eval_data()
        p_face = self.forward(model, x)[:, 1]
        pred = p_face > 0.5
        if self._fp_pred is None:
            self._fp_pred = pred if model is self.model else self.forward(self.model, x)[:, 1] > 0.5
        truth = y == 1
        return {
            "value": float((pred == truth).float().mean()),
            "face_recall": float(pred[truth].float().mean()),
            "non_face_accuracy": float((~pred[~truth]).float().mean()),
            "fp_agreement": float((pred == self._fp_pred).float().mean()),
            "true_class_prob": float(torch.where(truth, p_face, 1 - p_face).mean()),
            "n": int(len(y)),
        }
