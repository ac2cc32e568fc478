"""Online backup while the app writes, and restore into a fresh data folder."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from sqlalchemy import select

from core.cli.backup import add_backup_parser
from core.common import config
from core.common.store import ImageStore, sha256_hex
from core.imaging.deid import UID_KEY_PATH, site_uid_key
from core.services.backup import (
    DB_FILE,
    DUMP_FILE,
    MANIFEST_FILE,
    BackupError,
    backup,
    file_sha256,
    read_manifest,
    redact,
    restore,
)
from db.datafiles import data_path
from db.engine import Database
from db.migrate import alembic_config, upgrade
from db.models import Base, Image, Patient, Prediction, TrainingRun
from tests.tiny_runs import add_tiny_run


def _sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / DB_FILE}"


def _seed(folder: Path, n: int = 3) -> Database:
    """A data folder with ``n`` patients, each with one stored GSU image."""
    folder.mkdir(parents=True, exist_ok=True)
    url = _sqlite_url(folder)
    upgrade(url)
    db = Database(url)
    store = ImageStore(folder / "images")

    def work(session) -> None:
        for i in range(n):
            data = f"image bytes {i}".encode() * 50
            sha = sha256_hex(data)
            relpath, _ = store.put(data, sha, ".png")
            patient = Patient(code=f"P{i:03d}", sex="F", age=60, height_cm=160.0)
            patient.images = [
                Image(
                    modality="GSU",
                    sha256=sha,
                    path=relpath,
                    width=8,
                    height=8,
                    source_format="png",
                    dicom_header={"Rows": 8, "note": f"n{i}"},
                )
            ]
            session.add(patient)

    db.write(work)
    return db


def _table_digest(path: Path, max_patient_id: int | None = None) -> str:
    """A checksum of every row of every app table (patients up to ``max_patient_id``)."""
    digest = hashlib.sha256()
    with sqlite3.connect(path) as conn:
        for table in Base.metadata.sorted_tables:
            limit = max_patient_id is not None and table.name == "patient"
            where = f" WHERE id <= {max_patient_id}" if limit else ""
            rows = conn.execute(f'SELECT * FROM "{table.name}"{where} ORDER BY id').fetchall()
            digest.update(f"{table.name}:{rows!r}".encode())
    return digest.hexdigest()


def _codes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {code for (code,) in conn.execute("SELECT code FROM patient")}


def test_online_backup_while_writing_then_restore(tmp_path):
    source = tmp_path / "live"
    db = _seed(source)
    writer_db = Database(db.url)  # a second app process writing during the backup
    committed: list[str] = []
    stop = threading.Event()
    started = threading.Event()

    def keep_writing() -> None:
        i = 0
        while not stop.is_set():
            code = f"W{i:05d}"
            writer_db.write(
                lambda s, c=code: s.add(Patient(code=c, sex="M", age=50, height_cm=170))
            )
            committed.append(code)
            i += 1
            if i >= 5:
                started.set()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        assert started.wait(30)
        before = set(committed)
        dest = backup(db.url, tmp_path / "backup", data_dir=source)
    finally:
        stop.set()
        writer.join()
        writer_db.dispose()
    db.dispose()

    manifest = read_manifest(dest)
    backup_db = dest / DB_FILE
    assert manifest["database"]["sha256"] == file_sha256(backup_db)
    assert manifest["database"]["schema_revision"] is not None
    assert manifest["images"] == {"referenced": 3, "files": 3, "copied": 3, "missing": []}
    assert manifest["files"] == {"referenced": 3, "problems": []}

    target = tmp_path / "restored"
    counts = restore(dest, _sqlite_url(target), target)
    restored_db = target / DB_FILE
    with sqlite3.connect(restored_db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        max_id = conn.execute("SELECT max(id) FROM patient").fetchone()[0]
    assert counts == manifest["counts"]
    assert before <= _codes(restored_db)
    assert {f"P{i:03d}" for i in range(3)} <= _codes(restored_db)
    # Writes are serialized and ids grow with commit order, so the live database's rows
    # up to the backup's last patient are exactly what the backup holds.
    assert _table_digest(restored_db) == _table_digest(source / DB_FILE, max_id)
    for file in (source / "images").rglob("*.png"):
        copy = target / "images" / file.relative_to(source / "images")
        assert copy.read_bytes() == file.read_bytes()


def test_reused_backup_folder_copies_only_new_images(tmp_path):
    source = tmp_path / "live"
    _seed(source).dispose()
    dest = tmp_path / "backup"
    backup(_sqlite_url(source), dest, data_dir=source)
    extra = b"one more image" * 10
    ImageStore(source / "images").put(extra, sha256_hex(extra), ".png")
    backup(_sqlite_url(source), dest, data_dir=source)
    images = read_manifest(dest)["images"]
    assert (images["files"], images["copied"]) == (4, 1)


def test_missing_images_are_listed(tmp_path):
    source = tmp_path / "live"
    _seed(source).dispose()
    victim = next((source / "images").rglob("*.png"))
    victim.unlink()
    dest = backup(_sqlite_url(source), tmp_path / "backup", data_dir=source)
    missing = read_manifest(dest)["images"]["missing"]
    assert missing == [victim.relative_to(source / "images").as_posix()]


def test_restore_refuses_a_target_with_data_unless_forced(tmp_path):
    source = tmp_path / "live"
    _seed(source, n=2).dispose()
    dest = backup(_sqlite_url(source), tmp_path / "backup", data_dir=source)
    other = tmp_path / "other"
    _seed(other, n=5).dispose()
    with pytest.raises(BackupError, match="already holds data"):
        restore(dest, _sqlite_url(other), other)
    assert len(_codes(other / DB_FILE)) == 5
    counts = restore(dest, _sqlite_url(other), other, force=True)
    assert counts["patient"] == 2
    assert _codes(other / DB_FILE) == {"P000", "P001"}


def test_the_uid_secret_is_backed_up_and_restored_private(tmp_path):
    source = tmp_path / "live"
    _seed(source, n=1).dispose()
    key = site_uid_key(source)
    dest = backup(_sqlite_url(source), tmp_path / "backup", data_dir=source)
    assert read_manifest(dest)["uid_key"] is True
    db_bytes = (dest / DB_FILE).read_bytes()
    assert key.hex().encode() not in db_bytes and key not in db_bytes
    fresh = tmp_path / "fresh"
    restore(dest, _sqlite_url(fresh), fresh)
    for folder in (dest, fresh):
        assert site_uid_key(folder) == key
        assert stat.S_IMODE((folder / UID_KEY_PATH).stat().st_mode) == 0o600


def test_restore_into_an_empty_schema_is_allowed(tmp_path):
    source = tmp_path / "live"
    _seed(source, n=2).dispose()
    dest = backup(_sqlite_url(source), tmp_path / "backup", data_dir=source)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    upgrade(_sqlite_url(fresh))  # the app was started once on the new machine
    assert restore(dest, _sqlite_url(fresh), fresh)["patient"] == 2


def test_restore_refuses_a_changed_backup(tmp_path):
    source = tmp_path / "live"
    _seed(source).dispose()
    dest = backup(_sqlite_url(source), tmp_path / "backup", data_dir=source)
    with sqlite3.connect(dest / DB_FILE) as conn:
        conn.execute("UPDATE patient SET age = 99")
    with pytest.raises(BackupError, match="sha256"):
        restore(dest, _sqlite_url(tmp_path / "t"), tmp_path / "t")
    (dest / MANIFEST_FILE).unlink()
    with pytest.raises(BackupError, match="not a backup folder"):
        restore(dest, _sqlite_url(tmp_path / "t"), tmp_path / "t")


def test_backup_never_overwrites_the_live_database(tmp_path):
    source = tmp_path / "live"
    _seed(source).dispose()
    with pytest.raises(BackupError, match="live database"):
        backup(_sqlite_url(source), source, data_dir=source)
    with pytest.raises(BackupError, match="overlaps"):
        backup(_sqlite_url(source), source / "images" / "bk", data_dir=source)
    assert len(_codes(source / DB_FILE)) == 3


def test_postgres_backup_without_pg_dump_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match=r"pg_dump was not found.*postgresql-client"):
        backup(
            "postgresql+psycopg://u:secret@localhost:1/x", tmp_path / "b", data_dir=tmp_path / "i"
        )
    assert "secret" not in redact("postgresql+psycopg://u:secret@localhost:1/x")


def test_cli_backup_and_restore(tmp_path, monkeypatch, capsys):
    source = tmp_path / "live"
    _seed(source).dispose()
    monkeypatch.delenv("DATABASE_URL", raising=False)
    parser = argparse.ArgumentParser()
    add_backup_parser(parser.add_subparsers(dest="command", required=True))

    monkeypatch.setenv("SARCOPENIA_DATA_DIR", str(source))
    args = parser.parse_args(["backup", str(tmp_path / "bk")])
    assert args.handler(args) == 0
    assert "3 images (3 new)" in capsys.readouterr().out

    monkeypatch.setenv("SARCOPENIA_DATA_DIR", str(tmp_path / "new"))
    args = parser.parse_args(["restore", str(tmp_path / "bk")])
    assert args.handler(args) == 0
    assert _codes(tmp_path / "new" / DB_FILE) == {"P000", "P001", "P002"}
    assert len(list((tmp_path / "new" / "images").rglob("*.png"))) == 3


def _dump_rows(dump: str, table: str) -> int:
    lines = dump.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"COPY public.{table} "))
    end = lines.index("\\.", start)
    return end - start - 1


@pytest.mark.postgres
def test_postgres_backup_is_one_snapshot(tmp_path, data_dir):
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set: no PostgreSQL server to back up")
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not on PATH (apt-get install postgresql-client)")
    upgrade(url)
    db = Database(url)
    writer_db = Database(url)
    stop = threading.Event()
    db.write(lambda s: s.add(Patient(code="FIRST", sex="F", age=40, height_cm=150)))

    def keep_writing() -> None:
        i = 0
        while not stop.is_set():
            writer_db.write(
                lambda s, c=f"W{i}": s.add(Patient(code=c, sex="M", age=50, height_cm=170))
            )
            i += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        dest = backup(url, tmp_path / "pg", data_dir=tmp_path / "no-data")
    finally:
        stop.set()
        writer.join()
        writer_db.dispose()
        db.dispose()
    manifest = read_manifest(dest)
    dump = (dest / DUMP_FILE).read_text(encoding="utf-8")
    assert manifest["database"]["dialect"] == "postgresql"
    assert manifest["database"]["sha256"] == file_sha256(dest / DUMP_FILE)
    assert manifest["counts"]["patient"] >= 1
    assert _dump_rows(dump, "patient") == manifest["counts"]["patient"]
    assert "FIRST" in dump
    with pytest.raises(BackupError, match="psql"):
        restore(dest, _sqlite_url(tmp_path / "t"), tmp_path / "t")


def _add_model_run(folder: Path, content: bytes = b"model weights") -> int:
    """A finished run whose model file lies in ``folder/models``, as training leaves it."""
    (folder / "models").mkdir(exist_ok=True)
    model = folder / "models" / "run-1.keras"
    model.write_bytes(content)
    db = Database(_sqlite_url(folder))

    def work(session) -> int:
        run = TrainingRun(
            task="sarcopenia_gsu",
            arch="vgg19",
            modality="GSU",
            input_size=[[32, 32]],
            settings={},
            weights_source="none",
            status="done",
            model_path="models/run-1.keras",
            model_sha256=sha256_hex(content),
        )
        session.add(run)
        session.flush()
        return run.id

    try:
        return db.write(work)
    finally:
        db.dispose()


def test_restore_then_predict_in_a_new_data_folder(agreed_demo, tiny_models, tmp_path, monkeypatch):
    """Issue 13: backups left out models/, and runs named their model by absolute path."""
    from core.learning.dataset import load_task_data
    from core.services.review import load_predictor

    db, store = agreed_demo
    run_id = add_tiny_run(db, store, tiny_models["gsu"])
    source = config.data_dir()
    dest = backup(db.url, tmp_path / "bk", data_dir=source)
    db.dispose()
    manifest = read_manifest(dest)
    assert manifest["models"]["referenced"] == 1 and manifest["models"]["copied"] == 1
    assert manifest["files"]["problems"] == []
    shutil.rmtree(source)  # the old folder is gone: nothing may still point into it

    moved = tmp_path / "moved"
    monkeypatch.setenv("SARCOPENIA_DATA_DIR", str(moved))
    restore(dest, _sqlite_url(moved), moved)
    restored = Database(_sqlite_url(moved))
    try:
        predictor = load_predictor(restored, run_id)
        data = load_task_data(restored, ImageStore(moved / "images"), predictor.settings)
        with restored.read() as session:
            stored = dict(
                session.execute(
                    select(Prediction.patient_id, Prediction.probability).where(
                        Prediction.run_id == run_id
                    )
                ).all()
            )
    finally:
        restored.dispose()
    index = {int(pid): i for i, pid in enumerate(data.patient_ids)}
    some = sorted(stored)[:4]
    got = predictor.predict({"gsu": data.inputs["gsu"][[index[p] for p in some]]})
    np.testing.assert_allclose(got, [stored[p] for p in some], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_restore_refuses_a_backup_whose_model_is_damaged(tmp_path, damage):
    source = tmp_path / "live"
    _seed(source).dispose()
    _add_model_run(source)
    dest = backup(_sqlite_url(source), tmp_path / "backup", data_dir=source)
    model = dest / "models" / "run-1.keras"
    if damage == "changed":
        model.write_bytes(b"model weightz")
        expected = "models/run-1.keras does not match its recorded sha256"
    else:
        model.unlink()
        expected = "models/run-1.keras is missing"
    target = tmp_path / "target"
    with pytest.raises(BackupError, match=expected) as refused:
        restore(dest, _sqlite_url(target), target)
    assert "Nothing was restored" in str(refused.value)
    assert not (target / DB_FILE).exists() or not _codes(target / DB_FILE)
    assert not (target / "models").exists()


def test_backup_lists_a_model_that_changed_after_it_was_recorded(tmp_path, capsys, monkeypatch):
    source = tmp_path / "live"
    _seed(source).dispose()
    _add_model_run(source)
    (source / "models" / "run-1.keras").write_bytes(b"something else")
    dest = backup(_sqlite_url(source), tmp_path / "backup", data_dir=source)
    assert read_manifest(dest)["files"]["problems"] == [
        "models/run-1.keras does not match its recorded sha256"
    ]


def test_absolute_model_paths_become_relative_on_upgrade(tmp_path, monkeypatch):
    """Migration 0006: a run saved with an absolute path still loads after the folder moves."""
    old = tmp_path / "old"
    old.mkdir()
    url = _sqlite_url(old)
    command.upgrade(alembic_config(url), "0005")
    (old / "models").mkdir()
    (old / "models" / "run-1.keras").write_bytes(b"model")
    with sqlite3.connect(old / DB_FILE) as conn:
        conn.execute(
            "INSERT INTO training_run (task, arch, modality, input_size, settings, "
            "weights_source, status, model_path, cancel_requested, created_at) VALUES "
            "('sarcopenia_gsu', 'vgg19', 'GSU', '[]', '{}', 'none', 'done', ?, 0, "
            "'2026-01-01 00:00:00')",
            (str(old / "models" / "run-1.keras"),),
        )
    upgrade(url)
    moved = tmp_path / "moved"
    old.rename(moved)
    monkeypatch.setenv("SARCOPENIA_DATA_DIR", str(moved))
    with sqlite3.connect(moved / DB_FILE) as conn:
        path, sha = conn.execute("SELECT model_path, model_sha256 FROM training_run").fetchone()
    assert path == "models/run-1.keras"
    assert data_path(path).read_bytes() == b"model"
    assert sha == file_sha256(data_path(path))
