"""The columns of Table 1: a run's (or the baseline's) scored patients with today's labels.

``RunScores`` holds who was scored, their current labels and probabilities, and the
validation predictions Youden's threshold is chosen on; ``run_label`` names a column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from core.common.labels import dichotomize_grade
from core.common.store import ImageStore
from core.learning.dataset import TASKS, DatasetSettings, load_split
from db.cases import case_labels
from db.engine import Database
from db.models import ConsensusGrade, Image, Patient, Prediction, Split, TrainingRun

ARCH_NAMES: Final = {"vgg19": "VGG19", "resnet50": "ResNet50", "densenet121": "DenseNet121"}


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
