"""Online backups of the database, the image store and the trained models, and restores
of SQLite backups.

A backup is a folder: the database (``sarcopenia.db``, or ``dump.sql`` from ``pg_dump``
for PostgreSQL), ``images/``, ``models/`` and ``manifest.json`` (time, schema revision,
row counts, the sha256 of the database file, and any file the database names that the
backup lacks or holds changed). It is taken while the app runs:

- SQLite: the ``sqlite3`` backup API copies the database as one snapshot (WAL-safe, and
  writers are not blocked), then the copy passes ``PRAGMA integrity_check``.
- PostgreSQL: ``pg_dump`` reads a snapshot exported from a REPEATABLE READ transaction,
  and the manifest's counts come from that same transaction.

Files are copied after the database snapshot: an image or model file is written before
the row that names it commits, so every file the snapshot names already exists. Only
files missing from the backup (or of another size or time) are copied, so one folder can
take nightly backups cheaply. Every file the database names (``db.datafiles``) is then
checked against its recorded sha256, in the backup and again on restore.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from core.common.store import TMP_PREFIX
from core.imaging.deid import UID_KEY_PATH
from core.services.snapshots import (
    BUSY_TIMEOUT_S,
    DB_FILE,
    DUMP_FILE,
    BackupError,
    backup_postgres,
    backup_sqlite,
    integrity_check,
    sqlite_facts,
    sqlite_path,
    sqlite_referenced,
    table_names,
)
from db.datafiles import IMAGES_DIR, MODELS_DIR, Referenced, check_files
from db.datafiles import file_sha256 as file_sha256
from db.engine import redact
from db.migrate import upgrade

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
Progress = Callable[[int, int], None]


def _same_file(a: Path, b: Path) -> bool:
    """Same size and modification second: a file copied before (``copy2`` keeps the time).
    A model retrained under a reused run id differs in time even when its size matches."""
    if not b.is_file():
        return False
    sa, sb = a.stat(), b.stat()
    return sa.st_size == sb.st_size and int(sa.st_mtime) == int(sb.st_mtime)


def sync_files(src: Path, dst: Path, progress: Progress | None = None) -> tuple[int, int]:
    """Copy the files of ``src`` missing from ``dst`` (or changed); returns (copied, total)."""
    files = (
        sorted(f for f in src.rglob("*") if f.is_file() and not f.name.startswith(TMP_PREFIX))
        if src.is_dir()
        else []
    )
    copied = 0
    for done, file in enumerate(files, start=1):
        target = dst / file.relative_to(src)
        if not _same_file(file, target):
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(TMP_PREFIX + target.name)
            shutil.copy2(file, partial)
            os.replace(partial, target)
            copied += 1
        if progress is not None:
            progress(done, len(files))
    return copied, len(files)


def copy_uid_key(source: Path, dest: Path) -> bool:
    """Copy the site's UID secret (``secrets/uid-key``, mode 600) if there is one.

    It is kept out of the database and the exports, but a restored site needs it: without
    it the same original file would get other replacement UIDs after the restore.
    """
    key = source / UID_KEY_PATH
    if not key.is_file():
        return False
    target = dest / UID_KEY_PATH
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.read_bytes())
    os.replace(partial, target)
    return True


def _check_dest(dest: Path, source_db: Path | None, data_dir: Path) -> None:
    """Refuse a backup folder that would overwrite the live database or nest in the data
    folder's images or models."""
    where = dest.resolve()
    if source_db is not None and (where / DB_FILE) == source_db.resolve():
        raise BackupError(f"{dest} holds the live database; choose a separate backup folder.")
    for name in (IMAGES_DIR, MODELS_DIR):
        folder = (data_dir / name).resolve()
        if where == folder or folder in where.parents or where / name == folder:
            raise BackupError(f"{dest} overlaps {data_dir / name}; choose another folder.")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


def backup(
    db_url: str,
    dest: Path,
    *,
    data_dir: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Back up the database at ``db_url`` and the data folder's images and models into
    the folder ``dest``.

    ``data_dir`` defaults to the configured data folder. Returns ``dest``; its
    ``manifest.json`` lists the images the store lacked (``images.missing``) and every
    file the database names that the backup lacks or holds changed (``files.problems``).
    """
    from core.common import config

    dest = Path(dest)
    source = Path(data_dir) if data_dir is not None else config.data_dir()
    backend = make_url(db_url).get_backend_name()
    _check_dest(dest, sqlite_path(db_url) if backend == "sqlite" else None, source)
    dest.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    if backend == "sqlite":
        facts = backup_sqlite(db_url, dest)
    elif backend == "postgresql":
        facts = backup_postgres(db_url, dest)
    else:
        raise BackupError(f"Backups support SQLite and PostgreSQL, not {backend!r}.")
    copied, total = sync_files(source / IMAGES_DIR, dest / IMAGES_DIR, progress)
    models_copied, models_total = sync_files(source / MODELS_DIR, dest / MODELS_DIR)
    has_uid_key = copy_uid_key(source, dest)
    files: list[Referenced] = facts["files"]
    images = [f.path.removeprefix(f"{IMAGES_DIR}/") for f in files if _is_image(f)]
    missing = sorted(p for p in images if not (dest / IMAGES_DIR / p).is_file())
    db_file = dest / facts["file"]
    _write_json(
        dest / MANIFEST_FILE,
        {
            "format": FORMAT_VERSION,
            "created_at": started.isoformat(timespec="seconds"),
            "source": redact(db_url),
            "database": {
                "dialect": facts["dialect"],
                "file": facts["file"],
                "bytes": db_file.stat().st_size,
                "sha256": file_sha256(db_file),
                "schema_revision": facts["revision"],
            },
            "counts": facts["counts"],
            "images": {
                "referenced": len(images),
                "files": total,
                "copied": copied,
                "missing": missing,
            },
            "models": {
                "referenced": len(files) - len(images),
                "files": models_total,
                "copied": models_copied,
            },
            "files": {"referenced": len(files), "problems": check_files(files, dest)},
            "uid_key": has_uid_key,
        },
    )
    return dest


def _is_image(ref: Referenced) -> bool:
    return ref.path.startswith(f"{IMAGES_DIR}/")


def read_manifest(src: Path) -> dict[str, Any]:
    path = Path(src) / MANIFEST_FILE
    if not path.is_file():
        raise BackupError(f"{src} is not a backup folder: it has no {MANIFEST_FILE}.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BackupError(f"{path} is not valid JSON ({exc}); the backup is damaged.") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(f"{path} has format {manifest.get('format')!r}; expected 1.")
    return manifest


@contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as conn:
        yield conn


def _holds_rows(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with _sqlite(path) as conn:
        return any(
            conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone()
            for t in table_names(conn)
            if t != "alembic_version"
        )


def _refuse_damaged(problems: list[str], where: str, what_to_do: str) -> None:
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise BackupError(
            f"{len(problems)} file(s) the database names are not as recorded in {where}: "
            f"{shown}{more}. {what_to_do}"
        )


def _drop_sqlite(path: Path) -> None:
    for extra in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + extra).unlink(missing_ok=True)


def restore(src: Path, db_url: str, data_dir: Path, *, force: bool = False) -> dict[str, int]:
    """Restore a SQLite backup into ``db_url`` and ``data_dir`` (images and models);
    returns row counts.

    Stop the app first. A target that holds rows is overwritten only with ``force``. The
    database file must match the manifest's sha256, and the result must pass
    ``PRAGMA integrity_check``. The backup's database is upgraded to the app's current
    schema on a side copy, and every image and model file it names must be in the backup
    and in ``data_dir`` after the copy with its recorded sha256; otherwise the target
    database is left as it was.
    """
    src = Path(src)
    manifest = read_manifest(src)
    database = manifest["database"]
    if database["dialect"] != "sqlite":
        raise BackupError(
            f"{src} holds a PostgreSQL dump. Restore it into an empty database with: "
            f"psql --single-transaction -v ON_ERROR_STOP=1 -d <URL> -f {src / DUMP_FILE}"
        )
    db_file = src / database["file"]
    if not db_file.is_file():
        raise BackupError(f"{db_file} is missing; the backup is incomplete.")
    if file_sha256(db_file) != database["sha256"]:
        raise BackupError(
            f"{db_file} does not match the sha256 in {MANIFEST_FILE}; the backup was "
            "damaged or changed. Use another backup."
        )
    target = sqlite_path(db_url)
    if not force and _holds_rows(target):
        raise BackupError(
            f"{target} already holds data; restoring would overwrite it. Point "
            "DATABASE_URL/SARCOPENIA_DATA_DIR at an empty place, or pass --force."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    side = target.with_name(f"{target.name}.restoring")
    _drop_sqlite(side)
    try:
        with (
            closing(sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=ro", uri=True)) as source,
            _sqlite(side) as dst,
        ):
            source.backup(dst)
            integrity_check(dst, "The restored database")
        upgrade(f"sqlite:///{side}")
        files = sqlite_referenced(side)
        _refuse_damaged(
            check_files(files, src),
            f"the backup {src}",
            "Nothing was restored; use another backup.",
        )
        for name in (IMAGES_DIR, MODELS_DIR):
            sync_files(src / name, Path(data_dir) / name)
        copy_uid_key(src, Path(data_dir))
        _refuse_damaged(
            check_files(files, Path(data_dir)),
            f"{data_dir} after copying",
            "The database was not restored; free disk space or fix the folder's permissions "
            "and restore again.",
        )
        with _sqlite(side) as source, _sqlite(target) as dst:
            source.backup(dst)
            integrity_check(dst, "The restored database")
    finally:
        _drop_sqlite(side)
    upgrade(db_url)
    with _sqlite(target) as conn:
        counts, _ = sqlite_facts(conn)
    return counts
