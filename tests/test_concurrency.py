"""Several writers at once: no lost or crossed grade, and a consensus is decided only once.

The short version of ``bench/load_test.py``: 4 reader threads grade the same 50 images
(200 grades) through ``save_grade`` inside ``Database.write``, as the Grading page does.
Runs on PostgreSQL too when ``TEST_DATABASE_URL`` is set (the ``db`` fixture).
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from sqlalchemy import select

from core.common.boxes import Box
from db.consensus import ConsensusConflict, adjudicate
from db.engine import Database
from db.grading import save_box, save_grade
from db.models import AuditEvent, ConsensusGrade, CropBox, Grade, Image, Patient
from db.readers import ensure_reader, get_reader

WRITERS = 4
IMAGES = 50


def _cohort(db: Database, images: int) -> list[int]:
    """GSU image rows (no files needed) for ``images`` patients, plus the accounts."""

    def work(session) -> None:
        for i in range(images):
            patient = Patient(code=f"C{i:03d}", sex="F", age=60, height_cm=160.0)
            patient.images.append(
                Image(
                    modality="GSU",
                    sha256=f"{i:064x}",
                    path=f"00/{i:064x}.png",
                    width=640,
                    height=480,
                    source_format="png",
                )
            )
            session.add(patient)
        for w in range(WRITERS):
            ensure_reader(session, f"writer{w}")
        ensure_reader(session, "chief", role="admin")
        ensure_reader(session, "deputy", role="admin")

    db.write(work)
    with db.read() as session:
        return list(session.scalars(select(Image.id).order_by(Image.id)))


def _grade_for(image_id: int, writer: int) -> int:
    """Different readers give different grades, so a crossed update shows as a wrong value."""
    return (image_id + writer) % 4


def test_four_writers_lose_no_grade_and_each_has_its_audit_row(db):
    image_ids = _cohort(db, IMAGES)
    start = threading.Barrier(WRITERS)

    def writer(w: int) -> int:
        name = f"writer{w}"
        start.wait()
        for image_id in image_ids:
            grade = _grade_for(image_id, w)
            db.write(lambda s, i=image_id, g=grade: save_grade(s, i, get_reader(s, name), g))
        return w

    with ThreadPoolExecutor(WRITERS) as pool:
        assert sorted(pool.map(writer, range(WRITERS))) == list(range(WRITERS))

    with db.read() as session:
        names = {get_reader(session, f"writer{w}").id: w for w in range(WRITERS)}
        grades = session.execute(select(Grade.id, Grade.image_id, Grade.reader_id, Grade.grade))
        stored = [(gid, image, names[reader], value) for gid, image, reader, value in grades]
        events = session.execute(
            select(
                AuditEvent.entity_id, AuditEvent.action, AuditEvent.actor, AuditEvent.after
            ).where(AuditEvent.entity == "grade")
        ).all()
    assert len(stored) == WRITERS * IMAGES == 200
    pairs = Counter((image, w) for _, image, w, _ in stored)
    assert set(pairs) == {(i, w) for i in image_ids for w in range(WRITERS)}
    assert set(pairs.values()) == {1}
    assert all(value == _grade_for(image, w) for _, image, w, value in stored)
    assert len(events) == 200
    audit = {entity_id: (action, actor, after) for entity_id, action, actor, after in events}
    for gid, image, w, value in stored:
        assert audit[gid] == ("grade.create", f"writer{w}", {"grade": value, "image_id": image})


def _decide(db: Database, start: threading.Barrier, image_id: int, admin: str, grade: int) -> str:
    start.wait()
    try:
        db.write(lambda s: adjudicate(s, image_id, get_reader(s, admin), grade, None))
    except ConsensusConflict:
        return "conflict"
    return "decided"


def test_two_admins_adjudicating_the_same_image_one_wins_the_other_is_told(db):
    image_ids = _cohort(db, 5)
    for image_id in image_ids:
        decide = partial(_decide, db, threading.Barrier(2), image_id)
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(decide, ("chief", "deputy"), (1, 3)))
        assert sorted(outcomes) == ["conflict", "decided"]
        winner_grade = 1 if outcomes[0] == "decided" else 3
        with db.read() as session:
            rows = session.scalars(
                select(ConsensusGrade).where(ConsensusGrade.image_id == image_id)
            ).all()
            events = session.scalars(
                select(AuditEvent.after).where(AuditEvent.action == "consensus.adjudication")
            ).all()
        assert [r.grade for r in rows] == [winner_grade]
        assert [e for e in events if e["image_id"] == image_id] == [
            {"grade": winner_grade, "method": "adjudication", "image_id": image_id}
        ]


def test_one_reader_saving_the_same_images_from_two_tabs_loses_nothing(db):
    """The same reader in two browser tabs: each save either creates the row or changes it.

    Before ``db.rows.lock_or_insert``, PostgreSQL let both tabs see "no grade yet" and the
    second insert failed on uq_grade_image_reader (1-17 of 200 saves lost).
    """
    image_ids = _cohort(db, 100)
    start = threading.Barrier(2)

    def tab(t: int) -> int:
        start.wait()
        for image_id in image_ids:
            grade = (image_id + t) % 4
            db.write(lambda s, i=image_id, g=grade: save_grade(s, i, get_reader(s, "writer0"), g))
            box = Box(10 + t, 10, 100, 100)
            db.write(lambda s, i=image_id, b=box: save_box(s, i, get_reader(s, "writer0"), b))
        return t

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(tab, range(2))) == [0, 1]

    with db.read() as session:
        grades = dict(session.execute(select(Grade.image_id, Grade.grade)).all())
        boxes = session.execute(select(CropBox.image_id, CropBox.x)).all()
        events = session.execute(
            select(AuditEvent.action, AuditEvent.after).where(AuditEvent.entity == "grade")
        ).all()
    assert sorted(grades) == image_ids
    assert sorted(i for i, _ in boxes) == image_ids
    creates = [after["image_id"] for action, after in events if action == "grade.create"]
    updates = {
        after["image_id"]: after["grade"] for action, after in events if action != "grade.create"
    }
    assert sorted(creates) == image_ids
    assert updates == grades
