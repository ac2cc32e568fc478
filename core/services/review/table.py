"""The cohort review table (truths and every run's call per patient) and its filters."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from core.common.labels import dichotomize_grade
from core.learning.dataset import TASKS
from core.services.review.predictions import NOT_IN_RUN, run_outputs
from db.cases import case_labels
from db.engine import Database
from db.models import ConsensusGrade, Grade, Image, Patient, Reader, TrainingRun


def finished_runs(db: Database) -> list[TrainingRun]:
    """Done runs with a model file, newest first."""
    with db.read() as session:
        return list(
            session.scalars(
                select(TrainingRun)
                .where(TrainingRun.status == "done", TrainingRun.model_path.is_not(None))
                .order_by(TrainingRun.id.desc())
            )
        )


def review_table(
    db: Database, run_ids: Sequence[int], *, viewer: Reader | None = None
) -> pd.DataFrame:
    """One row per patient: truths and, per run, subset, probability, prediction, correct.

    Probabilities as ``run_outputs``. Columns per run ``run N subset|p|pred|ok``; plus
    ``tested in`` (runs whose test set held the patient), ``misclassified`` and
    ``disagreement`` (runs predicting the same thing disagree). A blinded reader gets no
    echogenicity truth or echogenicity predictions for patients they have not graded.
    """
    outputs = run_outputs(db, run_ids)
    with db.read() as session:
        patients = session.scalars(
            select(Patient).options(selectinload(Patient.ct)).order_by(Patient.code)
        ).all()
        gsu_of = dict(
            session.execute(select(Image.patient_id, Image.id).where(Image.modality == "GSU")).all()
        )
        consensus = dict(
            session.execute(select(ConsensusGrade.image_id, ConsensusGrade.grade)).all()
        )
        graded: set[int] | None = None
        if viewer is not None and viewer.role != "admin":
            graded = set(
                session.scalars(select(Grade.image_id).where(Grade.reader_id == viewer.id))
            )
        tasks = dict(
            session.execute(
                select(TrainingRun.id, TrainingRun.task).where(TrainingRun.id.in_(list(run_ids)))
            ).all()
        )
    rows = []
    for patient in patients:
        derived = case_labels(patient)
        gsu_id = gsu_of.get(patient.id)
        blind = graded is not None and (gsu_id is None or gsu_id not in graded)
        grade = consensus.get(gsu_id) if gsu_id is not None else None
        rows.append(
            {
                "patient_id": patient.id,
                "code": patient.code,
                "sarcopenia": (
                    int(derived.sarcopenic)
                    if derived.eligible and derived.sarcopenic is not None
                    else None
                ),
                "echogenicity_high": (
                    dichotomize_grade(grade) if grade is not None and not blind else None
                ),
                "_blind": blind,
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["tested in"] = ""
    for run_id in run_ids:
        kind = TASKS[tasks[run_id]].label
        mine = outputs[outputs["run_id"] == run_id].set_index("patient_id")
        prefix = f"run {run_id}"
        table[f"{prefix} subset"] = table["patient_id"].map(mine["subset"]).fillna(NOT_IN_RUN)
        hidden = table["_blind"] & (kind == "echogenicity_high")
        p = table["patient_id"].map(mine["probability"]).astype(float).where(~hidden)
        pred = table["patient_id"].map(mine["predicted_label"]).astype("Int64").where(p.notna())
        table[f"{prefix} p"] = p
        table[f"{prefix} pred"] = pred
        truth = table[kind].astype("Int64")
        table[f"{prefix} ok"] = (
            (pred == truth).where(pred.notna() & truth.notna()).astype("boolean")
        )
        tested = table["patient_id"].isin(mine.index[mine["tested"]])
        table.loc[tested, "tested in"] += f"{prefix} "
    table["tested in"] = table["tested in"].str.strip()
    ok_cols = [f"run {r} ok" for r in run_ids]
    table["misclassified"] = table[ok_cols].eq(False).any(axis=1) if ok_cols else False
    table["disagreement"] = False
    kinds: dict[str, list[int]] = {}
    for run_id in run_ids:
        kinds.setdefault(TASKS[tasks[run_id]].label, []).append(run_id)
    for ids in kinds.values():
        if len(ids) > 1:
            preds = table[[f"run {r} pred" for r in ids]]
            table["disagreement"] |= preds.nunique(axis=1, dropna=True).gt(1)
    return table.drop(columns="_blind")


def filter_review(
    table: pd.DataFrame,
    *,
    misclassified: bool = False,
    disagreement: bool = False,
    subset: str | None = None,
) -> pd.DataFrame:
    """Rows matching every chosen filter; ``subset`` matches any run's subset column."""
    keep = pd.Series(True, index=table.index)
    if misclassified:
        keep &= table["misclassified"]
    if disagreement:
        keep &= table["disagreement"]
    if subset:
        cols = [c for c in table.columns if c.endswith(" subset")]
        if cols:
            keep &= table[cols].eq(subset).any(axis=1)
    return table[keep]
