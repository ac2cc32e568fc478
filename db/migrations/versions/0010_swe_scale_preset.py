"""swe_scale_preset: the SWE color-bar range, entered once per scanner preset

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 03:30:00

When the scale labels printed beside an SWE color bar cannot be read with confidence, an
admin enters the range once for the scanner (manufacturer, model) at that screen size, and
every such image then decodes in kPa instead of relative units.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "swe_scale_preset",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("units", sa.String(length=8), nullable=False),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "low >= 0 AND high > low", name=op.f("ck_swe_scale_preset_range_ordered")
        ),
        sa.CheckConstraint("units IN ('kPa', 'm/s')", name=op.f("ck_swe_scale_preset_units_known")),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["reader.id"],
            name=op.f("fk_swe_scale_preset_updated_by_id_reader"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_swe_scale_preset")),
        sa.UniqueConstraint("manufacturer", "model", "width", "height", name="uq_swe_scale_preset"),
    )


def downgrade() -> None:
    op.drop_table("swe_scale_preset")
