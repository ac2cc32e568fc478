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

from db.consensus import ConsensusConflict, adjudicate
from db.engine import Database
from db.grading import save_grade
from db.models import AuditEvent, ConsensusGrade, Grade, Image, Patient
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
