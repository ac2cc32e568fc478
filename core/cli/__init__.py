"""Command-line interface: ``python -m core <command> --help``.

Every command honours ``SARCOPENIA_DATA_DIR`` and ``DATABASE_URL`` exactly as the app does
(``core.common.config``), upgrades the schema first, shows a progress bar for long work, and on
failure exits non-zero with a one-line reason.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from core.cli.admin import add_admin_parser
from core.cli.backup import add_backup_parser
from core.cli.cases import add_import_parser
from core.cli.console import configure_logging, quiet_tensorflow
from core.cli.demo import add_demo_parser
from core.cli.export import add_export_parser
from core.cli.features import add_features_parser
from core.cli.migrate_db import add_migrate_db_parser
from core.cli.pacs import add_pacs_parser
from core.cli.predict import add_predict_parser
from core.cli.report import add_report_parser
from core.cli.swe_preset import add_swe_preset_parser
from core.cli.train import add_train_parser
from core.cli.weights import add_weights_parser
from core.cli.worker import add_worker_parser
from core.common.errors import UserError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-command per group module in this package."""
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Sarcopenia ultrasound toolkit. Data folder: $SARCOPENIA_DATA_DIR "
        "(default ./data); database: $DATABASE_URL (default SQLite in the data folder).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_group in (
        add_demo_parser,
        add_import_parser,
        add_weights_parser,
        add_train_parser,
        add_features_parser,
        add_predict_parser,
        add_export_parser,
        add_admin_parser,
        add_backup_parser,
        add_migrate_db_parser,
        add_report_parser,
        add_worker_parser,
        add_pacs_parser,
        add_swe_preset_parser,
    ):
        add_group(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--verbose",
            action="store_true",
            help="also show TensorFlow's own log messages (hidden by default)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a ``UserError`` becomes a one-line message and exit status 1."""
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    quiet_tensorflow(verbose)
    configure_logging(verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("SARCOPENIA_DEBUG"):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"error: {type(exc).__name__}: {reason} (set SARCOPENIA_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1
