"""superseded_consensus: a consensus a later grade contradicted is kept, not overwritten

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 20:55:00

``consensus_grade`` keeps meaning "the consensus in force"; a superseded decision moves
here with its box, who contradicted it and why, so the image returns to the queue.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "superseded_consensus",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=True),
        sa.Column("superseded_at", sa.DateTime(), nullable=False),
        sa.Column("superseded_by_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.CheckConstraint("grade BETWEEN 0 AND 3", name=op.f("ck_superseded_consensus_range")),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["image.id"],
            name=op.f("fk_superseded_consensus_image_id_image"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"],
            ["reader.id"],
            name=op.f("fk_superseded_consensus_decided_by_id_reader"),
        ),
        sa.ForeignKeyConstraint(
            ["superseded_by_id"],
            ["reader.id"],
            name=op.f("fk_superseded_consensus_superseded_by_id_reader"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_superseded_consensus")),
    )
    op.create_index("ix_superseded_consensus_image", "superseded_consensus", ["image_id"])


def downgrade() -> None:
    op.drop_index("ix_superseded_consensus_image", table_name="superseded_consensus")
    op.drop_table("superseded_consensus")
