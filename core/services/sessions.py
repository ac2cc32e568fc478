"""Sign-in sessions that survive a page reload, for a bounded time.

The browser keeps a random token (256 bits) in a cookie; the database keeps only its
sha256 with the reader, an absolute expiry (``config.session_lifetime``), the last
activity (``config.idle_timeout``) and a revocation time. Signing out, deactivating the
reader or changing their password revokes the row, so a copied cookie stops working
then, whatever the browser still holds. Demo accounts are refused here too when
``SARCOPENIA_DEMO=0``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
from dataclasses import dataclass

from core.common import config
from db import auth as accounts
from db.engine import Database
from db.models import Reader, utcnow

SESSION_COOKIE = "sarcopenia_session"
TOUCH_EVERY = dt.timedelta(seconds=60)
"""Activity is written at most this often per session: idle sign-out is exact to a minute."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Resumed:
    """A session looked up from its token: the reader, or why there is none.

    ``message`` is for the person at the screen (idle, expired); it is empty when the
    token was simply unknown or signed out, which needs no explanation.
    """

    reader: Reader | None
    message: str = ""


def _minutes(delta: dt.timedelta) -> str:
    minutes = max(1, math.ceil(delta.total_seconds() / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def start_session(
    db: Database, reader: Reader, *, client: str, now: dt.datetime | None = None
) -> str:
    """Record a new session for ``reader`` and return the token the browser keeps."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    db.write(
        lambda session: accounts.insert_session(
            session,
            token_hash=token_hash(token),
            reader_id=reader.id,
            client=client,
            now=now,
            expires_at=now + config.session_lifetime(),
        )
    )
    return token


def resume_session(db: Database, token: str, *, now: dt.datetime | None = None) -> Resumed:
    """The reader of a live session, its activity recorded; or why it ended.

    Ends (revokes) a session that has been idle longer than ``config.idle_timeout()``,
    outlived ``config.session_lifetime()``, or belongs to a reader who may no longer
    sign in.
    """
    now = now or utcnow()
    key = token_hash(token)
    with db.read() as session:
        found = accounts.find_session(session, key)
    if found is None:
        return Resumed(None)
    row, reader = found
    if row.revoked_at is not None:
        return Resumed(None)
    idle = config.idle_timeout()
    message = ""
    if now >= row.expires_at:
        message = "Your session reached its time limit; sign in again."
    elif now - row.last_seen_at > idle:
        message = f"Signed out after {_minutes(idle)} without activity; sign in again."
    elif not reader.active or reader.password_hash is None:
        message = "This account can no longer sign in."
    elif reader.demo and not config.demo_allowed():
        message = "Demo accounts are switched off on this server (SARCOPENIA_DEMO=0)."
    if message:
        end_session(db, token, now=now)
        return Resumed(None, message)
    if now - row.last_seen_at >= TOUCH_EVERY:
        db.write(lambda session: accounts.touch_session(session, key, now))
    return Resumed(reader)


def is_idle(db: Database, token: str, *, now: dt.datetime | None = None) -> bool:
    """Whether the session has been idle past the limit (read only: the page's watcher
    asks this every minute without counting as activity)."""
    now = now or utcnow()
    with db.read() as session:
        found = accounts.find_session(session, token_hash(token))
    if found is None:
        return True
    row, _ = found
    return (
        row.revoked_at is not None
        or now >= row.expires_at
        or now - row.last_seen_at > config.idle_timeout()
    )


def end_session(db: Database, token: str, *, now: dt.datetime | None = None) -> None:
    """Revoke the session (sign-out); expired and revoked rows older than a day go too."""
    now = now or utcnow()

    def work(session) -> None:
        accounts.revoke_session(session, token_hash(token), now)
        accounts.purge_sessions(session, now - dt.timedelta(days=1))

    db.write(work)
