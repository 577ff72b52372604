import numpy as np
import pytest

from vq4all.errors import VQ4AllError
from vq4all.search import nearest


def brute_force(x, c, n):
    dist = ((x[:, None, :].astype(np.float64) - c[None, :, :]) ** 2).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :n]
    return order, np.take_along_axis(dist, order, 1)


@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("block_bytes", [1 << 12, 8 << 20])  # tiled over codewords, and not
@pytest.mark.parametrize("k", [1500, 2048])  # 1500: a last codeword tile narrower than n
def test_nearest_matches_brute_force(n, block_bytes, k):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((700, 8)).astype(np.float32)
    c = rng.standard_normal((k, 8)).astype(np.float32)
    idx, dist = nearest(x, c, n, block_bytes=block_bytes)
    want_idx, want_dist = brute_force(x, c, n)
    assert (np.diff(dist, axis=1) >= 0).all()  # nearest first
    assert all(len(set(row)) == n for row in idx.tolist())  # n distinct codewords
    assert idx.shape == (700, n) and idx.dtype == np.int64 and dist.dtype == np.float32
    # distances agree to float32 GEMM rounding; indices agree except on near-ties
    np.testing.assert_allclose(dist, want_dist, rtol=1e-4, atol=1e-4)
    assert (idx == want_idx).mean() > 0.995
    # the returned codewords really are at the returned distances
    real = ((x[:, None, :] - c[idx]) ** 2).sum(-1)
    np.testing.assert_allclose(real, dist, rtol=1e-4, atol=1e-4)


def test_nearest_exact_member_is_found():
    rng = np.random.default_rng(5)
    c = rng.standard_normal((4096, 8)).astype(np.float32)
    pick = rng.integers(0, 4096, 300)
    idx, dist = nearest(c[pick], c, 1)
    np.testing.assert_array_equal(idx[:, 0], pick)
    assert dist.max() < 1e-4


def test_nearest_rejects_bad_shapes():
    with pytest.raises(VQ4AllError, match="share d"):
        nearest(np.zeros((3, 4)), np.zeros((5, 8)))
    with pytest.raises(VQ4AllError, match="between 1 and k"):
        nearest(np.zeros((3, 4)), np.zeros((5, 4)), n=6)


@pytest.mark.gpu
def test_nearest_on_cuda_matches_cpu():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5000, 8)).astype(np.float32)
    c = rng.standard_normal((65536, 8)).astype(np.float32)
    gpu_idx, gpu_dist = nearest(x, c, 4, device="cuda")
    cpu_idx, cpu_dist = nearest(x, c, 4, device="cpu")
    np.testing.assert_allclose(gpu_dist, cpu_dist, rtol=1e-4, atol=1e-4)  # TF32 is off for addmm by default
    assert (gpu_idx == cpu_idx).mean() > 0.99
