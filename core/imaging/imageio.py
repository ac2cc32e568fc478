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

import numpy as np
from PIL import Image, ImageOps
from pydicom.filewriter import dcmwrite

from core.imaging.decoded import (
    MAX_PIXELS,
    SCREEN_SIZE,
    DecodedImage,
    ImageReadError,
    check_size,
    decoded,
)
from core.imaging.dicom_read import decode_dicom, deidentify_header, read_dicom

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
_EXIF_IFD = 0x8769
_EXIF_DATETIME_ORIGINAL = 0x9003


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
        return decode_dicom(data, name, pseudonym or "", frame)
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
    ds = read_dicom(data, name)
    deidentify_header(ds, name, pseudonym)
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
            check_size(img.width, img.height, name)
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
            SCREEN_SIZE,
        ) from exc
    except _PILLOW_ERRORS as exc:
        raise ImageReadError(name, f"the {fmt.upper()} file is truncated or corrupt") from exc
    pixels = _pillow_pixels(img, name)
    return decoded(pixels, fmt, None, taken, page if n_pages > 1 else None)


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


def _guess(data: bytes) -> str:
    for magic, what in _OTHER_MAGIC:
        if data.startswith(magic):
            return what
    head = data[:512]
    if all(byte >= 0x20 or byte in b"\t\r\n" for byte in head):
        return "a text file"
    return "some other binary format"
