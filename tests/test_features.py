"""Echo intensity, GLCM texture and the radiomics-style baseline."""

from __future__ import annotations

import numpy as np
import pytest

from core.learning.features import (
    ECHO_PERCENTILES,
    GLCM_PROPS,
    echo_intensity,
    feature_vector,
    fit_baseline,
    glcm_features,
)

RNG = np.random.default_rng(11)
NOISE = RNG.integers(0, 256, size=(48, 48), dtype=np.uint8)
# smooth vertical stripes: full gray range, period 32 px
STRIPES = np.repeat(
    np.round(127.5 + 127.5 * np.sin(2 * np.pi * np.arange(48) / 32)).astype(np.uint8)[None, :],
    48,
    axis=0,
)


def test_echo_intensity_of_a_constant_image() -> None:
    ei = echo_intensity(np.full((20, 30), 93, np.uint8))
    assert ei["echo_mean"] == pytest.approx(93.0, abs=1e-4)
    assert ei["echo_sd"] == pytest.approx(0.0, abs=1e-4)
    for p in ECHO_PERCENTILES:
        assert ei[f"echo_p{p}"] == pytest.approx(93.0, abs=1e-4)


def test_echo_intensity_is_in_0_255_units_for_16_bit_input() -> None:
    eight = RNG.integers(0, 256, size=(30, 30), dtype=np.uint8)
    a = echo_intensity(eight)
    b = echo_intensity(eight.astype(np.uint16) * 257)
    assert a["echo_mean"] == pytest.approx(float(eight.mean()), abs=1e-3)
    assert a["echo_sd"] == pytest.approx(float(eight.std()), abs=1e-3)
    assert a["echo_p50"] == pytest.approx(float(np.median(eight)), abs=1e-3)
    for key, value in a.items():
        assert b[key] == pytest.approx(value, abs=1e-3), key


def test_echo_percentiles_are_ordered() -> None:
    ei = echo_intensity(NOISE)
    values = [ei[f"echo_p{p}"] for p in ECHO_PERCENTILES]
    assert values == sorted(values) and values[0] < values[-1]


def test_glcm_keys_and_finiteness() -> None:
    feats = glcm_features(NOISE, distances=(1, 3))
    expected = {f"glcm_{p.lower()}_d{d}" for p in GLCM_PROPS for d in (1, 3)}
    assert set(feats) == expected
    assert all(np.isfinite(v) for v in feats.values())


def test_glcm_noise_has_more_contrast_and_less_homogeneity_than_stripes() -> None:
    noise, stripes = glcm_features(NOISE), glcm_features(STRIPES)
    for d in (1, 2, 4):
        assert noise[f"glcm_contrast_d{d}"] > stripes[f"glcm_contrast_d{d}"]
        assert noise[f"glcm_homogeneity_d{d}"] < stripes[f"glcm_homogeneity_d{d}"]
        assert noise[f"glcm_correlation_d{d}"] < stripes[f"glcm_correlation_d{d}"]


def test_glcm_stripe_contrast_grows_with_distance() -> None:
    feats = glcm_features(STRIPES)
    assert feats["glcm_contrast_d1"] < feats["glcm_contrast_d2"] < feats["glcm_contrast_d4"]


def test_glcm_constant_image_is_not_nan() -> None:
    feats = glcm_features(np.full((16, 16), 40, np.uint8))
    assert feats["glcm_contrast_d1"] == 0.0
    assert feats["glcm_asm_d1"] == pytest.approx(1.0)
    assert all(np.isfinite(v) for v in feats.values())


def test_glcm_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="levels"):
        glcm_features(NOISE, levels=1)
    with pytest.raises(ValueError, match="distances"):
        glcm_features(NOISE, distances=(0,))
    with pytest.raises(ValueError, match="too small"):
        glcm_features(NOISE[:4, :4], distances=(4,))


def test_feature_vector_adds_prefixed_swe_stats() -> None:
    base = feature_vector(NOISE, None)
    assert set(base) == set(echo_intensity(NOISE)) | set(glcm_features(NOISE))
    full = feature_vector(NOISE, {"mean_kpa": 21.5, "swe_sd_kpa": 3.0})
    assert full["swe_mean_kpa"] == 21.5 and full["swe_sd_kpa"] == 3.0
    assert len(full) == len(base) + 2
    with pytest.raises(ValueError, match="mean_kpa"):
        feature_vector(NOISE, {"mean_kpa": float("nan")})


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    X = rng.normal(size=(n, 5))
    X[:, 0] += 3.0 * y
    X[:, 1] -= 2.0 * y
    return X, y


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_baseline_learns_a_separable_dataset(kind: str) -> None:
    X_train, y_train = _separable(200, 0)
    X_test, y_test = _separable(100, 1)
    names = [f"x{i}" for i in range(5)]
    result = fit_baseline(X_train, y_train, X_test, y_test, kind=kind, feature_names=names)
    assert result.auc_test > 0.9
    assert result.feature_names == names
    assert result.p_test.shape == y_test.shape
    assert np.array_equal(result.y_test, y_test)
    assert np.allclose(result.model.predict_proba(X_test)[:, 1], result.p_test)


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_baseline_on_random_labels_is_near_chance(kind: str) -> None:
    rng = np.random.default_rng(5)
    X_train, X_test = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    y_train, y_test = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    result = fit_baseline(X_train, y_train, X_test, y_test, kind=kind)
    assert 0.4 < result.auc_test < 0.6
    assert result.feature_names == [f"f{i}" for i in range(5)]


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_baseline_is_deterministic_with_a_seed(kind: str) -> None:
    X_train, y_train = _separable(120, 2)
    X_test, y_test = _separable(60, 3)
    a = fit_baseline(X_train, y_train, X_test, y_test, kind=kind, seed=4)
    b = fit_baseline(X_train, y_train, X_test, y_test, kind=kind, seed=4)
    assert np.array_equal(a.p_test, b.p_test) and a.auc_test == b.auc_test


def test_mlp_seed_changes_the_fit() -> None:
    X_train, y_train = _separable(120, 2)
    X_test, y_test = _separable(60, 3)
    a = fit_baseline(X_train, y_train, X_test, y_test, kind="mlp", seed=4)
    b = fit_baseline(X_train, y_train, X_test, y_test, kind="mlp", seed=5)
    assert not np.allclose(a.p_test, b.p_test)


def test_baseline_rejects_bad_input() -> None:
    X, y = _separable(40, 0)
    with pytest.raises(ValueError, match="one class"):
        fit_baseline(X, y, X, np.zeros(40, int), kind="logistic")
    with pytest.raises(ValueError, match="NaN"):
        fit_baseline(np.where(X > 2, np.nan, X), y, X, y, kind="logistic")
    with pytest.raises(ValueError, match="features"):
        fit_baseline(X, y, X[:, :3], y, kind="logistic")
    with pytest.raises(ValueError, match="0 and 1"):
        fit_baseline(X, y * 2, X, y, kind="logistic")
    with pytest.raises(ValueError, match="kind"):
        fit_baseline(X, y, X, y, kind="svm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="feature names"):
        fit_baseline(X, y, X, y, kind="logistic", feature_names=["a"])
