"""``python -m core backup|restore``: online backups and restores from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.common.errors import UserError
from core.common.progress import progress_bar
from core.services.backup import MANIFEST_FILE, BackupError, backup, read_manifest, restore
from db.datafiles import file_sha256 as file_sha256
from db.engine import redact


def cmd_backup(args: argparse.Namespace) -> int:
    from core.common import config

    url = config.database_url()
    try:
        dest = backup(url, Path(args.dest), progress=progress_bar("Copying images"))
    except BackupError as exc:
        raise UserError(str(exc)) from None
    manifest = read_manifest(dest)
    images = manifest["images"]
    rows = sum(n for t, n in manifest["counts"].items() if t != "alembic_version")
    models = manifest["models"]
    print(
        f"Backed up {redact(url)} ({rows} rows, schema {manifest['database']['schema_revision']}), "
        f"{images['files']} images ({images['copied']} new) and {models['files']} model files "
        f"({models['copied']} new) into {dest}."
    )
    problems = manifest["files"]["problems"]
    if problems:
        print(
            f"warning: {len(problems)} file(s) named in the database are missing or changed "
            f"in the backup (listed under files.problems in {dest / MANIFEST_FILE}), e.g. "
            f"{problems[0]}.",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from core.common import config

    url = config.database_url()
    try:
        counts = restore(Path(args.src), url, config.data_dir(), force=args.force)
    except BackupError as exc:
        raise UserError(str(exc)) from None
    rows = sum(n for t, n in counts.items() if t != "alembic_version")
    print(
        f"Restored {rows} rows into {redact(url)}, and images and models into "
        f"{config.data_dir()}; every file the database names is there with its sha256."
    )
    return 0


def add_backup_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``backup DEST`` and ``restore SRC [--force]``."""
    back = sub.add_parser(
        "backup",
        help="online backup of the database and images into a folder",
        description="Back up the database (SQLite file, or pg_dump for PostgreSQL), the "
        "image store and the trained models into DEST while the app keeps running. Reusing "
        "DEST copies only new files.",
    )
    back.add_argument("dest", help="backup folder (created when absent)")
    back.set_defaults(handler=cmd_backup)

    rest = sub.add_parser(
        "restore",
        help="restore a SQLite backup into the configured data folder",
        description="Restore a backup folder made by `backup` into $DATABASE_URL (SQLite) "
        "and $SARCOPENIA_DATA_DIR (images and models); every file the database names must "
        "be there with its recorded sha256. Stop the app first.",
    )
    rest.add_argument("src", help="backup folder")
    rest.add_argument("--force", action="store_true", help="overwrite a database holding data")
    rest.set_defaults(handler=cmd_restore)
