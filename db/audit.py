"""Audit trail: every change to a grade, box, consensus or patient writes one row.

The caller passes the same session it changes data with, so the audit row and the
change commit or roll back together (one transaction).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import AuditEvent, Reader

SYSTEM_ACTOR = "system"


def record(
    session: Session,
    *,
    actor: Reader | None,
    action: str,
    entity: str,
    entity_id: int | None,
    patient_id: int | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        actor_id=actor.id if actor else None,
        actor=actor.username if actor else SYSTEM_ACTOR,
        action=action,
        entity=entity,
        entity_id=entity_id,
        patient_id=patient_id,
        before=before,
        after=after,
    )
    session.add(event)
    return event


def patient_history(
    session: Session, patient_id: int, only_actor_id: int | None = None
) -> list[AuditEvent]:
    """Audit events of one patient, oldest first.

    ``only_actor_id`` limits them to one reader's own changes: a reader's view of the
    history must not reveal other readers' grades (blinding).
    """
    stmt = select(AuditEvent).where(AuditEvent.patient_id == patient_id)
    if only_actor_id is not None:
        stmt = stmt.where(AuditEvent.actor_id == only_actor_id)
    return list(session.scalars(stmt.order_by(AuditEvent.id)))
