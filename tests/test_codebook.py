"""The KDE universal codebook: determinism, the pooling rule, bandwidth rules, and that the
sampled codewords follow the pooled distribution."""

import numpy as np
import pytest

from vq4all.codebook import bandwidth, build_from_subvectors, pool, quantize
from vq4all.config import CodebookConfig
from vq4all.errors import VQ4AllError


def sources(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "gauss": rng.standard_normal((20000, 8)).astype(np.float32),
        "laplace": (rng.laplace(size=(3000, 8)) + 0.5).astype(np.float32),  # fewer: drawn with replacement
    }


def test_same_seed_same_codebook_bit_for_bit():
    cfg = CodebookConfig(networks=("gauss", "laplace"), k=4096, per_network=8000, seed=3)
    a, b = build_from_subvectors(sources(), cfg), build_from_subvectors(sources(), cfg)
    assert a.sha256 == b.sha256
    c = build_from_subvectors(
        sources(), CodebookConfig(networks=("gauss", "laplace"), k=4096, per_network=8000, seed=4)
    )
    assert c.sha256 != a.sha256


def test_equal_pooling():
    rng = np.random.default_rng(0)
    pooled = pool(sources(), 5000, rng)
    assert pooled.shape == (10000, 8)
    # the first 5000 come from "gauss" (mean 0), the next 5000 from "laplace" (mean 0.5)
    assert abs(pooled[:5000].mean()) < 0.05 and abs(pooled[5000:].mean() - 0.5) < 0.05
    with pytest.raises(VQ4AllError, match="no full sub-vectors"):
        pool({"empty": np.zeros((0, 8), np.float32)}, 10, rng)


def test_bandwidth_rules():
    x = np.random.default_rng(1).standard_normal((10000, 8))
    sigma = x.std(0, ddof=1).mean()
    assert bandwidth(x, "scott") == pytest.approx(sigma * 10000 ** (-1 / 12))
    assert bandwidth(x, "silverman") == pytest.approx(sigma * (4 / 10) ** (1 / 12) * 10000 ** (-1 / 12))
    assert bandwidth(x, 0.3) == 0.3


def test_codewords_follow_the_pooled_distribution():
    """Codewords = pooled sample + h N(0, I): per-dimension mean equals the pool's, variance the
    pool's + h^2. With k = 65536 draws the standard error of a mean is ~0.005 and of a variance
    ~1-2 % for these sources, so 0.03 absolute and 5 % relative tolerances cannot fail by chance
    but do catch a wrong h, a missing noise term or a biased pick."""
    cfg = CodebookConfig(networks=("gauss", "laplace"), k=65536, per_network=20000, seed=0)
    cb = build_from_subvectors(sources(), cfg)
    values = cb.values().astype(np.float64)
    pooled = pool(sources(), 20000, np.random.Generator(np.random.PCG64(0)))
    h = cb.manifest["bandwidth_h"]
    assert h == pytest.approx(bandwidth(pooled, "scott"))
    np.testing.assert_allclose(values.mean(0), pooled.mean(0), atol=0.03)
    np.testing.assert_allclose(values.var(0), pooled.var(0) + h**2, rtol=0.05)
    # and a fixed, much larger bandwidth does show up in the variance
    wide = build_from_subvectors(
        sources(), CodebookConfig(networks=("gauss", "laplace"), k=65536, per_network=20000, bandwidth=2.0)
    )
    np.testing.assert_allclose(wide.values().var(0), pooled.var(0) + 4.0, rtol=0.05)


def test_int8_quantization_uses_one_symmetric_scale():
    codewords = np.array([[0.0, 1.27], [-2.54, 0.5]], np.float32)
    q, scale = quantize(codewords, "int8")
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (1,)
    assert scale[0] == np.float32(2.54 / 127)
    np.testing.assert_array_equal(q, [[0, 64], [-127, 25]])  # 1.27/0.02 = 63.5 rounds to even 64
    f, none = quantize(codewords, "float16")
    assert f.dtype == np.float16 and none is None


def test_float16_codebook_and_lloyd_refinement_reduce_error():
    from vq4all.search import nearest

    src = sources()
    base = CodebookConfig(networks=("gauss", "laplace"), k=256, per_network=4000, dtype="float16")
    plain = build_from_subvectors(src, base)
    refined = build_from_subvectors(src, CodebookConfig(**{**base.to_dict(), "lloyd_iters": 5}))
    assert plain.codebook.dtype == np.float16 and plain.codebook_scale is None
    x = src["gauss"][:5000]
    err_plain = nearest(x, plain.values(), 1)[1].mean()
    err_refined = nearest(x, refined.values(), 1)[1].mean()
    assert err_refined < 0.9 * err_plain


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": 1000}, "power of two"),
        ({"k": 1 << 17}, "power of two"),
        ({"d": 0}, "d=0"),
        ({"bandwidth": "wide"}, "scott, silverman"),
        ({"bandwidth": -1.0}, "positive"),
        ({"dtype": "int4"}, "dtype"),
        ({"per_network": 0}, "per_network"),
        ({"lloyd_iters": -1}, "lloyd"),
    ],
)
def test_config_errors_say_what_to_change(kwargs, match):
    with pytest.raises(VQ4AllError, match=match):
        CodebookConfig(**kwargs)


def test_config_round_trips_through_a_dict():
    cfg = CodebookConfig(networks=("a", "b"), k=256, d=4, bandwidth="0.25")
    assert cfg.bandwidth == 0.25
    assert CodebookConfig.from_dict(cfg.to_dict()) == cfg
