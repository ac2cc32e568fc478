"""The echogenicity model as a second reader: advice on a GSU image once two have graded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
from sqlalchemy import select

from core.common.boxes import Box
from core.common.store import ImageStore
from core.services.review.cases import case_images
from core.services.review.errors import SecondReaderUnavailable
from core.services.review.model_views import default_pixels
from core.services.review.predictions import predict_cases
from core.services.review.predictor import RunPredictor, load_predictor
from core.services.review.table import finished_runs
from db.engine import Database
from db.models import Grade, Image, Patient

ADVICE_NOTE: Final = (
    "Advice only: the echogenicity model's opinion, not a grade. The consensus of the "
    "readers is the ground truth."
)
MIN_READERS_FOR_ADVICE: Final = 2
"""The model's opinion is shown only once two readers have graded (it must not anchor them)."""


@dataclass(frozen=True)
class SecondReaderOpinion:
    """The echogenicity model's advice on one GSU image (never a grade)."""

    run_id: int
    run_label: str
    grade_label: str
    """'high' (grades 2–3) or 'low' (grades 0–1), the study's dichotomy."""
    probability: float
    threshold: float
    box: Box
    overlay_crop: np.ndarray
    overlay_full: np.ndarray
    note: str = ADVICE_NOTE
    cam_note: str | None = None
    """Set when the Grad-CAM map shows no localization."""


def echogenicity_runs(db: Database) -> list[int]:
    """Finished echogenicity runs with a model, newest first (the default adviser first)."""
    return [r.id for r in finished_runs(db) if r.task == "echogenicity_gsu"]


def second_reader_opinion(
    db: Database,
    store: ImageStore,
    image_id: int,
    run_id: int | None = None,
    *,
    predictor: RunPredictor | None = None,
    full_pixels: Callable[[str], np.ndarray] | None = None,
) -> SecondReaderOpinion:
    """The echogenicity model's low/high call, probability and Grad-CAM for a GSU image.

    Refused (``SecondReaderUnavailable``) until at least two readers have graded the image,
    so the model never anchors a reader's own grade; also when the image is not GSU or no
    finished echogenicity run exists. ``run_id`` defaults to the newest such run.
    """
    with db.read() as session:
        image = session.get(Image, image_id)
        if image is None or image.modality != "GSU":
            raise SecondReaderUnavailable(
                f"Image {image_id} is not a GSU image; the echogenicity model reads GSU only."
            )
        n_grades = len(session.scalars(select(Grade.id).where(Grade.image_id == image_id)).all())
        code = session.scalar(select(Patient.code).where(Patient.id == image.patient_id))
        patient_id = image.patient_id
    if n_grades < MIN_READERS_FOR_ADVICE:
        raise SecondReaderUnavailable(
            f"The model's advice appears after {MIN_READERS_FOR_ADVICE} readers have graded "
            f"this image ({n_grades} so far)."
        )
    if run_id is None:
        runs = echogenicity_runs(db)
        if not runs:
            raise SecondReaderUnavailable(
                "No finished echogenicity model: train one (task echogenicity_gsu) first."
            )
        run_id = runs[0]
    predictor = predictor or load_predictor(db, run_id)
    if predictor.task != "echogenicity_gsu":
        raise SecondReaderUnavailable(
            f"Run {run_id} predicts {predictor.task}, not echogenicity; pick an "
            "echogenicity_gsu run."
        )
    cases = case_images(db, store, predictor.task, [patient_id])[patient_id]
    if isinstance(cases, str):
        raise SecondReaderUnavailable(f"Cannot read patient {code}: {cases}.")
    errors: dict[int, str] = {}
    outputs = predict_cases(predictor, store, {patient_id: cases}, errors=errors)
    if patient_id not in outputs:
        raise SecondReaderUnavailable(f"Cannot read patient {code}: {errors[patient_id]}")
    output = outputs[patient_id]
    box = cases["gsu"].chosen.box
    full = (full_pixels or default_pixels(store))(cases["gsu"].path)
    crop01 = full[box.y : box.y2, box.x : box.x2].astype(np.float32) / 255.0
    from core.learning.gradcam import flat_map_note, overlay, overlay_on_full_image

    high = output.probability >= predictor.threshold
    return SecondReaderOpinion(
        run_id=run_id,
        run_label=predictor.label,
        grade_label="high" if high else "low",
        probability=output.probability,
        threshold=predictor.threshold,
        box=box,
        overlay_crop=overlay(crop01, output.cam),
        overlay_full=overlay_on_full_image(full, box, output.cam),
        cam_note=flat_map_note(output.cam),
    )
