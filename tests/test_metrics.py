"""Diagnostic metrics at a threshold, Wilson intervals, Youden threshold and bootstrap CIs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from statsmodels.stats.proportion import proportion_confint

from core.stats.delong import StatisticsInputError, delong_auc_ci
from core.stats.metrics import (
    AucCI,
    Proportion,
    bootstrap_auc_ci,
    bootstrap_metric_ci,
    calibration_curve_points,
    confusion_at,
    diagnostic_metrics,
    format_auc_ci,
    format_pct_ci,
    wilson,
    youden_threshold,
)


def _table1_example() -> tuple[np.ndarray, np.ndarray]:
    """20 test patients, 9 sarcopenic: 8 of 9 positives and 8 of 11 negatives called right.

    These are the counts behind the SWE VGG19 column of Yi et al. Table 1.
    """
    y = np.array([1] * 9 + [0] * 11)
    prob = np.array([0.9, 0.8, 0.85, 0.7, 0.6, 0.95, 0.55, 0.65, 0.3])  # 8 of 9 >= 0.5
    prob = np.concatenate([prob, [0.6, 0.7, 0.51, 0.1, 0.2, 0.3, 0.4, 0.45, 0.05, 0.15, 0.25]])
    return y, prob


def _wilson_by_formula(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927) score interval written out, an independent check of statsmodels."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_table1_counts_give_published_percentages() -> None:
    y, prob = _table1_example()
    m = diagnostic_metrics(y, prob, threshold=0.5)
    assert (m.tp, m.fp, m.tn, m.fn) == (8, 3, 8, 1)
    assert round(100 * m.sensitivity.value, 1) == 88.9
    assert round(100 * m.specificity.value, 1) == 72.7
    assert round(100 * m.ppv.value, 1) == 72.7
    assert round(100 * m.npv.value, 1) == 88.9
    assert round(100 * m.accuracy.value, 1) == 80.0
    assert (m.sensitivity.numerator, m.sensitivity.denominator) == (8, 9)
    assert (m.ppv.numerator, m.ppv.denominator) == (8, 11)


def test_wilson_intervals_match_statsmodels_and_formula() -> None:
    y, prob = _table1_example()
    m = diagnostic_metrics(y, prob)
    for prop in (m.sensitivity, m.specificity, m.ppv, m.npv, m.accuracy):
        expected = proportion_confint(prop.numerator, prop.denominator, method="wilson")
        assert (prop.lower, prop.upper) == pytest.approx(expected, abs=1e-12)
        assert (prop.lower, prop.upper) == pytest.approx(
            _wilson_by_formula(prop.numerator, prop.denominator), abs=1e-9
        )
    assert (m.sensitivity.lower, m.sensitivity.upper) == pytest.approx((0.5650, 0.9801), abs=1e-4)
    assert (m.accuracy.lower, m.accuracy.upper) == pytest.approx((0.5840, 0.9193), abs=1e-4)


def test_likelihood_ratios() -> None:
    y, prob = _table1_example()
    m = diagnostic_metrics(y, prob)
    assert m.lr_positive == pytest.approx((8 / 9) / (1 - 8 / 11))
    assert m.lr_negative == pytest.approx((1 - 8 / 9) / (8 / 11))


def test_auc_is_the_delong_ci() -> None:
    y, prob = _table1_example()
    assert diagnostic_metrics(y, prob).auc == delong_auc_ci(y, prob)


def test_format_pct_ci_for_table() -> None:
    y, prob = _table1_example()
    m = diagnostic_metrics(y, prob)
    assert format_pct_ci(m.sensitivity) == "88.9 (56.5–98.0)"
    assert format_pct_ci(m.accuracy) == "80.0 (58.4–91.9)"
    assert format_pct_ci(wilson(0, 0)) == "n/a"
    assert format_auc_ci(AucCI(0.84, 0.65, 1.0, 0.01)) == "0.84 (0.65–1.00)"
    assert format_auc_ci(AucCI(0.5, math.nan, math.nan, math.nan)) == "0.50 (n/a–n/a)"


def test_probability_equal_to_threshold_is_positive() -> None:
    assert confusion_at([1, 0], [0.5, 0.5], threshold=0.5) == (1, 1, 0, 0)
    assert confusion_at([1, 0], [0.5, 0.5], threshold=0.51) == (0, 0, 1, 1)


def test_no_predicted_positives_gives_undefined_ppv_and_lr() -> None:
    m = diagnostic_metrics([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.05], threshold=0.9)
    assert m.tp == m.fp == 0
    assert math.isnan(m.ppv.value) and math.isnan(m.ppv.lower)
    assert m.ppv.denominator == 0
    assert math.isnan(m.lr_positive)  # 0 / 0
    assert m.lr_negative == pytest.approx(1.0)


def test_perfect_specificity_gives_infinite_lr_positive() -> None:
    m = diagnostic_metrics([1, 1, 0, 0], [0.9, 0.2, 0.3, 0.05])
    assert m.specificity.value == 1.0
    assert m.lr_positive == math.inf
    assert m.lr_negative == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("prob", "threshold", "message"),
    [
        ([0.2, 1.2], 0.5, r"\[0, 1\]"),
        ([0.2, 0.8], 1.5, "threshold"),
        ([0.2, 0.8], float("nan"), "threshold"),
    ],
)
def test_bad_probability_or_threshold_raises(prob: list, threshold: float, message: str) -> None:
    with pytest.raises(StatisticsInputError, match=message):
        diagnostic_metrics([0, 1], prob, threshold=threshold)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(StatisticsInputError, match="numerator"):
        wilson(5, 3)


def test_youden_threshold_maximizes_j_and_is_an_observed_probability() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, size=60)
    prob = np.clip(0.35 * y + rng.random(60) * 0.65, 0, 1)
    t = youden_threshold(y, prob)
    assert t in prob

    def youden_j(threshold: float) -> float:
        tp, fp, tn, fn = confusion_at(y, prob, threshold)
        return tp / (tp + fn) + tn / (tn + fp) - 1

    best = max(youden_j(c) for c in np.unique(prob))
    assert youden_j(t) == pytest.approx(best)
    assert all(youden_j(c) < best for c in np.unique(prob) if c > t)


def test_youden_needs_both_classes() -> None:
    with pytest.raises(StatisticsInputError, match="both classes"):
        youden_threshold([1, 1, 1], [0.2, 0.4, 0.6])


def test_bootstrap_auc_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(11)
    y = np.array([1] * 30 + [0] * 40)
    prob = np.clip(0.25 * y + rng.random(70) * 0.75, 0, 1)
    a = bootstrap_auc_ci(y, prob, n_boot=2000, seed=0)
    assert a == bootstrap_auc_ci(y, prob, n_boot=2000, seed=0)
    assert a != bootstrap_auc_ci(y, prob, n_boot=2000, seed=1)
    assert 0.0 <= a.lower < a.auc < a.upper <= 1.0
    delong = delong_auc_ci(y, prob)
    assert a.auc == delong.auc
    assert a.variance == pytest.approx(delong.variance, rel=0.3)
    assert (a.lower, a.upper) == pytest.approx((delong.lower, delong.upper), abs=0.03)


def test_bootstrap_keeps_class_counts_in_every_replicate() -> None:
    y, prob = _table1_example()
    res = bootstrap_metric_ci(y, prob, lambda yy, _p: float(yy.sum()), n_boot=300)
    assert (res.estimate, res.lower, res.upper, res.n_valid) == (9.0, 9.0, 9.0, 300)


def test_bootstrap_metric_drops_undefined_replicates() -> None:
    y, prob = _table1_example()

    def ppv(yy: np.ndarray, pp: np.ndarray) -> float:
        return diagnostic_metrics(yy, pp).ppv.value

    res = bootstrap_metric_ci(y, prob, ppv, n_boot=200, seed=2)
    assert res.estimate == pytest.approx(8 / 11)
    assert res.lower <= res.estimate <= res.upper
    assert 0 < res.n_valid <= 200


@pytest.mark.parametrize(
    ("y", "n_boot", "message"), [([0, 1, 0, 1], 50, "at least"), ([1, 1], 2000, "both")]
)
def test_bootstrap_rejects_too_few_replicates_or_one_class(
    y: list, n_boot: int, message: str
) -> None:
    with pytest.raises(StatisticsInputError, match=message):
        bootstrap_auc_ci(y, np.linspace(0.1, 0.9, len(y)), n_boot=n_boot)


def test_calibration_points_follow_sklearn() -> None:
    y = np.array([0, 1, 1, 1, 0, 0])
    prob = np.array([0.1, 0.1, 0.9, 0.9, 0.2, 0.3])
    frac_pos, mean_pred = calibration_curve_points(y, prob, n_bins=2)
    assert frac_pos == pytest.approx([0.25, 1.0])
    assert mean_pred == pytest.approx([0.175, 0.9])
    expected = calibration_curve(y, prob, n_bins=2)
    assert np.allclose(frac_pos, expected[0]) and np.allclose(mean_pred, expected[1])


def test_proportion_is_frozen() -> None:
    p = wilson(1, 2)
    assert isinstance(p, Proportion)
    with pytest.raises(AttributeError):
        p.value = 0.9  # type: ignore[misc]
