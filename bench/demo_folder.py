"""A throwaway data folder holding the synthetic demo cohort, for the benches that train."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.common.store import ImageStore
from core.services.demo import load_demo
from db.engine import Database
from db.migrate import upgrade


@contextmanager
def demo_folder(patients: int) -> Iterator[tuple[Database, ImageStore, Path]]:
    """A fresh SQLite database and image store with ``patients`` demo patients, removed on exit.

    Yields the database, the store and the folder (for a crop cache beside them).
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'bench.db'}"
        upgrade(url)
        db = Database(url)
        store = ImageStore(folder / "images")
        try:
            load_demo(db, store, n=patients)
            yield db, store, folder
        finally:
            db.dispose()
