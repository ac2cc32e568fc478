"""Reader accounts and roles: who may do what, and the account changes admins make.

Every account change writes an audit event in the same transaction. Password hashing lives
in ``passwords`` and throttled sign-in in ``sign_in``; both are re-exported here, so pages
and commands use one module for everything about accounts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.services.passwords import (
    PasswordPolicyError,
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_password,
)
from core.services.sign_in import AuthResult, authenticate, naive_utc, username_delay_end
from db import auth as accounts
from db.auth import AccountError, AdminExistsError, ReaderSummary
from db.engine import Database
from db.models import Reader

__all__ = [
    "PERMISSIONS",
    "AccountError",
    "AdminExistsError",
    "AuthResult",
    "PasswordPolicyError",
    "PermissionDenied",
    "ReaderSummary",
    "account_notes",
    "admin_exists",
    "authenticate",
    "can",
    "change_own_password",
    "check_password_policy",
    "create_first_admin",
    "create_reader",
    "hash_password",
    "list_readers_for_admin",
    "needs_rehash",
    "require",
    "set_active",
    "set_password",
    "set_role",
    "unlock",
    "verify_password",
]

PERMISSIONS: dict[str, set[str]] = {
    "grade": {"reader", "admin"},
    "view_consensus": {"reader", "admin"},
    "adjudicate": {"admin"},
    "edit_patient": {"admin"},
    "import": {"admin"},
    "train": {"admin"},
    "export": {"admin"},
    "manage_readers": {"admin"},
    "set_swe_scale": {"admin"},
}
"""Which roles may do what. Readers grade and box images as themselves; everything that
changes shared data (patients, consensus, models, accounts) is an admin's."""

_ACTION_TEXT = {
    "grade": "grade images or draw boxes",
    "view_consensus": "see consensus grades",
    "adjudicate": "adjudicate consensus grades",
    "edit_patient": "edit patient data",
    "import": "import cases",
    "train": "train models",
    "export": "export data",
    "manage_readers": "manage reader accounts",
    "set_swe_scale": "set SWE scale ranges",
}


class PermissionDenied(PermissionError):
    """The signed-in reader may not do this; the message says who may."""


def unlock(db: Database, username: str, *, actor: Reader | None = None) -> int:
    """Lift the sign-in delay of ``username`` (an admin, or the command line): forgets its
    failed attempts, audited with their number. Returns how many were cleared."""
    with db.transaction() as session:
        admin = acting(session, actor, "manage_readers")
        return accounts.clear_failures(session, actor=admin, username=username)


def can(reader: Reader | None, action: str) -> bool:
    """Whether ``reader`` may do ``action`` (see ``PERMISSIONS``)."""
    if action not in PERMISSIONS:
        raise ValueError(f"Unknown action {action!r}; known: {', '.join(sorted(PERMISSIONS))}.")
    return reader is not None and reader.active and reader.role in PERMISSIONS[action]


def require(reader: Reader | None, action: str) -> None:
    """Raise PermissionDenied unless ``reader`` may do ``action``; pages call it server-side."""
    if can(reader, action):
        return
    what = _ACTION_TEXT[action]
    if reader is None:
        raise PermissionDenied(f"Sign in to {what}.")
    if not reader.active:
        raise PermissionDenied(f"{reader.username!r} is deactivated and may not {what}.")
    roles = " or ".join(sorted(PERMISSIONS[action]))
    raise PermissionDenied(
        f"{reader.username!r} ({reader.role}) may not {what}: that needs the {roles} role."
    )


def acting(session: Session, actor: Reader | None, action: str) -> Reader | None:
    """The actor as the database knows it now, allowed to do ``action`` (a stale page object
    must not grant rights); ``None`` is the local command line, trusted like the database
    file itself."""
    if actor is None:
        return None
    current = session.get(Reader, actor.id)
    require(current, action)
    return current


AccountChange = Callable[[Session, Reader | None], Reader]


def _account_change(db: Database, actor: Reader | None, change: AccountChange) -> Reader:
    try:
        with db.transaction() as session:
            accounts.lock_readers(session)
            return change(session, acting(session, actor, "manage_readers"))
    except IntegrityError as exc:
        raise AccountError(f"The account change conflicts with another one: {exc.orig}") from None


def admin_exists(db: Database) -> bool:
    """Whether an admin account exists; the app offers the first-run form only when not."""
    with db.read() as session:
        return accounts.admin_exists(session)


def create_first_admin(db: Database, username: str, display_name: str, password: str) -> Reader:
    """The first admin, from the first-run form; refused once any admin exists.

    The check and the insert share one write transaction (BEGIN IMMEDIATE on SQLite, a
    table lock on PostgreSQL), so two racing first-run forms cannot both succeed.
    """
    check_password_policy(password, username=username)
    password_hash = hash_password(password)

    def change(session: Session, _actor: Reader | None) -> Reader:
        if accounts.admin_exists(session):
            raise AdminExistsError(
                "An admin already exists; sign in, or ask an admin to create your account."
            )
        return accounts.insert_reader(
            session,
            actor=None,
            username=username,
            display_name=display_name,
            role="admin",
            password_hash=password_hash,
        )

    return _account_change(db, None, change)


def create_reader(
    db: Database,
    username: str,
    display_name: str,
    role: str,
    password: str,
    *,
    actor: Reader | None = None,
) -> Reader:
    """A new account; ``actor`` (an admin) is recorded in the audit trail."""
    accounts.validate_username(username)
    accounts.validate_role(role)
    check_password_policy(password, username=username)
    password_hash = hash_password(password)
    return _account_change(
        db,
        actor,
        lambda session, acting: accounts.insert_reader(
            session,
            actor=acting,
            username=username,
            display_name=display_name,
            role=role,
            password_hash=password_hash,
        ),
    )


def set_password(
    db: Database, username: str, password: str, *, actor: Reader | None = None
) -> Reader:
    """Give an account a new password (an admin resetting it, or the command line)."""
    check_password_policy(password, username=username)
    password_hash = hash_password(password)
    return _account_change(
        db,
        actor,
        lambda session, acting: accounts.update_password_hash(
            session, actor=acting, username=username, password_hash=password_hash
        ),
    )


def change_own_password(
    db: Database,
    username: str,
    current_password: str,
    new_password: str,
    *,
    client_key: str,
    now: dt.datetime | None = None,
) -> Reader:
    """A reader changing their own password; the current one is checked (and rate-limited)
    like a sign-in."""
    check_password_policy(new_password, username=username)
    result = authenticate(db, username, current_password, client_key=client_key, now=now)
    if not result.ok or result.reader is None:
        raise AccountError(result.message)
    password_hash = hash_password(new_password)
    with db.transaction() as session:
        actor = session.get(Reader, result.reader.id)
        return accounts.update_password_hash(
            session, actor=actor, username=username, password_hash=password_hash
        )


def set_active(db: Database, username: str, active: bool, *, actor: Reader | None = None) -> Reader:
    """Activate or deactivate an account; deactivated readers cannot sign in."""
    return _account_change(
        db,
        actor,
        lambda session, acting: accounts.update_active(
            session, actor=acting, username=username, active=active
        ),
    )


def set_role(db: Database, username: str, role: str, *, actor: Reader | None = None) -> Reader:
    return _account_change(
        db,
        actor,
        lambda session, acting: accounts.update_role(
            session, actor=acting, username=username, role=role
        ),
    )


def list_readers_for_admin(
    db: Database, *, actor: Reader | None = None, now: dt.datetime | None = None
) -> list[ReaderSummary]:
    """All accounts with their last sign-in and any sign-in delay still running; no
    password hashes leave the database."""
    now = naive_utc(now)
    with db.read() as session:
        acting(session, actor, "manage_readers")
        summaries = accounts.reader_summaries(session)
        waits = [username_delay_end(session, r.username, now) for r in summaries]
    return [
        dataclasses.replace(r, waiting_until=end if end is not None and end > now else None)
        for r, end in zip(summaries, waits, strict=True)
    ]


def account_notes(summary: ReaderSummary) -> str:
    """What an admin should know about an account at a glance: demo, sign-in delay."""
    notes = []
    if summary.demo:
        notes.append("demo account (public password)")
    if summary.waiting_until is not None:
        notes.append(f"sign-in delayed until {summary.waiting_until:%H:%M:%S} UTC")
    return "; ".join(notes)
