"""``python -m core predict``: a cohort prediction run from the command line."""

from __future__ import annotations
import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
import cv2
import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from core.common import config
from core.common.boxes import Box
from core.common.labels import dichotomize_grade
from core.common.store import ImageStore
from core.imaging.crop import ChosenBox, choose_box
from core.imaging.images import load_pixels, to_display_rgb
from core.imaging.swe_decode import stiffness_stats
from core.learning.dataset import (
    TASKS,
    ArrayCache,
    CaseImage,
    DatasetSettings,
    auto_box,
    decoded_swe_crop,
    input_arrays,
)
from core.report.table1 import run_label
from db.cases import case_labels
from db.datafiles import data_path
from db.engine import Database
from db.models import (
    ConsensusGrade,
    CropBox,
    Grade,
    Image,
    Patient,
    Prediction,
    Reader,
    Split,
    SplitAssignment,
    TrainingRun,
)

def cmd_predict(args: argparse.Namespace) -> int:
    from core.cli import CommandError, open_database, progress_bar

    try:
        n = run_predict_job(
            open_database(),
            ImageStore(config.images_dir()),
            args.run_id,
            progress=progress_bar(f"Predicting with run {args.run_id}"),
        )
    except (ReviewError, ModelPathError) as exc:
        raise CommandError(str(exc)) from None
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


