"""training_run: model path relative to the data folder, with the model's sha256

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 20:50:00

An absolute ``model_path`` broke when the data folder moved or was restored elsewhere.
Paths are now stored relative to the data folder (``models/run-7.keras``); the files were
always written to ``<data>/models``, so an absolute path there becomes ``models/<name>``.
``model_sha256`` lets a restore check that each model file is the one trained; it is
recorded here for model files still on disk, and at save time from now on.
"""

import hashlib
import os
from pathlib import Path, PurePath

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

runs = sa.table(
    "training_run",
    sa.column("id", sa.Integer),
    sa.column("model_path", sa.String),
    sa.column("model_sha256", sa.String),
)


def _sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def upgrade() -> None:
    with op.batch_alter_table("training_run") as batch:
        batch.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(runs.c.id, runs.c.model_path).where(runs.c.model_path.is_not(None))
    )
    for run_id, stored in rows.all():
        path = PurePath(stored)
        if not path.is_absolute() or path.parent.name != "models":
            continue
        bind.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(model_path=f"models/{path.name}", model_sha256=_sha256(Path(stored)))
        )


def downgrade() -> None:
    data = Path(os.environ.get("SARCOPENIA_DATA_DIR", "data")).expanduser().resolve()
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(runs.c.id, runs.c.model_path).where(runs.c.model_path.is_not(None))
    )
    for run_id, stored in rows.all():
        if not PurePath(stored).is_absolute():
            bind.execute(
                runs.update().where(runs.c.id == run_id).values(model_path=str(data / stored))
            )
    with op.batch_alter_table("training_run") as batch:
        batch.drop_column("model_sha256")
