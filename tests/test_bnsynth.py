"""BN-matched synthetic images: the loss against a hand computation, and the optimisation lowers it."""

import pytest
import torch
from torch import nn

from vq4all.zoo.bnsynth import bn_matched_images, bn_statistics_loss


def test_loss_is_the_squared_gap_of_batch_and_running_statistics():
    bn = nn.BatchNorm2d(3).eval()
    bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    bn.running_var.copy_(torch.tensor([1.0, 4.0, 0.25]))
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    mean = x.mean(dim=(0, 2, 3))
    std = (x.var(dim=(0, 2, 3), unbiased=False) + bn.eps).sqrt()
    expected = ((mean - bn.running_mean) ** 2).mean() + ((std - (bn.running_var + bn.eps).sqrt()) ** 2).mean()
    torch.testing.assert_close(bn_statistics_loss(bn, x), expected)


def test_matching_lowers_the_loss_and_respects_the_pixel_range():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8))
    # running statistics of a reachable target: smooth images with a colour cast, in range
    target = torch.rand(64, 3, 4, 4).repeat_interleave(4, 2).repeat_interleave(4, 3) * 0.8 - 0.6
    for m in model:
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: the statistics of the target batch itself
    with torch.no_grad():
        model.train()(target)
    model.eval()
    start = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    x = bn_matched_images(model, 8, 16, steps=60, seed=3)
    assert x.shape == (8, 3, 16, 16) and float(x.min()) >= -1 and float(x.max()) <= 1
    with torch.no_grad():
        assert bn_statistics_loss(model, x) < 0.2 * bn_statistics_loss(model, start)
    with pytest.raises(ValueError, match="eval mode"):
        bn_matched_images(model.train(), 2, 16, steps=1)
