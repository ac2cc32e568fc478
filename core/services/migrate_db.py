"""Copy the whole database to another server: how a department moves from SQLite to
PostgreSQL (or back) without losing a grade, a box or an audit event.

Both schemas are brought to the current Alembic revision, and the target must be empty.
Rows are read from one consistent snapshot of the source and written in foreign-key
order inside one transaction on the target, so a failed copy leaves the target empty.
PostgreSQL sequences are then moved past the copied ids, so new rows get fresh ones.

Images and trained models stay files in the data folder; the rows name them relative to
it (``db.datafiles``), so the new database works with the same folder wherever it is
mounted. The command checks that every file the copied rows name is there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    func,
    select,
    text,
)

from db.datafiles import check_files, referenced_files
from db.engine import create_db_engine, redact
from db.migrate import upgrade
from db.models import Base

BATCH_SIZE = 1000
Progress = Callable[[int, int], None]


class MigrateError(RuntimeError):
    """A copy that cannot go ahead, or whose result does not match its source."""


def _counts(conn: Connection) -> dict[str, int]:
    return {
        table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for table in Base.metadata.sorted_tables
    }


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction that sees one state of the whole source database."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


@contextmanager
def _write(engine: Engine) -> Iterator[Connection]:
    """One write transaction on the target (BEGIN IMMEDIATE on SQLite, see ``db.engine``)."""
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            yield conn


def _json_names(table: Table) -> set[str]:
    return {c.name for c in table.c if isinstance(c.type, JSON)}


def _reader(table: Table) -> Select:
    """All rows in id order, JSON columns as their stored text: decoding would turn a JSON
    ``null`` into SQL NULL (the ORM writes both), and the copy must keep them apart."""
    json_names = _json_names(table)
    columns = [cast(c, Text).label(c.name) if c.name in json_names else c for c in table.c]
    return select(*columns).order_by(*table.primary_key.columns)


def _writer(table: Table, dialect: str) -> Insert:
    """An INSERT taking JSON columns as text (bound as ``json_<name>``), cast to JSON on
    PostgreSQL; SQLite stores the text as it is."""
    values = {}
    for name in _json_names(table):
        param = bindparam(f"json_{name}", type_=Text)
        values[name] = cast(param, table.c[name].type) if dialect == "postgresql" else param
    return table.insert().values(values)


def _copy_table(
    src: Connection, dst: Connection, table: Table, step: Callable[[int], None]
) -> None:
    json_names = _json_names(table)
    insert = _writer(table, dst.dialect.name)
    result = src.execution_options(yield_per=BATCH_SIZE).execute(_reader(table))
    for rows in result.partitions():
        params = [
            {f"json_{k}" if k in json_names else k: v for k, v in row._mapping.items()}
            for row in rows
        ]
        dst.execute(insert, params)
        step(len(rows))


def reset_sequences(conn: Connection) -> None:
    """Move each PostgreSQL id sequence past the largest copied id (rows copied with their
    ids do not advance the sequence, so the next insert would collide)."""
    if conn.dialect.name != "postgresql":
        return
    for table in Base.metadata.sorted_tables:
        if "id" not in table.c:
            continue
        sequence = conn.execute(
            text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": table.name}
        ).scalar()
        if sequence is None:
            continue
        conn.execute(
            text(
                f'SELECT setval(:seq, COALESCE((SELECT max(id) FROM "{table.name}"), 1), '
                f'(SELECT max(id) FROM "{table.name}") IS NOT NULL)'
            ),
            {"seq": sequence},
        )


def copy_database(
    src_url: str, dst_url: str, *, progress: Progress | None = None
) -> dict[str, int]:
    """Copy every row of the app's tables from ``src_url`` into the empty ``dst_url``.

    Returns the row count per table, checked equal on both sides before the target
    commits. Refuses when the target already holds rows.
    """
    if redact(src_url) == redact(dst_url):
        raise MigrateError("Source and target are the same database; give another --to URL.")
    upgrade(src_url)
    upgrade(dst_url)
    source = create_db_engine(src_url)
    target = create_db_engine(dst_url)
    try:
        with _snapshot(source) as src, _write(target) as dst:
            existing = {t: n for t, n in _counts(dst).items() if n}
            if existing:
                listed = ", ".join(f"{t} ({n})" for t, n in sorted(existing.items()))
                raise MigrateError(
                    f"The target {redact(dst_url)} already holds rows: {listed}. "
                    "Copy into an empty database (drop and recreate it first)."
                )
            expected = _counts(src)
            total = sum(expected.values())
            done = 0

            def step(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(done, total)

            for table in Base.metadata.sorted_tables:
                _copy_table(src, dst, table, step)
            reset_sequences(dst)
            copied = _counts(dst)
            if copied != expected:
                wrong = [t for t in expected if copied[t] != expected[t]]
                raise MigrateError(
                    f"Row counts differ after the copy ({', '.join(wrong)}); nothing was "
                    "committed to the target."
                )
    finally:
        source.dispose()
        target.dispose()
    return copied


def file_problems(url: str, data_dir: Path) -> tuple[int, list[str]]:
    """How many files the database at ``url`` names, and which are missing or changed in
    ``data_dir``."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            files = referenced_files(conn)
    finally:
        engine.dispose()
    return len(files), check_files(files, data_dir)
