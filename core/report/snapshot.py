"""A frozen snapshot of what a study report needs: patients, readers' grades and chosen runs.

Everything in the report (issue 17: STARD 2015, CLAIM, TRIPOD+AI) is computed from this
snapshot, taken in one read transaction, so every table of one report describes the same
state of the database, and the same state gives byte-identical tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from core.report.table1 import RunScores, run_label, run_scores
from db.cases import case_labels
from db.engine import Database
from db.models import (
    ConsensusGrade,
    Grade,
    Image,
    Patient,
    Reader,
    SplitAssignment,
    TrainingRun,
)

COHORT_COLUMNS = (
    "patient_id",
    "code",
    "sex",
    "age",
    "height_cm",
    "weight_kg",
    "sma_cm2",
    "smi",
    "eligible",
    "exclusion_reason",
    "sarcopenic",
    "consensus_grade",
    "us_date",
    "synthetic",
)


@dataclass(frozen=True)
class RunRecord:
    """One chosen run: its settings as stored, its subsets and its scored test patients."""

    run_id: int
    label: str
    task: str
    arch: str
    modality: str
    input_size: tuple[int, ...]
    settings: dict
    weights_source: str
    fingerprint: str | None
    created_at: str
    subsets: dict[int, str]
    """patient id → 'train' / 'val' / 'test' (fold 0 of a k-fold split)."""
    test: RunScores


@dataclass(frozen=True)
class ReportSnapshot:
    """Cohort table, every reader's GSU grade, and the chosen runs."""

    cohort: pd.DataFrame
    grades: pd.DataFrame
    """patient_id, reader (display name), grade, uncertain."""
    runs: tuple[RunRecord, ...]
    taken_at: str


def _cohort(session) -> pd.DataFrame:
    patients = session.scalars(
        select(Patient).options(selectinload(Patient.ct)).order_by(Patient.code)
    ).all()
    consensus = dict(
        session.execute(
            select(Image.patient_id, ConsensusGrade.grade)
            .join(ConsensusGrade, ConsensusGrade.image_id == Image.id)
            .where(Image.modality == "GSU")
        ).all()
    )
    rows = []
    for p in patients:
        labels = case_labels(p)
        rows.append(
            (
                p.id,
                p.code,
                p.sex,
                p.age,
                p.height_cm,
                p.weight_kg,
                p.ct.sma_cm2 if p.ct else None,
                labels.smi,
                labels.eligible,
                labels.exclusion_reason,
                labels.sarcopenic,
                consensus.get(p.id),
                p.us_date.isoformat() if p.us_date else None,
                p.synthetic,
            )
        )
    return pd.DataFrame(rows, columns=list(COHORT_COLUMNS))


def _grades(session) -> pd.DataFrame:
    rows = session.execute(
        select(Image.patient_id, Reader.display_name, Grade.grade, Grade.uncertain)
        .join(Image, Image.id == Grade.image_id)
        .join(Reader, Reader.id == Grade.reader_id)
        .where(Image.modality == "GSU")
        .order_by(Image.patient_id, Reader.display_name)
    ).all()
    return pd.DataFrame(rows, columns=["patient_id", "reader", "grade", "uncertain"])


def _subsets(session, split_id: int | None) -> dict[int, str]:
    if split_id is None:
        return {}
    rows = session.execute(
        select(SplitAssignment.patient_id, SplitAssignment.subset).where(
            SplitAssignment.split_id == split_id, SplitAssignment.fold == 0
        )
    ).all()
    return {int(pid): subset for pid, subset in rows}


def take_snapshot(db: Database, run_ids: Sequence[int]) -> ReportSnapshot:
    """Read the cohort, the grades and the chosen finished runs (RunNotReadyError otherwise)."""
    ids = sorted({int(r) for r in run_ids})
    if not ids:
        raise ValueError("Choose at least one finished training run for the report.")
    scores = {run_id: run_scores(db, run_id, "test") for run_id in ids}
    with db.read() as session:
        cohort, grades = _cohort(session), _grades(session)
        records = []
        for run_id in ids:
            run = session.get(TrainingRun, run_id)
            records.append(
                RunRecord(
                    run_id=run.id,
                    label=run_label(run),
                    task=run.task,
                    arch=run.arch,
                    modality=run.modality,
                    input_size=tuple(run.input_size or ()),
                    settings=dict(run.settings or {}),
                    weights_source=run.weights_source,
                    fingerprint=run.fingerprint,
                    created_at=run.created_at.isoformat(timespec="seconds"),
                    subsets=_subsets(session, run.split_id),
                    test=scores[run_id],
                )
            )
    taken = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return ReportSnapshot(cohort, grades, tuple(records), taken)
