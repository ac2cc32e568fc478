"""Which patients enter a task, with which label and which box per image; the on-disk cache.

Labels come from the database only (eligible CT for sarcopenia, a consensus grade for
echogenicity); boxes are chosen consensus > reader > automatic (a stored ``auto`` box or one
detected on the fly). ``ArrayCache`` keeps decoded arrays and detected boxes as ``.npz`` files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from core.common import config
from core.common.boxes import Box
from core.common.labels import dichotomize_grade
from core.common.store import ImageStore
from core.imaging.color_box import detect_color_box
from core.imaging.crop import ChosenBox, choose_box
from core.imaging.images import load_pixels
from core.imaging.roi_detect import NoImageContentError, detect_ultrasound_area
from core.imaging.swe_decode import PresetRange
from core.learning.dataset.tasks import PIPELINE_VERSION, DatasetSettings
from db.cases import case_labels
from db.engine import Database
from db.models import ConsensusGrade, CropBox, Patient, Reader
from db.swe_presets import PresetLookup, ScalePreset

DEFAULT_WORKERS = 4
"""Threads that decode and crop; OpenCV and NumPy release the GIL for most of that work."""

_MODALITY = {"gsu": "GSU", "swe": "SWE"}


@dataclass(frozen=True)
class CaseImage:
    """One stored image of a case and the box it is cut with."""

    sha256: str
    path: str
    chosen: ChosenBox
    label: str
    """How error messages name it, e.g. "GSU image of DEMO-001"."""
    scale_preset: PresetRange | None = None
    """The SWE bar range entered for this image's scanner preset (``db.swe_presets``)."""


def preset_range(preset: ScalePreset | None) -> PresetRange | None:
    """What ``decode_swe`` takes from a stored preset (None when none was entered)."""
    if preset is None:
        return None
    return PresetRange(preset.low, preset.high, "m/s" if preset.units == "m/s" else "kPa")


@dataclass(frozen=True)
class Case:
    """A patient that enters a task: label and one image (with its box) per input."""

    patient_id: int
    code: str
    label: int
    images: dict[str, CaseImage]


class NoPatientsError(ValueError):
    """No patient qualifies for the task (labels, images or boxes are missing)."""


# ---------------------------------------------------------------------------------------
# On-disk cache of decoded arrays


class ArrayCache:
    """``.npz`` files named by the hash of what produced them; written atomically.

    A damaged file counts as a miss and is rewritten.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else config.data_dir() / "cache" / "crops"
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        text = json.dumps({**parts, "pipeline_version": PIPELINE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, parts: Mapping[str, Any]) -> Path:
        key = self.key(parts)
        return self.root / key[:2] / f"{key}.npz"

    def get_or_compute(
        self, parts: Mapping[str, Any], compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        path = self.path(parts)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    arrays = {name: stored[name] for name in stored.files}
                self.hits += 1
                return arrays
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                pass
        arrays = compute()
        self.misses += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return arrays


# ---------------------------------------------------------------------------------------
# Which patients, which labels, which boxes


def _box(row: CropBox) -> Box:
    return Box(row.x, row.y, row.w, row.h)


def _detect(name: str, pixels: np.ndarray) -> Box | None:
    if name == "gsu":
        return detect_ultrasound_area(pixels)
    return detect_color_box(pixels)


def auto_box(store: ImageStore, cache: ArrayCache, name: str, sha: str, path: str) -> Box | None:
    def compute() -> dict[str, np.ndarray]:
        try:
            found = _detect(name, load_pixels(store, path))
        except NoImageContentError:
            found = None
        return {"box": np.array(found.as_tuple() if found else (), dtype=np.int64)}

    arr = cache.get_or_compute({"kind": f"auto_box_{name}", "sha": sha}, compute)["box"]
    return Box(*(int(v) for v in arr)) if arr.size == 4 else None


def collect_cases(
    db: Database,
    store: ImageStore,
    settings: DatasetSettings,
    *,
    cache: ArrayCache | None = None,
    workers: int = DEFAULT_WORKERS,
) -> tuple[list[Case], dict[str, str]]:
    """The patients that enter ``settings.task`` (in id order) and, by code, why others do not.

    Boxes are chosen consensus > reader > automatic. When an image has no box at all, the
    detector proposes one (``core.imaging.roi_detect``); an image where it finds nothing keeps the
    patient out with that reason. Raises ``NoPatientsError`` when no patient qualifies.
    """
    spec = settings.spec
    cache = cache or ArrayCache(None)
    with db.read() as session:
        patients = session.scalars(
            select(Patient)
            .options(selectinload(Patient.ct), selectinload(Patient.images))
            .order_by(Patient.id)
        ).all()
        box_rows = session.execute(
            select(CropBox, Reader.username).outerjoin(Reader, Reader.id == CropBox.reader_id)
        ).all()
        consensus = {
            image_id: grade
            for image_id, grade in session.execute(
                select(ConsensusGrade.image_id, ConsensusGrade.grade)
            )
        }
        presets = PresetLookup.load(session)
    boxes: dict[int, dict[str, Any]] = {}
    for row, username in box_rows:
        entry = boxes.setdefault(row.image_id, {"consensus": None, "readers": {}, "auto": None})
        if row.owner_key == "consensus":
            entry["consensus"] = _box(row)
        elif row.owner_key == "auto":
            entry["auto"] = _box(row)
        else:
            entry["readers"][username or row.owner_key] = _box(row)

    excluded: dict[str, str] = {}
    pending: list[tuple[Patient, int]] = []
    for patient in patients:
        images = {img.modality: img for img in patient.images}
        if spec.label == "sarcopenia":
            derived = case_labels(patient)
            if not derived.eligible or derived.sarcopenic is None:
                excluded[patient.code] = derived.exclusion_reason or "no eligible CT"
                continue
            label = int(derived.sarcopenic)
        else:
            gsu = images.get("GSU")
            grade = consensus.get(gsu.id) if gsu is not None else None
            if grade is None:
                excluded[patient.code] = "no consensus echogenicity grade"
                continue
            label = dichotomize_grade(grade)
        missing = [_MODALITY[n] for n in spec.inputs if _MODALITY[n] not in images]
        if missing:
            excluded[patient.code] = f"no {' or '.join(missing)} image"
            continue
        pending.append((patient, label))

    def resolve(item: tuple[Patient, int]) -> Case | str:
        patient, label = item
        chosen: dict[str, CaseImage] = {}
        for name in spec.inputs:
            image = next(i for i in patient.images if i.modality == _MODALITY[name])
            entry = boxes.get(image.id, {"consensus": None, "readers": {}, "auto": None})
            auto = entry["auto"]
            if entry["consensus"] is None and not entry["readers"] and auto is None:
                auto = auto_box(store, cache, name, image.sha256, image.path)
                if auto is None:
                    return f"no crop box for the {_MODALITY[name]} image and none detected"
            what = f"{_MODALITY[name]} image of {patient.code}"
            pick = choose_box(entry["consensus"], entry["readers"], auto, image_label=what)
            preset = preset_range(presets.for_image(image))
            chosen[name] = CaseImage(image.sha256, image.path, pick, what, preset)
        return Case(patient.id, patient.code, label, chosen)

    cases: list[Case] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (patient, _), result in zip(pending, pool.map(resolve, pending), strict=True):
            if isinstance(result, str):
                excluded[patient.code] = result
            else:
                cases.append(result)
    if not cases:
        hint = (
            "Add consensus echogenicity grades first."
            if spec.label == "echogenicity_high"
            else "Check the CT measurements, images and boxes."
        )
        raise NoPatientsError(
            f"No patient qualifies for task {settings.task!r} ({len(excluded)} excluded). {hint}"
        )
    return cases, excluded
