"""Decision-curve analysis: is acting on the model better than treating everyone or no one?

Vickers & Elkin (Med Decis Making 2006) define the net benefit of acting on a prediction
at threshold probability ``pt`` as

    NB(pt) = TP/n − FP/n · pt / (1 − pt),

where a patient is positive when ``p ≥ pt``; the weight ``pt/(1−pt)`` is the odds at which
a clinician is indifferent between a false positive and a missed case. "Treat all" scores
``prevalence − (1 − prevalence) · pt / (1 − pt)`` and "treat none" 0. TRIPOD+AI item 23b
asks for this where a model is meant to change decisions (here: who is referred for CT or
for a sarcopenia work-up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from core.stats.delong import StatisticsInputError
from core.stats.metrics import validate_probabilities

DEFAULT_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
"""5 % to 95 % in 5 % steps: the range Vickers et al. recommend plotting."""


@dataclass(frozen=True)
class NetBenefit:
    """Net benefit of the model, of treating all and of treating none, per threshold."""

    thresholds: np.ndarray
    model: np.ndarray
    treat_all: np.ndarray
    treat_none: np.ndarray

    def frame(self) -> pd.DataFrame:
        """One row per threshold, for a CSV table or a plot."""
        return pd.DataFrame(
            {
                "threshold": self.thresholds,
                "net_benefit_model": self.model,
                "net_benefit_treat_all": self.treat_all,
                "net_benefit_treat_none": self.treat_none,
            }
        )


def net_benefit(
    y_true: ArrayLike, prob: ArrayLike, thresholds: ArrayLike = DEFAULT_THRESHOLDS
) -> NetBenefit:
    """Net benefit curves of ``prob`` against ``y_true`` over ``thresholds`` in (0, 1)."""
    y, p = validate_probabilities(y_true, prob)
    pt = np.asarray(thresholds, dtype=float).ravel()
    if pt.size == 0 or pt.min() <= 0 or pt.max() >= 1:
        raise StatisticsInputError("thresholds must lie strictly between 0 and 1.")
    n = y.size
    positive = p[None, :] >= pt[:, None]
    tp = (positive & (y[None, :] == 1)).sum(axis=1)
    fp = (positive & (y[None, :] == 0)).sum(axis=1)
    odds = pt / (1 - pt)
    prevalence = y.mean()
    return NetBenefit(
        thresholds=pt,
        model=tp / n - fp / n * odds,
        treat_all=prevalence - (1 - prevalence) * odds,
        treat_none=np.zeros_like(pt),
    )
