"""Content-addressed image store: files are written once, named by their sha256.

A file is written to a temporary name and renamed into place, so a crash never leaves
a half-written image under a real name; ``sweep_orphans`` removes what a killed import
left behind (files the database does not know).

An import first writes every checked file into its own :class:`Staging` folder under
``STAGING_DIR`` (same file system, so moving a file into place is an atomic rename) and
holds no decoded image longer than one file; only when every file has passed are they
moved into place and recorded in one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

TMP_PREFIX = ".incoming-"
STAGING_DIR = ".staging"
"""Folder of the store holding one sub-folder per import in progress."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageStore:
    """Image files under ``root``; callers keep only the relative path returned by ``put``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def relpath_for(self, sha256: str, suffix: str) -> str:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"Not a sha256 hex digest: {sha256!r}")
        return f"{sha256[:2]}/{sha256}{suffix}"

    def path(self, relpath: str) -> Path:
        """Absolute path of a stored file; refuses paths that would leave the store."""
        full = (self.root / relpath).resolve()
        if self.root.resolve() not in full.parents:
            raise ValueError(f"Refusing a path outside the image store: {relpath!r}")
        return full

    def staging(self) -> Staging:
        """A fresh staging folder for one import (see the module docstring)."""
        return Staging(self, self.root / STAGING_DIR / uuid.uuid4().hex)

    def put(self, data: bytes, sha256: str, suffix: str) -> tuple[str, bool]:
        """Store ``data`` as ``<sha256><suffix>``; returns (relative path, newly created)."""
        relpath = self.relpath_for(sha256, suffix)
        target = self.path(relpath)
        if target.exists():
            os.utime(target)  # young again: a concurrent orphan sweep must not take it now
            return relpath, False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return relpath, True

    def read(self, relpath: str) -> bytes:
        return self.path(relpath).read_bytes()

    def remove(self, relpaths: Iterable[str]) -> None:
        for relpath in relpaths:
            self.path(relpath).unlink(missing_ok=True)

    def sweep_orphans(self, known: set[str]) -> list[str]:
        """Delete files the database does not reference, and leftover temporary files."""
        removed = []
        for file in self.root.rglob("*"):
            if not file.is_file():
                continue
            rel = file.relative_to(self.root).as_posix()
            if file.name.startswith(TMP_PREFIX) or rel not in known:
                file.unlink(missing_ok=True)
                removed.append(rel)
        return removed


class Staging:
    """Checked files of one import, waiting in a private folder until the import commits."""

    def __init__(self, store: ImageStore, folder: Path) -> None:
        self.store = store
        self.folder = folder
        self._count = 0

    def write(self, data: bytes, suffix: str) -> Path:
        """Write ``data`` under a new name; the name never comes from the bundle.

        Not synced here: one ``os.sync`` after the moves (``make_durable``) replaces an
        ``fsync`` per file, which dominated the import of many small files.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count += 1
        path = self.folder / f"{self._count:06d}{suffix}"
        path.write_bytes(data)
        return path

    @staticmethod
    def make_durable() -> None:
        """Flush every moved file and rename to disk before their rows commit."""
        os.sync()

    def move_into_store(self, staged: Path, sha256: str, suffix: str) -> tuple[str, bool]:
        """Rename a staged file to its content address; returns (relative path, newly created).

        The file is touched after the rename: it may have waited longer than the orphan
        sweep's grace period, and must look young until its row commits.
        """
        relpath = self.store.relpath_for(sha256, suffix)
        target = self.store.path(relpath)
        if target.exists():
            os.utime(target)
            staged.unlink(missing_ok=True)
            return relpath, False
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        os.utime(target)
        return relpath, True

    def discard(self) -> None:
        """Remove the folder and whatever is left in it, and the parent once it is empty."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # another import is staging: leave it
            self.folder.parent.rmdir()
