"""The data model of DESIGN.md as SQLAlchemy 2.0 typed ORM classes.

Labels that can be derived (SMI, sarcopenia, CT interval, dichotomized grade) are never
stored: ``core.common.labels`` computes them from the measurements, so a corrected height or
date can never leave a stale label behind.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("reader", "admin")
MODALITIES = ("GSU", "SWE")
CONSENSUS_METHODS = ("agreement", "adjudication")
BOX_SOURCES = ("reader", "auto", "consensus")
RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled")
SUBSETS = ("train", "val", "test")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Reader(Base):
    __tablename__ = "reader"
    __table_args__ = (CheckConstraint("role IN ('reader', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16), default="reader")
    password_hash: Mapped[str | None] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    demo: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A demo account, created only with the synthetic cohort: its password is public."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Patient(Base):
    __tablename__ = "patient"
    __table_args__ = (
        CheckConstraint("sex IN ('M', 'F')", name="sex"),
        CheckConstraint("age >= 0 AND age <= 120", name="age"),
        CheckConstraint("height_cm > 0 AND height_cm < 260", name="height"),
        CheckConstraint("weight_kg IS NULL OR (weight_kg > 0 AND weight_kg < 400)", name="weight"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    sex: Mapped[str] = mapped_column(String(1))
    age: Mapped[int] = mapped_column(Integer)
    height_cm: Mapped[float] = mapped_column(Float)
    weight_kg: Mapped[float | None] = mapped_column(Float)
    us_date: Mapped[dt.date | None] = mapped_column(Date)
    synthetic: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    ct: Mapped[CtMeasurement | None] = relationship(
        back_populates="patient", cascade="all, delete-orphan", uselist=False
    )
    images: Mapped[list[Image]] = relationship(
        back_populates="patient", cascade="all, delete-orphan", order_by="Image.modality"
    )


Index("uq_patient_code_lower", func.lower(Patient.code), unique=True)
"""Codes are unique ignoring case: ``bad-dup`` and ``BAD-DUP`` are one patient to a reader."""


class CtMeasurement(Base):
    __tablename__ = "ct_measurement"
    __table_args__ = (
        CheckConstraint("sma_cm2 IS NULL OR (sma_cm2 > 0 AND sma_cm2 < 600)", name="sma"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), unique=True
    )
    sma_cm2: Mapped[float | None] = mapped_column(Float)
    ct_date: Mapped[dt.date | None] = mapped_column(Date)
    exclusion_reason: Mapped[str | None] = mapped_column(String(200))

    patient: Mapped[Patient] = relationship(back_populates="ct")


class Image(Base):
    __tablename__ = "image"
    __table_args__ = (
        CheckConstraint("modality IN ('GSU', 'SWE')", name="modality"),
        UniqueConstraint("patient_id", "modality", name="uq_image_patient_modality"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id", ondelete="CASCADE"))
    modality: Mapped[str] = mapped_column(String(3))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(300))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    source_format: Mapped[str] = mapped_column(String(16))
    dicom_header: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    acquisition_date: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="images")


class Grade(Base):
    """One reader's echogenicity grade of a GSU image.

    ``uncertain`` marks a grade the reader could not settle: it is stored and counted but
    kept out of consensus until the reader saves it again without the flag.
    """

    __tablename__ = "grade"
    __table_args__ = (
        UniqueConstraint("image_id", "reader_id", name="uq_grade_image_reader"),
        CheckConstraint("grade BETWEEN 0 AND 3", name="range"),
        Index("ix_grade_reader", "reader_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("reader.id"))
    grade: Mapped[int] = mapped_column(Integer)
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    comment: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class ConsensusGrade(Base):
    __tablename__ = "consensus_grade"
    __table_args__ = (
        CheckConstraint("grade BETWEEN 0 AND 3", name="range"),
        CheckConstraint("method IN ('agreement', 'adjudication')", name="method"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), unique=True)
    grade: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(16))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("reader.id"))
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class SupersededConsensus(Base):
    """A consensus that no longer holds: a counted grade saved after it contradicted it.

    ``consensus_grade`` holds only the consensus in force (one per image), so every query
    that reads it stays correct; the old decision is kept here, with its box, what
    superseded it and when (``db.consensus_rules``), and an audit row records the move.
    """

    __tablename__ = "superseded_consensus"
    __table_args__ = (
        CheckConstraint("grade BETWEEN 0 AND 3", name="range"),
        Index("ix_superseded_consensus_image", "image_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    grade: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(16))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("reader.id"))
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime)
    box: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The consensus box removed with it (x, y, w, h), if there was one."""
    superseded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    superseded_by_id: Mapped[int | None] = mapped_column(ForeignKey("reader.id"))
    """The reader whose grade contradicted the consensus."""
    reason: Mapped[str] = mapped_column(String(300))


class CropBox(Base):
    """A crop box in source-image pixels; ``owner_key`` is 'reader:<id>', 'auto' or 'consensus'."""

    __tablename__ = "crop_box"
    __table_args__ = (
        UniqueConstraint("image_id", "owner_key", name="uq_box_image_owner"),
        CheckConstraint("w > 0 AND h > 0 AND x >= 0 AND y >= 0", name="geometry"),
        CheckConstraint("source IN ('reader', 'auto', 'consensus')", name="source"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    owner_key: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    reader_id: Mapped[int | None] = mapped_column(ForeignKey("reader.id"))
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    h: Mapped[int] = mapped_column(Integer)
    auto_accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class AuditEvent(Base):
    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_patient", "patient_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("reader.id"))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[int | None] = mapped_column(Integer)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patient.id", ondelete="SET NULL"))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Split(Base):
    __tablename__ = "split"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    assignments: Mapped[list[SplitAssignment]] = relationship(
        back_populates="split", cascade="all, delete-orphan"
    )


class SplitAssignment(Base):
    __tablename__ = "split_assignment"
    __table_args__ = (
        UniqueConstraint("split_id", "patient_id", "fold", name="uq_split_patient_fold"),
        CheckConstraint("subset IN ('train', 'val', 'test')", name="subset"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    split_id: Mapped[int] = mapped_column(ForeignKey("split.id", ondelete="CASCADE"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id", ondelete="CASCADE"))
    fold: Mapped[int] = mapped_column(Integer, default=0)
    subset: Mapped[str] = mapped_column(String(5))

    split: Mapped[Split] = relationship(back_populates="assignments")


class SweScalePreset(Base):
    """The range of an SWE color bar, entered once per scanner preset (issue 14, item 7).

    Used when the printed scale labels cannot be read with confidence: every image from
    the same manufacturer and model at the same screen size then decodes in kPa instead of
    relative units. Manufacturer and model are "" for images without a DICOM header.
    """

    __tablename__ = "swe_scale_preset"
    __table_args__ = (
        UniqueConstraint("manufacturer", "model", "width", "height", name="uq_swe_scale_preset"),
        CheckConstraint("low >= 0 AND high > low", name="range_ordered"),
        CheckConstraint("units IN ('kPa', 'm/s')", name="units_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    manufacturer: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    low: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    units: Mapped[str] = mapped_column(String(8))
    """``kPa`` (Young's modulus) or ``m/s`` (shear-wave speed, converted with E = 3ρc²)."""
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("reader.id", ondelete="SET NULL"))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class RunGroup(Base):
    """Runs submitted together (the study grid, a k-fold run fanned out over workers)."""

    __tablename__ = "run_group"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class TrainingRun(Base):
    __tablename__ = "training_run"
    __table_args__ = (Index("ix_run_status", "status"), Index("ix_run_group", "group_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(32))
    arch: Mapped[str] = mapped_column(String(32))
    modality: Mapped[str] = mapped_column(String(8))
    input_size: Mapped[list[Any]] = mapped_column(JSON)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    weights_source: Mapped[str] = mapped_column(String(300))
    split_id: Mapped[int | None] = mapped_column(ForeignKey("split.id", ondelete="SET NULL"))
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    history: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    model_path: Mapped[str | None] = mapped_column(String(300))
    """Relative to the data folder (``models/run-7.keras``), so the folder can move."""
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    backend: Mapped[str] = mapped_column(String(8), default="local", server_default="local")
    """``local`` (a subprocess of the app's machine) or ``rq`` (a job on a Redis Queue worker)."""
    queue: Mapped[str | None] = mapped_column(String(16))
    """The RQ queue (``gpu`` or ``cpu``) of an ``rq`` run."""
    worker: Mapped[str | None] = mapped_column(String(200))
    """The RQ worker that trains (trained) the run."""
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    """Last sign of life of an ``rq`` run's trainer; a stale one means the worker died."""
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """1, then one more per retry; the RQ job of an older attempt does nothing."""
    group_id: Mapped[int | None] = mapped_column(Integer)
    """The ``run_group`` the run was submitted with (no foreign key: SQLite cannot add one)."""


class Prediction(Base):
    __tablename__ = "prediction"
    __table_args__ = (
        Index("ix_prediction_run", "run_id"),
        Index("ix_prediction_patient", "patient_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_run.id", ondelete="CASCADE"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id", ondelete="CASCADE"))
    subset: Mapped[str] = mapped_column(String(8))
    fold: Mapped[int] = mapped_column(Integer, default=0)
    probability: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float, default=0.5)
    predicted_label: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class LoginAttempt(Base):
    """One sign-in attempt, kept in the database so rate limits survive restarts and hold
    across several app processes (``core.services.auth``)."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_username_at", "username", "at"),
        Index("ix_login_attempt_client_at", "client_key", "at"),
        Index("ix_login_attempt_at", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    client_key: Mapped[str] = mapped_column(String(128))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    success: Mapped[bool] = mapped_column(Boolean, default=False)


class UserSession(Base):
    """A signed-in browser: it holds a random token, the database only the token's sha256,
    so reading the database does not let anyone take over a session (``core.services.auth``)."""

    __tablename__ = "user_session"
    __table_args__ = (Index("ix_user_session_reader", "reader_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("reader.id", ondelete="CASCADE"))
    client: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
