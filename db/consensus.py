"""Consensus grades and boxes, and the data behind inter-reader agreement.

Where every reader agrees, the consensus is recorded automatically (method
``agreement``); otherwise an admin adjudicates (method ``adjudication``). A consensus is
decided once: a second decision for the same image is refused (optimistic check plus the
unique constraint), so two adjudicators in two tabs cannot overwrite each other. A grade
saved later that contradicts it supersedes it (``db.consensus_rules``, which also says
which grades count) and the image returns to the queue.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.common.boxes import Box
from db import audit
from db.consensus_rules import MIN_READERS, counted
from db.grading import CONSENSUS_OWNER, image_info, save_box
from db.models import ConsensusGrade, CropBox, Grade, Image, Patient, Reader


class ConsensusConflict(RuntimeError):
    """The consensus for this image was already decided."""


@dataclass(frozen=True)
class ReaderGrade:
    reader_id: int
    username: str
    grade: int
    box: Box | None


@dataclass(frozen=True)
class Disagreement:
    image_id: int
    patient_code: str
    grades: list[ReaderGrade]


def _reader_boxes(session: Session, image_ids: list[int]) -> dict[tuple[int, int], Box]:
    rows = session.scalars(
        select(CropBox).where(CropBox.image_id.in_(image_ids), CropBox.source == "reader")
    )
    return {(b.image_id, b.reader_id): Box(b.x, b.y, b.w, b.h) for b in rows}


def pending_images(
    session: Session, graded_by: int | None = None
) -> dict[int, tuple[str, list[ReaderGrade]]]:
    """GSU images with grades from at least two readers and no consensus yet.

    ``graded_by`` keeps only images that reader has graded (what blinding lets them see).
    """
    decided = select(ConsensusGrade.image_id)
    stmt = (
        select(Grade.image_id, Patient.code, Reader.id, Reader.username, Grade.grade)
        .join(Image, Image.id == Grade.image_id)
        .join(Patient, Patient.id == Image.patient_id)
        .join(Reader, Reader.id == Grade.reader_id)
        .where(Image.modality == "GSU", Grade.image_id.not_in(decided), counted())
        .order_by(Patient.code, Reader.username)
    )
    if graded_by is not None:
        mine = select(Grade.image_id).where(Grade.reader_id == graded_by)
        stmt = stmt.where(Grade.image_id.in_(mine))
    rows = session.execute(stmt).all()
    boxes = _reader_boxes(session, sorted({r.image_id for r in rows}))
    pending: dict[int, tuple[str, list[ReaderGrade]]] = {}
    for image_id, code, reader_id, username, grade in rows:
        entry = pending.setdefault(image_id, (code, []))
        entry[1].append(ReaderGrade(reader_id, username, grade, boxes.get((image_id, reader_id))))
    return {k: v for k, v in pending.items() if len(v[1]) >= MIN_READERS}


def disagreements(session: Session, graded_by: int | None = None) -> list[Disagreement]:
    """Images whose readers disagree and that still need an adjudicated consensus."""
    return [
        Disagreement(image_id, code, grades)
        for image_id, (code, grades) in pending_images(session, graded_by).items()
        if len({g.grade for g in grades}) > 1
    ]


def mean_box(boxes: list[Box]) -> Box | None:
    """The readers' boxes averaged side by side: the default consensus box."""
    if not boxes:
        return None
    x1 = np.mean([b.x for b in boxes])
    y1 = np.mean([b.y for b in boxes])
    x2 = np.mean([b.x2 for b in boxes])
    y2 = np.mean([b.y2 for b in boxes])
    return Box(round(x1), round(y1), round(x2 - x1), round(y2 - y1))


def _decide(
    session: Session,
    image_id: int,
    grade: int,
    method: str,
    decided_by: Reader | None,
    box: Box | None,
) -> ConsensusGrade:
    if session.scalar(select(ConsensusGrade.id).where(ConsensusGrade.image_id == image_id)):
        raise ConsensusConflict("The consensus for this image was already decided.")
    info = image_info(session, image_id)
    row = ConsensusGrade(
        image_id=image_id,
        grade=grade,
        method=method,
        decided_by_id=decided_by.id if decided_by else None,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise ConsensusConflict("The consensus for this image was already decided.") from None
    audit.record(
        session,
        actor=decided_by,
        action=f"consensus.{method}",
        entity="consensus_grade",
        entity_id=row.id,
        patient_id=info.patient_id,
        after={"grade": grade, "method": method, "image_id": image_id},
    )
    if box is not None:
        save_box(session, image_id, decided_by, box, owner=CONSENSUS_OWNER)
    return row


def auto_agree(session: Session) -> int:
    """Record the consensus of every pending image on which all readers agree."""
    count = 0
    for image_id, (_, grades) in pending_images(session).items():
        if len({g.grade for g in grades}) == 1:
            box = mean_box([g.box for g in grades if g.box is not None])
            _decide(session, image_id, grades[0].grade, "agreement", None, box)
            count += 1
    return count


def adjudicate(
    session: Session, image_id: int, admin: Reader, grade: int, box: Box | None
) -> ConsensusGrade:
    """An admin settles a disagreement; refused if someone already decided this image."""
    if admin.role != "admin":
        raise PermissionError("Only an admin can adjudicate a consensus.")
    if grade not in (0, 1, 2, 3):
        raise ValueError(f"A grade is 0, 1, 2 or 3; got {grade!r}.")
    return _decide(session, image_id, grade, "adjudication", admin, box)


def consensus_of(session: Session, image_id: int) -> ConsensusGrade | None:
    return session.scalar(select(ConsensusGrade).where(ConsensusGrade.image_id == image_id))


@dataclass(frozen=True)
class PairData:
    reader_a: str
    reader_b: str
    grades_a: list[int]
    grades_b: list[int]
    boxes_a: list[Box | None]
    boxes_b: list[Box | None]


def reader_pairs(
    session: Session, min_common: int = 2, involving: str | None = None
) -> list[PairData]:
    """Per pair of readers, their grades (and GSU boxes) on the images both graded.

    ``involving`` keeps only the pairs that include that reader: a reader sees agreement
    with their own grades, never two colleagues' grades against each other (blinding).
    """
    rows = session.execute(
        select(Grade.image_id, Reader.id, Reader.username, Grade.grade)
        .join(Reader, Reader.id == Grade.reader_id)
        .join(Image, Image.id == Grade.image_id)
        .where(Image.modality == "GSU")
    ).all()
    by_reader: dict[str, dict[int, int]] = {}
    ids: dict[str, int] = {}
    for image_id, reader_id, username, grade in rows:
        by_reader.setdefault(username, {})[image_id] = grade
        ids[username] = reader_id
    boxes = _reader_boxes(session, sorted({r.image_id for r in rows}))
    pairs = []
    for a, b in itertools.combinations(sorted(by_reader), 2):
        if involving is not None and involving not in (a, b):
            continue
        common = sorted(set(by_reader[a]) & set(by_reader[b]))
        if len(common) < min_common:
            continue
        pairs.append(
            PairData(
                a,
                b,
                [by_reader[a][i] for i in common],
                [by_reader[b][i] for i in common],
                [boxes.get((i, ids[a])) for i in common],
                [boxes.get((i, ids[b])) for i in common],
            )
        )
    return pairs


def grades_version(session: Session) -> tuple:
    """Changes whenever a grade or box changes: a cheap cache key for agreement statistics."""
    grades = session.execute(select(func.count(Grade.id), func.max(Grade.updated_at))).one()
    boxes = session.execute(select(func.count(CropBox.id), func.max(CropBox.updated_at))).one()
    return (*grades, *boxes)


def consensus_counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(ConsensusGrade.method, func.count(ConsensusGrade.id)).group_by(ConsensusGrade.method)
    ).all()
    return dict(rows)
