"""One uploaded file decoded, de-identified (header and burned-in text) and staged for the store.

Only the staged file and a few facts about it outlive the call, so an import's memory does
not grow with the bundle (see :mod:`core.cases.importer`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.common.store import Staging, sha256_hex
from core.imaging import imageio
from core.imaging.pixel_deid import Corrections
from core.imaging.upload_cleaning import clean_upload


@dataclass(frozen=True)
class StagedImage:
    """A checked image waiting in the staging folder, with what its row will record."""

    modality: str
    sha256: str
    suffix: str
    staged: Path
    width: int
    height: int
    source_format: str
    dicom_header: dict[str, Any] | None
    acquisition_date: dt.date | None

    @property
    def pixels(self) -> int:
        return self.width * self.height


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG of decoded pixels: drops any metadata, keeps every pixel value."""
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("Could not encode the image as PNG.")
    return buffer.tobytes()


@dataclass(frozen=True)
class Cleaning:
    """How an import cleans burned-in text: the admin's corrections from the import preview
    (by file name as the manifest writes it), and whether to search the pixels for text."""

    corrections: dict[str, Corrections] = field(default_factory=dict)
    pixel_ocr: bool = True
    """False only for images known to carry no burned-in text (see docs/deployment.md)."""


def stage_image(
    data: bytes,
    *,
    name: str,
    modality: str,
    pseudonym: str,
    staging: Staging,
    cleaning: Cleaning | None = None,
) -> StagedImage:
    """Decode and de-identify one file and stage what the store will keep.

    The decoded pixels are dropped on return. Raises ImageReadError.
    """
    how = cleaning or Cleaning()
    decoded = imageio.decode_image(data, name=name, pseudonym=pseudonym)
    clean = clean_upload(
        data,
        decoded,
        name=name,
        pseudonym=pseudonym,
        corrections=how.corrections.get(name),
        ocr=how.pixel_ocr,
    )
    if clean.dicom is not None:
        stored, suffix = clean.dicom, ".dcm"
    else:
        stored, suffix = encode_png(clean.pixels), ".png"
    return StagedImage(
        modality,
        sha256_hex(data),
        suffix,
        staging.write(stored, suffix),
        decoded.width,
        decoded.height,
        decoded.source_format,
        clean.header,
        decoded.acquisition_date,
    )
