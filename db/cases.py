"""The case list and one patient's record, with labels derived on the fly.

The list is paginated and filtered in SQL (SMI and the CT interval are SQL expressions),
so the Cases page costs the same at 160 or 10,000 patients. ``core.common.labels`` stays the
reference definition; ``case_labels`` applies it to one patient.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, exists, func, literal, or_, select
from sqlalchemy.orm import Session, selectinload

from core.common import labels
from db import audit
from db.models import ConsensusGrade, CtMeasurement, Grade, Image, Patient, Reader

SarcopeniaFilter = Literal["any", "sarcopenic", "not sarcopenic", "excluded"]
PATIENT_EDITABLE = ("sex", "age", "height_cm", "weight_kg", "us_date")
CT_EDITABLE = ("sma_cm2", "ct_date", "exclusion_reason")


@dataclass(frozen=True)
class CaseLabels:
    """Labels derived from one patient's measurements (never stored)."""

    eligible: bool
    exclusion_reason: str | None
    interval_days: int | None
    smi: float | None
    sarcopenic: bool | None


def case_labels(patient: Patient) -> CaseLabels:
    ct = patient.ct
    recorded = ct.exclusion_reason if ct else None
    if recorded is None and patient.weight_kg is None and ct is not None:
        recorded = labels.EXCLUSION_NO_WEIGHT
    elig = labels.ct_eligibility(
        patient.us_date, ct.ct_date if ct else None, ct.sma_cm2 if ct else None, recorded
    )
    smi_value = labels.smi(ct.sma_cm2, patient.height_cm) if ct and ct.sma_cm2 else None
    sarcopenic = (
        labels.is_sarcopenic(smi_value, patient.sex)
        if elig.eligible and smi_value is not None
        else None
    )
    return CaseLabels(elig.eligible, elig.reason, elig.interval_days, smi_value, sarcopenic)


def _interval_days_expr(session: Session) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "sqlite":
        diff = func.julianday(CtMeasurement.ct_date) - func.julianday(Patient.us_date)
    else:
        diff = CtMeasurement.ct_date - Patient.us_date
    return func.abs(diff)


def _smi_expr() -> ColumnElement[Any]:
    return CtMeasurement.sma_cm2 / ((Patient.height_cm / 100.0) * (Patient.height_cm / 100.0))


def _eligible_expr(session: Session) -> ColumnElement[bool]:
    return and_(
        CtMeasurement.exclusion_reason.is_(None),
        CtMeasurement.sma_cm2.is_not(None),
        CtMeasurement.ct_date.is_not(None),
        Patient.us_date.is_not(None),
        Patient.weight_kg.is_not(None),
        _interval_days_expr(session) <= labels.CT_WINDOW_DAYS,
    )


def _sarcopenic_expr() -> ColumnElement[bool]:
    cutoff = case(
        (Patient.sex == "M", literal(labels.SMI_CUTOFF_MEN)),
        else_=literal(labels.SMI_CUTOFF_WOMEN),
    )
    return _smi_expr() <= cutoff


@dataclass(frozen=True)
class CaseRow:
    id: int
    code: str
    sex: str
    age: int
    images: str
    ct: str
    smi: float | None
    sarcopenia: str
    grades_done: int
    consensus: int | None


@dataclass(frozen=True)
class CaseFilter:
    code_contains: str = ""
    sex: Literal["any", "M", "F"] = "any"
    sarcopenia: SarcopeniaFilter = "any"
    consensus: Literal["any", "done", "pending"] = "any"


def _consensus_on(gsu: Any, viewer: Reader | None) -> ColumnElement[bool]:
    """Join condition of a GSU image's consensus, as ``viewer`` may see it.

    A reader sees the consensus only of images they have graded themselves (blinding);
    an admin, or no person (CLI, benchmarks), sees every consensus.
    """
    on = ConsensusGrade.image_id == gsu.c.id
    if viewer is None or viewer.role == "admin":
        return on
    graded = exists().where(Grade.image_id == gsu.c.id, Grade.reader_id == viewer.id)
    return and_(on, graded)


def list_cases(
    session: Session,
    filters: CaseFilter = CaseFilter(),
    *,
    limit: int = 50,
    offset: int = 0,
    viewer: Reader | None = None,
) -> tuple[list[CaseRow], int]:
    """One page of the case list and the total number of matching patients.

    The consensus column and filter show only what ``viewer`` may see (``_consensus_on``).
    """
    gsu = Image.__table__.alias("gsu")
    swe = Image.__table__.alias("swe")
    n_grades = (
        select(func.count(Grade.id))
        .where(Grade.image_id == gsu.c.id)
        .correlate(gsu)
        .scalar_subquery()
    )
    eligible = _eligible_expr(session)
    stmt = (
        select(
            Patient.id,
            Patient.code,
            Patient.sex,
            Patient.age,
            gsu.c.id.is_not(None).label("has_gsu"),
            swe.c.id.is_not(None).label("has_swe"),
            CtMeasurement.id.is_not(None).label("has_ct"),
            eligible.label("eligible"),
            CtMeasurement.exclusion_reason,
            _smi_expr().label("smi"),
            _sarcopenic_expr().label("sarcopenic"),
            n_grades.label("grades_done"),
            ConsensusGrade.grade.label("consensus"),
        )
        .select_from(Patient)
        .outerjoin(CtMeasurement, CtMeasurement.patient_id == Patient.id)
        .outerjoin(gsu, and_(gsu.c.patient_id == Patient.id, gsu.c.modality == "GSU"))
        .outerjoin(swe, and_(swe.c.patient_id == Patient.id, swe.c.modality == "SWE"))
        .outerjoin(ConsensusGrade, _consensus_on(gsu, viewer))
    )
    conditions: list[ColumnElement[bool]] = []
    if filters.code_contains:
        pattern = "%" + filters.code_contains.replace("%", r"\%").replace("_", r"\_") + "%"
        conditions.append(Patient.code.ilike(pattern, escape="\\"))
    if filters.sex != "any":
        conditions.append(Patient.sex == filters.sex)
    if filters.sarcopenia == "sarcopenic":
        conditions.append(and_(eligible, _sarcopenic_expr()))
    elif filters.sarcopenia == "not sarcopenic":
        conditions.append(and_(eligible, ~_sarcopenic_expr()))
    elif filters.sarcopenia == "excluded":
        conditions.append(or_(CtMeasurement.id.is_(None), ~eligible))
    if filters.consensus == "done":
        conditions.append(ConsensusGrade.id.is_not(None))
    elif filters.consensus == "pending":
        conditions.append(ConsensusGrade.id.is_(None))
    if conditions:
        stmt = stmt.where(and_(*conditions))
    total = session.scalar(_count_matching(filters, conditions, viewer)) or 0
    page = session.execute(stmt.order_by(Patient.code).limit(limit).offset(offset)).all()
    rows = [
        CaseRow(
            id=r.id,
            code=r.code,
            sex=r.sex,
            age=r.age,
            images=" + ".join(m for m, has in (("GSU", r.has_gsu), ("SWE", r.has_swe)) if has)
            or "none",
            ct="eligible" if r.eligible else (r.exclusion_reason or "no eligible CT"),
            smi=round(r.smi, 1) if r.smi is not None else None,
            sarcopenia=("yes" if r.sarcopenic else "no") if r.eligible else "excluded",
            grades_done=r.grades_done,
            consensus=r.consensus,
        )
        for r in page
    ]
    return rows, total


def _count_matching(filters: CaseFilter, conditions: list, viewer: Reader | None) -> Any:
    """Count without the per-row columns: only the joins the filters need."""
    stmt = select(func.count(Patient.id)).select_from(Patient)
    if filters.sarcopenia != "any":
        stmt = stmt.outerjoin(CtMeasurement, CtMeasurement.patient_id == Patient.id)
    if filters.consensus != "any":
        gsu = Image.__table__.alias("gsu")
        stmt = stmt.outerjoin(
            gsu, and_(gsu.c.patient_id == Patient.id, gsu.c.modality == "GSU")
        ).outerjoin(ConsensusGrade, _consensus_on(gsu, viewer))
    return stmt.where(and_(*conditions)) if conditions else stmt


def get_patient(session: Session, code: str) -> Patient | None:
    """One patient with CT and images loaded, for the detail and review views."""
    stmt = (
        select(Patient)
        .where(Patient.code == code)
        .options(selectinload(Patient.ct), selectinload(Patient.images))
    )
    return session.scalar(stmt)


def patient_codes(session: Session) -> list[str]:
    return list(session.scalars(select(Patient.code).order_by(Patient.code)))


def count_patients(session: Session) -> int:
    return session.scalar(select(func.count(Patient.id))) or 0


def _snapshot(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for name in fields:
        value = getattr(obj, name)
        out[name] = value.isoformat() if isinstance(value, dt.date) else value
    return out


def update_patient(
    session: Session,
    patient: Patient,
    actor: Reader,
    patient_changes: dict[str, Any],
    ct_changes: dict[str, Any],
) -> None:
    """Edit metadata and write the before/after audit row in the same transaction."""
    unknown = set(patient_changes) - set(PATIENT_EDITABLE) | set(ct_changes) - set(CT_EDITABLE)
    if unknown:
        raise ValueError(f"These fields cannot be edited: {', '.join(sorted(unknown))}.")
    before = _snapshot(patient, PATIENT_EDITABLE)
    for name, value in patient_changes.items():
        setattr(patient, name, value)
    if ct_changes:
        if patient.ct is None:
            patient.ct = CtMeasurement()
        before |= _snapshot(patient.ct, CT_EDITABLE) if patient.ct.id else {}
        for name, value in ct_changes.items():
            setattr(patient.ct, name, value)
    after = _snapshot(patient, PATIENT_EDITABLE)
    if patient.ct is not None:
        after |= _snapshot(patient.ct, CT_EDITABLE)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="patient.update",
        entity="patient",
        entity_id=patient.id,
        patient_id=patient.id,
        before=before,
        after=after,
    )
