"""``python -m core predict``: a cohort prediction run from the command line."""

from __future__ import annotations

import argparse

from core.common import config
from core.common.errors import UserError
from core.common.progress import progress_bar
from core.common.store import ImageStore
from core.services.database import open_database
from core.services.review import ModelPathError, ReviewError, run_predict_job


def cmd_predict(args: argparse.Namespace) -> int:

    try:
        n = run_predict_job(
            open_database(),
            ImageStore(config.images_dir()),
            args.run_id,
            progress=progress_bar(f"Predicting with run {args.run_id}"),
        )
    except (ReviewError, ModelPathError) as exc:
        raise UserError(str(exc)) from None
    print(f"Run {args.run_id}: predicted {n} patients (cached for the Review page and export).")
    return 0


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``predict``: one run's model on every patient, as a background-able job."""
    parser = sub.add_parser(
        "predict",
        help="predict every patient with a finished run's model (cohort job)",
        description="Run a finished run's model and Grad-CAM on every patient that has the "
        "images it needs, and cache the results for the Review page and the export.",
    )
    parser.add_argument("--run-id", type=int, required=True, help="the training run's id")
    parser.set_defaults(handler=cmd_predict)
