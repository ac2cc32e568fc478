"""Reader accounts and sign-in attempts at the session level; no password ever passes here.

``core.services.auth`` hashes passwords and decides policy; these functions take a session the
caller already holds, so each account change and its audit event commit together.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from db.audit import record
from db.models import ROLES, LoginAttempt, Reader, UserSession, utcnow

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,31}$")
USERNAME_MAX = 64
CLIENT_KEY_MAX = 128
DISPLAY_NAME_MAX = 128


class AccountError(ValueError):
    """An account change that cannot be made as asked; the message says why and what to do."""


class AdminExistsError(AccountError):
    """The first-run form was submitted after an admin already exists."""


@dataclass(frozen=True)
class ReaderSummary:
    """What the admin page lists about an account: never the password hash."""

    id: int
    username: str
    display_name: str
    role: str
    active: bool
    has_password: bool
    created_at: dt.datetime
    last_sign_in: dt.datetime | None
    demo: bool = False
    waiting_until: dt.datetime | None = None
    """End of a sign-in delay after failed attempts (``core.services.auth``), if one is running."""


def normalize_username(username: str) -> str:
    """Usernames are compared lower-case and without surrounding blanks."""
    return username.strip().lower()


def validate_username(username: str) -> str:
    """The normalized username, or AccountError saying which characters are allowed."""
    name = normalize_username(username)
    if not USERNAME_PATTERN.fullmatch(name):
        raise AccountError(
            f"Username {username!r} is not allowed: use 2-32 characters, lower-case letters, "
            "digits, '_', '.' or '-', starting with a letter or digit."
        )
    return name


def validate_display_name(display_name: str) -> str:
    name = display_name.strip()
    if not name or len(name) > DISPLAY_NAME_MAX:
        raise AccountError(f"Display name must be 1-{DISPLAY_NAME_MAX} characters long.")
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"Role must be one of {', '.join(ROLES)}, got {role!r}.")
    return role


def attempt_username(username: str) -> str:
    """The username as stored in ``login_attempt``: normalized and cut to the column size."""
    return normalize_username(username)[:USERNAME_MAX]


def attempt_client_key(client_key: str) -> str:
    return client_key[:CLIENT_KEY_MAX]


def record_attempt(
    session: Session, *, username: str, client_key: str, success: bool, at: dt.datetime
) -> None:
    session.add(
        LoginAttempt(
            username=attempt_username(username),
            client_key=attempt_client_key(client_key),
            at=at,
            success=success,
        )
    )


def username_attempts(
    session: Session, username: str, since: dt.datetime
) -> list[tuple[dt.datetime, bool]]:
    """(time, success) of the attempts on ``username`` since ``since``, oldest first."""
    stmt = (
        select(LoginAttempt.at, LoginAttempt.success)
        .where(LoginAttempt.username == attempt_username(username), LoginAttempt.at > since)
        .order_by(LoginAttempt.at, LoginAttempt.id)
    )
    return [(at, success) for at, success in session.execute(stmt)]


def clear_failures(session: Session, *, actor: Reader | None, username: str) -> int:
    """Forget the failed sign-ins of ``username`` (an admin's unlock); audited with the count."""
    name = attempt_username(username)
    result = session.execute(
        delete(LoginAttempt).where(LoginAttempt.username == name, LoginAttempt.success.is_(False))
    )
    cleared = int(result.rowcount or 0)
    reader = get_reader(session, name)
    record(
        session,
        actor=actor,
        action="unlock_reader",
        entity="reader",
        entity_id=reader.id if reader is not None else None,
        patient_id=None,
        after={"username": name, "failed_attempts_cleared": cleared},
    )
    return cleared


def client_failures(session: Session, client_key: str, since: dt.datetime) -> list[dt.datetime]:
    """Times of the failed attempts from ``client_key`` since ``since``, oldest first."""
    stmt = (
        select(LoginAttempt.at)
        .where(
            LoginAttempt.client_key == attempt_client_key(client_key),
            LoginAttempt.at > since,
            LoginAttempt.success.is_(False),
        )
        .order_by(LoginAttempt.at, LoginAttempt.id)
    )
    return list(session.scalars(stmt))


def purge_attempts(session: Session, before: dt.datetime) -> int:
    """Delete attempts older than ``before``; returns how many went."""
    result = session.execute(delete(LoginAttempt).where(LoginAttempt.at < before))
    return int(result.rowcount or 0)


def get_reader(session: Session, username: str) -> Reader | None:
    stmt = select(Reader).where(Reader.username == normalize_username(username))
    return session.scalar(stmt)


def _require_reader(session: Session, username: str) -> Reader:
    reader = get_reader(session, username)
    if reader is None:
        raise AccountError(f"No reader called {username!r}; `python -m core admin list` shows all.")
    return reader


def _active_admins(session: Session) -> int:
    stmt = select(func.count()).select_from(Reader).where(Reader.role == "admin", Reader.active)
    return int(session.scalar(stmt) or 0)


def admin_exists(session: Session) -> bool:
    """Whether any admin account exists, active or not: the first-run form (which makes
    whoever fills it an admin) must never reappear because admins were deactivated."""
    stmt = select(func.count()).select_from(Reader).where(Reader.role == "admin")
    return int(session.scalar(stmt) or 0) > 0


def lock_readers(session: Session) -> None:
    """Serialize account creation with other writers.

    SQLite's write transactions already begin IMMEDIATE (``db.engine``). PostgreSQL's
    default READ COMMITTED would let two first-run forms both see "no admin" and both
    insert, so the reader table is locked against other writers (reads go on).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE reader IN SHARE ROW EXCLUSIVE MODE"))


def insert_reader(
    session: Session,
    *,
    actor: Reader | None,
    username: str,
    display_name: str,
    role: str,
    password_hash: str | None,
    demo: bool = False,
) -> Reader:
    """Create an account and its audit event; refuses a username already taken.

    ``demo`` flags the demo accounts that come with the synthetic cohort (public password).
    """
    name = validate_username(username)
    shown = validate_display_name(display_name)
    validate_role(role)
    if get_reader(session, name) is not None:
        raise AccountError(f"Username {name!r} is already taken; choose another.")
    reader = Reader(
        username=name,
        display_name=shown,
        role=role,
        password_hash=password_hash,
        active=True,
        demo=demo,
    )
    session.add(reader)
    session.flush()
    record(
        session,
        actor=actor,
        action="create_reader",
        entity="reader",
        entity_id=reader.id,
        patient_id=None,
        after={
            "username": name,
            "display_name": shown,
            "role": role,
            "active": True,
            "demo": demo,
        },
    )
    return reader


def update_password_hash(
    session: Session, *, actor: Reader | None, username: str, password_hash: str
) -> Reader:
    """Replace a password hash; the audit event says that it changed, never what to."""
    reader = _require_reader(session, username)
    reader.password_hash = password_hash
    revoke_reader_sessions(session, reader.id)
    record(
        session,
        actor=actor,
        action="set_password",
        entity="reader",
        entity_id=reader.id,
        patient_id=None,
        after={"username": reader.username, "password": "changed"},
    )
    return reader


def _guard_last_admin(session: Session, reader: Reader) -> None:
    if reader.role == "admin" and reader.active and _active_admins(session) <= 1:
        raise AccountError(
            f"{reader.username!r} is the last active admin; make another admin first, "
            "or nobody could manage readers any more."
        )


def update_active(session: Session, *, actor: Reader | None, username: str, active: bool) -> Reader:
    """Activate or deactivate an account; the last active admin cannot be deactivated."""
    reader = _require_reader(session, username)
    if reader.active == active:
        return reader
    if not active:
        _guard_last_admin(session, reader)
        revoke_reader_sessions(session, reader.id)
    record(
        session,
        actor=actor,
        action="activate_reader" if active else "deactivate_reader",
        entity="reader",
        entity_id=reader.id,
        patient_id=None,
        before={"active": reader.active},
        after={"active": active},
    )
    reader.active = active
    return reader


def update_role(session: Session, *, actor: Reader | None, username: str, role: str) -> Reader:
    """Change an account's role; the last active admin cannot be demoted."""
    validate_role(role)
    reader = _require_reader(session, username)
    if reader.role == role:
        return reader
    if role != "admin":
        _guard_last_admin(session, reader)
    record(
        session,
        actor=actor,
        action="set_role",
        entity="reader",
        entity_id=reader.id,
        patient_id=None,
        before={"role": reader.role},
        after={"role": role},
    )
    reader.role = role
    return reader


def reader_summaries(session: Session) -> list[ReaderSummary]:
    """Every account, by username, with the time of its last successful sign-in."""
    last = (
        select(LoginAttempt.username, func.max(LoginAttempt.at).label("last"))
        .where(LoginAttempt.success.is_(True))
        .group_by(LoginAttempt.username)
        .subquery()
    )
    stmt = (
        select(Reader, last.c.last)
        .outerjoin(last, last.c.username == Reader.username)
        .order_by(Reader.username)
    )
    return [
        ReaderSummary(
            id=reader.id,
            username=reader.username,
            display_name=reader.display_name,
            role=reader.role,
            active=reader.active,
            has_password=bool(reader.password_hash),
            created_at=reader.created_at,
            last_sign_in=last_at,
            demo=reader.demo,
        )
        for reader, last_at in session.execute(stmt)
    ]


def insert_session(
    session: Session,
    *,
    token_hash: str,
    reader_id: int,
    client: str,
    now: dt.datetime,
    expires_at: dt.datetime,
) -> UserSession:
    row = UserSession(
        token_hash=token_hash,
        reader_id=reader_id,
        client=attempt_client_key(client),
        created_at=now,
        last_seen_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row


def find_session(session: Session, token_hash: str) -> tuple[UserSession, Reader] | None:
    """The session row with this token hash and its reader, revoked or not."""
    row = session.execute(
        select(UserSession, Reader)
        .join(Reader, Reader.id == UserSession.reader_id)
        .where(UserSession.token_hash == token_hash)
    ).first()
    return (row[0], row[1]) if row else None


def touch_session(session: Session, token_hash: str, now: dt.datetime) -> None:
    session.execute(
        update(UserSession)
        .where(UserSession.token_hash == token_hash, UserSession.revoked_at.is_(None))
        .values(last_seen_at=now)
    )


def revoke_session(session: Session, token_hash: str, now: dt.datetime) -> None:
    session.execute(
        update(UserSession)
        .where(UserSession.token_hash == token_hash, UserSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def revoke_reader_sessions(session: Session, reader_id: int) -> int:
    """End every session of a reader (deactivation, new password); returns how many."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.reader_id == reader_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount or 0)


def purge_sessions(session: Session, before: dt.datetime) -> int:
    """Delete sessions that expired or were revoked before ``before``."""
    result = session.execute(
        delete(UserSession).where(
            (UserSession.expires_at < before) | (UserSession.revoked_at < before)
        )
    )
    return int(result.rowcount or 0)
