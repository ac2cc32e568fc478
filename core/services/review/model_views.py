"""One model's opinion on one patient: probability, subset, and Grad-CAM on crop and scan."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.common.boxes import Box
from core.common.store import ImageStore
from core.imaging.images import load_pixels, to_display_rgb
from core.learning.dataset import TASKS, ArrayCache, CaseImage
from core.report.table1 import run_label
from core.services.review.errors import ReviewError
from core.services.review.predictions import NOT_IN_RUN, predict_cases
from core.services.review.predictor import RunPredictor, saved_fold
from db.models import Prediction, SplitAssignment, TrainingRun


@dataclass(frozen=True)
class ModelView:
    run_id: int
    label: str
    task: str
    subset: str
    """Subset of the patient in the run's saved model's split, or 'not in run'."""
    tested: bool
    """The patient was in the run's test set (in any fold)."""
    probability: float | None = None
    predicted_label: int | None = None
    threshold: float = 0.5
    source: str = ""
    truth: int | None = None
    input_name: str = "gsu"
    box: Box | None = None
    overlay_crop: np.ndarray | None = None
    overlay_full: np.ndarray | None = None
    note: str = ""
    cam_note: str | None = None
    """Set when the Grad-CAM map shows no localization (``core.learning.gradcam.flat_map_note``)."""
    error: str | None = None

    @property
    def correct(self) -> bool | None:
        if self.truth is None or self.predicted_label is None:
            return None
        return self.truth == self.predicted_label


@dataclass(frozen=True)
class RunFacts:
    run_id: int
    label: str
    task: str
    subset: str
    tested: bool
    stored: tuple[float, float, str] | None
    """(probability, threshold, source) of a stored val/test prediction."""


def run_facts(session: Session, run_ids: Sequence[int], patient_id: int) -> list[RunFacts]:
    facts = []
    for run_id in run_ids:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise ReviewError(f"There is no training run {run_id}.")
        fold = saved_fold(run)
        subset = None
        if run.split_id is not None:
            subset = session.scalar(
                select(SplitAssignment.subset).where(
                    SplitAssignment.split_id == run.split_id,
                    SplitAssignment.patient_id == patient_id,
                    SplitAssignment.fold == fold,
                )
            )
        preds = session.execute(
            select(Prediction.subset, Prediction.fold, Prediction.probability, Prediction.threshold)
            .where(Prediction.run_id == run_id, Prediction.patient_id == patient_id)
            .order_by(Prediction.fold)
        ).all()
        tests = [p for p in preds if p.subset == "test"]
        vals = [p for p in preds if p.subset == "val" and p.fold == fold]
        stored = None
        if tests:
            p = tests[0]
            where = f" (fold {p.fold + 1})" if p.fold != fold else ""
            stored = (p.probability, p.threshold, f"stored test prediction{where}")
        elif vals:
            stored = (vals[0].probability, vals[0].threshold, "stored validation prediction")
        facts.append(
            RunFacts(run_id, run_label(run), run.task, subset or NOT_IN_RUN, bool(tests), stored)
        )
    return facts


def model_view(
    facts: RunFacts,
    predictor: RunPredictor | None,
    cases: Mapping[str, CaseImage] | str,
    store: ImageStore,
    truth: int | None,
    full_pixels: Callable[[str], np.ndarray],
    results: ArrayCache | None,
    crops: ArrayCache,
) -> ModelView:
    base = {
        "run_id": facts.run_id,
        "label": facts.label,
        "task": facts.task,
        "subset": facts.subset,
        "tested": facts.tested,
        "truth": truth,
        "input_name": TASKS[facts.task].inputs[0],
    }
    stored_view = {}
    if facts.stored is not None:
        prob, threshold, source = facts.stored
        stored_view = {
            "probability": prob,
            "threshold": threshold,
            "predicted_label": int(prob >= threshold),
            "source": source,
        }
    if isinstance(cases, str):
        return ModelView(**base, **stored_view, error=f"Cannot run this model: {cases}.")
    if predictor is None:
        return ModelView(**base, **stored_view)
    errors: dict[int, str] = {}
    outputs = predict_cases(
        predictor, store, {0: cases}, crops=crops, results=results, errors=errors
    )
    if 0 not in outputs:
        return ModelView(**base, **stored_view, error=f"Cannot run this model: {errors[0]}")
    output = outputs[0]
    image = cases[predictor.explained_input]
    box = image.chosen.box
    full = full_pixels(image.path)
    crop01 = full[box.y : box.y2, box.x : box.x2].astype(np.float32) / 255.0
    from core.learning.gradcam import flat_map_note, overlay, overlay_on_full_image

    note = ""
    if stored_view:
        if abs(stored_view["probability"] - output.probability) > 1e-3:
            note = (
                f"Computed now: {output.probability:.3f} (the crop box or model changed since "
                "the stored prediction, or it came from another fold's model)."
            )
    else:
        stored_view = {
            "probability": output.probability,
            "threshold": predictor.threshold,
            "predicted_label": int(output.probability >= predictor.threshold),
            "source": "cached" if output.cached else "computed now",
        }
        if facts.subset == "train":
            note = "A training patient: the model has seen this case, so this is not a test."
    return ModelView(
        **base,
        **stored_view,
        box=box,
        overlay_crop=overlay(crop01, output.cam),
        overlay_full=overlay_on_full_image(full, box, output.cam),
        note=note,
        cam_note=flat_map_note(output.cam),
    )


def default_pixels(store: ImageStore) -> Callable[[str], np.ndarray]:
    return lambda path: to_display_rgb(load_pixels(store, path))
