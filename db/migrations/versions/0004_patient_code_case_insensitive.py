"""patient: codes unique ignoring case

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 20:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    clashes = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT lower(code) FROM patient GROUP BY lower(code) HAVING count(*) > 1 "
                "ORDER BY lower(code)"
            )
        )
        .scalars()
        .all()
    )
    if clashes:
        raise RuntimeError(
            "Patient codes must be unique ignoring case, but these differ only in case: "
            f"{', '.join(clashes[:10])}. Rename or merge those patients, then start again."
        )
    op.create_index("uq_patient_code_lower", "patient", [sa.text("lower(code)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_patient_code_lower", table_name="patient")
