"""Matryoshka truncation, normalisation and output quantization on plain float32 arrays."""

from __future__ import annotations

import numpy as np
import pytest

from skmoe.postprocessing import (
    OUTPUT_DTYPES,
    calibration_ranges,
    normalize_mode,
    output_width,
    quantize,
    truncate_and_normalize,
)


@pytest.fixture
def emb() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(120, 20)).astype(np.float32)


def test_truncate_then_normalize(emb):
    out = truncate_and_normalize(emb, 8, True)
    assert out.shape == (120, 8) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    # Truncation happens before normalising: same direction as the first 8 raw features.
    np.testing.assert_allclose(out * np.linalg.norm(emb[:, :8], axis=1, keepdims=True), emb[:, :8], rtol=1e-5)


def test_rms_is_l2_times_sqrt_of_the_kept_width(emb):
    out = truncate_and_normalize(emb, 8, "rms")
    np.testing.assert_allclose(np.sqrt((out**2).mean(axis=1)), 1.0, atol=1e-6)
    np.testing.assert_allclose(out, np.sqrt(8) * truncate_and_normalize(emb, 8, "l2"), atol=1e-6)
    np.testing.assert_array_equal(truncate_and_normalize(emb, None, True),
                                  truncate_and_normalize(emb, None, "L2"))
    # same directions: cosine geometry and neighbours unchanged
    rms, l2 = truncate_and_normalize(emb, None, "rms"), truncate_and_normalize(emb, None, "l2")
    np.testing.assert_allclose(rms @ rms.T / 20, l2 @ l2.T, atol=1e-5)


def test_a_number_is_the_row_length_whatever_the_width(emb):
    for dim in (8, None):
        out = truncate_and_normalize(emb, dim, 2.0)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 2.0, atol=1e-5)
        np.testing.assert_allclose(out, 2 * truncate_and_normalize(emb, dim, "l2"), atol=1e-6)
    np.testing.assert_array_equal(truncate_and_normalize(emb, None, 1.0),
                                  truncate_and_normalize(emb, None, "l2"))


def test_unit_rows_are_divided_by_their_norm(emb):
    """Unit rows are ``x / norm`` exactly, the vectors users got before the output modes (a
    multiplication by ``1 / norm`` differs in the last bit)."""
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    np.testing.assert_array_equal(truncate_and_normalize(emb, None, True), emb / norms)
    assert not np.array_equal(emb / norms, emb * (1.0 / norms))


@pytest.mark.parametrize(("value", "mode"), [
    (True, "l2"), ("l2", "l2"), ("rms", "rms"), ("RMS", "rms"), (False, None), (None, None),
    (2.0, 2.0), (2, 2.0), (1.0, "l2"), (np.float32(0.5), 0.5)])
def test_normalize_modes(value, mode):
    assert normalize_mode(value) == mode


@pytest.mark.parametrize("value", ["max", 0, -2.0, float("nan"), float("inf"), "unit"])
def test_unknown_normalize_is_named(emb, value):
    with pytest.raises(ValueError, match="normalize must be one of .*'rms'.*'l2'"):
        truncate_and_normalize(emb, None, value)


def test_no_truncation_no_normalization_is_identity(emb):
    out = truncate_and_normalize(emb, None, False)
    np.testing.assert_array_equal(out, emb)
    assert out.flags.c_contiguous


def test_zero_vector_normalizes_without_nan():
    out = truncate_and_normalize(np.zeros((2, 4), np.float32), None, True)
    assert np.isfinite(out).all() and (out == 0).all()


def test_calibration_ranges(emb):
    r = calibration_ranges(emb)
    assert r.shape == (2, 20) and r.dtype == np.float32
    np.testing.assert_array_equal(r[0], emb.min(axis=0))
    np.testing.assert_array_equal(r[1], emb.max(axis=0))
    for too_few in (emb[:0], emb[:1], emb[[3, 3, 3]]):
        with pytest.raises(ValueError, match="at least 2 distinct texts"):
            calibration_ranges(too_few)
    with pytest.warns(UserWarning, match="learned from only 99 texts"):
        calibration_ranges(emb[:99])


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_int8_quantization_error_is_at_most_half_a_step(emb, dtype):
    ranges = calibration_ranges(emb)
    q = quantize(emb, dtype, ranges)
    assert q.dtype == np.dtype(dtype) and q.shape == emb.shape
    lo, hi = ranges
    step = (hi - lo) / 255
    codes = q.astype(np.float32) + (128 if dtype == "int8" else 0)
    assert codes.min() == 0 and codes.max() == 255  # the fitted range spans all 256 codes
    recon = lo + codes * step
    assert np.all(np.abs(recon - emb) <= step / 2 + 1e-6)


def test_int8_clips_values_outside_the_fitted_range(emb):
    ranges = calibration_ranges(emb)
    out = quantize(np.stack([emb.max(axis=0) + 10, emb.min(axis=0) - 10]), "int8", ranges)
    assert (out[0] == 127).all() and (out[1] == -128).all()


def test_constant_feature_does_not_divide_by_zero(emb):
    x = emb[:, :3].copy()
    x[:, 1] = 1.0
    q = quantize(x, "uint8", calibration_ranges(x))
    assert (q[:, 1] == 0).all() and q[:, 0].min() == 0 and q[:, 0].max() == 255


def test_int8_needs_ranges(emb):
    with pytest.raises(ValueError, match="fit"):
        quantize(emb, "int8", None)


def test_matches_sentence_transformers_quantization(emb):
    """Binary packing is bit-identical; int8 codes differ by at most 1 (we round, ST floors)."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.util.quantization import quantize_embeddings

    for precision in ("binary", "ubinary"):
        np.testing.assert_array_equal(quantize(emb, precision), quantize_embeddings(emb, precision=precision))
    ranges = calibration_ranges(emb)
    for precision in ("int8", "uint8"):
        ours = quantize(emb, precision, ranges).astype(int)
        theirs = quantize_embeddings(emb, precision=precision, ranges=ranges).astype(int)
        assert np.abs(ours - theirs).max() <= 1


def test_binary_width_and_float16(emb):
    assert quantize(emb, "binary").shape == (120, output_width(20, "binary")) == (120, 3)
    assert quantize(emb, "float16").dtype == np.float16
    assert quantize(emb, "float32") is emb
    assert output_width(20, "float32") == 20


def test_unknown_dtype_is_rejected(emb):
    assert "float64" not in OUTPUT_DTYPES
    with pytest.raises(ValueError, match="output_dtype must be one of"):
        quantize(emb, "float64")
