"""Calibration, decision curves and standardized differences for the study report.

Each statistic is checked against a second implementation or a worked example: the
calibration slope against scikit-learn's unpenalized logistic regression, the intercept
against a root of its score equation solved with SciPy, net benefit against hand-computed
values, standardized differences against their formulas worked by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from core.stats import standardized_difference as smd
from core.stats.calibration import calibration, logit
from core.stats.decision_curve import net_benefit
from core.stats.delong import StatisticsInputError


def _simulated(n: int, spread: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn from true risks, and predictions ``spread`` times too extreme."""
    rng = np.random.default_rng(seed)
    true_lp = rng.normal(-0.5, 1.2, n)
    y = (rng.random(n) < expit(true_lp)).astype(int)
    return y, expit(spread * true_lp)


def test_slope_matches_unpenalized_logistic_regression() -> None:
    y, p = _simulated(400, 2.0)
    found = calibration(y, p)
    reference = LogisticRegression(C=np.inf).fit(logit(p)[:, None], y)
    assert found.slope.value == pytest.approx(reference.coef_[0, 0], rel=1e-4)
    assert found.slope.lower < found.slope.value < found.slope.upper


def test_overconfident_predictions_have_a_slope_near_one_half() -> None:
    y, p = _simulated(4000, 2.0)
    slope = calibration(y, p).slope
    assert slope.lower < 0.5 < slope.upper


def test_intercept_solves_its_score_equation() -> None:
    y, p = _simulated(400, 1.0)
    p = np.clip(p * 1.3, 0, 1)  # risks overestimated: the intercept must be negative
    lp = logit(p)
    root = brentq(lambda a: float(np.sum(y - expit(a + lp))), -10, 10, xtol=1e-12)
    found = calibration(y, p).intercept
    assert found.value == pytest.approx(root, abs=1e-6)
    assert found.value < 0


def test_brier_score_by_hand() -> None:
    found = calibration([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.5])
    assert found.brier == pytest.approx((0.01 + 0.04 + 0.16 + 0.25) / 4)


@pytest.mark.parametrize(
    ("y", "p", "reason"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.7], "one outcome class"),
        ([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3], "same"),
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], "separate"),
    ],
)
def test_not_estimable_says_why(y: list[int], p: list[float], reason: str) -> None:
    found = calibration(y, p)
    assert math.isnan(found.slope.value) and math.isnan(found.intercept.value)
    assert found.note is not None and reason in found.note
    assert math.isfinite(found.brier)


def test_net_benefit_worked_example() -> None:
    y = [1, 1, 0, 0, 0]
    p = [0.9, 0.4, 0.6, 0.2, 0.1]
    curve = net_benefit(y, p, thresholds=[0.3, 0.5])
    # pt 0.3: TP 2 (0.9, 0.4), FP 1 (0.6): 2/5 − 1/5 · 0.3/0.7; pt 0.5: TP 1, FP 1: 1/5 − 1/5
    np.testing.assert_allclose(curve.model, [0.4 - 0.2 * 0.3 / 0.7, 0.0])
    np.testing.assert_allclose(curve.treat_all, [0.4 - 0.6 * 0.3 / 0.7, 0.4 - 0.6])
    np.testing.assert_array_equal(curve.treat_none, [0.0, 0.0])
    assert list(curve.frame().columns) == [
        "threshold",
        "net_benefit_model",
        "net_benefit_treat_all",
        "net_benefit_treat_none",
    ]


def test_a_perfect_model_gains_the_prevalence() -> None:
    y = np.array([1, 0, 1, 0, 0, 0])
    curve = net_benefit(y, y * 0.98 + 0.01)
    np.testing.assert_allclose(curve.model, y.mean())


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(StatisticsInputError, match="between 0 and 1"):
        net_benefit([0, 1], [0.2, 0.8], thresholds=[0.0, 0.5])
    with pytest.raises(StatisticsInputError, match="Labels must be 0/1"):
        calibration([0, 2], [0.2, 0.8])
    with pytest.raises(StatisticsInputError, match="Probabilities must lie"):
        calibration([0, 1], [0.2, 1.8])


def test_standardized_differences_by_hand() -> None:
    # means 2 and 4, sample variances 1 and 4: (2 − 4) / sqrt(2.5)
    assert smd.continuous([1, 2, 3], [2, 4, 6]) == pytest.approx(-2 / math.sqrt(2.5))
    # 0.5 vs 0.25: 0.25 / sqrt((0.25 + 0.1875) / 2)
    assert smd.binary([1, 0, 1, 0], [1, 0, 0, 0]) == pytest.approx(0.25 / math.sqrt(0.21875))
    assert math.isnan(smd.continuous([1], [2, 3]))
    assert math.isnan(smd.binary([1, 1], [1, 1]))
