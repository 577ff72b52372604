"""The numpy reference against hand-computed values and against its own definitions."""

import numpy as np
import pytest

from vq4all import reference


def test_decode_hand_example():
    # k=4 codewords of d=2; int8 codebook with scale 0.5; 2 rows of 3 real values (pad 1).
    codebook = np.array([[1, -2], [3, 4], [-5, 6], [7, -8]], dtype=np.int8)
    codes = np.array([[1, 3], [2, 0]], dtype=np.uint8)
    scales = np.array([2.0, -1.0], dtype=np.float16)
    got = reference.decode(codes, codebook, scales, codebook_scale=np.float32(0.5), in_features=3)
    # row 0: 2 * 0.5 * [3, 4, 7] ; row 1: -1 * 0.5 * [-5, 6, 1]
    want = np.array([[3.0, 4.0, 7.0], [2.5, -3.0, -0.5]], dtype=np.float32)
    np.testing.assert_array_equal(got, want)


def test_decode_float16_codebook_and_no_padding():
    codebook = np.array([[0.5, -1.5], [2.0, 0.25]], dtype=np.float16)
    codes = np.array([[1, 0]], dtype=np.uint8)
    got = reference.decode(codes, codebook, np.array([4.0], np.float16))
    np.testing.assert_array_equal(got, [[8.0, 1.0, 2.0, -6.0]])


def test_decode_rejects_bad_input():
    cb = np.zeros((4, 2), np.int8)
    with pytest.raises(ValueError, match="< k=4"):
        reference.decode(np.array([[4]], np.uint8), cb, np.ones(1, np.float16), 1.0)
    with pytest.raises(ValueError, match="codebook_scale"):
        reference.decode(np.array([[0]], np.uint8), cb, np.ones(1, np.float16))
    with pytest.raises(ValueError, match="in_features"):
        reference.decode(np.array([[0]], np.uint8), cb, np.ones(1, np.float16), 1.0, in_features=3)


def test_lookup_matmul_matches_dense_matmul():
    rng = np.random.default_rng(1)
    codebook = rng.integers(-127, 128, size=(256, 4), dtype=np.int8)
    codes = rng.integers(0, 256, size=(5, 3), dtype=np.uint8)
    scales = rng.uniform(0.5, 2, 5).astype(np.float16)
    x = rng.standard_normal((3, 10)).astype(np.float32)
    w = reference.decode(codes, codebook, scales, 0.01, in_features=10)
    np.testing.assert_allclose(reference.lookup_matmul(x, codes, codebook, scales, 0.01), x @ w.T, rtol=1e-5, atol=1e-5)


def test_lookup_matmul_int_hand_example_and_uint16_codes():
    k = 1 << 16
    codebook = np.zeros((k, 2), np.int8)
    codebook[40000] = [100, -100]
    codebook[3] = [-128, 127]
    codes = np.array([[40000, 3], [3, 3]], dtype=np.uint16)
    x = np.array([[2, 3, -1, 5]], dtype=np.int8)
    # row 0: 2*100 + 3*-100 + -1*-128 + 5*127 = 200 - 300 + 128 + 635 = 663
    # row 1: 2*-128 + 3*127 + 128 + 635 = -256 + 381 + 763 = 888
    got = reference.lookup_matmul_int(x, codes, codebook)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [[663, 888]])


def test_lookup_matmul_int_wraps_like_a_narrow_accumulator():
    codebook = np.array([[-128, -128]], dtype=np.int8)
    codes = np.zeros((1, 1), np.uint8)
    x = np.array([[-128, -128]], dtype=np.int8)  # exact 32768, one past int16's maximum
    assert reference.lookup_matmul_int(x, codes, codebook)[0, 0] == 32768
    assert reference.lookup_matmul_int(x, codes, codebook, acc_bits=16)[0, 0] == -32768


def test_lookup_matmul_int_matches_float_path_exactly():
    rng = np.random.default_rng(2)
    codebook = rng.integers(-128, 128, size=(4096, 8), dtype=np.int8)
    codes = rng.integers(0, 4096, size=(7, 5), dtype=np.uint16)
    x = rng.integers(-128, 128, size=(2, 37), dtype=np.int8)
    ones = np.ones(7, np.float16)
    exact = reference.lookup_matmul_int(x, codes, codebook)
    # float64 products of int8 values are exact, so the float path must agree after rounding
    np.testing.assert_array_equal(
        exact, np.rint(reference.lookup_matmul(x.astype(np.float64), codes, codebook, ones, 1.0))
    )


def test_rom_words_packing():
    codebook = np.array([[1, -1, 0, -128], [127, 2, -2, 0]], dtype=np.int8)
    words = reference.rom_words(codebook)
    # element 0 in the least significant byte, two's complement
    assert words == [0x80_00_FF_01, 0x00_FE_02_7F]
    np.testing.assert_array_equal(reference.unpack_rom_words(words, 4), codebook)


def test_rom_words_narrow_width_and_float16():
    assert reference.rom_words(np.array([[-8, 7, -1]], np.int8), width=4) == [0xF78]
    with pytest.raises(ValueError, match="fit 4 bits"):
        reference.rom_words(np.array([[8]], np.int8), width=4)
    assert reference.rom_words(np.array([[1.0, -2.0]], np.float16)) == [0xC000_3C00]


def test_requantize_hand_examples():
    # shift 2 (quarters): 10 * 3/4 = 7.5 -> 8 (half up); -10 * 3/4 = -7.5 -> -7 (half up, towards +inf)
    acc = np.array([[10, -10, 1000, -1000, 0]], np.int64)
    mult = np.array([3, 3, 1, 1, 7], np.uint16)
    got = reference.requantize(acc, mult, 2)
    # 1000/4 = 250 -> 127 (saturated); -1000/4 = -250 -> -128
    np.testing.assert_array_equal(got, [[8, -7, 127, -128, 0]])
    assert got.dtype == np.int8
    assert reference.requantize(np.array([[5]]), np.array([1], np.uint16), 1).tolist() == [[3]]  # 2.5 -> 3
    assert reference.requantize(np.array([[-5]]), np.array([1], np.uint16), 1).tolist() == [[-2]]  # -2.5 -> -2
    with pytest.raises(ValueError, match="shift"):
        reference.requantize(acc, mult, 0)
    with pytest.raises(ValueError, match="multiplier"):
        reference.requantize(acc, mult[:2], 2)


def test_requant_parameters():
    mult, shift = reference.requant_parameters([0.5, 0.001, 0.0], mult_bits=16)
    assert mult.max() < 1 << 16 and shift == 16  # 0.5 * 2^17 = 65536 would not fit
    np.testing.assert_array_equal(mult, [32768, 66, 0])
    # the fixed point tracks the real factor to within half a unit of the last place
    f = np.random.default_rng(0).uniform(0, 3e-4, 50)
    mult, shift = reference.requant_parameters(f)
    assert np.abs(mult / 2.0**shift - f).max() <= 2.0 ** -(shift + 1)
