"""Sign-in, passwords, roles and reader accounts.

Passwords are hashed with Argon2id (argon2-cffi defaults, RFC 9106) and never stored or
logged in clear. Failed sign-ins make the next try wait, exponentially, per username and
per client address (never a hard lock, which anyone could impose on an admin), with the
attempts kept in the database so the limit survives restarts and reloads and holds across
several app processes. Every account change writes an audit event in the same transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.common import config
from db import auth as accounts
from db.auth import AccountError, AdminExistsError, ReaderSummary
from db.engine import Database
from db.models import Reader, utcnow

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

HASHER = PasswordHasher()
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
FREE_FAILURES = 5
"""Failed sign-ins in a row on one username before each further try has to wait."""
CLIENT_FREE_FAILURES = 20
"""Failed sign-ins from one client address within ``CLIENT_WINDOW`` before it has to wait:
looser than per username, because a department behind one proxy or NAT shares it."""
FIRST_DELAY = dt.timedelta(seconds=2)
"""The wait after the last free failure; it doubles with every further failure."""
USERNAME_MAX_DELAY = dt.timedelta(minutes=5)
CLIENT_MAX_DELAY = dt.timedelta(minutes=15)
FAILURE_MEMORY = dt.timedelta(hours=24)
"""Failures on a username older than this no longer count."""
CLIENT_WINDOW = dt.timedelta(hours=1)
ATTEMPT_RETENTION = dt.timedelta(days=30)
WRONG_CREDENTIALS = "Unknown username or wrong password."
DEACTIVATED = "This account is deactivated; ask an admin to reactivate it."
DEMO_REFUSED = (
    "Demo accounts are switched off on this server (SARCOPENIA_DEMO=0): their password is "
    "public. Ask an admin for a personal account."
)

PERMISSIONS: dict[str, set[str]] = {
    "grade": {"reader", "admin"},
    "view_consensus": {"reader", "admin"},
    "adjudicate": {"admin"},
    "edit_patient": {"admin"},
    "import": {"admin"},
    "train": {"admin"},
    "export": {"admin"},
    "manage_readers": {"admin"},
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
}


class PasswordPolicyError(AccountError):
    """A new password that the policy refuses; the message says what is required."""


class PermissionDenied(PermissionError):
    """The signed-in reader may not do this; the message says who may."""


@dataclass(frozen=True)
class AuthResult:
    """Outcome of a sign-in; ``message`` can be shown to the user as it is."""

    ok: bool
    reader: Reader | None
    message: str
    retry_at: dt.datetime | None = None


def check_password_policy(password: str, *, username: str | None = None) -> None:
    """Refuse passwords that are short or equal to the username (length beats complexity
    rules, NIST SP 800-63B)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"Password too short: use at least {MIN_PASSWORD_LENGTH} characters "
            "(a few unrelated words work well)."
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"Password too long: use at most {MAX_PASSWORD_LENGTH} characters."
        )
    if not password.strip():
        raise PasswordPolicyError("Password must not be only spaces.")
    if username is not None and password.strip().lower() == accounts.normalize_username(username):
        raise PasswordPolicyError("Password must not be the username.")


def hash_password(password: str) -> str:
    """An Argon2id hash that embeds its own salt and parameters."""
    return HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches; a malformed hash counts as no match."""
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than ``HASHER`` uses now."""
    try:
        return HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so the reply takes as long."""
    return HASHER.hash("not a password of anybody")


def _naive_utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is not None:
        return now.astimezone(dt.UTC).replace(tzinfo=None)
    return now


def _delay_end(
    failures: Sequence[dt.datetime], free: int, longest: dt.timedelta
) -> dt.datetime | None:
    """When the next try may come: ``FIRST_DELAY`` after the ``free``-th failure, doubling
    with each further one up to ``longest``. Refused tries are not recorded, so waiting
    out a delay never lengthens it."""
    extra = len(failures) - free
    if extra < 0:
        return None
    return failures[-1] + min(longest, FIRST_DELAY * 2 ** min(extra, 20))


def _username_delay_end(session: Session, username: str, now: dt.datetime) -> dt.datetime | None:
    """Failures since the username's last success (within ``FAILURE_MEMORY``) set its delay."""
    failures: list[dt.datetime] = []
    for at, success in accounts.username_attempts(session, username, now - FAILURE_MEMORY):
        if success:
            failures.clear()
        else:
            failures.append(at)
    return _delay_end(failures, FREE_FAILURES, USERNAME_MAX_DELAY)


def _wait_until(
    session: Session, username: str, client_key: str, now: dt.datetime
) -> dt.datetime | None:
    """The later of the username's and the client's delay, if it has not passed yet."""
    ends = [
        end
        for end in (
            _username_delay_end(session, username, now),
            _delay_end(
                accounts.client_failures(session, client_key, now - CLIENT_WINDOW),
                CLIENT_FREE_FAILURES,
                CLIENT_MAX_DELAY,
            ),
        )
        if end is not None and end > now
    ]
    return max(ends) if ends else None


def _wait_message(until: dt.datetime, now: dt.datetime) -> str:
    seconds = max(1, math.ceil((until - now).total_seconds()))
    wait = f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"
    return (
        f"Too many failed sign-ins: wait {wait} (until {until:%H:%M:%S} UTC) and try again. "
        "An admin can lift the wait on the Readers page."
    )


def authenticate(
    db: Database,
    username: str,
    password: str,
    *,
    client_key: str,
    now: dt.datetime | None = None,
) -> AuthResult:
    """Check a sign-in and record the attempt.

    ``client_key`` is where the attempt comes from (the app passes the client address).
    Failures make the next try wait, per username and per client (``_delay_end``): an
    exponential delay rather than a lock, so nobody can shut an account for long by
    typing wrong passwords, and an admin can lift it (``unlock``). The failure message
    never says whether the username exists. Demo accounts are refused when
    ``SARCOPENIA_DEMO=0``.
    """
    now = _naive_utc(now)
    with db.read() as session:
        until = _wait_until(session, username, client_key, now)
        if until is not None:
            return AuthResult(False, None, _wait_message(until, now), until)
        reader = accounts.get_reader(session, username)
    stored = reader.password_hash if reader is not None else None
    matches = verify_password(stored or _dummy_hash(), password) and stored is not None
    demo_refused = matches and reader is not None and reader.demo and not config.demo_allowed()
    ok = matches and reader is not None and reader.active and not demo_refused
    new_hash = hash_password(password) if ok and stored and needs_rehash(stored) else None

    def write(session: Session) -> None:
        accounts.record_attempt(
            session, username=username, client_key=client_key, success=ok, at=now
        )
        if ok:
            accounts.purge_attempts(session, now - ATTEMPT_RETENTION)
        if new_hash is not None and reader is not None:
            row = session.get(Reader, reader.id)
            if row is not None:
                row.password_hash = new_hash

    db.write(write)
    if ok and reader is not None:
        if new_hash is not None:
            reader.password_hash = new_hash
        return AuthResult(True, reader, f"Signed in as {reader.display_name}.")
    if demo_refused:
        return AuthResult(False, None, DEMO_REFUSED)
    if matches:
        return AuthResult(False, None, DEACTIVATED)
    with db.read() as session:
        until = _wait_until(session, username, client_key, now)
    if until is not None:
        return AuthResult(False, None, f"{WRONG_CREDENTIALS} {_wait_message(until, now)}", until)
    return AuthResult(False, None, WRONG_CREDENTIALS)


def unlock(db: Database, username: str, *, actor: Reader | None = None) -> int:
    """Lift the sign-in delay of ``username`` (an admin, or the command line): forgets its
    failed attempts, audited with their number. Returns how many were cleared."""
    with db.transaction() as session:
        acting = _acting(session, actor)
        return accounts.clear_failures(session, actor=acting, username=username)


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


def _acting(session: Session, actor: Reader | None) -> Reader | None:
    """The actor as the database knows it now (a stale page object must not grant rights);
    ``None`` is the local command line, trusted like the database file itself."""
    if actor is None:
        return None
    current = session.get(Reader, actor.id)
    require(current, "manage_readers")
    return current


AccountChange = Callable[[Session, Reader | None], Reader]


def _account_change(db: Database, actor: Reader | None, change: AccountChange) -> Reader:
    try:
        with db.transaction() as session:
            accounts.lock_readers(session)
            return change(session, _acting(session, actor))
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
    now = _naive_utc(now)
    with db.read() as session:
        _acting(session, actor)
        summaries = accounts.reader_summaries(session)
        waits = [_username_delay_end(session, r.username, now) for r in summaries]
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
