"""Which grades count toward consensus, and when a recorded consensus no longer holds.

The rule (docs/user-guide.md, *Consensus*): every reader's settled grade counts, whoever
the reader is and whether or not their account is still active. A grade marked uncertain
does not count until its reader saves it without the flag. Deactivating an account stops
sign-in; it does not withdraw reads already made.

A consensus stands only while the counted grades support it. When a counted grade is
added or changed afterwards:

- an *agreement* consensus is superseded as soon as the counted grades no longer all equal
  it, or fewer than two remain;
- an *adjudicated* consensus is superseded when the new or changed grade differs from it
  (the adjudicator had not seen that grade).

Superseding moves the decision (and its consensus box) to ``superseded_consensus`` with
the reason, writes an audit row, and so returns the image to the disagreement queue.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from db import audit
from db.models import ConsensusGrade, CropBox, Grade, Image, Reader, SupersededConsensus

MIN_READERS = 2
"""Counted grades an image needs before it can have a consensus."""


def counted() -> ColumnElement[bool]:
    """The condition on ``Grade`` rows that count toward consensus."""
    return ~Grade.uncertain


def _reason(
    consensus: ConsensusGrade, counted_grades: list[int], actor: Reader, after: int | None
) -> str | None:
    """Why ``consensus`` no longer holds after ``actor`` saved ``after``; None if it holds."""
    who = actor.display_name or actor.username
    if consensus.method == "agreement":
        if after is not None and after != consensus.grade:
            return f"{who} graded {after}; the readers had agreed on {consensus.grade}."
        if any(g != consensus.grade for g in counted_grades):
            return f"The counted grades {sorted(counted_grades)} no longer all agree."
        if len(counted_grades) < MIN_READERS:
            return (
                f"{who} withdrew a grade the agreement rested on; "
                f"{len(counted_grades)} settled grade(s) remain."
            )
        return None
    if after is not None and after != consensus.grade:
        return f"{who} graded {after}, which the adjudicated grade {consensus.grade} had not seen."
    return None


def supersede_if_contradicted(
    session: Session, image_id: int, actor: Reader, before: int | None, after: int | None
) -> SupersededConsensus | None:
    """Called after ``actor``'s grade of ``image_id`` was saved, in the same transaction.

    ``before`` and ``after`` are the actor's *counted* grade (None when absent or
    uncertain). Returns the superseded record, or None when the consensus still holds.
    """
    if before == after:
        return None
    consensus = session.scalar(select(ConsensusGrade).where(ConsensusGrade.image_id == image_id))
    if consensus is None:
        return None
    grades = list(session.scalars(select(Grade.grade).where(Grade.image_id == image_id, counted())))
    reason = _reason(consensus, grades, actor, after)
    if reason is None:
        return None
    box_row = session.scalar(
        select(CropBox).where(CropBox.image_id == image_id, CropBox.source == "consensus")
    )
    box = {"x": box_row.x, "y": box_row.y, "w": box_row.w, "h": box_row.h} if box_row else None
    old = SupersededConsensus(
        image_id=image_id,
        grade=consensus.grade,
        method=consensus.method,
        decided_by_id=consensus.decided_by_id,
        decided_at=consensus.decided_at,
        box=box,
        superseded_by_id=actor.id,
        reason=reason,
    )
    patient_id = session.scalar(select(Image.patient_id).where(Image.id == image_id))
    decided = {"grade": consensus.grade, "method": consensus.method, "image_id": image_id}
    session.add(old)
    session.delete(consensus)
    if box_row is not None:
        session.delete(box_row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="consensus.superseded",
        entity="consensus_grade",
        entity_id=consensus.id,
        patient_id=patient_id,
        before={**decided, "box": box},
        after={"superseded_id": old.id, "reason": reason},
    )
    return old


def superseded_history(session: Session, image_id: int) -> list[SupersededConsensus]:
    """Every superseded consensus of an image, oldest first (for admins and the export)."""
    return list(
        session.scalars(
            select(SupersededConsensus)
            .where(SupersededConsensus.image_id == image_id)
            .order_by(SupersededConsensus.id)
        )
    )
