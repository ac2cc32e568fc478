"""Race-free "create or change" of a row identified by a unique key, on SQLite and PostgreSQL.

Reading "is there a row?" and then inserting one loses when two sessions do it at once:
on PostgreSQL (READ COMMITTED) both see none, both insert, and the second fails on the
unique constraint (seen: the same reader saving the same image from two browser tabs).
``lock_or_insert`` inserts with ``INSERT … ON CONFLICT DO NOTHING`` and otherwise locks the
existing row (``SELECT … FOR UPDATE``), so the loser waits for the winner's commit and then
changes its row instead of failing. SQLite's write transactions are already serialized
(``BEGIN IMMEDIATE`` in ``db.engine``); the same statements are correct there too.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import Base

Row = TypeVar("Row", bound=Base)
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def _locked(session: Session, model: type[Row], key: dict[str, Any]) -> Row | None:
    stmt = select(model).filter_by(**key).with_for_update()
    return session.scalar(stmt.execution_options(populate_existing=True))


def lock_or_insert(
    session: Session, model: type[Row], key: dict[str, Any], values: dict[str, Any]
) -> tuple[Row, bool]:
    """The row of ``model`` whose unique columns equal ``key``, locked until commit, and
    whether it was created now (from ``key`` and ``values``).

    An existing row is returned unchanged: the caller compares and updates it.
    """
    row = _locked(session, model, key)
    if row is not None:
        return row, False
    insert = _INSERTS[session.get_bind().dialect.name](model)
    stmt = (
        insert.values(**key, **values)
        .on_conflict_do_nothing(index_elements=list(key))
        .returning(model.id)
    )
    new_id = session.scalar(stmt)
    if new_id is not None:
        return session.get_one(model, new_id), True
    row = _locked(session, model, key)
    if row is None:
        raise RuntimeError(f"{model.__name__} {key} vanished between insert and lock.")
    return row, False
