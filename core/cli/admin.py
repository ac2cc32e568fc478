"""``python -m core admin ...``: reader accounts from the command line."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from core.common.errors import UserError
from core.services.auth import (
    account_notes,
    check_password_policy,
    create_reader,
    list_readers_for_admin,
    set_active,
    set_password,
    unlock,
)
from core.services.database import open_database
from db.auth import AccountError
from db.engine import Database
from db.models import ROLES


def _read_password(args: argparse.Namespace, username: str) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise AccountError("--password-stdin was given but standard input held no password.")
    else:
        password = getpass.getpass(f"New password for {username}: ")
        if getpass.getpass("Repeat it: ") != password:
            raise AccountError("The two passwords differ; nothing was changed.")
    check_password_policy(password, username=username)
    return password


def _run(work: Callable[[Database], str]) -> int:

    db = open_database()
    try:
        print(work(db))
    except AccountError as exc:
        raise UserError(str(exc)) from None
    finally:
        db.dispose()
    return 0


def cmd_admin_create(args: argparse.Namespace) -> int:
    def work(db: Database) -> str:
        password = _read_password(args, args.username)
        reader = create_reader(db, args.username, args.display_name, args.role, password)
        return f"Created {reader.role} {reader.username!r} ({reader.display_name})."

    return _run(work)


def cmd_admin_list(args: argparse.Namespace) -> int:
    def work(db: Database) -> str:
        rows = [("username", "role", "active", "last sign-in (UTC)", "notes", "display name")]
        for r in list_readers_for_admin(db):
            last = f"{r.last_sign_in:%Y-%m-%d %H:%M}" if r.last_sign_in else "never"
            notes = account_notes(r) or "-"
            active = "yes" if r.active else "no"
            rows.append((r.username, r.role, active, last, notes, r.display_name))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True))
            + "  "
            + row[-1]
            for row in rows
        )

    return _run(work)


def cmd_admin_set_password(args: argparse.Namespace) -> int:
    def work(db: Database) -> str:
        password = _read_password(args, args.username)
        reader = set_password(db, args.username, password)
        return f"Password of {reader.username!r} changed."

    return _run(work)


def cmd_admin_unlock(args: argparse.Namespace) -> int:
    def work(db: Database) -> str:
        cleared = unlock(db, args.username)
        return f"Sign-in delay of {args.username!r} lifted ({cleared} failed attempts forgotten)."

    return _run(work)


def cmd_admin_set_active(args: argparse.Namespace) -> int:
    def work(db: Database) -> str:
        reader = set_active(db, args.username, args.active)
        return f"{reader.username!r} is now {'active' if reader.active else 'deactivated'}."

    return _run(work)


def add_admin_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``admin create|list|set-password|unlock|deactivate|activate``.

    Passwords come from a prompt or ``--password-stdin``, never from the command line,
    where the shell history and ``ps`` would show them.
    """
    admin = sub.add_parser(
        "admin",
        help="manage reader accounts",
        description="Create, list, reset and deactivate reader accounts.",
    )
    actions = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")

    def with_password(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input (else prompt)",
        )

    create = actions.add_parser("create", help="create an account (an admin unless --role)")
    create.add_argument("--username", required=True)
    create.add_argument("--display-name", required=True)
    create.add_argument("--role", choices=ROLES, default="admin", help="default: admin")
    with_password(create)
    create.set_defaults(handler=cmd_admin_create)

    listing = actions.add_parser("list", help="list accounts")
    listing.set_defaults(handler=cmd_admin_list)

    reset = actions.add_parser("set-password", help="set a new password for an account")
    reset.add_argument("--username", required=True)
    with_password(reset)
    reset.set_defaults(handler=cmd_admin_set_password)

    lift = actions.add_parser(
        "unlock", help="lift the sign-in delay that failed attempts put on an account"
    )
    lift.add_argument("--username", required=True)
    lift.set_defaults(handler=cmd_admin_unlock)

    for name, active in (("deactivate", False), ("activate", True)):
        toggle = actions.add_parser(name, help=f"{name} an account")
        toggle.add_argument("--username", required=True)
        toggle.set_defaults(handler=cmd_admin_set_active, active=active)
