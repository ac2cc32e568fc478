"""Model-ready arrays for a task: crop, normalize and resize each case's images (cached).

GSU becomes one normalized gray channel; SWE the normalized RGB crop, or for fusion decoded
stiffness plus the colour overlay. ``TaskData`` holds them one row per patient, with the
labels, the boxes used and a fingerprint of it all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.common.store import ImageStore
from core.imaging.crop import crop, resize_crop
from core.imaging.images import load_pixels
from core.imaging.normalize import normalize, normalize_rgb
from core.imaging.roi_detect import to_rgb_u8
from core.imaging.swe_decode import KPA_UNITS, decode_swe
from core.learning.dataset.cases import (
    DEFAULT_WORKERS,
    ArrayCache,
    Case,
    CaseImage,
    collect_cases,
)
from core.learning.dataset.tasks import DatasetSettings
from db.engine import Database

Progress = Callable[[int, int], None]

STIFFNESS_FULL_SCALE_KPA = 100.0
"""Decoded stiffness is divided by this (then clipped to [0, 1]) for the fusion input. A fixed
scale, not each image's own range, keeps absolute stiffness comparable between patients;
resting muscle measures a few tens of kPa, well inside it."""


@dataclass
class TaskData:
    """Arrays for one task, one row per patient, in patient-id order.

    ``inputs``: ``"gsu"`` is (N, H, W, 1) normalized gray; ``"swe"`` is (N, h, w, 3) the
    normalized RGB crop, or for fusion (N, h, w, 4): stiffness / ``STIFFNESS_FULL_SCALE_KPA``
    (0 where nothing was decoded) then the colour overlay RGB (0 outside the overlay; the
    B-mode comes from the GSU input). All float32 in [0, 1].
    """

    settings: DatasetSettings
    patient_ids: np.ndarray
    codes: list[str]
    y: np.ndarray
    inputs: dict[str, np.ndarray]
    box_sources: list[dict[str, str]]
    boxes: list[dict[str, tuple[int, int, int, int]]]
    fingerprint: str
    excluded: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0

    def __len__(self) -> int:
        return len(self.patient_ids)


# ---------------------------------------------------------------------------------------
# Arrays


def _gsu_arrays(
    pixels: np.ndarray, image: CaseImage, size: tuple[int, int], s: DatasetSettings
) -> dict[str, np.ndarray]:
    roi = crop(pixels, image.chosen.box, image_label=image.label)
    out = resize_crop(normalize(roi, s.normalization), size, s.aspect)
    return {"x": np.clip(out, 0.0, 1.0).astype(np.float32)[:, :, None]}


def _swe_rgb_arrays(
    pixels: np.ndarray, image: CaseImage, size: tuple[int, int], s: DatasetSettings
) -> dict[str, np.ndarray]:
    roi = crop(pixels, image.chosen.box, image_label=image.label)
    out = resize_crop(normalize_rgb(roi, s.normalization), size, s.aspect)
    return {"x": np.clip(out, 0.0, 1.0).astype(np.float32)}


def decoded_swe_crop(store: ImageStore, cache: ArrayCache, image: CaseImage) -> dict[str, Any]:
    """The SWE image decoded inside its box, at native resolution; cached.

    Keys: ``stiffness`` (float32, NaN where nothing was decoded), ``overlay`` (uint8 RGB of
    the colour overlay, 0 elsewhere), ``units``, ``warning`` (str, "" when none) and
    ``scale_source`` (where the kPa range came from, ``swe_decode.ScaleSource``). The
    fusion input and the baseline's stiffness statistics both start from it, so each image
    is decoded once.
    """
    box = image.chosen.box

    def compute() -> dict[str, np.ndarray]:
        rgb = to_rgb_u8(load_pixels(store, image.path))
        decoded = decode_swe(rgb, color_box=box, preset=image.scale_preset)
        mask = crop(decoded.overlay_mask, box, image_label=image.label)
        overlay = crop(rgb, box, image_label=image.label) * mask[:, :, None].astype(np.uint8)
        return {
            "stiffness": crop(decoded.stiffness, box, image_label=image.label),
            "overlay": overlay,
            "units": np.array(decoded.units),
            "warning": np.array(decoded.warning or ""),
            "scale_source": np.array(decoded.scale_source),
        }

    stored = cache.get_or_compute(_decoded_key(image), compute)
    return {
        "stiffness": stored["stiffness"],
        "overlay": stored["overlay"],
        "units": str(stored["units"]),
        "warning": str(stored["warning"]),
        "scale_source": str(stored["scale_source"]),
    }


def _decoded_key(image: CaseImage) -> dict[str, Any]:
    """Image, box and, once entered, the scanner preset's range: a new range decodes anew."""
    parts: dict[str, Any] = {
        "kind": "swe_decoded_crop",
        "version": 2,
        "sha": image.sha256,
        "box": list(image.chosen.box.as_tuple()),
    }
    if image.scale_preset is not None:
        preset = image.scale_preset
        parts["preset"] = [preset.low, preset.high, preset.units]
    return parts


def _swe_decoded_arrays(
    decoded: Mapping[str, Any], size: tuple[int, int], s: DatasetSettings
) -> dict[str, np.ndarray]:
    stiffness = decoded["stiffness"]
    if decoded["units"] == KPA_UNITS:
        stiffness = stiffness / STIFFNESS_FULL_SCALE_KPA
    stiffness = np.clip(np.nan_to_num(stiffness, nan=0.0), 0.0, 1.0)
    overlay = decoded["overlay"].astype(np.float32) / 255.0
    stacked = np.concatenate([stiffness[:, :, None], overlay], axis=2).astype(np.float32)
    out = resize_crop(stacked, size, s.aspect)
    return {
        "x": np.clip(out, 0.0, 1.0).astype(np.float32),
        "units": np.array(decoded["units"]),
        "warning": np.array(decoded["warning"]),
    }


def input_arrays(
    store: ImageStore,
    cache: ArrayCache,
    settings: DatasetSettings,
    name: str,
    image: CaseImage,
) -> dict[str, np.ndarray]:
    size = settings.input_sizes()[name]
    box = image.chosen.box
    parts: dict[str, Any] = {
        "sha": image.sha256,
        "box": list(box.as_tuple()),
        "size": list(size),
        "aspect": settings.aspect,
    }
    if name == "swe" and settings.spec.swe_decoded:
        return cache.get_or_compute(
            {**_decoded_key(image), **parts, "kind": "swe_decoded"},
            lambda: _swe_decoded_arrays(decoded_swe_crop(store, cache, image), size, settings),
        )
    make = _gsu_arrays if name == "gsu" else _swe_rgb_arrays
    return cache.get_or_compute(
        {**parts, "kind": name, "normalization": settings.normalization},
        lambda: make(load_pixels(store, image.path), image, size, settings),
    )


def _image_fingerprint(image: CaseImage) -> list[Any]:
    parts: list[Any] = [image.sha256, list(image.chosen.box.as_tuple()), image.chosen.source]
    if image.scale_preset is not None:
        preset = image.scale_preset
        parts.append([preset.low, preset.high, preset.units])
    return parts


def data_fingerprint(settings: DatasetSettings, cases: Sequence[Case]) -> str:
    """sha256 over settings, and per patient its label, image hashes, boxes (with source) and
    any scanner-preset SWE range."""
    payload = {
        "settings": settings.fingerprint_payload(),
        "cases": [
            [
                c.patient_id,
                c.label,
                {name: _image_fingerprint(img) for name, img in sorted(c.images.items())},
            ]
            for c in cases
        ],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_task_data(
    db: Database,
    store: ImageStore,
    settings: DatasetSettings,
    *,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
    workers: int = DEFAULT_WORKERS,
) -> TaskData:
    """Crop, normalize and resize every eligible patient's images for ``settings.task``.

    ``cache_dir`` defaults to ``<data folder>/cache/crops``. Raises ``NoPatientsError`` when
    no patient qualifies, and ``BoxOutsideImageError`` when a stored box leaves its image.
    When stiffness decodes in different units across patients (kPa for some, relative for
    others), the fusion input would mix scales, so that is an error too.
    """
    spec = settings.spec
    cache = ArrayCache(cache_dir)
    cases, excluded = collect_cases(db, store, settings, cache=cache, workers=workers)

    def arrays(case: Case) -> dict[str, dict[str, np.ndarray]]:
        return {
            name: input_arrays(store, cache, settings, name, case.images[name])
            for name in spec.inputs
        }

    per_case: list[dict[str, dict[str, np.ndarray]]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, result in enumerate(pool.map(arrays, cases), start=1):
            per_case.append(result)
            if progress:
                progress(i, len(cases))

    warnings: dict[str, str] = {}
    if spec.swe_decoded:
        units = {c.code: str(r["swe"]["units"]) for c, r in zip(cases, per_case, strict=True)}
        if len(set(units.values())) > 1:
            rel = sorted(code for code, u in units.items() if u != KPA_UNITS)
            raise ValueError(
                f"Stiffness decoded in kPa for some patients but in relative units for "
                f"{len(rel)} ({', '.join(rel[:5])}{', …' if len(rel) > 5 else ''}): their "
                "colour scale labels could not be read. Fix or exclude those SWE images."
            )
        warnings = {
            c.code: str(r["swe"]["warning"])
            for c, r in zip(cases, per_case, strict=True)
            if str(r["swe"]["warning"])
        }
    return TaskData(
        settings=settings,
        patient_ids=np.array([c.patient_id for c in cases], dtype=np.int64),
        codes=[c.code for c in cases],
        y=np.array([c.label for c in cases], dtype=np.int64),
        inputs={name: np.stack([r[name]["x"] for r in per_case]) for name in spec.inputs},
        box_sources=[{n: img.chosen.source for n, img in c.images.items()} for c in cases],
        boxes=[{n: img.chosen.box.as_tuple() for n, img in c.images.items()} for c in cases],
        fingerprint=data_fingerprint(settings, cases),
        excluded=excluded,
        warnings=warnings,
        cache_hits=cache.hits,
        cache_misses=cache.misses,
    )
