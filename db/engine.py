"""Engine and transactions: one place that makes SQLite safe for several readers at once.

SQLite gets WAL (readers never block the writer), foreign keys, a busy timeout, and
``BEGIN IMMEDIATE`` for write transactions, so two writers queue instead of deadlocking
on a lock upgrade. PostgreSQL needs none of this and gets a plain engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.common import config

BUSY_TIMEOUT_MS = 15_000
WRITE_RETRIES = 5
T = TypeVar("T")


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite connections get WAL, foreign keys and a busy timeout."""
    if not _is_sqlite(url):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cursor = dbapi_conn.cursor()
        if ":memory:" not in url:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _is_busy(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


class Database:
    """The app's handle on its database: read sessions and retried write transactions."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or config.database_url()
        self.engine = create_db_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return _is_sqlite(self.url)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries; it never commits. Loaded objects stay usable after it."""
        with self._sessions() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back whole on any error."""
        with self._sessions() as session:
            if self.is_sqlite:
                session.connection(execution_options={"sqlite_immediate": True})
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def write(self, work: Callable[[Session], T], retries: int = WRITE_RETRIES) -> T:
        """Run ``work`` in one transaction, retrying when SQLite stays busy past its timeout."""
        attempt = 0
        while True:
            try:
                with self.transaction() as session:
                    return work(session)
            except OperationalError as exc:
                attempt += 1
                if not (self.is_sqlite and _is_busy(exc)) or attempt >= retries:
                    raise
                time.sleep(0.05 * 2**attempt)

    def dispose(self) -> None:
        self.engine.dispose()


def redact(url: str) -> str:
    """The URL with its password hidden, for messages, logs and manifests."""
    return make_url(url).render_as_string(hide_password=True)
