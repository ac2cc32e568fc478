"""Table 1 of Yi et al. (Sci Rep 2022) rebuilt from stored runs, with intervals and tests.

The study reported AUC, sensitivity, specificity, PPV, NPV and accuracy per modality ×
architecture on 20 test patients, with no confidence intervals and no test between models.
Here every cell carries its interval (Wilson for proportions, DeLong for the AUC, see
``core.stats.metrics``), any two runs scored on the same patients get a paired DeLong test, and the
radiomics baseline and the fusion model sit in the same table.

Labels are always derived *now* from the database (``db.cases.case_labels`` for sarcopenia,
the consensus grade for echogenicity), never copied from training time: a corrected CT or
grade changes the table, and a patient whose label is no longer defined drops out with a
note. Youden's threshold is chosen on the run's *validation* predictions, never on test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn.metrics import roc_curve
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from core.common.labels import dichotomize_grade
from core.common.store import ImageStore
from core.learning.dataset import TASKS, DatasetSettings, load_split
from core.stats.delong import StatisticsInputError, delong_test
from core.stats.metrics import (
    DiagnosticMetrics,
    calibration_curve_points,
    diagnostic_metrics,
    format_auc_ci,
    format_pct_ci,
    youden_threshold,
)
from db.cases import case_labels
from db.engine import Database
from db.models import ConsensusGrade, Image, Patient, Prediction, Split, TrainingRun

ThresholdRule = Literal["0.5", "youden"] | float
THRESHOLD_RULES: Final = ("0.5", "youden")
ROWS: Final = ("AUC", "Sensitivity", "Specificity", "PPV", "NPV", "Accuracy")
"""Table 1's rows, in the paper's order."""
DETAIL_ROWS: Final = ("n (positive)", "Threshold", "TP / FP / TN / FN", "LR+", "LR−")
ARCH_NAMES: Final = {"vgg19": "VGG19", "resnet50": "ResNet50", "densenet121": "DenseNet121"}
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


class RunNotReadyError(ValueError):
    """The run does not exist, has not finished, or has no predictions for the subset."""


@dataclass(frozen=True)
class RunScores:
    """One column of the table: who was scored, their current labels and the probabilities.

    ``val_y``/``val_prob`` (validation predictions) are what Youden's threshold is chosen
    on; None for a model without a validation set (the radiomics baseline).
    """

    label: str
    task: str
    patient_ids: np.ndarray
    y: np.ndarray
    prob: np.ndarray
    threshold: float = 0.5
    run_id: int | None = None
    val_y: np.ndarray | None = None
    val_prob: np.ndarray | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label_kind(self) -> str:
        return TASKS[self.task].label if self.task in TASKS else self.task


def run_label(run: TrainingRun) -> str:
    """Column header in the paper's "modality architecture" style, plus the run id."""
    arch = ARCH_NAMES.get(run.arch, run.arch)
    kind = "fusion " if run.task == "sarcopenia_fusion" else ""
    prefix = (
        "Echogenicity · " if TASKS.get(run.task) and TASKS[run.task].label != "sarcopenia" else ""
    )
    return f"{prefix}{run.modality} {kind}{arch} (run {run.id})"


def current_labels(session: Session, patient_ids: Sequence[int], task: str) -> dict[int, int]:
    """Today's 0/1 label of each patient for ``task``; patients without one are left out.

    Sarcopenia needs an eligible CT (``case_labels``); echogenicity needs a consensus grade
    on the GSU image (grade ≥ 2 is high, the study's dichotomy).
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {sorted(TASKS)}.")
    ids = sorted({int(p) for p in patient_ids})
    if not ids:
        return {}
    if TASKS[task].label == "sarcopenia":
        patients = session.scalars(
            select(Patient).where(Patient.id.in_(ids)).options(selectinload(Patient.ct))
        )
        out = {}
        for patient in patients:
            derived = case_labels(patient)
            if derived.eligible and derived.sarcopenic is not None:
                out[patient.id] = int(derived.sarcopenic)
        return out
    rows = session.execute(
        select(Image.patient_id, ConsensusGrade.grade)
        .join(ConsensusGrade, ConsensusGrade.image_id == Image.id)
        .where(Image.modality == "GSU", Image.patient_id.in_(ids))
    )
    return {pid: dichotomize_grade(grade) for pid, grade in rows}


def _finished_run(session: Session, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise RunNotReadyError(f"There is no training run {run_id}.")
    if run.status != "done":
        raise RunNotReadyError(
            f"Run {run_id} is {run.status}; only finished (done) runs have metrics."
        )
    return run


def _subset_arrays(
    session: Session, run: TrainingRun, subset: str, labels: Mapping[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, list[str]]:
    """(patient ids, y, probability, stored threshold, notes) of one subset of a run.

    With k folds a patient can appear in several folds' validation sets; every prediction
    counts (as pooled), and the DeLong pairing averages them per patient.
    """
    rows = session.execute(
        select(Prediction.patient_id, Prediction.probability, Prediction.threshold)
        .where(Prediction.run_id == run.id, Prediction.subset == subset)
        .order_by(Prediction.fold, Prediction.patient_id)
    ).all()
    if not rows:
        raise RunNotReadyError(f"Run {run.id} has no {subset} predictions.")
    ids = np.array([r.patient_id for r in rows], dtype=np.int64)
    truth = labels if labels is not None else current_labels(session, ids.tolist(), run.task)
    keep = np.array([int(pid) in truth for pid in ids])
    notes = []
    if not keep.all():
        dropped = int((~keep).sum())
        notes.append(
            f"Run {run.id}: {dropped} {subset} patient(s) no longer have a label "
            "(CT or consensus changed since training) and are left out."
        )
    y = np.array([truth[int(pid)] for pid in ids[keep]], dtype=np.int64)
    prob = np.array([r.probability for r in rows], dtype=np.float64)[keep]
    return ids[keep], y, prob, float(rows[0].threshold), notes


def run_scores(db: Database, run_id: int, subset: str = "test") -> RunScores:
    """A finished run's predictions on ``subset`` with current labels, and its validation set."""
    with db.read() as session:
        run = _finished_run(session, run_id)
        ids, y, prob, threshold, notes = _subset_arrays(session, run, subset)
        val_y = val_prob = None
        if subset != "val":
            try:
                _, val_y, val_prob, _, _ = _subset_arrays(session, run, "val")
            except RunNotReadyError:
                notes.append(f"Run {run_id} has no validation predictions: no Youden threshold.")
        else:
            val_y, val_prob = y, prob
        return RunScores(
            label=run_label(run),
            task=run.task,
            patient_ids=ids,
            y=y,
            prob=prob,
            threshold=threshold,
            run_id=run.id,
            val_y=val_y,
            val_prob=val_prob,
            notes=tuple(notes),
        )


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


def roc_frame(scores: RunScores) -> pd.DataFrame:
    """Every ROC point (fpr, tpr, threshold), for plotting."""
    fpr, tpr, thresholds = roc_curve(scores.y, scores.prob, pos_label=1, drop_intermediate=False)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


def roc_points(db: Database, run_id: int, subset: str = "test") -> pd.DataFrame:
    return roc_frame(run_scores(db, run_id, subset))


def calibration_frame(scores: RunScores, n_bins: int = 5) -> pd.DataFrame:
    """Mean predicted probability and observed fraction positive per non-empty bin."""
    frac, mean = calibration_curve_points(scores.y, scores.prob, n_bins=n_bins)
    return pd.DataFrame({"mean_predicted": mean, "fraction_positive": frac})


def calibration_points(
    db: Database, run_id: int, subset: str = "test", n_bins: int = 5
) -> pd.DataFrame:
    return calibration_frame(run_scores(db, run_id, subset), n_bins)


def roc_figure(columns: Sequence[RunScores], title: str = "ROC curves (test set)") -> go.Figure:
    """Overlaid ROC curves, one per model, with the AUC and its DeLong CI in the legend."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "gray"}
        )
    )
    for scores in columns:
        try:
            auc = format_auc_ci(diagnostic_metrics(scores.y, scores.prob).auc)
        except StatisticsInputError:
            continue
        points = roc_frame(scores)
        fig.add_trace(
            go.Scatter(
                x=points["fpr"],
                y=points["tpr"],
                mode="lines",
                line_shape="hv",
                name=f"{scores.label}: AUC {auc}",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="1 − specificity",
        yaxis_title="sensitivity",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1.02],
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def calibration_figure(
    columns: Sequence[RunScores], n_bins: int = 5, title: str = "Calibration (test set)"
) -> go.Figure:
    """Observed fraction positive against mean predicted probability per bin."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot", "color": "gray"}
        )
    )
    for scores in columns:
        try:
            points = calibration_frame(scores, n_bins)
        except StatisticsInputError:
            continue
        fig.add_trace(
            go.Scatter(
                x=points["mean_predicted"],
                y=points["fraction_positive"],
                mode="lines+markers",
                name=scores.label,
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="mean predicted probability",
        yaxis_title="observed fraction positive",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1.02],
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def delong_figure(matrix: pd.DataFrame) -> go.Figure:
    """The p-value matrix as an annotated heat map (darker = smaller p)."""
    text = matrix.map(lambda p: "" if pd.isna(p) else f"{p:.3f}")
    fig = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(),
            x=list(matrix.columns),
            y=list(matrix.index),
            text=text.to_numpy(),
            texttemplate="%{text}",
            colorscale="Blues_r",
            zmin=0,
            zmax=1,
            colorbar={"title": "p"},
        )
    )
    fig.update_layout(title="Paired DeLong test p-values (AUC differences)")
    return fig


def baseline_scores(
    db: Database, store: ImageStore, run_id: int, kind: Literal["logistic", "mlp"] = "logistic"
) -> RunScores:
    """The radiomics baseline (``core.learning.baseline``) on the very split of a run.

    Fitted on the run's train + validation patients and scored on its test patients, fold by
    fold for a k-fold run (test predictions pooled), so the baseline and the DCNN are
    compared on the same patients (paired DeLong).
    """
    from core.learning.baseline import task_features
    from core.learning.features import fit_baseline

    with db.read() as session:
        run = _finished_run(session, run_id)
        if run.split_id is None or session.get(Split, run.split_id) is None:
            raise RunNotReadyError(f"Run {run_id} has no stored split to fit the baseline on.")
        settings = DatasetSettings.from_payload(session.get(Split, run.split_id).settings)
        task = run.task
    folds = load_split(db, run.split_id)
    X, y, names, ids = task_features(db, store, settings)
    out_ids, out_y, out_p = [], [], []
    model_name = ""
    for assignment in folds:
        subset = np.array([assignment.get(int(pid), "") for pid in ids])
        fit = np.isin(subset, ("train", "val"))
        test = subset == "test"
        result = fit_baseline(
            X[fit], y[fit], X[test], y[test], kind=kind, seed=settings.seed, feature_names=names
        )
        model_name = result.model_name
        out_ids.append(ids[test])
        out_y.append(result.y_test)
        out_p.append(result.p_test)
    return RunScores(
        label=f"Radiomics baseline, {model_name} (split of run {run_id})",
        task=task,
        patient_ids=np.concatenate(out_ids),
        y=np.concatenate(out_y),
        prob=np.concatenate(out_p),
    )
