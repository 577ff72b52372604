"""digits_cnn: a small CNN the project trains itself on sklearn's digits (8x8, 10 classes).

Two 3x3 convs (1->16->32 channels, ReLU), 2x2 max-pool, then Linear(512, 64) + ReLU and
Linear(64, 10): 38 k parameters. Trained deterministically (seed 0, Adam, 40 epochs, batch 64,
a few seconds on CPU) on the fixed stratified 75 % train split (`data.digits_split`), then cached
as safetensors (atomic write) in the vq4all cache folder; later loads read the cache
(safetensors only, never torch.load). Metric: accuracy on the held-out 25 % (450 digits) against
the true labels; extras: agreement with the FP model and the mean cross-entropy.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
import torch.nn.functional as F

from vq4all.zoo import data
from vq4all.zoo.base import ZooNetwork

TRAIN_CONFIG = {
    "version": 1,
    "seed": 0,
    "epochs": 40,
    "batch": 64,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "split": "stratified 25% test, random_state 0",
}


class DigitsNet(torch.nn.Module):
    """(n, 1, 8, 8) float32 in [0, 1] -> logits (n, 10) float32."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = torch.nn.Linear(32 * 4 * 4, 64)
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def train(config: dict = TRAIN_CONFIG) -> DigitsNet:
    """Train DigitsNet on the training split, deterministically (leaves torch's global RNG as
    it was)."""
    xtr, ytr, _, _ = data.digits_split()
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        model = DigitsNet()
        gen = torch.Generator().manual_seed(config["seed"])
        opt = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config["epochs"] * -(-len(x) // config["batch"]))
        model.train()
        for _ in range(config["epochs"]):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), config["batch"]):
                idx = order[i : i + config["batch"]]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def cached_model() -> DigitsNet:
    """The trained DigitsNet, from the cache folder or trained now and cached."""
    from safetensors.torch import load_file

    key = hashlib.sha256(json.dumps(TRAIN_CONFIG, sort_keys=True).encode()).hexdigest()[:16]
    path = data.cache_dir() / f"digits_cnn_{key}.safetensors"
    if path.is_file():
        with torch.random.fork_rng(devices=[]):  # init draws from the RNG; leave it as it was
            model = DigitsNet()
        try:
            model.load_state_dict(load_file(str(path)))
            return model.eval()
        except Exception:  # a damaged or stale cache file is retrained
            path.unlink(missing_ok=True)
    model = train()
    data.save_safetensors_atomic(model.state_dict(), path, metadata={"train_config": json.dumps(TRAIN_CONFIG)})
    return model


class DigitsCNN(ZooNetwork):
    """Inputs: (n, 1, 8, 8) float32 in [0, 1]. Output: logits (n, 10) float32."""

    def __init__(self):
        super().__init__("digits_cnn", cached_model(), "test_accuracy", True)
        self._fp_pred: torch.Tensor | None = None

    distill = "kl"

    @staticmethod
    def _calibration_index(n: int, seed: int) -> np.ndarray:
        count = len(data.digits_split()[0])
        rng = np.random.default_rng([seed, 6])
        return rng.permutation(count)[:n] if n <= count else rng.integers(0, count, n)

    def calibration(self, n: int, seed: int = 0) -> torch.Tensor:
        """n training-split digits (random, without replacement while n <= 1347):
        (n, 1, 8, 8) float32."""
        return torch.from_numpy(data.digits_split()[0][self._calibration_index(n, seed)])

    def calibration_labels(self, n: int, seed: int = 0) -> torch.Tensor:
        """The true classes of `calibration(n, seed)`: (n,) int64."""
        return torch.from_numpy(data.digits_split()[1][self._calibration_index(n, seed)]).long()

    def forward(self, model, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (n, 10) float32."""
        return model(inputs)

    def _evaluate(self, model) -> dict:
        _, _, xte, yte = data.digits_split()
        x, y = torch.from_numpy(xte), torch.from_numpy(yte)
        logits = model(x)
        pred = logits.argmax(1)
        if self._fp_pred is None:
            self._fp_pred = pred if model is self.model else self.model(x).argmax(1)
        return {
            "value": float((pred == y).float().mean()),
            "fp_agreement": float((pred == self._fp_pred).float().mean()),
            "cross_entropy": float(F.cross_entropy(logits, y)),
            "n": int(len(y)),
        }
