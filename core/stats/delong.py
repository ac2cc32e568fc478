"""DeLong confidence intervals and paired tests for ROC AUC.

Yi et al. (Sci Rep 2022) report AUCs without confidence intervals and compare architectures
by point estimates only; this project adds DeLong CIs and paired DeLong tests between models
scored on the same test patients. No maintained Python library implements DeLong, so this
module follows the fast midrank algorithm of Sun & Xu (IEEE Signal Processing Letters
2014;21(11):1389–1393) and is checked against the published pROC results on its ``aSAH``
example data (tests/test_delong.py).

Conventions (those of pROC with ``direction = "<"``): label 1 is the positive class (the
"cases"), label 0 the negative class ("controls"), and higher scores mean "more likely
positive". The direction is never flipped automatically, so a model worse than chance keeps an
AUC below 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm, rankdata


class StatisticsInputError(ValueError):
    """Labels, scores or options that a statistic cannot be computed from."""


@dataclass(frozen=True)
class AucCI:
    """An AUC with its confidence interval and the variance the interval came from."""

    auc: float
    lower: float
    upper: float
    variance: float


@dataclass(frozen=True)
class DeLongTest:
    """Paired DeLong comparison of two AUCs on the same patients; difference is auc1 − auc2."""

    auc1: float
    auc2: float
    difference: float
    lower: float
    upper: float
    z: float
    p_value: float


def validate_alpha(alpha: float) -> float:
    """The two-sided error rate of an interval, which must lie strictly between 0 and 1."""
    if not 0.0 < alpha < 1.0:
        raise StatisticsInputError(
            f"alpha must be between 0 and 1 (0.05 gives a 95% interval), got {alpha!r}."
        )
    return float(alpha)


def validate_binary_scores(
    y_true: ArrayLike, scores: ArrayLike, name: str = "scores"
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(labels as int 0/1, scores as float)`` or raise a StatisticsInputError.

    Labels must already be 0/1 (or booleans) so that which class counts as positive is always
    an explicit decision of the caller, never a guess from sorted string names.
    """
    y = np.asarray(y_true)
    try:
        s = np.asarray(scores, dtype=float)
    except (TypeError, ValueError) as exc:
        raise StatisticsInputError(f"{name} must be numbers: {exc}.") from exc
    if y.ndim != 1 or y.size == 0:
        raise StatisticsInputError(f"Labels must be a non-empty 1-D sequence, got shape {y.shape}.")
    if s.ndim != 1:
        raise StatisticsInputError(f"{name} must be a 1-D sequence of numbers.")
    if s.shape != y.shape:
        raise StatisticsInputError(
            f"Got {y.size} labels but {s.size} {name}; give one score per patient."
        )
    if y.dtype == bool:
        y = y.astype(int)
    elif not np.issubdtype(y.dtype, np.number) or not np.isin(y, (0, 1)).all():
        raise StatisticsInputError(
            "Labels must be 0/1 (1 = positive class, e.g. sarcopenia); "
            f"found values {np.unique(y).tolist()[:5]}. Convert them first."
        )
    if not np.isfinite(s).all():
        raise StatisticsInputError(
            f"{name} contain NaN or infinite values; remove or fix those patients first."
        )
    return y.astype(int), s


def _class_counts(y: np.ndarray) -> tuple[int, int]:
    """Numbers of positives and negatives; both classes are needed for an AUC."""
    m = int(y.sum())
    n = int(y.size - m)
    if m == 0 or n == 0:
        present = "positive" if m else "negative"
        raise StatisticsInputError(
            f"Only {present} patients are present ({y.size} in all); an AUC needs both "
            "positive and negative patients."
        )
    return m, n


def _fast_delong(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for k score rows (Sun & Xu 2014).

    ``scores`` has shape (k, N). Midranks (average ranks of ties) over the positives, the
    negatives and all patients give every patient's placement value in O(N log N); the sample
    covariances of those placements (denominator m − 1 and n − 1, as in pROC) give the
    covariance of the AUCs.
    """
    pos = scores[:, y == 1]
    neg = scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = rankdata(pos, axis=1)
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v_pos = (tz[:, :m] - tx) / n
    v_neg = 1.0 - (tz[:, m:] - ty) / m
    if m < 2 or n < 2:
        return aucs, np.full((scores.shape[0], scores.shape[0]), np.nan)
    cov = np.atleast_2d(np.cov(v_pos)) / m + np.atleast_2d(np.cov(v_neg)) / n
    return aucs, cov


def _z_score(diff: float, sd: float) -> float:
    """diff / sd, with 0/0 read as "no difference" (z = 0) rather than NaN."""
    if sd > 0.0:
        return diff / sd
    return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)


def delong_auc_ci(y_true: ArrayLike, scores: ArrayLike, alpha: float = 0.05) -> AucCI:
    """AUC with a DeLong (1 − alpha) confidence interval, clipped to [0, 1] as pROC does.

    With a single positive or a single negative patient the variance is undefined; the AUC is
    returned with NaN bounds and variance (pROC returns NA there too).
    """
    alpha = validate_alpha(alpha)
    y, s = validate_binary_scores(y_true, scores)
    _class_counts(y)
    aucs, cov = _fast_delong(s[np.newaxis, :], y)
    auc, var = float(aucs[0]), float(cov[0, 0])
    half = float(norm.isf(alpha / 2.0) * np.sqrt(var))
    lower = float(np.clip(auc - half, 0.0, 1.0))
    upper = float(np.clip(auc + half, 0.0, 1.0))
    return AucCI(auc=auc, lower=lower, upper=upper, variance=var)


def delong_test(
    y_true: ArrayLike,
    scores1: Sequence[float] | np.ndarray,
    scores2: Sequence[float] | np.ndarray,
    alpha: float = 0.05,
) -> DeLongTest:
    """Paired two-sided DeLong test of AUC1 = AUC2 for two models scored on the same patients.

    The difference is ``auc1 − auc2`` with a (1 − alpha) normal interval, as pROC's
    ``roc.test(roc1, roc2, method = "delong", paired = TRUE)``. Two identical AUCs with zero
    variance of their difference give z = 0 and p = 1 instead of 0/0.
    """
    alpha = validate_alpha(alpha)
    y, s1 = validate_binary_scores(y_true, scores1, name="scores1")
    _, s2 = validate_binary_scores(y_true, scores2, name="scores2")
    m, n = _class_counts(y)
    if m < 2 or n < 2:
        raise StatisticsInputError(
            f"A DeLong test needs at least 2 positive and 2 negative patients; got {m} "
            f"positive and {n} negative."
        )
    aucs, cov = _fast_delong(np.vstack([s1, s2]), y)
    diff = float(aucs[0] - aucs[1])
    contrast = np.array([1.0, -1.0])
    sd = float(np.sqrt(max(contrast @ cov @ contrast, 0.0)))
    z = _z_score(diff, sd)
    half = float(norm.isf(alpha / 2.0)) * sd
    return DeLongTest(
        auc1=float(aucs[0]),
        auc2=float(aucs[1]),
        difference=diff,
        lower=diff - half,
        upper=diff + half,
        z=z,
        p_value=float(2.0 * norm.sf(abs(z))),
    )
