"""Where the app keeps its data: one rule shared by the CLI, the app and the tests.

``SARCOPENIA_DATA_DIR`` picks the data folder (images, models, exports; ``data/`` by
default) and ``DATABASE_URL`` overrides the default SQLite file inside it.
"""

from __future__ import annotations

import datetime as dt
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


def _positive_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{name} must be a positive number, got {raw!r}.")
    return value


def demo_allowed() -> bool:
    """False when ``SARCOPENIA_DEMO=0``: a server run for real use refuses the demo cohort
    and signs in no demo account (their password is public)."""
    return os.environ.get("SARCOPENIA_DEMO", "1").strip().lower() not in {"0", "false", "no"}


def idle_timeout() -> dt.timedelta:
    """``SARCOPENIA_IDLE_MINUTES`` (default 30): sign a reader out after this long idle."""
    return dt.timedelta(minutes=_positive_number("SARCOPENIA_IDLE_MINUTES", 30))


def session_lifetime() -> dt.timedelta:
    """``SARCOPENIA_SESSION_HOURS`` (default 12): a sign-in never lasts longer than this,
    however active the reader is."""
    return dt.timedelta(hours=_positive_number("SARCOPENIA_SESSION_HOURS", 12))
