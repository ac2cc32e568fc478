"""Grades and crop boxes of one reader, with blinding enforced in the queries themselves.

A reader never receives another reader's grade or the consensus for an image before
their own grade for it is stored: the functions that return them check this, so no page
can leak them by mistake. Every change writes its audit row in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from core.common.boxes import Box, validate_box
from db import audit
from db.consensus_rules import supersede_if_contradicted
from db.models import ConsensusGrade, CropBox, Grade, Image, Patient, Reader
from db.rows import lock_or_insert

AUTO_OWNER = "auto"
CONSENSUS_OWNER = "consensus"


class GradingError(ValueError):
    """A grade or box that cannot be stored, with a message for the reader."""


class BlindingError(PermissionError):
    """Another reader's grade was asked for before the viewer submitted their own."""


def reader_owner(reader_id: int) -> str:
    return f"reader:{reader_id}"


def _ungraded_gsu(reader_id: int):
    graded = exists().where(and_(Grade.image_id == Image.id, Grade.reader_id == reader_id))
    return select(Image.id, Patient.code).join(Patient).where(Image.modality == "GSU", ~graded)


def next_ungraded(session: Session, reader_id: int, after_code: str | None = None) -> int | None:
    """The GSU image id of the next patient (by code) this reader has not graded."""
    stmt = _ungraded_gsu(reader_id).order_by(Patient.code).limit(1)
    if after_code is not None:
        later = session.execute(stmt.where(Patient.code > after_code)).first()
        if later is not None:
            return later.id
    row = session.execute(stmt).first()
    return row.id if row else None


@dataclass(frozen=True)
class Progress:
    """How far a reader is: GSU images graded (uncertain ones included) of all GSU images."""

    done: int
    total: int
    uncertain: int


def progress(session: Session, reader_id: int) -> Progress:
    """Counts for the reader's progress bar; uncertain grades count as done but are shown."""
    total = session.scalar(select(func.count(Image.id)).where(Image.modality == "GSU")) or 0
    done, uncertain = session.execute(
        select(func.count(Grade.id), func.count(Grade.id).filter(Grade.uncertain))
        .join(Image, Image.id == Grade.image_id)
        .where(Grade.reader_id == reader_id, Image.modality == "GSU")
    ).one()
    return Progress(done or 0, total, uncertain or 0)


def neighbour_case(session: Session, code: str, step: int) -> int | None:
    """The GSU image of the patient just before (``step=-1``) or after (``+1``) ``code``."""
    stmt = select(Image.id).join(Patient).where(Image.modality == "GSU")
    if step < 0:
        stmt = stmt.where(Patient.code < code).order_by(Patient.code.desc())
    else:
        stmt = stmt.where(Patient.code > code).order_by(Patient.code)
    return session.scalar(stmt.limit(1))


def gsu_image_of(session: Session, code: str) -> int | None:
    return session.scalar(
        select(Image.id).join(Patient).where(Patient.code == code, Image.modality == "GSU")
    )


@dataclass(frozen=True)
class ImageInfo:
    id: int
    patient_id: int
    patient_code: str
    modality: str
    path: str
    width: int
    height: int
    dicom_header: dict[str, Any] | None = None
    """The de-identified header (ultrasound regions and calibration); None for PNG/JPEG/TIFF."""


def image_info(session: Session, image_id: int) -> ImageInfo:
    row = session.execute(
        select(Image, Patient.code).join(Patient).where(Image.id == image_id)
    ).first()
    if row is None:
        raise GradingError(f"Image {image_id} does not exist.")
    image, code = row
    return ImageInfo(
        image.id,
        image.patient_id,
        code,
        image.modality,
        image.path,
        image.width,
        image.height,
        image.dicom_header,
    )


def sibling_image(session: Session, image_id: int, modality: str) -> int | None:
    """The same patient's image of another modality (the SWE of a GSU, say)."""
    patient_id = select(Image.patient_id).where(Image.id == image_id).scalar_subquery()
    return session.scalar(
        select(Image.id).where(Image.patient_id == patient_id, Image.modality == modality)
    )


def own_grade(session: Session, image_id: int, reader_id: int) -> int | None:
    return session.scalar(
        select(Grade.grade).where(Grade.image_id == image_id, Grade.reader_id == reader_id)
    )


@dataclass(frozen=True)
class OwnGrade:
    grade: int
    uncertain: bool
    comment: str | None


def own_entry(session: Session, image_id: int, reader_id: int) -> OwnGrade | None:
    """The reader's grade with its uncertain flag and comment, to prefill the page."""
    row = session.scalar(
        select(Grade).where(Grade.image_id == image_id, Grade.reader_id == reader_id)
    )
    return OwnGrade(row.grade, row.uncertain, row.comment) if row else None


def _box_of(session: Session, image_id: int, owner: str) -> CropBox | None:
    return session.scalar(
        select(CropBox).where(CropBox.image_id == image_id, CropBox.owner_key == owner)
    )


def own_box(session: Session, image_id: int, reader_id: int) -> Box | None:
    row = _box_of(session, image_id, reader_owner(reader_id))
    return Box(row.x, row.y, row.w, row.h) if row else None


@dataclass(frozen=True)
class OtherGrade:
    reader: str
    display_name: str
    grade: int
    box: Box | None


@dataclass(frozen=True)
class Unblinded:
    """What a reader may see once their own grade is in: others' grades and the consensus."""

    others: list[OtherGrade]
    consensus_grade: int | None
    consensus_method: str | None


def unblinded_view(session: Session, image_id: int, viewer: Reader) -> Unblinded:
    """Others' grades and the consensus; refused until the viewer has graded this image.

    Admins adjudicating see everything: they decide the consensus.
    """
    if viewer.role != "admin" and own_grade(session, image_id, viewer.id) is None:
        raise BlindingError("Submit your own grade first; other grades stay hidden until then.")
    rows = session.execute(
        select(Reader.username, Reader.display_name, Grade.grade, Reader.id)
        .join(Reader, Reader.id == Grade.reader_id)
        .where(Grade.image_id == image_id, Grade.reader_id != viewer.id)
        .order_by(Reader.username)
    ).all()
    boxes = {
        b.reader_id: Box(b.x, b.y, b.w, b.h)
        for b in session.scalars(
            select(CropBox).where(CropBox.image_id == image_id, CropBox.source == "reader")
        )
    }
    consensus = session.scalar(select(ConsensusGrade).where(ConsensusGrade.image_id == image_id))
    return Unblinded(
        [OtherGrade(u, n, g, boxes.get(rid)) for u, n, g, rid in rows],
        consensus.grade if consensus else None,
        consensus.method if consensus else None,
    )


COMMENT_MAX = 500


def _grade_dict(grade: int, uncertain: bool, comment: str | None) -> dict:
    """A grade for the audit trail; the flag and comment appear only when set."""
    out: dict = {"grade": grade}
    if uncertain:
        out["uncertain"] = True
    if comment:
        out["comment"] = comment
    return out


def save_grade(
    session: Session,
    image_id: int,
    reader: Reader,
    grade: int,
    *,
    uncertain: bool = False,
    comment: str | None = None,
) -> bool:
    """Create or change this reader's grade; returns True when something changed (audited).

    An uncertain grade is kept out of consensus until it is saved again without the flag.
    A grade that contradicts the recorded consensus supersedes it (``db.consensus_rules``).
    """
    if grade not in (0, 1, 2, 3):
        raise GradingError(f"A grade is 0, 1, 2 or 3; got {grade!r}.")
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > COMMENT_MAX:
        raise GradingError(
            f"The comment has {len(comment)} characters; shorten it to {COMMENT_MAX} or fewer."
        )
    info = image_info(session, image_id)
    if info.modality != "GSU":
        raise GradingError("Echogenicity is graded on the gray-scale (GSU) image.")
    after = _grade_dict(grade, uncertain, comment)
    row, created = lock_or_insert(
        session,
        Grade,
        {"image_id": image_id, "reader_id": reader.id},
        {"grade": grade, "uncertain": uncertain, "comment": comment},
    )
    before = None if created else _grade_dict(row.grade, row.uncertain, row.comment)
    if before == after:
        return False
    counted_before = row.grade if before is not None and not row.uncertain else None
    row.grade, row.uncertain, row.comment = grade, uncertain, comment
    session.flush()
    audit.record(
        session,
        actor=reader,
        action="grade.update" if before else "grade.create",
        entity="grade",
        entity_id=row.id,
        patient_id=info.patient_id,
        before=before,
        after={**after, "image_id": image_id},
    )
    supersede_if_contradicted(
        session, image_id, reader, counted_before, None if uncertain else grade
    )
    return True


def _box_dict(row: CropBox | None) -> dict | None:
    if row is None:
        return None
    return {"x": row.x, "y": row.y, "w": row.w, "h": row.h, "auto_accepted": row.auto_accepted}


def save_box(
    session: Session,
    image_id: int,
    reader: Reader | None,
    box: Box | None,
    *,
    auto_accepted: bool = False,
    owner: str | None = None,
) -> bool:
    """Store, replace or (with ``box=None``) clear a box; checked against the image size."""
    info = image_info(session, image_id)
    if owner is None:
        if reader is None:
            raise GradingError("A reader's box needs the reader.")
        owner = reader_owner(reader.id)
    if box is not None:
        problem = validate_box(box, info.width, info.height)
        if problem:
            raise GradingError(problem)
    if box is None:
        row = _box_of(session, image_id, owner)
        before = _box_dict(row)
        if row is None:
            return False
        session.delete(row)
    else:
        source = owner.split(":")[0]
        wanted = dict(zip("xywh", box.as_tuple(), strict=True), auto_accepted=auto_accepted)
        row, created = lock_or_insert(
            session,
            CropBox,
            {"image_id": image_id, "owner_key": owner},
            {
                "source": source,
                "reader_id": reader.id if reader is not None and source == "reader" else None,
                **wanted,
            },
        )
        before = None if created else _box_dict(row)
        if before == wanted:
            return False
        row.x, row.y, row.w, row.h = box.as_tuple()
        row.auto_accepted = auto_accepted
    session.flush()
    audit.record(
        session,
        actor=reader,
        action="box.clear" if box is None else ("box.update" if before else "box.create"),
        entity="crop_box",
        entity_id=row.id if box is not None else None,
        patient_id=info.patient_id,
        before=before,
        after=_box_dict(row) if box is not None else None,
    )
    return True
