"""Where the app keeps its data: one rule shared by the CLI, the app and the tests.

``SARCOPENIA_DATA_DIR`` picks the data folder (images, models, exports; ``data/`` by
default) and ``DATABASE_URL`` overrides the default SQLite file inside it.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = "data"
DB_FILENAME = "sarcopenia.db"


def data_dir() -> Path:
    """The data folder, created on first use."""
    path = Path(os.environ.get("SARCOPENIA_DATA_DIR", DEFAULT_DATA_DIR)).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """``DATABASE_URL`` when set, else the SQLite file in the data folder."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{(data_dir() / DB_FILENAME).resolve()}"


def images_dir() -> Path:
    path = data_dir() / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def exports_dir() -> Path:
    path = data_dir() / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path
