"""run_backend_worker_group: training runs as jobs on Redis Queue workers, in groups

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 00:00:00

A run records where it executes (``backend``: ``local`` subprocess or ``rq`` worker), its
queue, the worker that trains it and that worker's last heartbeat (a stale one means the
worker died), its attempt (one more per retry), and the ``run_group`` it was submitted
with (a grid or a k-fold run fanned out per fold). Existing runs are local, first attempt.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = (
    sa.Column("backend", sa.String(length=8), nullable=False, server_default="local"),
    sa.Column("queue", sa.String(length=16), nullable=True),
    sa.Column("worker", sa.String(length=200), nullable=True),
    sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
    sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("group_id", sa.Integer(), nullable=True),
)


def upgrade() -> None:
    op.create_table(
        "run_group",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_group")),
    )
    # Plain ADD COLUMNs: batch mode would copy and drop ``training_run``, which the
    # predictions' foreign keys refuse on SQLite.
    for column in COLUMNS:
        op.add_column("training_run", column)
    op.create_index("ix_run_group", "training_run", ["group_id"])


def downgrade() -> None:
    op.drop_index("ix_run_group", table_name="training_run")
    for column in reversed(COLUMNS):
        op.drop_column("training_run", column.name)
    op.drop_table("run_group")
