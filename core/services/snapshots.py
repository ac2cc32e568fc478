"""Consistent snapshots of a live database: the SQLite backup API, or pg_dump in one snapshot.

SQLite is copied with ``sqlite3``'s backup API (WAL-safe, writers not blocked) and then
passes ``PRAGMA integrity_check``; PostgreSQL is dumped by ``pg_dump`` from a snapshot
exported by a REPEATABLE READ transaction, whose row counts go into the manifest.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import URL, create_engine, make_url, text

from db.datafiles import Referenced, referenced_files
from db.engine import redact
from db.migrate import upgrade

DB_FILE = "sarcopenia.db"
DUMP_FILE = "dump.sql"

BUSY_TIMEOUT_S = 30.0


class BackupError(RuntimeError):
    """A backup or restore that cannot go ahead; the message says why and what to do."""


def sqlite_path(url: str) -> Path:
    """The file behind a SQLite URL; in-memory databases cannot be backed up or restored."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise BackupError(f"Not a SQLite URL: {redact(url)}")
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("An in-memory SQLite database has no file to back up or restore.")
    return Path(parsed.database)


def table_names(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    )
    return [name for (name,) in rows]


def sqlite_facts(conn: sqlite3.Connection) -> tuple[dict[str, int], str | None]:
    """Row counts and schema revision of one SQLite database."""
    tables = table_names(conn)
    counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    revision = None
    if "alembic_version" in tables:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
    return counts, revision


def sqlite_referenced(path: Path) -> list[Referenced]:
    """The files a SQLite database file names (``db.datafiles.referenced_files``)."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return referenced_files(conn)
    finally:
        engine.dispose()


def integrity_check(conn: sqlite3.Connection, what: str) -> None:
    result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if result != ["ok"]:
        raise BackupError(f"{what} failed PRAGMA integrity_check: {'; '.join(result[:5])}")


def backup_sqlite(url: str, dest: Path) -> dict[str, Any]:
    source = sqlite_path(url)
    if not source.is_file():
        raise BackupError(f"No SQLite database at {source}; check DATABASE_URL.")
    upgrade(url)  # as every start of the app or CLI does: rows in today's layout
    partial = dest / f"{DB_FILE}.partial"
    partial.unlink(missing_ok=True)
    with (
        closing(sqlite3.connect(source, timeout=BUSY_TIMEOUT_S)) as src,
        closing(sqlite3.connect(partial)) as dst,
    ):
        src.backup(dst)  # one step: a single consistent snapshot of the whole file
        dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal beside it
        integrity_check(dst, "The backup copy")
        counts, revision = sqlite_facts(dst)
    files = sqlite_referenced(partial)
    target = dest / DB_FILE
    os.replace(partial, target)
    return {
        "dialect": "sqlite",
        "file": DB_FILE,
        "revision": revision,
        "counts": counts,
        "files": files,
    }


def pg_conninfo(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and the environment that carries the password."""
    parsed: URL = make_url(url)
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def backup_postgres(url: str, dest: Path) -> dict[str, Any]:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError(
            "pg_dump was not found on PATH. Install the PostgreSQL client tools of the "
            "server's major version (Debian/Ubuntu: apt-get install postgresql-client) "
            "and run the backup again."
        )
    from db.engine import create_db_engine

    upgrade(url)
    conninfo, env = pg_conninfo(url)
    partial = dest / f"{DUMP_FILE}.partial"
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                tables = conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                ).scalars()
                counts = {
                    t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one())
                    for t in sorted(tables)
                }
                revision = (
                    conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                    if "alembic_version" in counts
                    else None
                )
                files = referenced_files(conn)
                command = [
                    pg_dump,
                    "--format=plain",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={partial}",
                    f"--dbname={conninfo}",
                ]
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise BackupError(f"pg_dump failed: {done.stderr.strip()[-800:]}")
    finally:
        engine.dispose()
    os.replace(partial, dest / DUMP_FILE)
    return {
        "dialect": "postgresql",
        "file": DUMP_FILE,
        "revision": revision,
        "counts": counts,
        "files": files,
    }
