"""Clean one upload as the store will keep it: blanked pixels in every frame, and a preview.

:func:`core.imaging.pixel_deid.clean_pixels` finds the burned-in text on the decoded frame;
this module applies the result to the whole file. A DICOM gets its header de-identified, the
same boxes blanked in every frame of a cine, and is re-encoded uncompressed with the Clean
Pixel Data Option recorded; a PNG/JPEG/TIFF keeps only the cleaned pixels. :func:`preview`
draws what was proposed and blanked, for the admin's check at import.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytesseract
from pydicom.dataset import Dataset
from pydicom.filereader import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.pixels import pixel_array
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from core.imaging.deid import KEEP, KEPT, deidentify_in_place, header_to_json, mark_pixels_cleaned
from core.imaging.imageio import DecodedImage, ImageReadError
from core.imaging.pixel_deid import (
    Corrections,
    PixelCleaning,
    clean_pixels,
    gray8,
    identifying_tokens,
)

_LOSSY_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEG2000, JPEGLSNearLossless})
_TOKEN_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})


def header_tokens(ds: Dataset) -> set[str]:
    """Identifying words of an original (not yet de-identified) DICOM header.

    Every text value the header de-identification removes counts (names, IDs, institution,
    descriptions), at any depth: if it is burned in too, it goes wherever it is.
    """
    kept = {k.keyword for k in KEPT if k.action == KEEP}
    values: list[str] = []

    def collect(_ds: Dataset, elem: Any) -> None:
        if elem.VR in _TOKEN_VRS and elem.keyword not in kept and elem.value:
            values.extend(str(v) for v in (elem.value if elem.VM > 1 else [elem.value]))

    ds.walk(collect)
    return identifying_tokens(values)


@dataclass(frozen=True)
class CleanUpload:
    """What the store keeps of one upload once its burned-in text is blanked."""

    cleaning: PixelCleaning
    dicom: bytes | None
    """The de-identified DICOM file with cleaned pixels (None for PNG/JPEG/TIFF)."""
    header: dict[str, Any] | None
    """The de-identified header, now saying BurnedInAnnotation=NO and 113101."""

    @property
    def pixels(self) -> np.ndarray:
        return self.cleaning.pixels


def clean_upload(
    data: bytes,
    decoded: DecodedImage,
    *,
    name: str,
    pseudonym: str,
    corrections: Corrections | None = None,
    ocr: bool = True,
) -> CleanUpload:
    """Blank burned-in text of one decoded upload; for DICOM, re-encode every frame.

    The boxes found on the decoded frame are blanked in all frames of a cine file (scanners
    print the banner at the same place on each). A cleaned DICOM is stored uncompressed
    (Explicit VR Little Endian, YBR converted to RGB), so the blanking is exact. With
    ``ocr=False`` (an import known to carry no burned-in text) the text search is skipped,
    and a DICOM does not claim its pixels were cleaned.
    """
    fixes = {"corrections": corrections, "ocr": ocr}
    if decoded.source_format != "dicom":
        cleaning = _clean_or_refuse(decoded.pixels, None, set(), name, **fixes)
        return CleanUpload(cleaning, None, None)
    if not pseudonym:
        raise ValueError("a stored DICOM must carry the patient's pseudonym; got an empty one")
    ds = _read(data, name)
    tokens = header_tokens(ds)
    cleaning = _clean_or_refuse(decoded.pixels, decoded.dicom_header, tokens, name, **fixes)
    deidentify_in_place(ds, pseudonym=pseudonym)
    if cleaning.blanked:
        _blank_all_frames(ds, decoded, cleaning, name)
    if ocr:
        mark_pixels_cleaned(ds)
    buf = io.BytesIO()
    try:
        dcmwrite(buf, ds, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ImageReadError(name, f"the cleaned DICOM cannot be written ({exc})") from exc
    return CleanUpload(cleaning, buf.getvalue(), header_to_json(ds))


def _clean_or_refuse(
    pixels: np.ndarray,
    header: dict[str, Any] | None,
    tokens: set[str],
    name: str,
    *,
    corrections: Corrections | None,
    ocr: bool,
) -> PixelCleaning:
    """:func:`clean_pixels`, with a missing or broken Tesseract said in words."""
    try:
        return clean_pixels(pixels, header, tokens=tokens, corrections=corrections, ocr=ocr)
    except (pytesseract.TesseractNotFoundError, pytesseract.TesseractError) as exc:
        raise ImageReadError(
            name,
            f"its burned-in text cannot be searched: the Tesseract OCR engine failed ({exc})",
            "Install Tesseract on the server (apt-get install tesseract-ocr; see README) "
            "and import again.",
        ) from exc


def _read(data: bytes, name: str) -> Dataset:
    try:
        return dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many types on malformed input
        raise ImageReadError(name, f"the DICOM file cannot be parsed ({exc})") from exc


def _blank_all_frames(
    ds: Dataset, decoded: DecodedImage, cleaning: PixelCleaning, name: str
) -> None:
    """Blank the cleaned boxes in every frame of ``ds`` and store it uncompressed."""
    try:
        stack = pixel_array(ds, raw=False)
    except Exception as exc:  # decoder plugins raise assorted types on corrupt streams
        raise ImageReadError(name, f"the DICOM pixel data cannot be decoded ({exc})") from exc
    frames = int(ds.get("NumberOfFrames") or 1)
    stack = np.array(stack if frames > 1 else stack[np.newaxis], copy=True)
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric.startswith("YBR"):
        photometric = "RGB"  # pydicom converted the samples on decoding
    frame = decoded.frame_index or 0
    fills = [np.array(stack[(frame, *line.fill_from)], copy=True) for line in cleaning.blanked]
    for line, fill in zip(cleaning.blanked, fills, strict=True):
        stack[:, line.box.y : line.box.y2, line.box.x : line.box.x2] = fill
    lossy = ds.file_meta.TransferSyntaxUID in _LOSSY_SYNTAXES
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # also for big-endian sources
    ds.set_pixel_data(
        stack if frames > 1 else stack[0],
        photometric,
        int(ds.get("BitsStored") or stack.dtype.itemsize * 8),
        generate_instance_uid=False,
    )
    if lossy:
        ds.LossyImageCompression = "01"


PREVIEW_COLOURS = {
    "view": (0, 200, 0),
    "colour box": (220, 0, 220),
    "colour bar": (240, 220, 0),
    "blanked": (230, 30, 30),
    "kept": (0, 160, 255),
}
"""RGB outline colours of :func:`preview`, for a legend next to it."""


def preview(cleaning: PixelCleaning) -> np.ndarray:
    """The cleaned frame as RGB with what was proposed and blanked outlined, for review.

    Views green, colour box magenta, colour bar yellow, blanked text red, kept text blue:
    the admin sees at a glance whether a name survived or an image part was lost.
    """
    shown = cleaning.pixels
    if shown.dtype != np.uint8:
        shown = gray8(np.stack([shown] * 3, axis=-1) if shown.ndim == 2 else shown)
    out = np.array(np.stack([shown] * 3, axis=-1) if shown.ndim == 2 else shown, copy=True)
    thickness = max(1, max(out.shape[:2]) // 600)
    proposal = cleaning.proposal
    outlined = [(box, "view") for box in proposal.views]
    outlined += [
        (box, name)
        for box, name in ((proposal.color_box, "colour box"), (proposal.scale_bar, "colour bar"))
        if box
    ]
    outlined += [(line.box, "blanked") for line in cleaning.blanked]
    outlined += [(line.box, "kept") for line in cleaning.kept]
    for box, kind in outlined:
        corner = (int(box.x2) - 1, int(box.y2) - 1)
        cv2.rectangle(out, (int(box.x), int(box.y)), corner, PREVIEW_COLOURS[kind], thickness)
    return out
