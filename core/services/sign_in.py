"""Sign-in with throttling: failed attempts make the next try wait, never lock an account.

Failures delay further tries exponentially, per username and per client address (a hard
lock would let anyone lock out an admin), with attempts kept in the database so the limit
survives restarts and holds across several app processes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.common import config
from core.services.passwords import dummy_hash, hash_password, needs_rehash, verify_password
from db import auth as accounts
from db.engine import Database
from db.models import Reader, utcnow

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


@dataclass(frozen=True)
class AuthResult:
    """Outcome of a sign-in; ``message`` can be shown to the user as it is."""

    ok: bool
    reader: Reader | None
    message: str
    retry_at: dt.datetime | None = None


def naive_utc(now: dt.datetime | None) -> dt.datetime:
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


def username_delay_end(session: Session, username: str, now: dt.datetime) -> dt.datetime | None:
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
            username_delay_end(session, username, now),
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
    now = naive_utc(now)
    with db.read() as session:
        until = _wait_until(session, username, client_key, now)
        if until is not None:
            return AuthResult(False, None, _wait_message(until, now), until)
        reader = accounts.get_reader(session, username)
    stored = reader.password_hash if reader is not None else None
    matches = verify_password(stored or dummy_hash(), password) and stored is not None
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
