"""``python -m core export``: the labeled CSV and data dictionary from the command line."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from core.common import config
from core.common.errors import UserError
from core.common.progress import progress_bar
from core.common.store import ImageStore
from core.services.database import open_database
from core.services.export import write_export


def run_ids_argument(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected run ids such as 1,2,5; got {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("give at least one run id, e.g. --runs 3")
    return ids


def cmd_export(args: argparse.Namespace) -> int:

    out = (
        Path(args.out)
        if args.out
        else (config.exports_dir() / f"labeled-{dt.datetime.now():%Y%m%d-%H%M%S}.zip")
    )
    try:
        written = write_export(
            out,
            open_database(),
            ImageStore(config.images_dir()),
            args.runs or [],
            image_features=not args.no_image_features,
            progress=progress_bar("Measuring images"),
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for path in written:
        print(f"Wrote {path}")
    return 0


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``export``: the labeled CSV and its data dictionary."""
    parser = sub.add_parser(
        "export",
        help="labeled CSV (one row per patient) with a data dictionary",
        description="Export one row per patient: metadata, CT labels, every reader's grade, "
        "the consensus, crop boxes, echo intensity and stiffness statistics, and each chosen "
        "run's split and predictions. A .zip holds labeled.csv and data_dictionary.csv; a "
        ".csv name writes the CSV with <name>-dictionary.csv beside it.",
    )
    parser.add_argument(
        "--runs", type=run_ids_argument, default=None, metavar="IDS", help="run ids, e.g. 1,2"
    )
    parser.add_argument("--out", default=None, help="output .zip or .csv (default: exports folder)")
    parser.add_argument(
        "--no-image-features",
        action="store_true",
        help="leave out echo intensity and stiffness statistics (no image is read)",
    )
    parser.set_defaults(handler=cmd_export)
