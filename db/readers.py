"""Reader accounts (the radiologists and admins who use the app)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ROLES, Reader


def get_reader(session: Session, username: str) -> Reader | None:
    return session.scalar(select(Reader).where(Reader.username == username))


def list_readers(session: Session) -> list[Reader]:
    return list(session.scalars(select(Reader).order_by(Reader.username)))


def ensure_reader(
    session: Session,
    username: str,
    display_name: str | None = None,
    role: str = "reader",
    password_hash: str | None = None,
) -> Reader:
    """The reader called ``username``, created when absent."""
    if role not in ROLES:
        raise ValueError(f"Role must be one of {', '.join(ROLES)}, got {role!r}.")
    reader = get_reader(session, username)
    if reader is None:
        reader = Reader(
            username=username,
            display_name=display_name or username,
            role=role,
            password_hash=password_hash,
        )
        session.add(reader)
        session.flush()
    return reader
