"""The decoded image every reader returns, and the one error type that names file, fault and fix."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_PIXELS = 40_000_000
"""Refuse images above this many pixels per frame: a decompression-bomb guard. A full-HD
ultrasound screen (1920×1080) is about 2 million, so 40 million leaves ample room."""


MIN_SIDE = 32
"""Refuse images narrower or shorter than this: too small to hold an ultrasound frame (the
study's smallest model input is an 84×84 SWE crop)."""


REEXPORT = "Export it again from the scanner or PACS as PNG, JPEG, TIFF or DICOM."


SCREEN_SIZE = "Export the ultrasound frame at screen resolution."


class ImageReadError(ValueError):
    """A file that cannot become a trustworthy image, with what was wrong and what to do.

    ``name`` is the display name the caller passed in (control characters removed), never a
    path on this machine.
    """

    def __init__(self, name: str, problem: str, remedy: str = REEXPORT) -> None:
        self.name = display_name(name)
        self.problem = problem
        self.remedy = remedy
        super().__init__(f"'{self.name}': {problem}. {remedy}")

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[str, str, str]]:
        # Survive pickling, so batch jobs in worker processes report the same error.
        return (type(self), (self.name, self.problem, self.remedy))


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One decoded frame plus what the database keeps about its source."""

    pixels: np.ndarray
    """(H, W, 3) uint8 RGB, or (H, W) uint8/uint16 gray; 16-bit gray stays uint16."""
    source_format: str
    """"png", "jpeg", "tiff" or "dicom"."""
    width: int
    height: int
    dicom_header: dict[str, Any] | None
    """De-identified header as a JSON-safe dict; None for PNG/JPEG/TIFF."""
    acquisition_date: datetime.date | None
    """From the DICOM header, or EXIF DateTimeOriginal for JPEG/PNG; None when absent."""
    frame_index: int | None
    """The frame (DICOM) or page (TIFF) read from a multi-frame file; None for single-frame."""


def check_size(width: int, height: int, name: str) -> None:
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            name,
            f"the image is {width}×{height} = {width * height:,} pixels, more than the "
            f"{MAX_PIXELS:,} this app accepts (a possible decompression bomb)",
            SCREEN_SIZE,
        )
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageReadError(
            name,
            f"the image is only {width}×{height} pixels, too small to be an ultrasound frame "
            f"(at least {MIN_SIDE}×{MIN_SIDE})",
            "Check that you picked the image itself, not a thumbnail or icon.",
        )


def decoded(
    pixels: np.ndarray,
    fmt: str,
    header: dict[str, Any] | None,
    taken: datetime.date | None,
    frame_index: int | None,
) -> DecodedImage:
    pixels = np.ascontiguousarray(pixels)
    pixels.setflags(write=False)
    height, width = pixels.shape[:2]
    return DecodedImage(pixels, fmt, int(width), int(height), header, taken, frame_index)


def display_name(name: str) -> str:
    cleaned = "".join(ch for ch in str(name) if ch.isprintable())
    return cleaned[:120] or "upload"
