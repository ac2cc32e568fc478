"""Files the database points to: images and trained models, relative to the data folder.

The database stores these paths relative to the data folder (``images`` rows relative to
``images/``, runs as ``models/run-7.keras``) with each file's sha256, so a data folder can
move, be restored elsewhere or be shared by several app servers, and a backup or restore
can prove that every file the rows name is there and unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePath

from sqlalchemy import Connection, select

from core.common import config
from db.models import Image, TrainingRun

IMAGES_DIR = "images"
MODELS_DIR = "models"


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks (model files reach hundreds of MB)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def data_path(stored: str | Path, data_dir: Path | None = None) -> Path:
    """Where a path the database holds lies on disk: a relative one under the data folder.

    Absolute paths (runs saved before paths became relative) are returned as they are.
    """
    path = Path(stored)
    if path.is_absolute():
        return path
    return (data_dir if data_dir is not None else config.data_dir()) / path


def stored_path(path: Path, data_dir: Path | None = None) -> str:
    """``path`` relative to the data folder, as the database keeps it (``models/run-7.keras``).

    Raises:
        ValueError: the file is outside the data folder, so no relative path can name it.
    """
    root = (data_dir if data_dir is not None else config.data_dir()).resolve()
    full = Path(path).resolve()
    if not full.is_relative_to(root):
        raise ValueError(f"{full} is outside the data folder {root}.")
    return full.relative_to(root).as_posix()


@dataclass(frozen=True)
class Referenced:
    """One file a row names: its path relative to the data folder and its recorded sha256."""

    path: str
    sha256: str | None


def referenced_files(conn: Connection) -> list[Referenced]:
    """Every image and model file the database at ``conn`` names, in a stable order."""
    images = conn.execute(select(Image.path, Image.sha256).order_by(Image.id))
    models = conn.execute(
        select(TrainingRun.model_path, TrainingRun.model_sha256)
        .where(TrainingRun.model_path.is_not(None))
        .order_by(TrainingRun.id)
    )
    return [Referenced(f"{IMAGES_DIR}/{path}", sha) for path, sha in images] + [
        Referenced(str(path), sha) for path, sha in models
    ]


def check_files(files: list[Referenced], data_dir: Path) -> list[str]:
    """What is wrong with ``files`` under ``data_dir``: one sentence per missing or changed
    file (empty when all are present and match their sha256)."""
    problems: list[str] = []
    for ref in files:
        path = PurePath(ref.path)
        if path.is_absolute() or ".." in path.parts:
            problems.append(f"{ref.path} is outside the data folder")
            continue
        full = data_dir / path
        if not full.is_file():
            problems.append(f"{ref.path} is missing")
        elif ref.sha256 is not None and file_sha256(full) != ref.sha256:
            problems.append(f"{ref.path} does not match its recorded sha256")
    return problems
