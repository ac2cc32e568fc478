"""reader.demo flag and user_session table

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 20:55:00

Demo accounts (created only with the synthetic cohort) are flagged so the app can warn
about them and refuse them on a server run for real use. Existing demo accounts are
recognized by their demo usernames on a database that holds only synthetic patients.
``user_session`` keeps sign-ins across page reloads: the browser holds a random token,
the table only its sha256, with an absolute expiry, the last activity (idle sign-out)
and a revocation time.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DEMO_USERNAMES = ("admin", "radiologist1", "radiologist2", "sim_reader_a", "sim_reader_b")


def upgrade() -> None:
    # A plain ADD COLUMN: batch mode would copy and drop ``reader`` on SQLite, which the
    # foreign keys of grades and audit rows refuse.
    op.add_column(
        "reader", sa.Column("demo", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    bind = op.get_bind()
    real_patients = bind.execute(
        sa.text("SELECT COUNT(*) FROM patient WHERE synthetic = :no"), {"no": False}
    ).scalar()
    demo_patients = bind.execute(
        sa.text("SELECT COUNT(*) FROM patient WHERE synthetic = :yes"), {"yes": True}
    ).scalar()
    if demo_patients and not real_patients:
        reader = sa.table("reader", sa.column("username", sa.String), sa.column("demo", sa.Boolean))
        bind.execute(reader.update().where(reader.c.username.in_(DEMO_USERNAMES)).values(demo=True))
    op.create_table(
        "user_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("reader_id", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["reader_id"],
            ["reader.id"],
            name=op.f("fk_user_session_reader_id_reader"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_user_session_token_hash")),
    )
    op.create_index("ix_user_session_reader", "user_session", ["reader_id"])


def downgrade() -> None:
    op.drop_index("ix_user_session_reader", table_name="user_session")
    op.drop_table("user_session")
    op.drop_column("reader", "demo")
