"""Read ultrasound exports (PNG, JPEG, TIFF, DICOM) into arrays, refusing anything doubtful.

Scanners such as the study's GE LOGIQ E9 (Yi et al., Sci Rep 2022) export screenshots as
PNG/JPEG/TIFF or DICOM in several colour models and compressions. Every reader error becomes an
:class:`ImageReadError` that names the file, says what was wrong and what to do, so a bad
file never turns into a silently wrong picture.

Array conventions, the same for every format:

* colour: ``(H, W, 3)`` ``uint8`` RGB;
* gray: ``(H, W)`` ``uint8``, or ``uint16`` when the source stores more than 8 bits (16-bit
  PNG, 12/16-bit DICOM). 16-bit gray stays ``uint16`` with its stored values: no windowing.
* Transparent pixels are composited onto black, the background of an ultrasound screen.
* Arrays are read-only: images are written once and never edited in place.

DICOM headers are de-identified (:mod:`core.imaging.deid`) before they leave this module, and
:func:`deidentified_dicom_bytes` gives the de-identified file to store in place of the
original bytes.
"""

from __future__ import annotations

import datetime
import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from pydicom.dataset import Dataset
from pydicom.filereader import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.pixels import apply_color_lut, get_decoder, pixel_array
from pydicom.pixels.utils import get_nr_frames
from pydicom.uid import UID, UID_dictionary

from core.imaging.deid import deidentify_in_place, header_to_json

MAX_PIXELS = 40_000_000
"""Refuse images above this many pixels per frame: a decompression-bomb guard. A full-HD
ultrasound screen (1920×1080) is about 2 million, so 40 million leaves ample room."""
MIN_SIDE = 32
"""Refuse images narrower or shorter than this: too small to hold an ultrasound frame (the
study's smallest model input is an 84×84 SWE crop)."""
DEFAULT_FRAME = 0
"""Which frame of a multi-frame (cine) DICOM to read unless the caller asks for another."""

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
_OTHER_MAGIC = (
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"RIFF", "a RIFF file (WebP, AVI or WAV)"),
    (b"\x08\x00", "a DICOM dataset without the 128-byte preamble and 'DICM' prefix"),
)
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
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
_EXIF_IFD = 0x8769
_EXIF_DATETIME_ORIGINAL = 0x9003
_REEXPORT = "Export it again from the scanner or PACS as PNG, JPEG, TIFF or DICOM."
_SCREEN_SIZE = "Export the ultrasound frame at screen resolution."


class ImageReadError(ValueError):
    """A file that cannot become a trustworthy image, with what was wrong and what to do.

    ``name`` is the display name the caller passed in (control characters removed), never a
    path on this machine.
    """

    def __init__(self, name: str, problem: str, remedy: str = _REEXPORT) -> None:
        self.name = _display_name(name)
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


def sniff_format(data: bytes, *, name: str = "upload") -> str:
    """Return "png", "jpeg", "tiff" or "dicom" from the magic bytes; the name is not trusted.

    DICOM must be a Part 10 file: ``DICM`` at offset 128.
    """
    if not data:
        raise ImageReadError(name, "the file is empty (0 bytes)")
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data.startswith(_TIFF_MAGICS):
        return "tiff"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    raise ImageReadError(
        name, f"this is not a PNG, JPEG, TIFF or DICOM file: it looks like {_guess(data)}"
    )


def decode_image(
    data: bytes, *, name: str, pseudonym: str | None = None, frame: int = DEFAULT_FRAME
) -> DecodedImage:
    """Decode one image file; ``name`` is only used in error messages.

    ``pseudonym`` goes into the de-identified DICOM header (PatientName/PatientID); without
    it both are blank. ``frame`` picks the frame of a multi-frame DICOM or the page of a
    multi-page TIFF (PNG/JPEG ignore it).
    """
    fmt = sniff_format(data, name=name)
    if fmt == "dicom":
        return _decode_dicom(data, name, pseudonym or "", frame)
    return _decode_pillow(data, name, fmt, frame)


def deidentified_dicom_bytes(data: bytes, *, pseudonym: str, name: str = "upload") -> bytes:
    """The de-identified DICOM file to store; the original bytes must never be stored.

    Pixel data are copied unchanged (compressed stays compressed), so re-reading the stored
    file gives the same pixels as :func:`decode_image` on the original. The pixels are not
    decoded here: call :func:`decode_image` first to refuse a bad file.
    """
    if not pseudonym:
        raise ValueError("a stored DICOM must carry the patient's pseudonym; got an empty one")
    if sniff_format(data, name=name) != "dicom":
        raise ImageReadError(
            name, "this is not a DICOM file", "Store PNG and JPEG files as they are."
        )
    ds = _read_dicom(data, name)
    _deidentify(ds, name, pseudonym)
    buf = io.BytesIO()
    try:
        dcmwrite(buf, ds, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ImageReadError(name, f"the de-identified DICOM cannot be written ({exc})") from exc
    return buf.getvalue()


def _decode_pillow(data: bytes, name: str, fmt: str, page: int = 0) -> DecodedImage:
    n_pages = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt.upper()])
            if fmt == "tiff":
                n_pages = _seek_page(img, page, name)
            _check_size(img.width, img.height, name)
            img.load()
            taken = _exif_date(img)
            ImageOps.exif_transpose(img, in_place=True)  # no copy of a 40-MP image
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(
            name,
            f"the image declares more pixels than the {MAX_PIXELS:,} this app accepts "
            "(a possible decompression bomb)",
            _SCREEN_SIZE,
        ) from exc
    except _PILLOW_ERRORS as exc:
        raise ImageReadError(name, f"the {fmt.upper()} file is truncated or corrupt") from exc
    pixels = _pillow_pixels(img, name)
    return _result(pixels, fmt, None, taken, page if n_pages > 1 else None)


def _seek_page(img: Image.Image, page: int, name: str) -> int:
    """Move a multi-page TIFF to ``page`` (the first by default); return the page count."""
    n_pages = int(getattr(img, "n_frames", 1))
    if not 0 <= page < n_pages:
        raise ImageReadError(
            name, f"page {page} was asked for but the TIFF has {n_pages} page(s)", "Pick 0."
        )
    img.seek(page)
    return n_pages


def _pillow_pixels(img: Image.Image, name: str) -> np.ndarray:
    """Pillow's many modes mapped onto the module's RGB / gray conventions.

    An image already in the target mode is not converted: a conversion is a full copy,
    160 MB for a 40-MP RGB image, and the importer's peak memory is one image's decode.
    """
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16, copy=False)
    if mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 0xFFFF:
            raise ImageReadError(name, "the image holds 32-bit gray values outside 0–65535")
        return arr.astype(np.uint16)
    if mode in {"1", "L"}:
        return np.asarray(img if mode == "L" else img.convert("L"))
    if mode == "F":
        raise ImageReadError(name, "the image holds floating-point pixels, not a screen capture")
    has_alpha = mode in {"LA", "La", "PA", "RGBA", "RGBa"} or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    if mode in {"LA", "La", "P", "PA"} and _is_gray(rgb):
        return np.ascontiguousarray(rgb[..., 0])
    return rgb


def _is_gray(rgb: np.ndarray) -> bool:
    return bool(
        np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    )


def _exif_date(img: Image.Image) -> datetime.date | None:
    raw = img.getexif().get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.datetime.strptime(raw.strip()[:10], "%Y:%m:%d").date()
    except ValueError:
        return None


def _decode_dicom(data: bytes, name: str, pseudonym: str, frame: int) -> DecodedImage:
    ds = _read_dicom(data, name)
    pixels, n_frames = _dicom_pixels(ds, name, frame)
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            del ds[keyword]
    _deidentify(ds, name, pseudonym)
    header = header_to_json(ds)
    frame_index = frame if n_frames > 1 else None
    return _result(pixels, "dicom", header, _dicom_date(ds), frame_index)


def _read_dicom(data: bytes, name: str) -> Dataset:
    try:
        return dcmread(io.BytesIO(data), force=False)
    except Exception as exc:  # pydicom raises many types on malformed input; all mean "corrupt"
        raise ImageReadError(name, f"the DICOM file cannot be parsed ({exc})") from exc


def _deidentify(ds: Dataset, name: str, pseudonym: str) -> None:
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
    _check_size(int(cols), int(rows), name)
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


def _dicom_date(ds: Dataset) -> datetime.date | None:
    """The acquisition date, falling back to content, series then study date."""
    for keyword in _DICOM_DATE_KEYWORDS:
        value = str(ds.get(keyword) or "").strip()
        for fmt in _DICOM_DATE_FORMATS:
            width = 10 if "." in fmt else 8
            try:
                return datetime.datetime.strptime(value[:width], fmt).date()
            except ValueError:
                continue
    return None


def _check_size(width: int, height: int, name: str) -> None:
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            name,
            f"the image is {width}×{height} = {width * height:,} pixels, more than the "
            f"{MAX_PIXELS:,} this app accepts (a possible decompression bomb)",
            _SCREEN_SIZE,
        )
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageReadError(
            name,
            f"the image is only {width}×{height} pixels, too small to be an ultrasound frame "
            f"(at least {MIN_SIDE}×{MIN_SIDE})",
            "Check that you picked the image itself, not a thumbnail or icon.",
        )


def _result(
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


def _guess(data: bytes) -> str:
    for magic, what in _OTHER_MAGIC:
        if data.startswith(magic):
            return what
    head = data[:512]
    if all(byte >= 0x20 or byte in b"\t\r\n" for byte in head):
        return "a text file"
    return "some other binary format"


def _display_name(name: str) -> str:
    cleaned = "".join(ch for ch in str(name) if ch.isprintable())
    return cleaned[:120] or "upload"
