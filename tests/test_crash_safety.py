"""A ``kill -9`` in the middle of an import, and the start-up sweep that cleans up after it.

The import runs as the real command (``python -m core import big.zip``) in a subprocess,
killed once its first few image files are in the store: the importer is then between
writing files and committing their rows. Afterwards the database must be consistent (all
cases or none, every patient with its images, every image with its file), the orphan files
must go at the next start (``startup_checks``), and the same import must then succeed.
Runs on PostgreSQL too when ``TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select, text

from core.common.store import TMP_PREFIX, ImageStore
from core.services.maintenance import ORPHAN_GRACE, StartupReport, startup_checks, sweep_orphans
from db.engine import Database
from db.models import AuditEvent, CtMeasurement, Image, Patient, TrainingRun
from tests.bundles import make_zip, png_bytes, row

ROOT = Path(__file__).resolve().parents[1]
CASES = 40
NOW = dt.timedelta(0)
KILL_AFTER_FILES = 4
"""Kill once this many of the 80 image files are written: midway through the file phase."""


def _big_bundle(path: Path) -> Path:
    """40 cases, each a GSU and an SWE image of 240×320 noise (about 230 kB apiece)."""
    rows, files = [], {}
    for i in range(CASES):
        gsu, swe = f"g{i:02d}.png", f"s{i:02d}.png"
        rows.append(row(f"BIG-{i:03d}", gsu, swe))
        files[gsu] = png_bytes(2 * i, (240, 320))
        files[swe] = png_bytes(2 * i + 1, (240, 320))
    path.write_bytes(make_zip(rows, files))
    return path


def _files(store: ImageStore) -> set[str]:
    return {p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()}


def _import_command(bundle: Path) -> list[str]:
    """The import as an admin runs it; ``--known-clean`` because the noise holds no text,
    and searching 80 images for it (about 2.5 s each) is not what is tested here."""
    return [sys.executable, "-m", "core", "import", "--known-clean", str(bundle)]


def _kill_when_files_appear(bundle: Path, store: ImageStore) -> int:
    """Start the import, SIGKILL it once the store holds a few files; its return code."""
    proc = subprocess.Popen(
        _import_command(bundle), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while (
        proc.poll() is None
        and len(_files(store)) < KILL_AFTER_FILES
        and time.monotonic() < deadline
    ):
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=30)


def _consistency(db: Database) -> dict[str, int]:
    """Row counts; asserts that the rows of every patient are complete."""
    with db.read() as session:
        if db.is_sqlite:
            assert session.execute(text("PRAGMA integrity_check")).scalars().all() == ["ok"]
            assert session.execute(text("PRAGMA foreign_key_check")).all() == []
        per_patient = session.execute(
            select(Patient.code, func.count(Image.id)).outerjoin(Image).group_by(Patient.code)
        ).all()
        assert all(n == 2 for _, n in per_patient), per_patient
        counts = {
            "patients": len(per_patient),
            "images": session.scalar(select(func.count(Image.id))),
            "ct": session.scalar(select(func.count(CtMeasurement.id))),
            "audit": session.scalar(select(func.count(AuditEvent.id))),
        }
    assert counts["patients"] in (0, CASES), counts
    assert counts == {
        "patients": counts["patients"],
        "images": 2 * counts["patients"],
        "ct": counts["patients"],
        "audit": counts["patients"],
    }
    return counts


def _paths(db: Database) -> set[str]:
    with db.read() as session:
        return set(session.scalars(select(Image.path)))


def test_kill_9_mid_import_leaves_all_or_nothing_and_the_sweep_cleans_up(
    db, store, tmp_path, capsys
):
    bundle = _big_bundle(tmp_path / "big.zip")
    assert _kill_when_files_appear(bundle, store) == -signal.SIGKILL

    counts = _consistency(db)
    on_disk = _files(store)
    assert _paths(db) <= on_disk, "a committed image row lost its file"
    orphans = on_disk - _paths(db)
    with capsys.disabled():
        print(f"\n[crash] killed with {counts['patients']} patients, {len(orphans)} orphan files")
    # The kill must have landed where it matters: files written, rows not committed. A kill
    # after the commit (all 40 patients, no orphans) would pass everything below unseen.
    assert counts["patients"] == 0, "the kill came after the commit; nothing was tested"
    assert len(orphans) >= KILL_AFTER_FILES, orphans

    assert startup_checks(db, store) == StartupReport([], 0), "young files must be left alone"
    report = startup_checks(db, store, grace=NOW)
    assert set(report.swept) == orphans
    assert _files(store) == _paths(db)

    done = subprocess.run(_import_command(bundle), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _consistency(db)["patients"] == CASES
    assert _files(store) == _paths(db)


def _age(path: Path, by: dt.timedelta) -> None:
    past = time.time() - by.total_seconds()
    os.utime(path, (past, past))


def test_sweep_removes_only_old_unreferenced_and_temporary_files(db, store):
    known = store.put(b"kept", "a" * 64, ".png")[0]
    db.write(
        lambda s: s.add(
            Patient(
                code="P1",
                sex="F",
                age=60,
                height_cm=160.0,
                images=[
                    Image(
                        modality="GSU",
                        sha256="a" * 64,
                        path=known,
                        width=64,
                        height=48,
                        source_format="png",
                    )
                ],
            )
        )
    )
    old_orphan = store.put(b"old", "b" * 64, ".png")[0]
    young_orphan = store.put(b"young", "c" * 64, ".png")[0]
    temp = store.root / "dd" / f"{TMP_PREFIX}x1"
    temp.parent.mkdir()
    temp.write_bytes(b"half")
    hour_and_more = ORPHAN_GRACE + dt.timedelta(minutes=1)
    for rel in (known, old_orphan):
        _age(store.root / rel, hour_and_more)
    _age(temp, hour_and_more)

    assert sweep_orphans(db, store) == sorted([old_orphan, f"dd/{TMP_PREFIX}x1"])
    assert _files(store) == {known, young_orphan}
    assert sweep_orphans(db, store, grace=NOW) == [young_orphan]
    assert _files(store) == {known}


def test_startup_checks_marks_a_run_whose_process_died_failed(db, store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def work(session) -> None:
        session.add(
            TrainingRun(
                task="sarcopenia_gsu",
                arch="vgg19",
                modality="GSU",
                input_size=[[112, 112]],
                settings={},
                weights_source="none",
                status="running",
                pid=dead.pid,
                progress={"phase": "training"},
            )
        )

    db.write(work)
    assert startup_checks(db, store).failed_runs == 1
    with db.read() as session:
        run = session.scalars(select(TrainingRun)).one()
    assert run.status == "failed" and str(dead.pid) in (run.error or "")
