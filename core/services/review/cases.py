"""Which images and crop box each patient gets for a task, cut exactly as for training.

``core.learning.dataset``'s rule: consensus box, else the first reader's, else the automatic
box; no label is needed, so this also serves new, unlabelled cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.common.boxes import Box
from core.common.store import ImageStore
from core.imaging.crop import ChosenBox, choose_box
from core.imaging.swe_decode import PresetRange
from core.learning.dataset import TASKS, ArrayCache, CaseImage, auto_box, preset_range
from db.engine import Database
from db.models import CropBox, Image, Patient, Reader
from db.swe_presets import PresetLookup

MODALITY: Final = {"gsu": "GSU", "swe": "SWE"}


@dataclass(frozen=True)
class _ImageRow:
    id: int
    patient_id: int
    modality: str
    sha256: str
    path: str
    preset: PresetRange | None


def stored_boxes(session: Session, image_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Per image: consensus box, reader boxes by username, stored automatic box."""
    ids = list(image_ids)
    out: dict[int, dict[str, Any]] = {}
    if not ids:
        return out
    rows = session.execute(
        select(CropBox, Reader.username)
        .outerjoin(Reader, Reader.id == CropBox.reader_id)
        .where(CropBox.image_id.in_(ids))
    ).all()
    for row, username in rows:
        entry = out.setdefault(row.image_id, {"consensus": None, "readers": {}, "auto": None})
        box = Box(row.x, row.y, row.w, row.h)
        if row.owner_key == "consensus":
            entry["consensus"] = box
        elif row.owner_key == "auto":
            entry["auto"] = box
        else:
            entry["readers"][username or row.owner_key] = box
    return out


def _choose(
    store: ImageStore, cache: ArrayCache, name: str, image: _ImageRow, entry: Mapping[str, Any]
) -> ChosenBox | None:
    auto = entry.get("auto")
    if entry.get("consensus") is None and not entry.get("readers") and auto is None:
        auto = auto_box(store, cache, name, image.sha256, image.path)
        if auto is None:
            return None
    return choose_box(
        entry.get("consensus"), entry.get("readers", {}), auto, image_label=f"{image.modality}"
    )


def case_images(
    db: Database,
    store: ImageStore,
    task: str,
    patient_ids: Sequence[int] | None = None,
    *,
    cache: ArrayCache | None = None,
) -> dict[int, dict[str, CaseImage] | str]:
    """Per patient, the images and boxes ``task`` cuts (as ``learning.dataset`` does), or why not.

    Unlike training, no label is needed: this is what predicts new, unlabelled cases.
    """
    spec = TASKS[task]
    cache = cache or ArrayCache(None)
    modalities = [MODALITY[n] for n in spec.inputs]
    with db.read() as session:
        code_of = dict(
            session.execute(
                select(Patient.id, Patient.code).where(Patient.id.in_(patient_ids))
                if patient_ids is not None
                else select(Patient.id, Patient.code)
            ).all()
        )
        query = select(Image).where(Image.modality.in_(modalities))
        if patient_ids is not None:
            query = query.where(Image.patient_id.in_(list(patient_ids)))
        presets = PresetLookup.load(session)
        images = [
            _ImageRow(
                i.id, i.patient_id, i.modality, i.sha256, i.path, preset_range(presets.for_image(i))
            )
            for i in session.scalars(query)
        ]
        boxes = stored_boxes(session, [i.id for i in images])
    by_patient: dict[int, dict[str, _ImageRow]] = {}
    for image in images:
        by_patient.setdefault(image.patient_id, {})[image.modality] = image
    out: dict[int, dict[str, CaseImage] | str] = {}
    for pid, code in code_of.items():
        found = by_patient.get(pid, {})
        missing = [m for m in modalities if m not in found]
        if missing:
            out[pid] = f"no {' or '.join(missing)} image"
            continue
        chosen: dict[str, CaseImage] | str = {}
        for name in spec.inputs:
            image = found[MODALITY[name]]
            pick = _choose(store, cache, name, image, boxes.get(image.id, {}))
            if pick is None:
                chosen = f"no crop box for the {image.modality} image and none detected"
                break
            chosen[name] = CaseImage(
                image.sha256, image.path, pick, f"{image.modality} image of {code}", image.preset
            )
        out[pid] = chosen
    return out
