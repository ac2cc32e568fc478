"""Copying the whole database to another one (SQLite → SQLite here, → PostgreSQL in CI)."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.cli.migrate_db import add_migrate_db_parser
from core.services import migrate_db
from core.services.migrate_db import MigrateError, copy_database
from db.engine import Database
from db.migrate import upgrade
from db.models import (
    AuditEvent,
    Base,
    ConsensusGrade,
    CropBox,
    CtMeasurement,
    Grade,
    Image,
    LoginAttempt,
    Patient,
    Prediction,
    Reader,
    RunGroup,
    Split,
    SplitAssignment,
    SupersededConsensus,
    SweScalePreset,
    TrainingRun,
    UserSession,
)


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _fill(url: str) -> None:
    """One or more rows in every table, JSON NULL and SQL NULL both included."""
    upgrade(url)
    db = Database(url)

    def work(s) -> None:
        reader = Reader(username="alice", display_name="Alice", role="admin", password_hash="$x$")
        s.add(reader)
        patients = []
        for i in range(3):
            p = Patient(code=f"P{i:03d}", sex="MF"[i % 2], age=50 + i, height_cm=150.5 + i)
            p.us_date = dt.date(2021, 1, 1 + i)
            p.ct = CtMeasurement(sma_cm2=100.25 + i, ct_date=dt.date(2021, 1, 5))
            p.images = [
                Image(
                    modality="GSU",
                    sha256=f"{i:064x}",
                    path=f"00/{i:064x}.png",
                    width=64,
                    height=48,
                    source_format="png",
                    dicom_header={"Rows": 48, "nested": [1, 2.5, None]} if i else None,
                )
            ]
            patients.append(p)
        s.add_all(patients)
        s.flush()
        image = patients[1].images[0]
        s.add(Grade(image_id=image.id, reader_id=reader.id, grade=2))
        s.add(ConsensusGrade(image_id=image.id, grade=2, method="agreement"))
        s.add(
            SupersededConsensus(
                image_id=image.id,
                grade=1,
                method="adjudicated",
                decided_by_id=reader.id,
                decided_at=dt.datetime(2021, 2, 1, 9, 30),
                box={"x": 1, "y": 2, "w": 30, "h": 20},
                superseded_by_id=reader.id,
                reason="a later grade disagreed",
            )
        )
        s.add(CropBox(image_id=image.id, owner_key="auto", source="auto", x=1, y=2, w=30, h=20))
        s.add(
            AuditEvent(actor="alice", action="grade", entity="grade", entity_id=1, after={"g": 2})
        )
        split = Split(name="s", task="sarcopenia_gsu", seed=1, settings={}, fingerprint="f")
        split.assignments = [SplitAssignment(patient_id=p.id, subset="train") for p in patients]
        s.add(split)
        group = RunGroup(name="study grid")
        s.add(group)
        s.add(
            SweScalePreset(
                manufacturer="ACME",
                model="Sono 9",
                width=640,
                height=480,
                low=0.0,
                high=7.5,
                units="m/s",
            )
        )
        s.flush()
        run = TrainingRun(
            task="sarcopenia_gsu",
            arch="vgg19",
            modality="GSU",
            input_size=[112, 112],
            settings={"lr": 1e-4},
            weights_source="none",
            split_id=split.id,
            group_id=group.id,
            progress=None,  # the ORM writes JSON null here, not SQL NULL
        )
        s.add(run)
        s.flush()
        s.add(
            Prediction(
                run_id=run.id,
                patient_id=patients[0].id,
                subset="test",
                probability=0.123456789,
                predicted_label=0,
            )
        )
        s.add(LoginAttempt(username="alice", client_key="k", success=True))
        s.add(
            UserSession(
                token_hash="ab" * 32,
                reader_id=reader.id,
                client="ip:local",
                expires_at=dt.datetime(2026, 1, 1, 20, 0),
            )
        )

    db.write(work)
    db.dispose()


def _typed_digest(path: Path) -> dict[str, str]:
    """Per table, a checksum of the raw stored rows and their SQLite storage classes (so a
    JSON 'null' and an SQL NULL differ)."""
    out = {}
    with sqlite3.connect(path) as conn:
        for table in Base.metadata.sorted_tables:
            cols = ", ".join(f'"{c.name}", typeof("{c.name}")' for c in table.c)
            rows = conn.execute(f'SELECT {cols} FROM "{table.name}" ORDER BY id').fetchall()
            out[table.name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return out


def test_sqlite_to_sqlite_copies_every_row_exactly(tmp_path):
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    _fill(_url(src))
    counts = copy_database(_url(src), _url(dst))

    assert set(counts) == {t.name for t in Base.metadata.sorted_tables}
    assert all(n > 0 for n in counts.values()), counts
    assert counts["patient"] == 3 and counts["split_assignment"] == 3
    assert _typed_digest(dst) == _typed_digest(src)

    db = Database(_url(dst))
    with db.read() as s:
        p = s.scalar(select(Patient).where(Patient.code == "P001"))
        assert (p.sex, p.age, p.height_cm, p.us_date) == ("F", 51, 151.5, dt.date(2021, 1, 2))
        assert p.images[0].dicom_header == {"Rows": 48, "nested": [1, 2.5, None]}
    db.write(lambda s: s.add(Patient(code="NEW", sex="M", age=70, height_cm=180)))
    with db.read() as s:
        assert s.scalar(select(func.max(Patient.id))) == 4
    db.dispose()


def test_target_with_rows_is_refused_and_left_alone(tmp_path):
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    _fill(_url(src))
    upgrade(_url(dst))
    db = Database(_url(dst))
    db.write(lambda s: s.add(Patient(code="KEEP", sex="M", age=70, height_cm=180)))
    with pytest.raises(MigrateError, match=r"already holds rows: patient \(1\)"):
        copy_database(_url(src), _url(dst))
    with db.read() as s:
        assert list(s.scalars(select(Patient.code))) == ["KEEP"]
    db.dispose()


def test_a_failed_copy_leaves_the_target_empty(tmp_path, monkeypatch):
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    _fill(_url(src))

    def broken(_conn) -> None:
        raise RuntimeError("server went away")

    monkeypatch.setattr(migrate_db, "reset_sequences", broken)
    with pytest.raises(RuntimeError, match="went away"):
        copy_database(_url(src), _url(dst))
    with sqlite3.connect(dst) as conn:
        for table in Base.metadata.sorted_tables:
            assert conn.execute(f'SELECT count(*) FROM "{table.name}"').fetchone() == (0,)


def test_progress_counts_every_row(tmp_path):
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    _fill(_url(src))
    calls: list[tuple[int, int]] = []
    counts = copy_database(_url(src), _url(dst), progress=lambda d, t: calls.append((d, t)))
    total = sum(counts.values())
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_same_database_is_refused(tmp_path):
    src = tmp_path / "src.db"
    with pytest.raises(MigrateError, match="same database"):
        copy_database(_url(src), _url(src))


def test_cli_migrate_db(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    _fill(_url(folder / "sarcopenia.db"))
    monkeypatch.setenv("SARCOPENIA_DATA_DIR", str(folder))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    parser = argparse.ArgumentParser()
    add_migrate_db_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["migrate-db", "--to", _url(tmp_path / "new.db")])
    assert args.handler(args) == 0
    captured = capsys.readouterr()
    assert "patient" in captured.out and "Set DATABASE_URL" in captured.out
    assert "relative to the data folder" in captured.out
    assert "images/" in captured.err and "is missing" in captured.err  # _fill writes no files
    assert _typed_digest(tmp_path / "new.db") == _typed_digest(folder / "sarcopenia.db")


@pytest.mark.postgres
def test_sqlite_to_postgres_and_back(tmp_path, data_dir):
    server = os.environ.get("TEST_DATABASE_URL")
    if not server:
        pytest.skip("TEST_DATABASE_URL is not set: no PostgreSQL server to copy into")
    src, back = tmp_path / "src.db", tmp_path / "back.db"
    _fill(_url(src))
    counts = copy_database(_url(src), server)
    assert counts["patient"] == 3

    db = Database(server)
    with db.read() as s:
        header = s.scalar(select(Image.dicom_header).where(Image.sha256 == f"{1:064x}"))
        assert header == {"Rows": 48, "nested": [1, 2.5, None]}
    db.write(lambda s: s.add(Patient(code="NEW", sex="M", age=70, height_cm=180)))
    db.write(lambda s: s.add(LoginAttempt(username="bob", client_key="k", success=False)))
    with db.read() as s:
        assert s.scalar(select(Patient.id).where(Patient.code == "NEW")) == 4
    with db.transaction() as s:
        s.execute(Patient.__table__.delete().where(Patient.code == "NEW"))
        s.execute(LoginAttempt.__table__.delete().where(LoginAttempt.username == "bob"))
    db.dispose()

    assert copy_database(server, _url(back)) == counts
    assert _typed_digest(back) == _typed_digest(src)
