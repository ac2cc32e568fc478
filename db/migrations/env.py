"""Alembic environment: the URL comes from the caller (``db.migrate``) or ``core.common.config``."""

from alembic import context

from core.common import config as app_config
from db.engine import create_db_engine
from db.models import Base

target_metadata = Base.metadata


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or app_config.database_url()
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection, url)
        return
    engine = create_db_engine(url)
    with engine.connect() as conn:
        _run(conn, url)
    engine.dispose()


def _run(connection, url: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=url.startswith("sqlite"),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
