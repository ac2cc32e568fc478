"""Diagnostic-accuracy metrics for a binary model at one threshold, with confidence intervals.

Yi et al. (Sci Rep 2022, Table 1) report accuracy, sensitivity, specificity, PPV, NPV,
likelihood ratios and ROC AUC on 20 test patients, without intervals. With so few patients an
interval is most of the message, so every proportion here carries a Wilson 95% CI (which,
unlike the Wald interval, stays inside [0, 1] and behaves at 0/n and n/n) and the AUC a
DeLong CI (core.stats.delong).

Conventions: label 1 is the positive class (sarcopenia, or high echogenicity), ``prob`` is the
model's probability of the positive class, and a patient is predicted positive when
``prob >= threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve
from statsmodels.stats.proportion import proportion_confint

from core.stats.delong import (
    AucCI,
    StatisticsInputError,
    delong_auc_ci,
    validate_alpha,
    validate_binary_scores,
)

MIN_BOOTSTRAP = 200
"""Fewest bootstrap replicates accepted: fewer make the 2.5th/97.5th percentiles noise."""
_BOOTSTRAP_CHUNK_CELLS = 2_000_000
"""Resampled scores held in memory at once while bootstrapping (about 16 MB of floats)."""


@dataclass(frozen=True)
class Proportion:
    """``numerator / denominator`` with its Wilson interval; all NaN when the denominator is 0."""

    value: float
    lower: float
    upper: float
    numerator: int
    denominator: int


@dataclass(frozen=True)
class DiagnosticMetrics:
    """Everything Table 1 of Yi et al. reports for one model, plus intervals.

    ``lr_positive`` = sensitivity / (1 − specificity) and ``lr_negative`` = (1 − sensitivity) /
    specificity. A zero denominator gives ``inf`` when the numerator is positive (a perfect
    rule-in or rule-out) and NaN when the numerator is zero too (0/0, undefined).
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    accuracy: Proportion
    lr_positive: float
    lr_negative: float
    auc: AucCI


@dataclass(frozen=True)
class BootstrapCI:
    """A statistic on the original data with a percentile bootstrap interval.

    ``n_valid`` counts the replicates where the statistic was defined (not NaN); only those
    enter the percentiles.
    """

    estimate: float
    lower: float
    upper: float
    n_valid: int


def validate_probabilities(y_true: ArrayLike, prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels and probabilities in [0, 1] of the same patients, or a StatisticsInputError."""
    y, p = validate_binary_scores(y_true, prob, name="probabilities")
    if (p < 0.0).any() or (p > 1.0).any():
        raise StatisticsInputError(
            "Probabilities must lie in [0, 1]; found values from "
            f"{p.min():.4g} to {p.max():.4g}. Pass the model's sigmoid output."
        )
    return y, p


def _validate_threshold(threshold: float) -> float:
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise StatisticsInputError(
            f"The decision threshold must be a probability in [0, 1], got {threshold!r}."
        )
    return float(threshold)


def wilson(numerator: int, denominator: int, alpha: float = 0.05) -> Proportion:
    """A proportion with its Wilson score interval (statsmodels); NaN throughout for 0/0."""
    alpha = validate_alpha(alpha)
    if denominator < 0 or not 0 <= numerator <= max(denominator, 0):
        raise StatisticsInputError(
            f"A proportion needs 0 ≤ numerator ≤ denominator, got {numerator}/{denominator}."
        )
    if denominator == 0:
        return Proportion(math.nan, math.nan, math.nan, int(numerator), 0)
    lower, upper = proportion_confint(numerator, denominator, alpha=alpha, method="wilson")
    return Proportion(
        value=numerator / denominator,
        lower=float(lower),
        upper=float(upper),
        numerator=int(numerator),
        denominator=int(denominator),
    )


def _ratio(numerator: float, denominator: float) -> float:
    if math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    if denominator == 0.0:
        return math.inf if numerator > 0.0 else math.nan
    return numerator / denominator


def confusion_at(
    y_true: ArrayLike, prob: ArrayLike, threshold: float = 0.5
) -> tuple[int, int, int, int]:
    """``(tp, fp, tn, fn)`` when patients with ``prob >= threshold`` are called positive."""
    y, p = validate_probabilities(y_true, prob)
    threshold = _validate_threshold(threshold)
    pred = p >= threshold
    truth = y == 1
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    tn = int(np.sum(~pred & ~truth))
    fn = int(np.sum(~pred & truth))
    return tp, fp, tn, fn


def diagnostic_metrics(
    y_true: ArrayLike, prob: ArrayLike, threshold: float = 0.5, alpha: float = 0.05
) -> DiagnosticMetrics:
    """Sensitivity, specificity, PPV, NPV, accuracy (Wilson CIs), LR+ / LR− and DeLong AUC.

    Both classes must be present (the AUC and sensitivity/specificity need them). PPV or NPV
    is NaN when no patient is predicted positive or negative respectively.
    """
    y, p = validate_probabilities(y_true, prob)
    tp, fp, tn, fn = confusion_at(y, p, threshold)
    auc = delong_auc_ci(y, p, alpha=alpha)
    sens = wilson(tp, tp + fn, alpha)
    spec = wilson(tn, tn + fp, alpha)
    return DiagnosticMetrics(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=sens,
        specificity=spec,
        ppv=wilson(tp, tp + fp, alpha),
        npv=wilson(tn, tn + fn, alpha),
        accuracy=wilson(tp + tn, tp + fp + tn + fn, alpha),
        lr_positive=_ratio(sens.value, 1.0 - spec.value),
        lr_negative=_ratio(1.0 - sens.value, spec.value),
        auc=auc,
    )


def youden_threshold(y_true_val: ArrayLike, prob_val: ArrayLike) -> float:
    """The threshold maximizing Youden's J = sensitivity + specificity − 1 on VALIDATION data.

    Never pass test-set predictions: a threshold tuned on the test set makes every test metric
    optimistic. The result is one of the observed probabilities, so ``prob >= threshold``
    reproduces the chosen ROC point exactly; among equal J the highest threshold (the more
    specific rule) wins.
    """
    y, p = validate_probabilities(y_true_val, prob_val)
    if y.min() == y.max():
        raise StatisticsInputError(
            "Youden's threshold needs validation patients of both classes; only one is present."
        )
    fpr, tpr, thresholds = roc_curve(y, p, pos_label=1)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])


def _stratified_index_chunks(
    y: np.ndarray, n_boot: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Bootstrap index arrays (positives, negatives), drawn within each class separately.

    Resampling the classes separately keeps every replicate's case mix equal to the
    original's, so no replicate lacks a class (a plain bootstrap of 9 + 11 patients would).
    """
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    per_chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // y.size)
    done = 0
    while done < n_boot:
        b = min(per_chunk, n_boot - done)
        yield (
            pos[rng.integers(0, pos.size, size=(b, pos.size))],
            neg[rng.integers(0, neg.size, size=(b, neg.size))],
        )
        done += b


def _validate_bootstrap(y: np.ndarray, n_boot: int, alpha: float) -> None:
    validate_alpha(alpha)
    if n_boot < MIN_BOOTSTRAP:
        raise StatisticsInputError(
            f"Use at least {MIN_BOOTSTRAP} bootstrap replicates (2000 is usual), got {n_boot}."
        )
    if y.min() == y.max():
        raise StatisticsInputError(
            "A stratified bootstrap needs patients of both classes; only one is present."
        )


def bootstrap_auc_ci(
    y_true: ArrayLike, prob: ArrayLike, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> AucCI:
    """AUC with a stratified, seeded percentile bootstrap interval.

    A cross-check on the DeLong interval for small test sets. ``variance`` is the variance of
    the bootstrap AUCs. The same seed always gives the same interval.
    """
    y, p = validate_binary_scores(y_true, prob)
    _validate_bootstrap(y, n_boot, alpha)
    m = int(y.sum())
    n = y.size - m
    aucs = []
    for pos_idx, neg_idx in _stratified_index_chunks(y, n_boot, seed):
        ranks = rankdata(np.concatenate([p[pos_idx], p[neg_idx]], axis=1), axis=1)
        aucs.append((ranks[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n))
    boot = np.concatenate(aucs)
    point = delong_auc_ci(y, p, alpha=alpha).auc
    lower, upper = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return AucCI(auc=point, lower=float(lower), upper=float(upper), variance=float(np.var(boot)))


def bootstrap_metric_ci(
    y_true: ArrayLike,
    prob: ArrayLike,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapCI:
    """Any ``metric(y, prob) -> float`` with a stratified, seeded percentile bootstrap interval.

    For statistics without a closed-form interval, e.g. the accuracy difference between two
    thresholds. Replicates where the metric is NaN are left out and counted in ``n_valid``.
    """
    y, p = validate_probabilities(y_true, prob)
    _validate_bootstrap(y, n_boot, alpha)
    values = [
        float(metric(y[idx], p[idx]))
        for pos_idx, neg_idx in _stratified_index_chunks(y, n_boot, seed)
        for idx in np.concatenate([pos_idx, neg_idx], axis=1)
    ]
    boot = np.asarray(values)
    boot = boot[~np.isnan(boot)]
    estimate = float(metric(y, p))
    if boot.size == 0:
        return BootstrapCI(estimate, math.nan, math.nan, 0)
    lower, upper = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapCI(estimate, float(lower), float(upper), int(boot.size))


def calibration_curve_points(
    y_true: ArrayLike,
    prob: ArrayLike,
    n_bins: int = 5,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> tuple[np.ndarray, np.ndarray]:
    """``(fraction_positive, mean_predicted)`` per non-empty bin, in scikit-learn's order.

    Plot ``mean_predicted`` on x and ``fraction_positive`` on y; points on the diagonal are
    well calibrated. Five bins suit a 20-patient test set; empty bins are dropped.
    """
    y, p = validate_probabilities(y_true, prob)
    if n_bins < 1:
        raise StatisticsInputError(f"n_bins must be at least 1, got {n_bins}.")
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=n_bins, strategy=strategy, pos_label=1)
    return frac_pos, mean_pred


def format_pct_ci(p: Proportion, digits: int = 1) -> str:
    """``"88.9 (56.5–98.0)"``: a proportion and its CI in percent, as plain text for tables."""
    if math.isnan(p.value):
        return "n/a"
    return f"{100 * p.value:.{digits}f} ({100 * p.lower:.{digits}f}–{100 * p.upper:.{digits}f})"


def format_auc_ci(ci: AucCI, digits: int = 2) -> str:
    """``"0.84 (0.65–1.00)"``: an AUC and its CI as plain text; "n/a" bounds when undefined."""
    lower = "n/a" if math.isnan(ci.lower) else f"{ci.lower:.{digits}f}"
    upper = "n/a" if math.isnan(ci.upper) else f"{ci.upper:.{digits}f}"
    return f"{ci.auc:.{digits}f} ({lower}–{upper})"
