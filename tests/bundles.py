"""Build import bundles (zip + manifest) in tests."""

from __future__ import annotations

import csv
import io
import zipfile

import cv2
import numpy as np

from core.cases.manifest import COLUMNS


def png_bytes(seed: int, size: tuple[int, int] = (96, 128)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
    ok, buffer = cv2.imencode(".png", pixels)
    assert ok
    return buffer.tobytes()


def jpeg_bytes(seed: int, size: tuple[int, int] = (96, 128)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
    ok, buffer = cv2.imencode(".jpg", pixels)
    assert ok
    return buffer.tobytes()


def row(code: str, gsu: str = "", swe: str = "", **overrides: str) -> dict[str, str]:
    base = {
        "patient_code": code,
        "sex": "F",
        "age": "61",
        "height_cm": "158",
        "weight_kg": "55",
        "gsu_file": gsu,
        "swe_file": swe,
        "us_date": "2020-03-01",
        "ct_date": "2020-03-10",
        "l3_sma_cm2": "92.5",
        "exclusion_reason": "",
    }
    base.update(overrides)
    return base


def manifest_text(rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def make_zip(rows: list[dict[str, str]], files: dict[str, bytes], **kwargs) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.csv", manifest_text(rows, **kwargs))
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()
