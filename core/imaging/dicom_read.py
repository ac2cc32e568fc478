"""DICOM ultrasound files to pixels: transfer syntaxes, photometrics, frames, palettes, dates.

The header is de-identified (:mod:`core.imaging.deid`) before anything leaves this module.
"""

from __future__ import annotations

import datetime
import io

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filereader import dcmread
from pydicom.pixels import apply_color_lut, get_decoder, pixel_array
from pydicom.pixels.utils import get_nr_frames
from pydicom.uid import UID, UID_dictionary

from core.imaging.decoded import (
    DecodedImage,
    ImageReadError,
    check_size,
    decoded,
)
from core.imaging.deid import deidentify_in_place, header_to_json

_RGB_PHOTOMETRICS = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"}


_GRAY_PHOTOMETRICS = {"MONOCHROME1", "MONOCHROME2"}


_DICOM_DATE_KEYWORDS = (
    "AcquisitionDateTime",
    "AcquisitionDate",
    "ContentDate",
    "SeriesDate",
    "StudyDate",
)


_DICOM_DATE_FORMATS = ("%Y%m%d", "%Y.%m.%d")
"""DA is YYYYMMDD; ACR-NEMA and some old scanners wrote YYYY.MM.DD (PS3.5 6.2, note)."""


def decode_dicom(data: bytes, name: str, pseudonym: str, frame: int) -> DecodedImage:
    ds = read_dicom(data, name)
    pixels, n_frames = _dicom_pixels(ds, name, frame)
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            del ds[keyword]
    deidentify_header(ds, name, pseudonym)
    header = header_to_json(ds)
    frame_index = frame if n_frames > 1 else None
    return decoded(pixels, "dicom", header, _dicom_date(ds), frame_index)


def read_dicom(data: bytes, name: str) -> Dataset:
    try:
        return dcmread(io.BytesIO(data), force=False)
    except Exception as exc:  # pydicom raises many types on malformed input; all mean "corrupt"
        raise ImageReadError(name, f"the DICOM file cannot be parsed ({exc})") from exc


def deidentify_header(ds: Dataset, name: str, pseudonym: str) -> None:
    try:
        deidentify_in_place(ds, pseudonym=pseudonym)
    except Exception as exc:  # a malformed header value can fail deep inside pydicom
        raise ImageReadError(name, f"the DICOM header cannot be de-identified ({exc})") from exc


def _dicom_pixels(ds: Dataset, name: str, frame: int) -> tuple[np.ndarray, int]:
    """Decode one frame to the module's conventions; return it with the frame count."""
    if "PixelData" not in ds:
        raise ImageReadError(
            name,
            "the DICOM file holds no image (no Pixel Data element); it may be a report",
            "Export the image series itself.",
        )
    syntax = _checked_syntax(ds, name)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in _RGB_PHOTOMETRICS | _GRAY_PHOTOMETRICS | {"PALETTE COLOR"}:
        raise ImageReadError(
            name,
            f"the DICOM photometric interpretation '{photometric}' is not supported",
            "Export as RGB, YBR or MONOCHROME DICOM, or as PNG.",
        )
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise ImageReadError(name, "the DICOM header lacks Rows/Columns")
    check_size(int(cols), int(rows), name)
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0)
    if not 1 <= bits <= 16:
        raise ImageReadError(name, f"the DICOM stores {bits} bits per sample; 1–16 are supported")
    n_frames = get_nr_frames(ds, warn=False)
    if not 0 <= frame < n_frames:
        raise ImageReadError(
            name, f"frame {frame} was asked for but the file has {n_frames} frame(s)", "Pick 0."
        )
    try:
        arr = pixel_array(ds, index=frame)
    except Exception as exc:  # decoder plugins raise assorted types on corrupt streams
        raise ImageReadError(
            name, f"the DICOM pixel data ({syntax.name}) cannot be decoded ({exc})"
        ) from exc
    arr = _to_unsigned(arr, ds, bits)
    if photometric == "PALETTE COLOR":
        return _palette_to_rgb(arr, ds, name), n_frames
    if photometric == "MONOCHROME1":
        arr = (1 << bits) - 1 - arr
    expected_ndim = 3 if photometric in _RGB_PHOTOMETRICS else 2
    if arr.ndim != expected_ndim:
        raise ImageReadError(
            name, f"{photometric} pixel data decoded to shape {arr.shape}, not an image"
        )
    if expected_ndim == 3:
        return _to_uint8(arr, bits), n_frames
    return (arr.astype(np.uint8) if bits <= 8 else arr.astype(np.uint16)), n_frames


def _checked_syntax(ds: Dataset, name: str) -> UID:
    """The transfer syntax, refused when unknown, undecodable or contradicted by the data."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        raise ImageReadError(name, "the DICOM file meta has no Transfer Syntax UID")
    syntax = UID(syntax)
    entry = UID_dictionary.get(syntax)
    if entry is None or entry[1] != "Transfer Syntax":
        raise ImageReadError(name, f"the DICOM declares an unknown transfer syntax '{syntax}'")
    encapsulated = ds["PixelData"].is_undefined_length
    if syntax.is_compressed and not encapsulated:
        raise ImageReadError(
            name,
            f"the DICOM declares the compressed transfer syntax '{syntax.name}' ({syntax}) "
            "but its pixel data is not compressed",
        )
    if not syntax.is_compressed and encapsulated:
        raise ImageReadError(
            name,
            f"the DICOM declares the uncompressed transfer syntax '{syntax.name}' ({syntax}) "
            "but its pixel data is compressed",
        )
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ImageReadError(
            name,
            f"the DICOM transfer syntax '{syntax.name}' ({syntax}) cannot be decoded here",
            "Export as uncompressed, JPEG or JPEG 2000 DICOM, or as PNG.",
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise ImageReadError(
            name,
            f"decoding '{syntax.name}' needs a plugin that is not installed ({missing})",
            "Install the plugin or export as uncompressed DICOM or PNG.",
        )
    return syntax


def _to_unsigned(arr: np.ndarray, ds: Dataset, bits: int) -> np.ndarray:
    """Shift signed samples into 0 … 2**bits - 1 so every later step sees one range."""
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return (arr.astype(np.int32) + (1 << (bits - 1))).astype(np.uint16)
    return arr


def _to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    if bits <= 8:
        return arr.astype(np.uint8)
    return (arr.astype(np.uint32) >> (bits - 8)).astype(np.uint8)


def _palette_to_rgb(arr: np.ndarray, ds: Dataset, name: str) -> np.ndarray:
    """Apply the palette; 16-bit entries are scaled to 8 bits unless they only hold 0–255."""
    try:
        rgb = apply_color_lut(arr, ds)
    except Exception as exc:  # a missing or inconsistent LUT surfaces as assorted errors
        raise ImageReadError(name, f"the DICOM palette (colour LUT) is unusable ({exc})") from exc
    if rgb.dtype.itemsize > 1 and rgb.max() > 0xFF:
        return (rgb >> 8).astype(np.uint8)
    return rgb.astype(np.uint8)


def parse_dicom_date(value: str) -> datetime.date | None:
    """A DA value (``YYYYMMDD``, or the old ``YYYY.MM.DD``) as a date; None if it is neither."""
    text = str(value or "").strip()
    for fmt in _DICOM_DATE_FORMATS:
        width = 10 if "." in fmt else 8
        try:
            return datetime.datetime.strptime(text[:width], fmt).date()
        except ValueError:
            continue
    return None


def _dicom_date(ds: Dataset) -> datetime.date | None:
    """The acquisition date, falling back to content, series then study date."""
    for keyword in _DICOM_DATE_KEYWORDS:
        found = parse_dicom_date(str(ds.get(keyword) or ""))
        if found is not None:
            return found
    return None
