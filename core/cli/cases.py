"""``python -m core import``: cases from a zip or folder with manifest.csv."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.common import config
from core.common.errors import UserError
from core.common.progress import progress_bar
from core.services.database import open_database


def cmd_import(args: argparse.Namespace) -> int:
    from core.cases.archive import BundleError, open_bundle
    from core.cases.importer import Cleaning, import_bundle
    from core.common.store import ImageStore

    db = open_database()
    try:
        bundle = open_bundle(Path(args.path))
    except BundleError as exc:
        raise UserError(str(exc)) from None
    with bundle:
        report = import_bundle(
            bundle,
            db,
            ImageStore(config.images_dir()),
            skip_invalid=args.skip_invalid,
            actor_name=args.actor,
            progress=progress_bar("Checking cases"),
            cleaning=Cleaning(pixel_ocr=not args.known_clean),
        )
    for problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def add_import_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``import``."""
    imp = sub.add_parser(
        "import",
        help="import cases from a zip or folder with manifest.csv",
        description="Import a zip or folder holding manifest.csv and the images it names. "
        "All or nothing unless --skip-invalid.",
    )
    imp.add_argument("path", help="zip file or folder")
    imp.add_argument(
        "--skip-invalid", action="store_true", help="import valid rows, report the rest"
    )
    imp.add_argument("--actor", default=None, help="username recorded in the audit trail")
    imp.add_argument(
        "--known-clean",
        action="store_true",
        help="skip the search for burned-in text in the pixels (about 1 s per image): only "
        "for images known to carry none, e.g. crops or exports with the banner switched off; "
        "DICOM files then do not claim their pixels were cleaned",
    )
    imp.set_defaults(handler=cmd_import)
