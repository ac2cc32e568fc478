"""Intensity normalization: range, dtype handling, determinism, colour preservation."""

from __future__ import annotations

import numpy as np
import pytest

from core.imaging.normalize import (
    DEFAULT_METHOD,
    NORMALIZATION_METHODS,
    ImageFormatError,
    clahe,
    histogram_match,
    normalize,
    normalize_rgb,
    percentile_gamma,
    to_float01,
)

RNG = np.random.default_rng(7)
GRAY8 = RNG.integers(20, 180, size=(40, 50), dtype=np.uint8)
REFERENCE8 = RNG.integers(0, 256, size=(30, 30), dtype=np.uint8)


def _params(method: str) -> dict:
    return {"reference": REFERENCE8} if method == "histogram_match" else {}


def _inputs() -> list[np.ndarray]:
    gray16 = GRAY8.astype(np.uint16) * 257
    rgb8 = np.stack([GRAY8, GRAY8 // 2, 255 - GRAY8], axis=2)
    return [GRAY8, gray16, rgb8, rgb8.astype(np.uint16) * 257, GRAY8[:, :, None]]


def test_default_method_is_a_listed_method() -> None:
    assert DEFAULT_METHOD in NORMALIZATION_METHODS


@pytest.mark.parametrize("method", NORMALIZATION_METHODS)
def test_every_method_maps_every_input_to_float01_gray(method: str) -> None:
    for img in _inputs():
        out = normalize(img, method, **_params(method))
        assert out.dtype == np.float32
        assert out.shape == img.shape[:2]
        assert np.isfinite(out).all()
        assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("method", NORMALIZATION_METHODS)
def test_methods_are_deterministic(method: str) -> None:
    a = normalize(GRAY8, method, **_params(method))
    b = normalize(GRAY8.copy(), method, **_params(method))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("method", NORMALIZATION_METHODS)
def test_constant_image_gives_no_nan(method: str) -> None:
    out = normalize(np.full((20, 20), 77, np.uint8), method, **_params(method))
    assert np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_to_float01_scales_bit_depths_and_uses_bt601_luma() -> None:
    assert to_float01(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert to_float01(np.array([[65535]], np.uint16))[0, 0] == pytest.approx(1.0)
    pure_green = np.zeros((2, 2, 3), np.uint8)
    pure_green[..., 1] = 255
    assert to_float01(pure_green)[0, 0] == pytest.approx(0.587, abs=1e-6)
    rgba = np.dstack([pure_green, np.zeros((2, 2), np.uint8)])
    assert np.allclose(to_float01(rgba), to_float01(pure_green))


def test_eight_and_sixteen_bit_versions_of_an_image_normalize_alike() -> None:
    a = normalize(GRAY8, "percentile_gamma")
    b = normalize(GRAY8.astype(np.uint16) * 257, "percentile_gamma")
    assert np.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    ("img", "match"),
    [
        (np.zeros((4, 4), np.int32), "Unsupported pixel type"),
        (np.zeros((4, 4), bool), "Unsupported pixel type"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
        (np.zeros((0, 4), np.uint8), "empty"),
        (np.full((4, 4), 200.0, np.float32), r"\[0, 1\]"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_raise_clear_errors(img: np.ndarray, match: str) -> None:
    with pytest.raises(ImageFormatError, match=match):
        normalize(img)


def test_percentile_gamma_stretches_and_clips() -> None:
    ramp = np.arange(100, dtype=np.uint8).reshape(10, 10) + 50
    out = percentile_gamma(ramp, low_pct=10, high_pct=90)
    lo, hi = np.percentile(ramp, [10, 90])
    assert out.min() == 0.0 and out.max() == 1.0
    assert (out[ramp <= lo] == 0.0).all() and (out[ramp >= hi] == 1.0).all()
    mid = (ramp > lo) & (ramp < hi)
    assert np.allclose(out[mid], (ramp[mid] - lo) / (hi - lo), atol=1e-6)


def test_gamma_below_one_brightens_mid_tones() -> None:
    linear = percentile_gamma(GRAY8, gamma=1.0)
    bright = percentile_gamma(GRAY8, gamma=0.5)
    mid = (linear > 0) & (linear < 1)
    assert (bright[mid] > linear[mid]).all()


def test_percentile_gamma_constant_image_keeps_its_level() -> None:
    out = percentile_gamma(np.full((8, 8), 51, np.uint8))
    assert np.allclose(out, 51 / 255)


@pytest.mark.parametrize(
    "kwargs", [{"low_pct": 50, "high_pct": 10}, {"high_pct": 101}, {"gamma": 0}]
)
def test_percentile_gamma_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        percentile_gamma(GRAY8, **kwargs)


def test_clahe_raises_local_contrast_of_a_low_contrast_image() -> None:
    flat = (100 + RNG.integers(0, 10, size=(64, 64))).astype(np.uint8)
    out = clahe(flat, clip_limit=4.0)
    assert out.std() > to_float01(flat).std()


def test_clahe_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="clip_limit"):
        clahe(GRAY8, clip_limit=0)
    with pytest.raises(ValueError, match="tile_grid"):
        clahe(GRAY8, tile_grid=(0, 8))


def test_histogram_match_takes_the_reference_distribution() -> None:
    dark = RNG.integers(0, 60, size=(64, 64), dtype=np.uint8)
    bright = RNG.integers(150, 256, size=(64, 64), dtype=np.uint8)
    out = histogram_match(dark, bright)
    assert out.mean() == pytest.approx(to_float01(bright).mean(), abs=0.02)


def test_normalize_checks_method_reference_and_params() -> None:
    with pytest.raises(ValueError, match="Unknown normalization method"):
        normalize(GRAY8, "zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reference"):
        normalize(GRAY8, "histogram_match")
    with pytest.raises(ValueError, match="reference"):
        normalize(GRAY8, "clahe", reference=REFERENCE8)
    with pytest.raises(ValueError, match="does not take"):
        normalize(GRAY8, "clahe", gamma=0.5)
    assert np.array_equal(normalize(GRAY8, "clahe", clip_limit=3.0), clahe(GRAY8, clip_limit=3.0))


def test_none_only_scales() -> None:
    assert np.allclose(normalize(GRAY8, "none"), GRAY8 / 255.0)


def test_normalize_rgb_keeps_shape_and_range_and_hue() -> None:
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:, :10] = (200, 40, 40)  # reddish (stiff)
    rgb[:, 10:] = (40, 40, 200)  # bluish (soft)
    rgb = np.clip(rgb.astype(int) + RNG.integers(-20, 20, size=rgb.shape), 0, 255).astype(np.uint8)
    for method in NORMALIZATION_METHODS:
        out = normalize_rgb(rgb, method, **_params(method))
        assert out.shape == (20, 20, 3) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert (out[:, :10, 0] > out[:, :10, 2]).all(), method
        assert (out[:, 10:, 2] > out[:, 10:, 0]).all(), method


def test_normalize_rgb_luma_matches_gray_normalize() -> None:
    rgb = np.stack([GRAY8, GRAY8 // 2 + 40, 255 - GRAY8], axis=2)
    gray = normalize(rgb, "percentile_gamma")
    luma = normalize_rgb(rgb, "percentile_gamma") @ np.array([0.299, 0.587, 0.114])
    inside = (gray > 0.05) & (gray < 0.95)
    assert np.mean(np.abs(luma[inside] - gray[inside])) < 0.03


def test_normalize_rgb_none_only_scales_and_gray_becomes_three_channels() -> None:
    rgb = RNG.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    assert np.allclose(normalize_rgb(rgb, "none"), rgb / 255.0, atol=1e-5)
    out = normalize_rgb(GRAY8, "none")
    assert out.shape == (*GRAY8.shape, 3)
    assert np.allclose(out[..., 0], out[..., 2], atol=1e-6)
