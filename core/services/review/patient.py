"""One patient's review: images and boxes, stiffness map, grades, CT truth, every model.

Blinding: a reader who has not graded a patient's GSU image sees neither the other grades,
nor the consensus, nor the echogenicity model (``db.grading`` enforces the same rule).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.common.boxes import Box
from core.common.labels import dichotomize_grade
from core.common.store import ImageStore
from core.imaging.crop import ChosenBox, choose_box
from core.imaging.swe_decode import stiffness_stats
from core.learning.dataset import TASKS, ArrayCache, CaseImage, decoded_swe_crop, preset_range
from core.services.review.cases import case_images, stored_boxes
from core.services.review.errors import ModelPathError, ReviewError
from core.services.review.model_views import ModelView, default_pixels, model_view, run_facts
from core.services.review.predictor import RunPredictor, load_predictor
from db.cases import case_labels, get_patient
from db.engine import Database
from db.models import ConsensusGrade, Grade, Patient, Reader
from db.swe_presets import PresetKey, PresetLookup, ScalePreset, preset_key

STIFFNESS_COLORMAP: Final = cv2.COLORMAP_JET


@dataclass(frozen=True)
class ImageView:
    image_id: int
    modality: str
    path: str
    width: int
    height: int
    boxes: dict[str, Box]
    """Every stored box by owner: 'consensus', 'auto' or a reader's username."""
    chosen: ChosenBox | None


@dataclass(frozen=True)
class StiffnessView:
    rgb: np.ndarray
    """The decoded stiffness inside the SWE box, colour-mapped (black: nothing decoded)."""
    stats: dict[str, float]
    units: str
    low: float
    high: float
    warning: str
    scale_source: str
    """Where the kPa range came from: labels, the scanner preset, or "none" (relative)."""
    preset_key: PresetKey
    """The scanner preset this image belongs to, for entering its range."""
    preset: ScalePreset | None
    """The range entered for that preset, if any."""


@dataclass(frozen=True)
class GradeView:
    username: str
    display_name: str
    grade: int


@dataclass(frozen=True)
class PatientReview:
    patient_id: int
    code: str
    sex: str
    age: int
    height_cm: float
    weight_kg: float | None
    us_date: dt.date | None
    ct_date: dt.date | None
    interval_days: int | None
    sma_cm2: float | None
    smi: float | None
    sarcopenic: bool | None
    exclusion_reason: str | None
    images: dict[str, ImageView]
    stiffness: StiffnessView | None
    grades: list[GradeView] | None
    """None while the viewer is blinded (has not graded this GSU image)."""
    consensus_grade: int | None
    consensus_method: str | None
    blinded: bool
    models: list[ModelView]


def is_blinded(session: Session, viewer: Reader | None, gsu_image_id: int | None) -> bool:
    """A non-admin reader who has not graded the GSU image sees no grades or echo model."""
    if viewer is None or viewer.role == "admin" or gsu_image_id is None:
        return False
    graded = session.scalar(
        select(Grade.id).where(Grade.image_id == gsu_image_id, Grade.reader_id == viewer.id)
    )
    return graded is None


def _stiffness_view(
    store: ImageStore,
    crops: ArrayCache,
    image: CaseImage,
    key: PresetKey,
    preset: ScalePreset | None,
) -> StiffnessView:
    decoded = decoded_swe_crop(store, crops, image)
    stiffness = np.asarray(decoded["stiffness"], dtype=np.float32)
    finite = np.isfinite(stiffness)
    low = float(stiffness[finite].min()) if finite.any() else math.nan
    high = float(stiffness[finite].max()) if finite.any() else math.nan
    scaled = np.zeros(stiffness.shape, np.uint8)
    if finite.any():
        span = max(high - low, 1e-6)
        scaled[finite] = np.round(255 * (stiffness[finite] - low) / span).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(scaled, STIFFNESS_COLORMAP), cv2.COLOR_BGR2RGB)
    rgb[~finite] = 0
    return StiffnessView(
        rgb,
        stiffness_stats(stiffness),
        decoded["units"],
        low,
        high,
        decoded["warning"],
        decoded["scale_source"],
        key,
        preset,
    )


def _truths(session: Session, patient: Patient, gsu_id: int | None) -> dict[str, int | None]:
    derived = case_labels(patient)
    sarc = int(derived.sarcopenic) if derived.eligible and derived.sarcopenic is not None else None
    grade = (
        session.scalar(select(ConsensusGrade.grade).where(ConsensusGrade.image_id == gsu_id))
        if gsu_id is not None
        else None
    )
    return {
        "sarcopenia": sarc,
        "echogenicity_high": dichotomize_grade(grade) if grade is not None else None,
    }


def _visible_boxes(entry: dict[str, Any], blinded_viewer: Reader | None) -> dict[str, Box]:
    """The boxes to draw by owner; a blinded reader sees only their own and the automatic
    one (others' boxes and the consensus box would give away that others have read)."""
    readers = entry["readers"]
    if blinded_viewer is not None:
        readers = {u: b for u, b in readers.items() if u == blinded_viewer.username}
    owned = {**readers}
    for owner in ("consensus", "auto"):
        if entry[owner] is not None and (owner == "auto" or blinded_viewer is None):
            owned[owner] = entry[owner]
    return owned


def patient_review(
    db: Database,
    store: ImageStore,
    code: str,
    run_ids: Sequence[int] = (),
    *,
    viewer: Reader | None = None,
    predictor_for: Callable[[int], RunPredictor] | None = None,
    full_pixels: Callable[[str], np.ndarray] | None = None,
    results: ArrayCache | None = None,
    gradcam: bool = True,
) -> PatientReview:
    """Everything the Review page shows for one patient.

    ``predictor_for`` loads (and should cache) a run's model; pass ``gradcam=False`` to show
    only the stored predictions without loading any model. ``full_pixels`` gives display RGB
    of a stored image (the page passes its cached loader).
    """
    crops = ArrayCache(None)
    full_pixels = full_pixels or default_pixels(store)
    with db.read() as session:
        patient = get_patient(session, code)
        if patient is None:
            raise ReviewError(f"There is no patient {code!r}.")
        by_modality = {img.modality: img for img in patient.images}
        gsu = by_modality.get("GSU")
        gsu_id = gsu.id if gsu else None
        blinded = is_blinded(session, viewer, gsu_id)
        truths = _truths(session, patient, gsu_id)
        derived = case_labels(patient)
        boxes = stored_boxes(session, [img.id for img in patient.images])
        grades: list[GradeView] | None = None
        consensus = None
        if not blinded and gsu_id is not None:
            grades = [
                GradeView(u, n, g)
                for u, n, g in session.execute(
                    select(Reader.username, Reader.display_name, Grade.grade)
                    .join(Reader, Reader.id == Grade.reader_id)
                    .where(Grade.image_id == gsu_id)
                    .order_by(Reader.username)
                )
            ]
            consensus = session.scalar(
                select(ConsensusGrade).where(ConsensusGrade.image_id == gsu_id)
            )
        facts = run_facts(session, run_ids, patient.id)
        swe = by_modality.get("SWE")
        swe_preset = PresetLookup.load(session).for_image(swe) if swe is not None else None
        swe_key = preset_key(swe) if swe is not None else None
    images: dict[str, ImageView] = {}
    for modality, img in by_modality.items():
        entry = boxes.get(img.id, {"consensus": None, "readers": {}, "auto": None})
        owned = _visible_boxes(entry, viewer if blinded else None)
        chosen = None
        if owned:
            chosen = choose_box(entry["consensus"], entry["readers"], entry["auto"], image_label="")
        images[modality] = ImageView(
            img.id, modality, img.path, img.width, img.height, owned, chosen
        )
    stiffness = None
    if swe is not None and swe_key is not None and images["SWE"].chosen is not None:
        what = f"SWE image of {code}"
        case_image = CaseImage(
            swe.sha256, swe.path, images["SWE"].chosen, what, preset_range(swe_preset)
        )
        stiffness = _stiffness_view(store, crops, case_image, swe_key, swe_preset)
    loader = predictor_for or (lambda run_id: load_predictor(db, run_id))
    models = []
    for fact in facts:
        truth = truths[TASKS[fact.task].label]
        if blinded and TASKS[fact.task].label == "echogenicity_high":
            models.append(
                ModelView(
                    fact.run_id,
                    fact.label,
                    fact.task,
                    fact.subset,
                    fact.tested,
                    error="Hidden until you grade this patient's GSU image (blinding).",
                )
            )
            continue
        cases = case_images(db, store, fact.task, [patient.id], cache=crops)[patient.id]
        try:
            predictor = loader(fact.run_id) if gradcam else None
        except (ReviewError, ModelPathError) as exc:
            models.append(
                ModelView(
                    fact.run_id,
                    fact.label,
                    fact.task,
                    fact.subset,
                    fact.tested,
                    truth=truth,
                    error=str(exc),
                )
            )
            continue
        models.append(model_view(fact, predictor, cases, store, truth, full_pixels, results, crops))
    return PatientReview(
        patient_id=patient.id,
        code=patient.code,
        sex=patient.sex,
        age=patient.age,
        height_cm=patient.height_cm,
        weight_kg=patient.weight_kg,
        us_date=patient.us_date,
        ct_date=patient.ct.ct_date if patient.ct else None,
        interval_days=derived.interval_days,
        sma_cm2=patient.ct.sma_cm2 if patient.ct else None,
        smi=derived.smi,
        sarcopenic=derived.sarcopenic if derived.eligible else None,
        exclusion_reason=derived.exclusion_reason,
        images=images,
        stiffness=stiffness,
        grades=grades,
        consensus_grade=consensus.grade if consensus else None,
        consensus_method=consensus.method if consensus else None,
        blinded=blinded,
        models=models,
    )
