"""grade: uncertain flag and reader comment

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 20:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grade") as batch:
        batch.add_column(
            sa.Column("uncertain", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("comment", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grade") as batch:
        batch.drop_column("comment")
        batch.drop_column("uncertain")
