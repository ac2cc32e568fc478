"""``python -m core report``: the study report bundle of chosen runs, from the command line."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from core.cli.export import run_ids_argument
from core.common import config
from core.common.errors import UserError
from core.services.database import open_database


def cmd_report(args: argparse.Namespace) -> int:
    from core.report.bundle import write_report

    out = (
        Path(args.out)
        if args.out
        else config.exports_dir() / f"report-{dt.datetime.now():%Y%m%d-%H%M%S}.zip"
    )
    if out.suffix.lower() != ".zip":
        raise UserError(
            f"The report is a zip bundle; give an --out name ending in .zip, not {out.name!r}."
        )
    try:
        written = write_report(open_database(), args.runs, out)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(f"Wrote {written}")
    return 0


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``report``: STARD / CLAIM / TRIPOD+AI report of finished runs as one zip."""
    parser = sub.add_parser(
        "report",
        help="study report (flow, characteristics, accuracy, calibration, decision curves, "
        "readers vs models, subgroups, model card, checklists) as one zip",
        description="Build the study report of finished runs: report.html, report.pdf, every "
        "table as CSV, every figure as PNG and SVG, and run_records.json. The same runs on the "
        "same database give byte-identical tables.",
    )
    parser.add_argument(
        "--runs", type=run_ids_argument, required=True, metavar="IDS", help="e.g. 1,2,3"
    )
    parser.add_argument("--out", default=None, help="output .zip (default: exports folder)")
    parser.set_defaults(handler=cmd_report)
