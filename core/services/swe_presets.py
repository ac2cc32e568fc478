"""Enter, list and remove the SWE color-bar range of a scanner preset (admins only).

The Review page and ``python -m core swe-preset`` call these when an image's scale labels
were refused by OCR: the range printed on the scanner's screen, entered once, then decodes
every image of that scanner and screen size in kPa (``db.swe_presets``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from core.common.errors import UserError
from core.common.store import ImageStore
from core.imaging.images import load_pixels
from core.imaging.roi_detect import to_rgb_u8
from core.imaging.swe_decode import read_color_scale
from core.learning.dataset import ArrayCache
from core.services.auth import acting
from db.cases import get_patient
from db.engine import Database
from db.models import Image, Patient, Reader
from db.swe_presets import (
    PresetKey,
    ScalePreset,
    all_presets,
    delete_preset,
    preset_key,
    save_preset,
)


@dataclass(frozen=True)
class PresetSummary:
    """One scanner preset among the stored SWE images: how many, its range, its labels."""

    key: PresetKey
    images: int
    preset: ScalePreset | None
    example: str | None
    """The patient code of the image whose labels were read (None without images)."""
    labels_read: bool
    labels: str
    """What the label reader made of that image's bar, in one sentence."""

    @property
    def needs_range(self) -> bool:
        """Labels refused (or no bar) and no range entered: its stiffness is relative."""
        return self.preset is None and not self.labels_read


def label_reading(store: ImageStore, cache: ArrayCache, sha256: str, path: str) -> tuple[bool, str]:
    """Whether the SWE bar's printed labels were read, and one sentence: the range or why not."""

    def compute() -> dict[str, np.ndarray]:
        scale = read_color_scale(to_rgb_u8(load_pixels(store, path)))
        if scale is None:
            text = "No color bar found."
        elif scale.refusal is not None:
            text = f"Labels refused: {scale.refusal}"
        else:
            low, high = scale.kpa_range or (0.0, 0.0)
            text = f"Labels read: {low:g}–{high:g} {scale.units}"
        read = scale is not None and scale.refusal is None
        return {"read": np.array(read), "text": np.array(text)}

    stored = cache.get_or_compute({"kind": "swe_label_reading", "sha": sha256}, compute)
    return bool(stored["read"]), str(stored["text"])


def preset_overview(
    db: Database,
    store: ImageStore,
    *,
    cache: ArrayCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[PresetSummary]:
    """Each scanner preset of the stored SWE images, with its range and one label reading.

    The labels of one image per preset are read (cached), so this costs one OCR per
    scanner, not per image; presets entered for scanners without images are listed too.
    """
    cache = cache or ArrayCache(None)
    groups: dict[PresetKey, list[tuple[str, str, str]]] = {}
    with db.read() as session:
        presets = all_presets(session)
        rows = session.execute(
            select(Image, Patient.code)
            .join(Patient, Patient.id == Image.patient_id)
            .where(Image.modality == "SWE")
            .order_by(Image.id)
        ).all()
        for image, code in rows:
            groups.setdefault(preset_key(image), []).append((code, image.sha256, image.path))
    keys = sorted(set(groups) | set(presets))
    out = []
    for done, key in enumerate(keys, start=1):
        members = groups.get(key, [])
        example, read, labels = None, False, "No SWE image of this scanner is stored."
        if members:
            example, sha, path = members[0]
            read, labels = label_reading(store, cache, sha, path)
        out.append(PresetSummary(key, len(members), presets.get(key), example, read, labels))
        if progress:
            progress(done, len(keys))
    return out


def list_scale_presets(db: Database) -> list[ScalePreset]:
    """Every stored preset, by scanner then screen size."""
    with db.read() as session:
        return [preset for _, preset in sorted(all_presets(session).items())]


def swe_preset_key(db: Database, patient_code: str) -> PresetKey:
    """The preset of a patient's SWE image, or a UserError when the patient has none."""
    with db.read() as session:
        patient = get_patient(session, patient_code)
        image = next((i for i in patient.images if i.modality == "SWE"), None) if patient else None
        if image is None:
            raise UserError(f"There is no SWE image of a patient {patient_code!r}.")
        return preset_key(image)


def save_scale_preset(
    db: Database, key: PresetKey, low: float, high: float, units: str, actor: Reader | None
) -> ScalePreset:
    """Store the range for ``key`` in one audited transaction; a bad range is a UserError."""
    try:
        with db.transaction() as session:
            return save_preset(
                session, key, low, high, units, acting(session, actor, "set_swe_scale")
            )
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def delete_scale_preset(db: Database, key: PresetKey, actor: Reader | None) -> bool:
    """Remove the range for ``key``; its images go back to their labels, or to relative units."""
    with db.transaction() as session:
        return delete_preset(session, key, acting(session, actor, "set_swe_scale"))
