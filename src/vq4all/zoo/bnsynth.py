"""Images synthesised to match a network's BatchNorm statistics (data-free calibration, as in
ZeroQ's "distilled data"): inputs start as Gaussian noise and are optimised so that, at every
BatchNorm2d layer, the batch's per-channel mean and standard deviation of the layer's input
equal the running statistics the network was trained to. They carry what the network expects
to see at every depth, which a handful of photos do not.

    x = bn_matched_images(model, 32, 160, steps=100, seed=0)   # (32, 3, 160, 160) float32
"""

from __future__ import annotations

import torch
from torch import nn


def bn_statistics_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean over the BatchNorm2d layers of ||mean - running_mean||^2 / C +
    ||std - running_std||^2 / C, the batch statistics taken over (N, H, W) of each layer's input
    when `model` runs on `x` (which needs gradients)."""
    terms: list[torch.Tensor] = []

    def hook(module, inputs):
        h = inputs[0]
        mean = h.mean(dim=(0, 2, 3))
        std = (h.var(dim=(0, 2, 3), unbiased=False) + module.eps).sqrt()
        running_std = (module.running_var + module.eps).sqrt()
        terms.append((mean - module.running_mean).pow(2).mean() + (std - running_std).pow(2).mean())

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not handles:
        raise ValueError("the model has no BatchNorm2d layer: nothing to match")
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(terms).mean()


def bn_matched_images(
    model: nn.Module,
    n: int,
    size: int,
    *,
    steps: int = 100,
    lr: float = 0.1,
    low: float = -1.0,
    high: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """n images (n, 3, size, size) float32 in the model's input space, clamped to [low, high]
    (its normalised pixel range), after `steps` Adam steps on `bn_statistics_loss` from N(0, 1)
    noise. `model` must be in eval mode (its running statistics are the target, not updated)."""
    if model.training:
        raise ValueError("put the model in eval mode: its running statistics are the target")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=generator).clamp_(low, high).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        bn_statistics_loss(model, x).backward()
        optimizer.step()
        with torch.no_grad():
            x.clamp_(low, high)
    return x.detach()
