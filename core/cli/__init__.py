"""Command-line interface: ``python -m core <command> --help``.

Every command honours ``SARCOPENIA_DATA_DIR`` and ``DATABASE_URL`` exactly as the app does
(``core.common.config``), upgrades the schema first, shows a progress bar for long work, and on
failure exits non-zero with a one-line reason.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from tqdm import tqdm

from core.common import config

Handler = Callable[[argparse.Namespace], int]
TF_LOG_ENV: Final = "TF_CPP_MIN_LOG_LEVEL"
"""TensorFlow's C++ log filter; read once, when TensorFlow is first imported."""


class CommandError(RuntimeError):
    """A failure with a message meant for the user; printed as one line."""


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


def terminal_bar(**options: Any) -> tqdm:
    """A tqdm bar on stderr that draws only when stderr is a terminal.

    Redirected to a log file or a pipe, it writes nothing at all (``disable=None``), so a
    log holds the command's messages, not hundreds of bar refreshes.
    """
    return tqdm(file=sys.stderr, disable=None, **options)


def progress_bar(description: str) -> Callable[[int, int], None]:
    """A ``terminal_bar`` fed (done, total)."""
    bar: tqdm | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = terminal_bar(total=total, desc=description, unit="case")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


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
        raise CommandError(str(exc)) from None
    print(f"Loaded {n} synthetic demo patients into {db.url}.")
    print(
        "Demo accounts admin, radiologist1 and radiologist2 share a public password: "
        "never use this database for real patients (SARCOPENIA_DEMO=0 refuses them)."
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from core.cases.archive import BundleError, open_bundle
    from core.cases.importer import import_bundle
    from core.common.store import ImageStore

    db = open_database()
    try:
        bundle = open_bundle(Path(args.path))
    except BundleError as exc:
        raise CommandError(str(exc)) from None
    with bundle:
        report = import_bundle(
            bundle,
            db,
            ImageStore(config.images_dir()),
            skip_invalid=args.skip_invalid,
            actor_name=args.actor,
            progress=progress_bar("Checking cases"),
        )
    for problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from core.learning.weights import fetch_all, keras_cache_dir

    paths = fetch_all(progress=lambda arch, path: print(f"{arch}: {path}"))
    print(f"{len(paths)} weight files in {keras_cache_dir()}.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Sarcopenia ultrasound toolkit. Data folder: $SARCOPENIA_DATA_DIR "
        "(default ./data); database: $DATABASE_URL (default SQLite in the data folder).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    imp.set_defaults(handler=cmd_import)

    weights = sub.add_parser("weights", help="ImageNet weights for the three backbones")
    weights_sub = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    fetch = weights_sub.add_parser(
        "fetch", help="download the three notop weight files into the Keras cache (needs internet)"
    )
    fetch.set_defaults(handler=cmd_weights_fetch)

    from core.learning.baseline import add_features_parser
    from core.report_cli import add_report_parser
    from core.services.auth import add_admin_parser
    from core.services.backup import add_backup_parser
    from core.services.export import add_export_parser
    from core.services.jobs import add_train_parser
    from core.services.migrate_db import add_migrate_db_parser
    from core.services.review import add_predict_parser

    add_train_parser(sub)
    add_features_parser(sub)
    add_predict_parser(sub)
    add_export_parser(sub)
    add_admin_parser(sub)
    add_backup_parser(sub)
    add_migrate_db_parser(sub)
    add_report_parser(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--verbose",
            action="store_true",
            help="also show TensorFlow's own log messages (hidden by default)",
        )
    return parser


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for a while (C++ code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's own import with stderr silenced, then steps aside."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with _stderr_to_devnull():
            self.loader.exec_module(module)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, wrapping its loader in ``_QuietLoader``."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow(verbose: bool) -> None:
    """Keep TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) off the console.

    ``TF_CPP_MIN_LOG_LEVEL`` filters TensorFlow's later messages; the lines it prints while
    loading come before its logging is set up and ignore that variable, so the import itself
    runs with stderr silenced. Commands import TensorFlow lazily, after parsing, so this
    costs nothing for commands that never load it. A level set in the environment by the
    user wins unless ``--verbose`` is given, which shows everything.
    """
    if verbose:
        os.environ[TF_LOG_ENV] = "0"
        return
    os.environ.setdefault(TF_LOG_ENV, "3")
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


class _OneLine(logging.Formatter):
    """A log record as one line: the message, without the traceback it may carry."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def configure_logging(verbose: bool) -> None:
    """Warnings as single lines on stderr; ``--verbose`` adds info and full tracebacks."""
    handler = logging.StreamHandler(sys.stderr)
    if verbose or os.environ.get("SARCOPENIA_DEBUG"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_OneLine())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    quiet_tensorflow(verbose)
    configure_logging(verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandError as exc:
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
