"""Start-up housekeeping: sweep orphan image files and fail runs whose process died.

A killed import (``kill -9``, power loss) can leave image files that no committed row
names, because files are written before the one transaction that records them
(``core.cases.importer.store_cases``), plus ``.incoming-*`` temporary files from a write cut
short, and its staging folder (``core.common.store.Staging``). The database itself stays
consistent; the files only waste disk. A killed training process leaves its run
``running`` for ever unless something marks it failed.

``startup_checks`` does both, for the app to call once per process and the CLI on each
start.

The sweep must never delete the file of an import that is still running in another
process (the app and a CLI command share the store, and the store can be a shared mount):
such a file exists on disk before its row commits. So only files older than
``ORPHAN_GRACE`` are removed, and the folder is listed *before* the database is read, so a
file whose row commits in between is still young. A crash's orphans go at the first start
at least that long after it: wasted disk meanwhile, never a missing image.

A staging folder goes as a whole, once nothing in it has changed for ``ORPHAN_GRACE``: an
import that is still checking a large bundle keeps adding files, so its folder stays young.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from core.common.store import STAGING_DIR, ImageStore
from core.imaging.deid import site_uid_key
from db.engine import Database
from db.models import Image, TrainingRun

ORPHAN_GRACE = dt.timedelta(hours=1)
"""Files younger than this are left alone: an import in another process may still be
between writing them and committing their rows. An hour covers a large command-line import
of a folder; a browser upload (at most a few hundred MB) takes seconds."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartupReport:
    """What ``startup_checks`` changed; nothing when all was in order."""

    swept: list[str] = field(default_factory=list)
    """Relative paths of the orphan and temporary files removed from the image store."""
    failed_runs: int = 0
    """How many training runs were marked failed because their process is gone."""


def _files_under(root: Path, store: ImageStore) -> dict[str, float]:
    """Every file under ``root`` (store-relative path → modification time), symlinks included."""
    files: dict[str, float] = {}
    for path in root.rglob("*"):
        if path.is_symlink() or path.is_file():
            files[path.relative_to(store.root).as_posix()] = path.lstat().st_mtime
    return files


def _store_files(store: ImageStore) -> dict[str, float]:
    """The store's files outside the staging folders."""
    files = _files_under(store.root, store)
    return {rel: t for rel, t in files.items() if not rel.startswith(f"{STAGING_DIR}/")}


def _sweep_staging(store: ImageStore, cutoff: float) -> list[str]:
    """Remove the staging folders in which nothing changed since ``cutoff``; their files."""
    removed: list[str] = []
    staging = store.root / STAGING_DIR
    if not staging.is_dir():
        return removed
    for entry in staging.iterdir():
        folder = entry.is_dir() and not entry.is_symlink()
        if folder:
            files = _files_under(entry, store)
        else:
            files = {entry.relative_to(store.root).as_posix(): entry.lstat().st_mtime}
        if max([entry.lstat().st_mtime, *files.values()]) > cutoff:
            continue
        if folder:
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.extend(files)
    return removed


def sweep_orphans(
    db: Database, store: ImageStore, *, grace: dt.timedelta = ORPHAN_GRACE
) -> list[str]:
    """Delete store files older than ``grace`` that no image row names, and stale staging.

    Returns the relative paths removed, sorted. Pass ``grace=timedelta(0)`` only when no
    other process can be importing (tests, or an admin who stopped the app).
    """
    files = _store_files(store)
    with db.read() as session:
        known = set(session.scalars(select(Image.path)))
    cutoff = time.time() - grace.total_seconds()
    removed = []
    for relpath, mtime in sorted(files.items()):
        if mtime > cutoff or relpath in known:
            continue
        (store.root / relpath).unlink(missing_ok=True)
        removed.append(relpath)
    removed.extend(_sweep_staging(store, cutoff))
    if removed:
        log.warning("Removed %d orphan file(s) from %s", len(removed), store.root)
    return sorted(removed)


def _reap_dead_runs(db: Database) -> int:
    """Mark runs whose process died as failed and start queued runs in the free slots
    (``core.services.jobs.reap_dead_runs``).

    ``core.services.jobs`` pulls in the training stack, seconds of imports, so it is loaded only
    when some run is queued or running.
    """
    with db.read() as session:
        unfinished = session.scalar(
            select(func.count(TrainingRun.id)).where(TrainingRun.status.in_(("queued", "running")))
        )
    if not unfinished:
        return 0
    from core.services.jobs import reap_dead_runs

    return reap_dead_runs(db)


def startup_checks(
    db: Database, store: ImageStore, *, grace: dt.timedelta = ORPHAN_GRACE
) -> StartupReport:
    """Sweep orphan files, fail dead runs, start the queue and create the site's UID secret
    if it is missing; safe to call while other processes work."""
    site_uid_key(store.root.parent)  # the store is <data>/images; the first backup has it
    swept = sweep_orphans(db, store, grace=grace)
    failed = _reap_dead_runs(db)
    if failed:
        log.warning("Marked %d training run(s) failed: their process is gone", failed)
    return StartupReport(swept, failed)
