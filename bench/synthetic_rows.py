"""Synthetic database rows at any scale, for benchmarks (no images are rendered).

Rows follow the demo cohort's proportions (``core.cases.cohort``), with two simulated readers'
grades on every GSU image, so queries see realistic data at 160 or 10,000 patients.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import insert

from core.cases.cohort import synthetic_cohort
from core.common.boxes import Box
from core.common.store import ImageStore, sha256_hex
from core.services.demo import render_patient
from db.engine import Database
from db.migrate import upgrade
from db.models import CropBox, CtMeasurement, Grade, Image, Patient, Reader


def _box_columns(box: Box) -> dict[str, int]:
    return dict(zip("xywh", box.as_tuple(), strict=True))


def store_one_phantom(folder: Path) -> tuple[dict[str, str], dict[str, Box]]:
    """Render one demo patient into ``folder/images``: (modality → stored path, modality →
    its crop box), for ``build_database``'s ``image_paths`` and ``reader_boxes``."""
    store = ImageStore(folder / "images")
    case = render_patient(synthetic_cohort(n=160)[0])
    paths = {}
    for modality, png in (("GSU", case.gsu_png), ("SWE", case.swe_png)):
        paths[modality], _ = store.put(png, sha256_hex(png), ".png")
    return paths, {"GSU": case.us_box, "SWE": case.color_box}


def build_database(
    folder: Path,
    n: int,
    seed: int = 7,
    image_paths: dict[str, str] | None = None,
    filename: str = "bench.db",
    reader_boxes: Mapping[str, Box] | None = None,
) -> Database:
    """A fresh SQLite database in ``folder`` holding ``n`` synthetic patients.

    ``image_paths`` (modality → stored relative path) lets every image row point at one
    real file, so pages that show images work without rendering ``n`` phantoms.
    ``reader_boxes`` (modality → box) gives both simulated readers that crop box on every
    image, as the demo's readers have; without it no image has a box.
    """
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / filename}"
    upgrade(url)
    db = Database(url)
    cohort = synthetic_cohort(seed=seed, n=n)
    now = dt.datetime(2020, 1, 1)
    with db.engine.begin() as conn:
        conn.execute(
            insert(Reader),
            [
                {
                    "id": 1,
                    "username": "sim_a",
                    "display_name": "A",
                    "role": "reader",
                    "active": True,
                    "created_at": now,
                },
                {
                    "id": 2,
                    "username": "sim_b",
                    "display_name": "B",
                    "role": "reader",
                    "active": True,
                    "created_at": now,
                },
                {
                    "id": 3,
                    "username": "human",
                    "display_name": "H",
                    "role": "reader",
                    "active": True,
                    "created_at": now,
                },
            ],
        )
        conn.execute(
            insert(Patient),
            [
                {
                    "id": i + 1,
                    "code": p.code,
                    "sex": p.sex,
                    "age": p.age,
                    "height_cm": p.height_cm,
                    "weight_kg": p.weight_kg,
                    "us_date": p.us_date,
                    "synthetic": True,
                    "created_at": now,
                }
                for i, p in enumerate(cohort)
            ],
        )
        conn.execute(
            insert(CtMeasurement),
            [
                {
                    "patient_id": i + 1,
                    "sma_cm2": p.l3_sma_cm2,
                    "ct_date": p.ct_date,
                    "exclusion_reason": p.exclusion_reason,
                }
                for i, p in enumerate(cohort)
            ],
        )
        images = []
        for i, _ in enumerate(cohort):
            for k, modality in enumerate(("GSU", "SWE")):
                images.append(
                    {
                        "id": 2 * i + k + 1,
                        "patient_id": i + 1,
                        "modality": modality,
                        "sha256": f"{2 * i + k:064x}",
                        "path": (image_paths or {}).get(modality, f"x/{2 * i + k}.png"),
                        "width": 640,
                        "height": 480,
                        "source_format": "png",
                        "created_at": now,
                    }
                )
        conn.execute(insert(Image), images)
        conn.execute(
            insert(Grade),
            [
                {
                    "image_id": 2 * i + 1,
                    "reader_id": r + 1,
                    "grade": p.reader_grades[r],
                    "created_at": now,
                    "updated_at": now,
                }
                for i, p in enumerate(cohort)
                for r in (0, 1)
            ],
        )
        if reader_boxes:
            conn.execute(
                insert(CropBox),
                [
                    {
                        "image_id": image["id"],
                        "owner_key": f"reader:{reader_id}",
                        "source": "reader",
                        "reader_id": reader_id,
                        **_box_columns(reader_boxes[image["modality"]]),
                        "updated_at": now,
                    }
                    for image in images
                    for reader_id in (1, 2)
                ],
            )
    return db
