"""``python -m core demo``: load the synthetic demo cohort."""

from __future__ import annotations

import argparse

from core.common import config
from core.common.errors import UserError
from core.common.progress import progress_bar
from core.services.database import open_database


def cmd_demo(args: argparse.Namespace) -> int:
    from core.common.store import ImageStore
    from core.services.demo import DemoRefused, demo_blocker, load_demo

    db = open_database()
    with db.read() as session:
        blocker = demo_blocker(session, force=args.force)
    if blocker and args.if_empty and config.demo_allowed():
        print(f"Demo cohort not loaded. {blocker}")
        return 0
    try:
        n = load_demo(
            db,
            ImageStore(config.images_dir()),
            seed=args.seed,
            n=args.patients,
            progress=progress_bar("Rendering demo cohort"),
            force=args.force,
        )
    except DemoRefused as exc:
        raise UserError(str(exc)) from None
    print(f"Loaded {n} synthetic demo patients into {db.url}.")
    print(
        "Demo accounts admin, radiologist1 and radiologist2 share a public password: "
        "never use this database for real patients (SARCOPENIA_DEMO=0 refuses them)."
    )
    return 0


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    demo = sub.add_parser("demo", help="load the synthetic demo cohort into an empty database")
    demo.add_argument("--seed", type=int, default=2022, help="cohort seed (default 2022)")
    demo.add_argument("--patients", type=int, default=None, help="cohort size (default 160)")
    demo.add_argument(
        "--if-empty",
        action="store_true",
        help="do nothing (exit 0) when the database holds patients or real accounts",
    )
    demo.add_argument(
        "--force",
        action="store_true",
        help="load even beside real accounts or patients (demo accounts have a public password)",
    )
    demo.set_defaults(handler=cmd_demo)
