"""simulated_reader_labels: the demo's simulated readers lose their invented experience

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 21:25:00

Earlier demos named them "Simulated reader A (13 y experience)" and "... B (5 y
experience)": years of experience of people who do not exist. Only those exact labels
change, so a name an admin chose is kept.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RENAMES = (
    ("sim_reader_a", "Simulated reader A (13 y experience)", "Simulated reader A"),
    ("sim_reader_b", "Simulated reader B (5 y experience)", "Simulated reader B"),
)


def _rename(position_from: int, position_to: int) -> None:
    reader = sa.table("reader", sa.column("username"), sa.column("display_name"))
    for names in RENAMES:
        op.execute(
            reader.update()
            .where(reader.c.username == names[0], reader.c.display_name == names[position_from])
            .values(display_name=names[position_to])
        )


def upgrade() -> None:
    _rename(1, 2)


def downgrade() -> None:
    _rename(2, 1)
