"""The database layer on a real SQLite file (and PostgreSQL when TEST_DATABASE_URL is set)."""

from __future__ import annotations

import datetime as dt
import threading
import warnings

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import IntegrityError

from db.audit import patient_history
from db.cases import CaseFilter, case_labels, get_patient, list_cases, update_patient
from db.migrate import alembic_config, upgrade
from db.models import AuditEvent, Base, CtMeasurement, Grade, Image, Patient
from db.readers import ensure_reader


def _patient(
    code: str,
    sex: str = "F",
    height: float = 160.0,
    sma: float | None = 80.0,
    ct_days: int | None = 10,
    reason: str | None = None,
) -> Patient:
    us = dt.date(2020, 1, 1)
    patient = Patient(code=code, sex=sex, age=60, height_cm=height, weight_kg=60.0, us_date=us)
    patient.ct = CtMeasurement(
        sma_cm2=sma,
        ct_date=us + dt.timedelta(days=ct_days) if ct_days is not None else None,
        exclusion_reason=reason,
    )
    return patient


@pytest.mark.sqlite_only
def test_sqlite_pragmas(db):
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000


def test_upgrade_is_idempotent(db):
    upgrade(db.url)
    with db.read() as s:
        current = s.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert current == ScriptDirectory.from_config(alembic_config(db.url)).get_current_head()


def test_database_url_and_data_dir_come_from_the_environment(data_dir, monkeypatch):
    from core.common import config

    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert config.database_url().endswith(str(data_dir / "sarcopenia.db"))
    monkeypatch.setenv("DATABASE_URL", "sqlite:////elsewhere/x.db")
    assert config.database_url() == "sqlite:////elsewhere/x.db"


def test_transaction_rolls_back_whole(db):
    def work(session):
        session.add(_patient("A1"))
        session.flush()
        session.add(_patient("A1"))
        session.flush()

    with pytest.raises(IntegrityError):
        db.write(work)
    with db.read() as s:
        assert s.scalar(select(func.count(Patient.id))) == 0
        assert s.scalar(select(func.count(CtMeasurement.id))) == 0


def test_grade_is_unique_per_image_and_reader(db):
    def work(session):
        reader = ensure_reader(session, "r1")
        patient = _patient("G1")
        patient.images.append(
            Image(modality="GSU", sha256="a" * 64, path="x", width=1, height=1, source_format="png")
        )
        session.add(patient)
        session.flush()
        session.add(Grade(image_id=patient.images[0].id, reader_id=reader.id, grade=1))
        session.flush()
        session.add(Grade(image_id=patient.images[0].id, reader_id=reader.id, grade=2))
        session.flush()

    with pytest.raises(IntegrityError):
        db.write(work)


def test_check_constraints_refuse_out_of_range_values(db):
    with pytest.raises(IntegrityError):
        db.write(lambda s: s.add(_patient("H1", height=-5.0)))


def test_case_list_filters_match_the_python_labels(db):
    def work(session):
        session.add(_patient("M-SARC", sex="M", height=170.0, sma=140.0))  # SMI 48.4
        session.add(_patient("M-OK", sex="M", height=170.0, sma=142.0))  # SMI 49.1
        session.add(_patient("F-EDGE", sex="F", height=160.0, sma=79.36))  # SMI 31.0
        session.add(_patient("F-LATE", sex="F", ct_days=31))
        session.add(_patient("F-30", sex="F", ct_days=-30, sma=100.0))
        session.add(_patient("F-HW", sex="F", reason="surgical hardware at L3"))

    db.write(work)
    with db.read() as s:
        sarc = {r.code for r in list_cases(s, CaseFilter(sarcopenia="sarcopenic"))[0]}
        not_sarc = {r.code for r in list_cases(s, CaseFilter(sarcopenia="not sarcopenic"))[0]}
        excluded = {r.code for r in list_cases(s, CaseFilter(sarcopenia="excluded"))[0]}
        python = {}
        for code in ("M-SARC", "M-OK", "F-EDGE", "F-LATE", "F-30", "F-HW"):
            python[code] = case_labels(get_patient(s, code)).sarcopenic
        page, total = list_cases(s, CaseFilter(code_contains="f-"), limit=2)
    assert sarc == {c for c, v in python.items() if v is True} == {"M-SARC", "F-EDGE"}
    assert not_sarc == {"M-OK", "F-30"}
    assert excluded == {"F-LATE", "F-HW"}
    assert total == 4 and len(page) == 2


def test_update_patient_is_audited_and_labels_follow(db):
    db.write(lambda s: s.add(_patient("U1", sex="F", height=160.0, sma=90.0)))

    def edit(session):
        actor = ensure_reader(session, "boss", role="admin")
        update_patient(session, get_patient(session, "U1"), actor, {"height_cm": 175.0}, {})

    db.write(edit)
    with db.read() as s:
        patient = get_patient(s, "U1")
        labels = case_labels(patient)
        (event,) = patient_history(s, patient.id)
    assert labels.smi == pytest.approx(90.0 / 1.75**2)
    assert labels.sarcopenic is True
    assert event.before["height_cm"] == 160.0 and event.after["height_cm"] == 175.0
    assert event.actor == "boss"


def test_unknown_fields_cannot_be_edited(db):
    db.write(lambda s: s.add(_patient("U2")))

    def edit(session):
        actor = ensure_reader(session, "boss", role="admin")
        update_patient(session, get_patient(session, "U2"), actor, {"code": "X"}, {})

    with pytest.raises(ValueError, match="cannot be edited"):
        db.write(edit)
    with db.read() as s:
        assert s.scalar(select(func.count(AuditEvent.id))) == 0


@pytest.mark.sqlite_only
def test_a_writer_waits_for_another_writer_instead_of_failing(db):
    blocker = db.engine.raw_connection()
    blocker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, blocker.rollback).start()
    db.write(lambda s: s.add(_patient("W1")))
    blocker.close()
    with db.read() as s:
        assert s.scalar(select(func.count(Patient.id))) == 1


def test_migration_0008_drops_the_invented_experience_of_simulated_readers(db):
    from alembic import command

    cfg = alembic_config(db.url)
    command.downgrade(cfg, "0007")
    labels = {
        "sim_reader_a": "Simulated reader A (13 y experience)",
        "sim_reader_b": "Dr B, renamed by an admin",
    }
    db.write(lambda s: [ensure_reader(s, user, name) for user, name in labels.items()])
    command.upgrade(cfg, "head")
    with db.read() as session:
        got = dict(session.execute(text("SELECT username, display_name FROM reader")).all())
    assert got == {
        "sim_reader_a": "Simulated reader A",
        "sim_reader_b": "Dr B, renamed by an admin",
    }


def test_migrations_build_exactly_the_models_schema(db):
    """Alembic's autogenerate finds nothing to add: the migration chain and db/models.py agree."""
    engine = create_engine(db.url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLite cannot reflect the expression index
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []
