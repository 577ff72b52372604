import numpy as np
import pytest

from vq4all.errors import VQ4AllError
from vq4all.subvectors import join, row_scales, split


def test_split_pads_ragged_rows_and_join_inverts():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3, 5)).astype(np.float32)  # rows of 15 -> m=2, pad=1 at d=8
    s = split(w, 8)
    assert s.subvectors.shape == (6, 2, 8) and s.pad == 1 and s.shape == (6, 3, 5)
    assert (s.subvectors[:, -1, -1] == 0).all()
    np.testing.assert_allclose(join(s.subvectors, s.scales, s.shape, s.pad), w, rtol=1e-6)
    assert s.full().shape == (6, 8)  # only the unpadded first sub-vector of each row


def test_channel_scales_are_row_rms_in_float16():
    w = np.array([[3.0, 4.0], [0.0, 0.0], [1e-9, 0.0]], dtype=np.float32)
    scales = row_scales(w, "channel")
    assert scales.dtype == np.float16
    assert scales[0] == np.float16(np.sqrt(12.5))
    assert scales[1] == 1.0  # an all-zero row keeps scale 1
    assert scales[2] == np.float16(2.0**-14)  # clamped to float16's smallest normal
    s = split(w[:1], 2)
    assert np.isclose(np.sqrt(np.mean(s.subvectors**2)), 1.0, atol=1e-3)  # normalised to unit RMS


@pytest.mark.parametrize("granularity", ["none", "tensor", "channel"])
def test_granularities(granularity):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 8)).astype(np.float32) * np.array([[1], [10], [100], [1000]], np.float32)
    scales = row_scales(w, granularity).astype(np.float64)
    if granularity == "none":
        assert (scales == 1).all()
    elif granularity == "tensor":
        assert len(set(scales)) == 1
    else:
        assert np.all(np.diff(scales) > 0)


def test_split_rejects_bad_input():
    with pytest.raises(VQ4AllError, match="NaN or Inf"):
        split(np.array([[np.nan, 1.0]]), 2)
    with pytest.raises(VQ4AllError, match="d must be"):
        split(np.ones((2, 2)), 0)
    with pytest.raises(VQ4AllError, match="granularity"):
        split(np.ones((2, 2)), 2, "row")
