"""``python -m core migrate-db``: copy the whole database to another server."""

from __future__ import annotations

import argparse
import sys

from core.common.errors import UserError
from core.common.progress import progress_bar
from core.services.migrate_db import MigrateError, copy_database, file_problems
from db.engine import redact


def cmd_migrate_db(args: argparse.Namespace) -> int:
    from core.common import config

    src = config.database_url()
    try:
        counts = copy_database(src, args.to, progress=progress_bar("Copying rows"))
    except MigrateError as exc:
        raise UserError(str(exc)) from None
    for table, n in counts.items():
        print(f"{table:20s} {n:8d}")
    print(
        f"Copied {sum(counts.values())} rows from {redact(src)} to {redact(args.to)}. "
        "Set DATABASE_URL to the new URL and restart the app."
    )
    data = config.data_dir()
    named, problems = file_problems(args.to, data)
    print(
        f"The rows name {named} image and model files, relative to the data folder {data}: "
        "keep SARCOPENIA_DATA_DIR on this folder (or a copy of its images/ and models/) "
        "for every app server using the new database."
    )
    if problems:
        print(
            f"warning: {len(problems)} of them are missing or changed in {data}, e.g. "
            f"{problems[0]}. Restore them from a backup before using the new database.",
            file=sys.stderr,
        )
    return 0


def add_migrate_db_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``migrate-db --to URL``."""
    parser = sub.add_parser(
        "migrate-db",
        help="copy the whole database into another (empty) database",
        description="Copy every row from $DATABASE_URL (default: the SQLite file) into the "
        "empty database at --to, e.g. postgresql+psycopg://user@host/sarcopenia. Stop the "
        "app first so that no change is made after the copy starts.",
    )
    parser.add_argument("--to", required=True, metavar="URL", help="target SQLAlchemy URL")
    parser.set_defaults(handler=cmd_migrate_db)
