"""How far a model's probabilities can be taken at face value: calibration slope, intercept, Brier.

TRIPOD+AI (Collins et al., BMJ 2024, item 23a) and CLAIM ask for calibration beside
discrimination: an AUC of 0.9 says nothing about whether "70 %" means 70 %. The measures
are the logistic recalibration of Cox (Biometrika 1958) as used by Van Calster et al.
(J Clin Epidemiol 2016, "A calibration hierarchy"):

* **calibration slope**: ``b`` in ``logit P(y=1) = a + b · logit(p)``; 1 is ideal, below 1
  means predictions too extreme (overfitting), above 1 too modest;
* **calibration intercept** (calibration-in-the-large): ``a`` in
  ``logit P(y=1) = a + offset(logit(p))``; 0 is ideal, below 0 means risks overestimated;
* **Brier score**: mean squared error of the probabilities (0 is perfect; a constant
  prediction of the prevalence scores prevalence · (1 − prevalence)).

Both fits are statsmodels GLMs; their Wald 95 % intervals come with them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from numpy.typing import ArrayLike
from sklearn.metrics import brier_score_loss
from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

from core.stats.delong import validate_alpha
from core.stats.metrics import validate_probabilities

PROBABILITY_CLIP = 1e-6
"""Probabilities are clipped to [1e-6, 1 − 1e-6] before the logit: a sigmoid output of
exactly 0 or 1 (float32 saturation) would otherwise give an infinite predictor."""


@dataclass(frozen=True)
class Estimate:
    """A fitted coefficient with its Wald interval; NaN throughout when not estimable."""

    value: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Calibration:
    """Calibration of one model on one set of patients."""

    slope: Estimate
    intercept: Estimate
    brier: float
    n: int
    events: int
    note: str | None
    """Why slope or intercept could not be estimated (e.g. one class only), or None."""


_NOT_ESTIMABLE = Estimate(math.nan, math.nan, math.nan)


def logit(prob: ArrayLike) -> np.ndarray:
    """log(p / (1 − p)) of probabilities clipped away from 0 and 1."""
    p = np.clip(np.asarray(prob, dtype=float), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return np.log(p / (1 - p))


def _fit(y: np.ndarray, exog: np.ndarray, offset: np.ndarray | None, alpha: float) -> Estimate:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        result = sm.GLM(y, exog, family=sm.families.Binomial(), offset=offset).fit()
    index = exog.shape[1] - 1
    lower, upper = result.conf_int(alpha=alpha)[index]
    return Estimate(float(result.params[index]), float(lower), float(upper))


def calibration(y_true: ArrayLike, prob: ArrayLike, alpha: float = 0.05) -> Calibration:
    """Slope and intercept (with Wald CIs) and Brier score of ``prob`` against ``y_true``.

    Slope and intercept need both classes and some spread in the predictions; otherwise
    they are NaN and ``note`` says why (a test set of 20 can hit this). A perfectly
    separating model has no finite slope either, and is reported the same way.
    """
    alpha = validate_alpha(alpha)
    y, p = validate_probabilities(y_true, prob)
    y = y.astype(float)
    events = int(y.sum())
    brier = float(brier_score_loss(y, p))
    note = None
    if events in (0, y.size):
        note = "one outcome class only: slope and intercept are not estimable"
    elif np.ptp(logit(p)) == 0:
        note = "every prediction is the same: the slope is not estimable"
    if note is not None:
        return Calibration(_NOT_ESTIMABLE, _NOT_ESTIMABLE, brier, int(y.size), events, note)
    lp = logit(p)
    try:
        slope = _fit(y, sm.add_constant(lp, has_constant="add"), None, alpha)
        intercept = _fit(y, np.ones((y.size, 1)), lp, alpha)
    except (np.linalg.LinAlgError, PerfectSeparationError, PerfectSeparationWarning):
        note = "the predictions separate the classes perfectly: no finite slope"
        return Calibration(_NOT_ESTIMABLE, _NOT_ESTIMABLE, brier, int(y.size), events, note)
    return Calibration(slope, intercept, brier, int(y.size), events, None)
