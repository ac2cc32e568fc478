"""Blank burned-in identifying text from ultrasound screens (DICOM Clean Pixel Data Option).

Scanners burn the patient's name, ID, birth date, the exam date and the institution into the
pixels, mostly in title bars and side panels. Tesseract (through ``pytesseract``) finds the
words; the connected strokes around each word give its full extent, so a word read wrongly
is still blanked whole. Three rules decide what goes:

* outside the ultrasound views, every line of text goes, except the colour bar's scale labels
  (needed to decode SWE) and short numbers beside a view (its depth scale);
* anywhere, a line that looks identifying goes: a date, a clock time, a long number or an
  ID mixing letters and digits, ``Surname, Given`` or a word of the DICOM header's own
  identifying values (patient name and ID, institution, physicians, operators);
* anywhere, text lines in the top tenth of the screen (the title bar) go, even when a view
  proposal wrongly reaches into it.

Blanked pixels take the colour of the panel around them. The views come from
:func:`core.imaging.regions.propose_regions`. The admin sees the result at import and can
correct it (:class:`Corrections`: blank a rectangle more, leave a blanked line as it was);
:mod:`core.imaging.upload_cleaning` applies it to a whole upload (every frame of a DICOM).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytesseract
from PIL import Image

from core.common.boxes import Box
from core.imaging.regions import RegionProposal, propose_regions
from core.imaging.roi_detect import chroma

OCR_MIN_SIDE = 1400
"""Screens smaller than this (longest side) are OCR'd at twice the size: small fonts read
far better."""
TITLE_BAR_SHARE = 0.10
"""Text in the top tenth of the screen is blanked wherever the views are."""
MIN_TITLE_BAR_PX = 24
WORD_PAD_PX = 2
DEPTH_SCALE_REACH_PX = 60
"""How far beside a view a short number still counts as its depth scale."""
BAR_LABEL_REACH_PX = 90
"""How far beside the colour bar its scale labels may be printed."""
MIN_IDENTIFYING_TOKEN = 3
MIN_CONFIDENCE = 50
"""Tesseract's confidence (0-100) a reading inside a view needs before it is blanked."""
STROKE_KERNEL_PX = 11
"""Marks thinner than this (glyph strokes) count as text strokes when growing a word."""
STROKE_CONTRAST = 24
GROW_CAP_HEIGHTS = 8
"""A line grows by at most this many text heights on each side."""
_OCR_CONFIG = "--psm 11"
_OVERLAY_GRAY = 200
_OVERLAY_CHROMA = 90

_DATE = re.compile(
    r"\d{1,4}[/.\-]\d{1,2}[/.\-]\d{2,4}"
    r"|\d{1,2}\s*(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s*\d{2,4}",
    re.IGNORECASE,
)
_TIME = re.compile(r"\d{1,2}:\d{2}(:\d{2})?")
_LONG_NUMBER = re.compile(r"\d{5,}")
_ID = re.compile(r"(?=[A-Z0-9_\-]*\d)(?=[A-Z0-9_\-]*[A-Z])[A-Z0-9_\-]{6,}", re.IGNORECASE)
_SURNAME_GIVEN = re.compile(r"\b[A-Z][A-Za-z'\-]+,\s*[A-Z][A-Za-z'\-]+")
_ID_LABEL = re.compile(r"\b(id|name|dob|patient|pat|mrn|born)\b\s*[:#]", re.IGNORECASE)
_SCALE_LABEL = re.compile(
    r"^[<>≥≤=+\-−]*\d{1,3}([.,]\d+)?\s*(kpa|m/s|cm/s|mm/s|%|cm|mm)?$|^(kpa|m/s|cm/s|mm/s)$",
    re.IGNORECASE,
)
_DEPTH_LABEL = re.compile(r"^[-−]?\d{1,2}([.,]\d)?(cm|mm)?$|^(cm|mm)$", re.IGNORECASE)
_SETTINGS_WORDS = frozenset({"the", "and", "age", "sex", "male", "female", "right", "left"})


@dataclass(frozen=True)
class TextLine:
    """One line of text the OCR found, with the extent that gets blanked and why."""

    text: str
    box: Box
    reason: str
    """Why it was blanked ("outside the views", "identifying", "title bar") or kept."""
    fill_from: tuple[int, int] = (0, 0)
    """(row, column) just outside the box whose value fills it: the local background."""


@dataclass(frozen=True)
class Corrections:
    """The admin's changes to one image's automatic cleaning, made in the import preview."""

    blank: tuple[Box, ...] = ()
    """Rectangles to blank as well: text the OCR missed."""
    keep: tuple[Box, ...] = ()
    """Boxes of automatically blanked lines to leave as they are: image or scale, not PHI."""


@dataclass(frozen=True)
class PixelCleaning:
    """What :func:`clean_pixels` did to one frame: the cleaned pixels and the evidence."""

    pixels: np.ndarray
    blanked: tuple[TextLine, ...]
    kept: tuple[TextLine, ...]
    proposal: RegionProposal
    seconds: float


def identifying_tokens(header_values: list[str]) -> set[str]:
    """Words of the original header's identifying values, to find them burned in."""
    tokens: set[str] = set()
    for value in header_values:
        for token in re.split(r"[\s\^,=/\\]+", str(value)):
            token = token.strip(".:;'\"()").lower()
            if len(token) >= MIN_IDENTIFYING_TOKEN and token not in _SETTINGS_WORDS:
                tokens.add(token)
    return tokens


def clean_pixels(
    pixels: np.ndarray,
    header: dict[str, Any] | None = None,
    *,
    tokens: set[str] | None = None,
    proposal: RegionProposal | None = None,
    corrections: Corrections | None = None,
    ocr: bool = True,
) -> PixelCleaning:
    """Blank burned-in identifying text from one decoded frame; ``pixels`` is not changed.

    ``header`` is the de-identified header (for the ultrasound regions); ``tokens`` the
    original identifying words (:func:`identifying_tokens`); ``proposal`` replaces the
    automatic view proposal; ``corrections`` are the admin's. ``ocr=False`` skips the text
    search (about a second per image) for images known to carry no text: only the
    corrections' rectangles are blanked.
    """
    started = time.perf_counter()
    if proposal is None:
        proposal = propose_regions(pixels, header)
    fixes = corrections or Corrections()
    rgb = pixels if pixels.ndim == 3 else np.stack([pixels] * 3, axis=-1)
    gray = gray8(rgb)
    lines = _text_lines(gray, rgb, proposal.views, _background(gray)) if ocr else []
    blanked: list[TextLine] = []
    kept: list[TextLine] = []
    height = gray.shape[0]
    for text, box, confidence in lines:
        reason = _blank_reason(text, box, confidence, proposal, height, tokens or set())
        if not reason.startswith("kept") and box in fixes.keep:
            reason = "kept: by the admin"
        if reason.startswith("kept"):
            kept.append(TextLine(text, box, reason))
        else:
            blanked.append(TextLine(text, box, reason, _local_background(gray, box)))
    for drawn in fixes.blank:
        box = _within(drawn, gray.shape[1], height)
        if box.area:
            blanked.append(TextLine("", box, "blanked by the admin", _local_background(gray, box)))
    out = np.array(pixels, copy=True)
    for line in blanked:
        out[line.box.y : line.box.y2, line.box.x : line.box.x2] = pixels[line.fill_from]
    out.setflags(write=False)
    return PixelCleaning(out, tuple(blanked), tuple(kept), proposal, time.perf_counter() - started)


def _within(box: Box, width: int, height: int) -> Box:
    """``box`` cut to the frame: an admin's rectangle may reach past its edge."""
    x0, y0 = min(max(0, box.x), width), min(max(0, box.y), height)
    x1, y1 = min(max(x0, box.x2), width), min(max(y0, box.y2), height)
    return Box(x0, y0, x1 - x0, y1 - y0)


def gray8(rgb: np.ndarray) -> np.ndarray:
    """8-bit gray of an RGB frame of any integer depth (scaled by its maximum)."""
    if rgb.dtype != np.uint8:
        top = max(int(rgb.max()), 1)
        rgb = (rgb.astype(np.float32) * (255.0 / top)).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def _background(gray: np.ndarray) -> int:
    """The screen's commonest gray on its outer border."""
    border = np.concatenate([gray[:2].ravel(), gray[-2:].ravel(), gray[:, :2].ravel()])
    return int(np.bincount(np.concatenate([border, gray[:, -2:].ravel()])).argmax())


def _local_background(gray: np.ndarray, box: Box) -> tuple[int, int]:
    """A pixel of the commonest gray on the ring just outside ``box``.

    Filling with it makes a blanked line look like the panel it was printed on (a light
    GUI panel stays light, a dark title bar dark).
    """
    height, width = gray.shape
    x0, y0 = max(0, box.x - 1), max(0, box.y - 1)
    x1, y1 = min(width - 1, box.x2), min(height - 1, box.y2)
    ring = [(y0, x) for x in range(x0, x1 + 1)] + [(y1, x) for x in range(x0, x1 + 1)]
    ring += [(y, x0) for y in range(y0, y1 + 1)] + [(y, x1) for y in range(y0, y1 + 1)]
    values = np.array([gray[p] for p in ring])
    return ring[int(np.argmax(values == np.bincount(values).argmax()))]


def _ocr_input(
    gray: np.ndarray, rgb: np.ndarray, views: tuple[Box, ...], background: int
) -> np.ndarray:
    """The screen with the views' speckle suppressed: only overlay-like marks stay there.

    Tesseract spends seconds on speckle; text drawn over an image is bright or saturated.
    """
    out = gray.copy()
    if not views:
        return out
    overlay = gray >= _OVERLAY_GRAY
    if rgb.dtype == np.uint8:
        overlay |= chroma(rgb) >= _OVERLAY_CHROMA
    title = int(TITLE_BAR_SHARE * gray.shape[0])
    for view in views:
        top = max(view.y, title)
        region = out[top : view.y2, view.x : view.x2]
        region[~overlay[top : view.y2, view.x : view.x2]] = background
    return out


def _ocr_words(image: np.ndarray) -> list[tuple[str, Box, tuple[int, int, int], float]]:
    """(text, box, line key, confidence) of every word Tesseract reads, in image pixels."""
    scale = 2 if max(image.shape) < OCR_MIN_SIDE else 1
    if scale > 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    data = pytesseract.image_to_data(
        Image.fromarray(image), config=_OCR_CONFIG, output_type=pytesseract.Output.DICT
    )
    words = []
    for i, text in enumerate(data["text"]):
        text = text.strip()
        if not text or not any(ch.isalnum() for ch in text):
            continue
        x, y = data["left"][i] // scale, data["top"][i] // scale
        w = -(-data["width"][i] // scale)
        h = -(-data["height"][i] // scale)
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        words.append((text, Box(x, y, w, h), key, float(data["conf"][i])))
    return words


def _text_lines(
    gray: np.ndarray, rgb: np.ndarray, views: tuple[Box, ...], background: int
) -> list[tuple[str, Box, float]]:
    """OCR lines with their mean confidence, each grown over the strokes along its row."""
    image = _ocr_input(gray, rgb, views, background)
    words = _ocr_words(image)
    words += _title_bar_words(image, [w[1] for w in words])
    marks = _stroke_mask(image)
    lines: dict[tuple[int, int, int], list[tuple[str, Box, float]]] = {}
    for text, box, key, confidence in words:
        lines.setdefault(key, []).append((text, box, confidence))
    height, width = gray.shape
    out = []
    for members in lines.values():
        members.sort(key=lambda m: m[1].x)
        text = " ".join(m[0] for m in members)
        box = _grow_to_strokes(marks, _union([m[1] for m in members]), width, height)
        out.append((text, box, sum(m[2] for m in members) / len(members)))
    return out


def _title_bar_words(
    image: np.ndarray, read: list[Box]
) -> list[tuple[str, Box, tuple[int, int, int], float]]:
    """Words of the top tenth read on their own, that the page reading missed.

    Tesseract binarizes the page as a whole: text on a gray or light title bar of a dark
    screen merges with its bar there, but not in the bar alone.
    """
    band = image[: max(MIN_TITLE_BAR_PX, int(TITLE_BAR_SHARE * image.shape[0]))]
    return [
        (text, box, (-1, *key[1:]), confidence)
        for text, box, key, confidence in _ocr_words(band)
        if all(_overlap(box, other) < 0.3 for other in read)
    ]


def _stroke_mask(image: np.ndarray) -> np.ndarray:
    """Thin marks brighter or darker than their surroundings: glyph strokes on any panel."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (STROKE_KERNEL_PX, STROKE_KERNEL_PX))
    bright = cv2.morphologyEx(image, cv2.MORPH_TOPHAT, kernel)
    dark = cv2.morphologyEx(image, cv2.MORPH_BLACKHAT, kernel)
    return ((bright > STROKE_CONTRAST) | (dark > STROKE_CONTRAST)).astype(np.uint8)


def _grow_to_strokes(marks: np.ndarray, box: Box, width: int, height: int) -> Box:
    """``box`` padded, then grown along its row over strokes no further apart than a space.

    A word read wrongly or only in part ("DO" for "DOE, JOHN") is blanked whole.
    """
    x0, y0 = max(0, box.x - WORD_PAD_PX), max(0, box.y - WORD_PAD_PX)
    x1, y1 = min(width, box.x2 + WORD_PAD_PX), min(height, box.y2 + WORD_PAD_PX)
    columns = marks[y0:y1].any(axis=0)
    reach, cap = max(8, 3 * box.h // 2), GROW_CAP_HEIGHTS * max(box.h, 8)
    x0 = _extend(columns, x0, -1, reach, max(0, x0 - cap))
    x1 = _extend(columns, x1 - 1, 1, reach, min(width - 1, x1 + cap)) + 1
    rows = marks[:, x0:x1].any(axis=1)
    y0 = _extend(rows, y0, -1, 1, max(0, y0 - box.h // 3))
    y1 = _extend(rows, y1 - 1, 1, 1, min(height - 1, y1 + box.h // 3)) + 1
    return Box(int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def _extend(marked: np.ndarray, start: int, step: int, gap: int, stop: int) -> int:
    """The last marked index reached from ``start`` by ``step`` across gaps up to ``gap``."""
    last, i, missed = start, start + step, 0
    while (i <= stop if step > 0 else i >= stop) and missed <= gap:
        if marked[i]:
            last, missed = i, 0
        else:
            missed += 1
        i += step
    return last


def _union(boxes: list[Box]) -> Box:
    x0, y0 = min(b.x for b in boxes), min(b.y for b in boxes)
    return Box(x0, y0, max(b.x2 for b in boxes) - x0, max(b.y2 for b in boxes) - y0)


def looks_identifying(text: str, tokens: set[str] | frozenset[str] = frozenset()) -> bool:
    """True for a date, a time, a long number, an ID, ``Surname, Given`` or a header word."""
    if (
        _DATE.search(text)
        or _TIME.search(text)
        or _LONG_NUMBER.search(text)
        or _SURNAME_GIVEN.search(text)
        or _ID_LABEL.search(text)
    ):
        return True
    words = [w.strip(".,:;'\"()#").lower() for w in text.split()]
    if any(_ID.fullmatch(w) and not _SCALE_LABEL.match(w) for w in words):
        return True
    return any(w in tokens for w in words if len(w) >= MIN_IDENTIFYING_TOKEN)


def _blank_reason(
    text: str,
    box: Box,
    confidence: float,
    proposal: RegionProposal,
    height: int,
    tokens: set[str],
) -> str:
    """Why a line goes, or ``kept: ...``; inside views only confident readings count.

    Speckle read as letters has a low confidence: blanking it would cut into the image.
    """
    inside = any(_overlap(box, view) >= 0.5 for view in proposal.views)
    confident = confidence >= MIN_CONFIDENCE and sum(ch.isalnum() for ch in text) >= 2
    if looks_identifying(text, tokens) and (confident or not inside):
        return "identifying"
    if box.y2 <= TITLE_BAR_SHARE * height and confident:
        return "title bar"
    if inside:
        return "kept: inside a view"
    if proposal.scale_bar is not None and _is_bar_label(box, proposal.scale_bar):
        return "kept: colour bar label"
    if _is_depth_label(text, box, proposal.views):
        return "kept: depth scale"
    return "outside the views"


def _overlap(box: Box, other: Box) -> float:
    """Share of ``box`` that lies inside ``other``."""
    ix = max(0, min(box.x2, other.x2) - max(box.x, other.x))
    iy = max(0, min(box.y2, other.y2) - max(box.y, other.y))
    return ix * iy / box.area if box.area else 0.0


def _is_bar_label(box: Box, bar: Box) -> bool:
    """Non-identifying text beside the colour bar: its scale, however the OCR read it."""
    reach = max(BAR_LABEL_REACH_PX, 4 * bar.w)
    near_x = box.x < bar.x2 + reach and box.x2 > bar.x - reach
    return near_x and box.y < bar.y2 + 2 * box.h and box.y2 > bar.y - 2 * box.h


def _is_depth_label(text: str, box: Box, views: tuple[Box, ...]) -> bool:
    if not all(_DEPTH_LABEL.match(w) for w in text.split()):
        return False
    for view in views:
        beside = box.x2 > view.x - DEPTH_SCALE_REACH_PX and box.x < view.x2 + DEPTH_SCALE_REACH_PX
        if beside and box.y >= view.y - box.h and box.y2 <= view.y2 + box.h:
            return True
    return False
