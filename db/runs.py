"""Queries on training runs and their predictions, for the Training and Registry pages.

The run row is the single record of a training job (``core.services.jobs`` writes it from another
process), so everything a page shows is read here, never kept in the page's session.

Stored JSON shapes (written by ``core.learning.train``):

- ``history``: ``{"epochs": [{"fold", "epoch", "loss", "auc", "val_loss", "val_auc",
  "learning_rate"}, ...]}``, one record per finished epoch, appended while training runs.
- ``progress``: ``{"phase", "fold", "folds", "epoch", "epochs", "batch", "batches", "loss",
  "val_auc", "host", ...}``.
- ``metrics``: ``{"threshold", "n": {subset: count}, "val": {...}, "test": {...}, ...}`` where
  a subset's dict holds ``auc``, ``auc_lower``, ``auc_upper``, ``accuracy``, ``sensitivity``,
  ``specificity`` … (``core.learning.train.subset_metrics``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Grade, Image, Patient, Prediction, RunGroup, TrainingRun

ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("done", "failed", "cancelled")


def get_run(session: Session, run_id: int) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def list_runs(
    session: Session,
    statuses: Sequence[str] | None = None,
    task: str | None = None,
    limit: int | None = None,
) -> list[TrainingRun]:
    """Runs, newest first, optionally only some statuses or one task."""
    query = select(TrainingRun).order_by(TrainingRun.id.desc())
    if statuses is not None:
        query = query.where(TrainingRun.status.in_(list(statuses)))
    if task is not None:
        query = query.where(TrainingRun.task == task)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def active_runs(session: Session) -> list[TrainingRun]:
    """Queued and running runs, oldest first (the order the queue starts them in)."""
    return list(
        session.scalars(
            select(TrainingRun)
            .where(TrainingRun.status.in_(ACTIVE_STATUSES))
            .order_by(TrainingRun.id)
        )
    )


def group_runs(session: Session, group_id: int) -> list[TrainingRun]:
    """The runs submitted together as one group, in submission order."""
    query = select(TrainingRun).where(TrainingRun.group_id == group_id).order_by(TrainingRun.id)
    return list(session.scalars(query))


def recent_groups(session: Session, limit: int = 5) -> list[RunGroup]:
    """The newest run groups (grids, k-fold runs fanned out over workers)."""
    return list(session.scalars(select(RunGroup).order_by(RunGroup.id.desc()).limit(limit)))


def group_progress(runs: Sequence[TrainingRun]) -> tuple[float, str]:
    """A group's fraction done (mean of its runs' progress) and counts by status."""
    if not runs:
        return 0.0, "no runs"
    fractions = [progress_summary(run)[0] for run in runs]
    done = sum(run.status == "done" for run in runs)
    bits = [f"{done} of {len(runs)} runs done"]
    for status in ("running", "queued", "failed", "cancelled"):
        count = sum(run.status == status for run in runs)
        if count:
            bits.append(f"{count} {status}")
    return sum(fractions) / len(fractions), " · ".join(bits)


def run_history(run: TrainingRun) -> list[dict[str, Any]]:
    """Per-epoch records (see module docstring); empty before the first epoch ends."""
    history = run.history or {}
    return [dict(record) for record in history.get("epochs", [])]


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 1)


def run_test_auc(run: TrainingRun) -> float | None:
    """The run's test-set AUC (pooled out-of-fold AUC for k-fold runs), when it has one."""
    value = ((run.metrics or {}).get("test") or {}).get("auc")
    return float(value) if value is not None else None


def run_summary(run: TrainingRun) -> dict[str, Any]:
    """One flat row per run for a table: what was trained, how it went, how long it took."""
    settings = run.settings or {}
    metrics = run.metrics or {}
    test = metrics.get("test") or {}
    cv = metrics.get("cv") or {}
    return {
        "id": run.id,
        "task": run.task,
        "arch": run.arch,
        "mode": settings.get("mode"),
        "status": run.status,
        "weights": run.weights_source,
        "input": "×".join(str(v) for v in run.input_size),
        "epochs": len(run_history(run)) or None,
        "test_auc": run_test_auc(run),
        "test_auc_ci": (
            f"{test['auc_lower']:.2f}–{test['auc_upper']:.2f}"
            if test.get("auc_lower") is not None and test.get("auc_upper") is not None
            else None
        ),
        "test_accuracy": test.get("accuracy"),
        "cv_auc_mean": cv.get("test_auc_mean"),
        "cv_auc_sd": cv.get("test_auc_sd"),
        "created": run.created_at,
        "seconds": _seconds(run.started_at, run.finished_at),
        "error": run.error,
    }


@dataclass(frozen=True)
class PredictionRow:
    patient_id: int
    code: str
    subset: str
    fold: int
    probability: float
    threshold: float
    predicted_label: int


def run_predictions(
    session: Session, run_id: int, subset: str | None = None, *, graded_by: int | None = None
) -> list[PredictionRow]:
    """A run's stored predictions with patient codes, by fold, subset and code.

    ``graded_by`` keeps only patients whose GSU image that reader has graded: an
    echogenicity model's call is hidden from a reader until then (blinding).
    """
    query = (
        select(Prediction, Patient.code)
        .join(Patient, Patient.id == Prediction.patient_id)
        .where(Prediction.run_id == run_id)
        .order_by(Prediction.fold, Prediction.subset, Patient.code)
    )
    if subset is not None:
        query = query.where(Prediction.subset == subset)
    if graded_by is not None:
        graded = (
            select(Image.patient_id)
            .join(Grade, Grade.image_id == Image.id)
            .where(Image.modality == "GSU", Grade.reader_id == graded_by)
        )
        query = query.where(Prediction.patient_id.in_(graded))
    return [
        PredictionRow(
            patient_id=p.patient_id,
            code=code,
            subset=p.subset,
            fold=p.fold,
            probability=p.probability,
            threshold=p.threshold,
            predicted_label=p.predicted_label,
        )
        for p, code in session.execute(query)
    ]


PHASE_TEXT = {
    "queued": "waiting in the queue",
    "starting": "starting",
    "loading": "loading and cropping the images",
    "features": "computing image features",
    "training": "training",
    "evaluating": "testing on the validation and test patients",
    "saving": "saving the model",
    "done": "finished",
    "failed": "failed",
    "cancelled": "cancelled",
}
"""Each phase in words a reader of the page understands."""


def _phase_fraction(p: Mapping[str, Any], phase: str) -> float:
    epochs, epoch = p.get("epochs") or 0, p.get("epoch") or 0
    batch, batches = p.get("batch") or 0, p.get("batches") or 0
    folds, fold = p.get("folds") or 1, p.get("fold") or 0
    within_batches = batch / batches if batches else 0.0
    if phase == "features":
        copies = (p.get("copies") or 0) + 1
        return ((p.get("copy") or 0) + within_batches) / copies
    if phase == "loading":
        return within_batches
    if phase == "training" and epochs:
        return (fold + (max(epoch - 1, 0) + within_batches) / epochs) / folds
    if phase in ("evaluating", "saving", "done"):
        return (fold + 1) / folds
    return 0.0


def _phase_text(p: Mapping[str, Any], phase: str) -> str:
    text = PHASE_TEXT.get(phase, phase)
    copies, copy = p.get("copies") or 0, p.get("copy") or 0
    if phase == "features" and copies:
        text = (
            f"computing features of augmented copies, {copy} of {copies}"
            if copy
            else "computing features of the original images"
        )
    elif phase == "loading" and p.get("batches"):
        text += f", {p.get('batch') or 0} of {p['batches']} patients"
    elif phase == "training" and p.get("epochs"):
        text += f", epoch {p.get('epoch') or 0} of {p['epochs']}"
    return text


def describe_progress(progress: Mapping[str, Any]) -> tuple[float, str]:
    """Fraction (0–1) of the current phase and a one-line description of a progress dict.

    Phases: loading (images), features (fast mode: the frozen backbone over every image and
    its augmented copies), training (epochs), evaluating, saving. The fraction covers the
    phase that takes the time: features, or the epochs of all folds. The text is for
    radiologists, e.g. "fold 2 of 5 · computing features of augmented copies, 1 of 2".
    """
    p = progress
    phase = p.get("phase") or "queued"
    folds, fold = p.get("folds") or 1, p.get("fold") or 0
    bits = []
    if folds > 1:
        bits.append(f"fold {fold + 1} of {folds}")
    bits.append(_phase_text(p, phase))
    if phase == "training" and p.get("loss") is not None:
        bits.append(f"loss {p['loss']:.3f}")
    if phase == "training" and p.get("val_auc") is not None:
        bits.append(f"validation AUC {p['val_auc']:.2f}")
    fraction = _phase_fraction(p, phase)
    return min(max(fraction, 0.0), 1.0), " · ".join(bits)


def progress_summary(run: TrainingRun) -> tuple[float, str]:
    """``describe_progress`` of a run's row, prefixed with the run; finished runs are 0 or 1."""
    if run.status in FINISHED_STATUSES:
        return (1.0 if run.status == "done" else 0.0), f"Run {run.id} · {run.status}"
    fraction, text = describe_progress(run.progress or {"phase": run.status})
    return fraction, f"Run {run.id} · {text}"


METRIC_COLUMNS = (
    "n",
    "positives",
    "auc",
    "auc_lower",
    "auc_upper",
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "lr_positive",
    "lr_negative",
)


def metrics_rows(run: TrainingRun) -> list[dict[str, Any]]:
    """One row per evaluated subset (val, test) with Table 1's metrics."""
    metrics = run.metrics or {}
    rows = []
    for subset in ("val", "test"):
        values = metrics.get(subset)
        if values:
            rows.append({"subset": subset, **{c: values.get(c) for c in METRIC_COLUMNS}})
    return rows
