"""Table 1's cells: metrics with their intervals per column, thresholds, paired DeLong tests.

Cells read "88.9 (56.5–98.0)" (Wilson for proportions, DeLong for the AUC); the paper's own
figures (``PAPER_TABLE1``) sit beside them, labelled as the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
import pandas as pd

from core.report.table1.scores import RunScores, run_scores
from core.stats.delong import StatisticsInputError, delong_test
from core.stats.metrics import (
    DiagnosticMetrics,
    diagnostic_metrics,
    format_auc_ci,
    format_pct_ci,
    youden_threshold,
)
from db.engine import Database

ThresholdRule = Literal["0.5", "youden"] | float
THRESHOLD_RULES: Final = ("0.5", "youden")
ROWS: Final = ("AUC", "Sensitivity", "Specificity", "PPV", "NPV", "Accuracy")
"""Table 1's rows, in the paper's order."""
DETAIL_ROWS: Final = ("n (positive)", "Threshold", "TP / FP / TN / FN", "LR+", "LR−")
PAPER_SOURCE: Final = (
    "Yi et al., Sci Rep 2022, Table 1: sarcopenia, test set of 20 patients (9 sarcopenic), "
    "no confidence intervals reported."
)
PAPER_TABLE1: Final = pd.DataFrame(
    {
        "GSU VGG19 (paper)": ["0.77", "77.8", "72.7", "70.0", "80.0", "75.0"],
        "GSU ResNet50 (paper)": ["0.76", "88.9", "63.6", "66.7", "87.5", "75.0"],
        "GSU DenseNet121 (paper)": ["0.67", "66.7", "63.6", "60.0", "70.0", "65.0"],
        "SWE VGG19 (paper)": ["0.84", "88.9", "72.7", "72.7", "88.9", "80.0"],
        "SWE ResNet50 (paper)": ["0.74", "77.8", "72.7", "70.0", "80.0", "75.0"],
        "SWE DenseNet121 (paper)": ["0.76", "66.7", "72.7", "66.7", "72.7", "70.0"],
    },
    index=pd.Index(ROWS, name="metric"),
)
"""The study's published figures (percent, AUC as a fraction), labelled as the paper's."""
PAPER_TABLE1.attrs["source"] = PAPER_SOURCE


def resolve_threshold(scores: RunScores, threshold: ThresholdRule = "0.5") -> float:
    """The decision threshold for ``scores``: 0.5, a given probability, or Youden on validation.

    Youden's J is maximised on the validation predictions only: a threshold tuned on the test
    set would flatter every test metric.
    """
    if threshold == "0.5":
        return 0.5
    if threshold == "youden":
        if scores.val_y is None or scores.val_prob is None:
            raise StatisticsInputError(
                f"{scores.label} has no validation predictions, so Youden's threshold cannot "
                "be chosen; use the 0.5 threshold."
            )
        return youden_threshold(scores.val_y, scores.val_prob)
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        value = float(threshold)
        if math.isfinite(value) and 0.0 <= value <= 1.0:
            return value
    raise ValueError(
        f"threshold must be '0.5', 'youden' or a probability in [0, 1]; got {threshold!r}."
    )


def scores_metrics(scores: RunScores, threshold: ThresholdRule = "0.5") -> DiagnosticMetrics:
    return diagnostic_metrics(scores.y, scores.prob, resolve_threshold(scores, threshold))


def run_metrics(
    db: Database, run_id: int, subset: str = "test", threshold: ThresholdRule = "0.5"
) -> DiagnosticMetrics:
    """Table 1's metrics of one run on ``subset`` (Youden chosen on validation, never test)."""
    return scores_metrics(run_scores(db, run_id, subset), threshold)


def _ratio_text(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "∞" if math.isinf(value) else f"{value:.2f}"


def _column(scores: RunScores, threshold: ThresholdRule, details: bool) -> tuple[list[str], str]:
    """Cells of one column and a note when the threshold fell back to 0.5."""
    note = ""
    rule = threshold
    if threshold == "youden" and scores.val_y is None:
        rule = "0.5"
        note = f"{scores.label}: no validation set, so the 0.5 threshold is used."
    try:
        m = scores_metrics(scores, rule)
    except StatisticsInputError as exc:
        return ["n/a"] * (
            len(ROWS) + (len(DETAIL_ROWS) if details else 0)
        ), f"{scores.label}: {exc}"
    cells = [
        format_auc_ci(m.auc),
        format_pct_ci(m.sensitivity),
        format_pct_ci(m.specificity),
        format_pct_ci(m.ppv),
        format_pct_ci(m.npv),
        format_pct_ci(m.accuracy),
    ]
    if details:
        cells += [
            f"{len(scores.y)} ({int(scores.y.sum())})",
            f"{m.threshold:.3f}",
            f"{m.tp} / {m.fp} / {m.tn} / {m.fn}",
            _ratio_text(m.lr_positive),
            _ratio_text(m.lr_negative),
        ]
    return cells, note


def table1_from_scores(
    columns: Sequence[RunScores], threshold: ThresholdRule = "0.5", *, details: bool = False
) -> pd.DataFrame:
    """Table 1 (rows AUC … accuracy) with one text column per scored model.

    Cells read "88.9 (56.5–98.0)": percent with its Wilson 95% CI, and the AUC as a fraction
    with its DeLong 95% CI. ``details`` adds n, threshold, the confusion counts and LR+/LR−.
    ``attrs["notes"]`` lists anything the reader should know (dropped patients, fallbacks).
    """
    data: dict[str, list[str]] = {}
    notes: list[str] = []
    for scores in columns:
        cells, note = _column(scores, threshold, details)
        name = scores.label
        while name in data:
            name += "′"
        data[name] = cells
        notes.extend(scores.notes)
        if note:
            notes.append(note)
    index = pd.Index([*ROWS, *(DETAIL_ROWS if details else ())], name="metric")
    table = pd.DataFrame(data, index=index)
    table.attrs["notes"] = notes
    table.attrs["threshold"] = str(threshold)
    return table


def table1(
    db: Database,
    run_ids: Sequence[int],
    subset: str = "test",
    threshold: ThresholdRule = "0.5",
    *,
    extra: Sequence[RunScores] = (),
    details: bool = False,
) -> pd.DataFrame:
    """Table 1 for finished runs (in the order given), then any ``extra`` columns (baseline)."""
    columns = [run_scores(db, run_id, subset) for run_id in run_ids]
    return table1_from_scores([*columns, *extra], threshold, details=details)


def _per_patient(scores: RunScores) -> pd.DataFrame:
    frame = pd.DataFrame({"patient_id": scores.patient_ids, "y": scores.y, "prob": scores.prob})
    return frame.groupby("patient_id").agg(y=("y", "first"), prob=("prob", "mean"))


def paired_test(a: RunScores, b: RunScores) -> tuple[float, int]:
    """Paired DeLong p-value of two models on the patients both scored, and how many.

    NaN when they predict different things (sarcopenia vs echogenicity) or share fewer than
    two positive and two negative patients.
    """
    if a.label_kind != b.label_kind:
        return math.nan, 0
    both = _per_patient(a).merge(
        _per_patient(b), left_index=True, right_index=True, suffixes=("_a", "_b")
    )
    try:
        result = delong_test(both["y_a"].to_numpy(), both["prob_a"], both["prob_b"])
    except StatisticsInputError:
        return math.nan, len(both)
    return result.p_value, len(both)


def delong_matrix_from_scores(columns: Sequence[RunScores]) -> pd.DataFrame:
    """Pairwise paired DeLong p-values (symmetric, NaN on the diagonal and where undefined)."""
    names = [c.label for c in columns]
    matrix = pd.DataFrame(np.nan, index=names, columns=names, dtype=float)
    for i, a in enumerate(columns):
        for j in range(i + 1, len(columns)):
            p, _ = paired_test(a, columns[j])
            matrix.iat[i, j] = matrix.iat[j, i] = p
    return matrix


def delong_matrix(
    db: Database, run_ids: Sequence[int], subset: str = "test", *, extra: Sequence[RunScores] = ()
) -> pd.DataFrame:
    """Paired DeLong p-values between runs, each pair on the patients common to both."""
    return delong_matrix_from_scores([*(run_scores(db, r, subset) for r in run_ids), *extra])
