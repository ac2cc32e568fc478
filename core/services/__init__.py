"""Application services: what pages and commands call to get work done.

Accounts and sign-in sessions (``auth``, ``sessions``), background training runs
(``jobs``), per-patient review and cohort predictions (``review``), the labeled export
(``export``), backups and database moves (``backup``, ``migrate_db``), start-up
housekeeping (``maintenance``), the demo loader (``demo``) and ``database``, which opens
the configured database upgraded and swept. Services raise ``core.common.UserError`` for
messages meant for people; they never know whether a page or a command called them.

Import the modules themselves (``from core.services import jobs``).
"""

__all__ = [
    "auth",
    "backup",
    "database",
    "demo",
    "export",
    "jobs",
    "maintenance",
    "migrate_db",
    "review",
    "sessions",
]
