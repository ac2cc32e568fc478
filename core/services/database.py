"""Open the configured database the way every command and worker must: upgraded and swept."""

from __future__ import annotations

from core.common import config


def open_database():
    """Upgrade the schema, sweep what a killed process left, and return the database."""
    from core.common.store import ImageStore
    from core.services.maintenance import startup_checks
    from db.engine import Database
    from db.migrate import upgrade

    url = config.database_url()
    upgrade(url)
    db = Database(url)
    startup_checks(db, ImageStore(config.images_dir()))
    return db
