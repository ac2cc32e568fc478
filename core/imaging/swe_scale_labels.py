"""Read the range printed beside an SWE color bar with OCR, and accept it only when consistent.

A wrong range shifts every stiffness value of the image without any visible sign, so a
reading is accepted only when the printed labels agree with each other and with the bar:

1. the labels' text boxes are found next to the bar (connected components of ink that
   stands out from the panel, dark or light, on a plain surround);
2. each label is upscaled with cubic interpolation to three heights, binarized (Otsu) and
   read by Tesseract (``--psm 6`` over all labels stacked in one image per height, digits,
   ``.``, ``-``, ``>``, ``kPa`` and ``m/s`` only); a label counts when the three readings
   agree, and a decimal point Tesseract dropped is put back only where the ink shows one;
3. the numbers must decrease from top to bottom, sit on a straight line against their
   height along the bar (residual at most 12 % of a tick step), cover the bar, and one unit
   (kPa or m/s) must be printed by the bar. The ends of the bar are read off that line.
   A number printed above the bar (``≥300 kPa``, ``>200 kPa``: Tesseract knows no ``≥``)
   must agree with the ticks' line. A label read differently at different heights is
   accepted only where three or more numbers can check it.

Anything else gives a :class:`Refusal` with the reason; the caller then asks for the range
once per scanner preset (``core.imaging.swe_presets``) and marks stiffness as relative.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import pytesseract
from PIL import Image

from core.common.boxes import Box
from core.imaging.roi_detect import BAR_MIN_CHROMA, chroma, to_rgb_u8

Units = Literal["kPa", "m/s"]

_WHITELIST = "0123456789.-kPam/s>"
_VIEW_HEIGHTS = (28, 34, 40)
"""Label heights (px) Tesseract reads at; its LSTM is most reliable for 24–40 px text."""
_NUMBER = re.compile(r"^(?P<cmp>>)?(?P<num>-?(?:0|[1-9]\d*)(?:\.\d+)?)$")
_UNIT_SPELLINGS = (("kPa", "kPa"), ("m/s", "m/s"), ("ms", "m/s"))
"""Spellings of a unit as Tesseract returns it (the '/' of m/s is lost at small sizes)."""
_COMPARATOR_LOOKALIKES = "2=7>"
"""Tesseract reads '≥' as '2' or '=', and '>' now and then as '7'."""
_MAX_RESIDUAL_STEP = 0.12
_MAX_PITCH_RATIO = 1.4
_END_AGREEMENT = 0.03
_MAX_GLYPH_PX = 40


@dataclass(frozen=True)
class Label:
    """One text box by the bar and what was read there (``views``: each magnification)."""

    box: Box
    text: str
    unanimous: bool
    views: tuple[str, ...]


@dataclass(frozen=True)
class ScaleReading:
    """The bar's range as printed: value at the bottom and top end, in ``units``."""

    low: float
    high: float
    units: Units
    labels: tuple[Label, ...]


@dataclass(frozen=True)
class Refusal:
    """Why the labels were not trusted (shown to the user as it is)."""

    reason: str
    labels: tuple[Label, ...] = ()


def _ink_contrast(rgb: np.ndarray) -> np.ndarray:
    """Distance of each pixel's gray from the panel's (median) gray; colored pixels get 0."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    contrast = np.abs(gray.astype(np.int16) - int(np.median(gray))).astype(np.uint8)
    contrast[chroma(rgb) > BAR_MIN_CHROMA] = 0
    return contrast


def _group_lines(glyphs: list[Box]) -> list[list[Box]]:
    """Glyphs side by side on one line (gap under 0.6 line heights) form one label."""
    groups: list[list[Box]] = []
    for g in sorted(glyphs, key=lambda b: b.x):
        for group in groups:
            gy0, gy1 = min(b.y for b in group), max(b.y2 for b in group)
            tall = max(gy1 - gy0, g.h)
            overlap = min(gy1, g.y2) - max(gy0, g.y)
            gap = g.x - max(b.x2 for b in group)
            if overlap >= 0.5 * min(g.h, gy1 - gy0) and -tall <= gap <= 0.6 * tall:
                group.append(g)
                break
        else:
            groups.append([g])
    return groups


def _text_boxes(contrast: np.ndarray) -> list[tuple[Box, list[Box]]]:
    """Label boxes (with their glyph boxes) on a plain surround, not cut by the region edge."""
    strong = contrast[contrast > 20]
    level = max(40, int(0.3 * np.percentile(strong, 95))) if strong.size else 40
    n, _, stats, _ = cv2.connectedComponentsWithStats((contrast >= level).astype(np.uint8), 8)
    glyphs = [
        Box(*(int(v) for v in stats[i, :4]))
        for i in range(1, n)
        if stats[i, 2] <= _MAX_GLYPH_PX and stats[i, 3] <= _MAX_GLYPH_PX
    ]
    rh, rw = contrast.shape
    found = []
    for group in _group_lines(glyphs):
        x0, y0 = min(b.x for b in group), min(b.y for b in group)
        box = Box(x0, y0, max(b.x2 for b in group) - x0, max(b.y2 for b in group) - y0)
        if not 5 <= box.h <= _MAX_GLYPH_PX or box.x < 4 or box.y < 4:
            continue
        if box.x2 > rw - 4 or box.y2 > rh - 4:
            continue
        ring = contrast[box.y - 4 : box.y2 + 4, box.x - 4 : box.x2 + 4].copy()
        ring[3:-3, 3:-3] = 0  # the ring 2–4 px out: past the glyphs' anti-aliased fringe
        if np.count_nonzero(ring >= level // 2) > 0.05 * (ring.size - (box.w + 2) * (box.h + 2)):
            continue  # speckle or more text runs on: not a label standing alone
        found.append((box, group))
    return found


def _single(box: Box) -> bool:
    """A box narrower than tall holds one glyph."""
    return box.w <= 0.9 * box.h


def _tile(contrast: np.ndarray, box: Box, height: int) -> np.ndarray:
    """The label at ``height`` px, black on white; a lone glyph twice, side by side.

    Tesseract often returns nothing for one glyph alone (a lone '0' looks like an 'O',
    which the whitelist excludes); as a pair it reads it, and both halves must agree.
    """
    patch = contrast[box.y - 2 : box.y2 + 2, box.x - 2 : box.x2 + 2]
    if _single(box):
        patch = np.hstack([patch, np.zeros((patch.shape[0], 2), np.uint8), patch])
    scale = height / box.h
    big = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return cv2.threshold(big, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)[1]


def _read_view(
    contrast: np.ndarray, boxes: list[Box], height: int, whitelist: str | None = _WHITELIST
) -> list[str]:
    """Every label read at one height, in one Tesseract call (labels stacked as lines).

    Words Tesseract separates by a space stay separate ("1 0" is not the number 10).
    """
    tiles = [_tile(contrast, b, height) for b in boxes]
    gap = height
    canvas = np.full(
        (sum(t.shape[0] + gap for t in tiles) + gap, max(t.shape[1] for t in tiles) + 2 * gap),
        255,
        np.uint8,
    )
    slots, y = [], gap
    for t in tiles:
        canvas[y : y + t.shape[0], gap : gap + t.shape[1]] = t
        slots.append((y - gap / 2, y + t.shape[0] + gap / 2))
        y += t.shape[0] + gap
    data = pytesseract.image_to_data(
        Image.fromarray(canvas),
        config="--psm 6" + (f" -c tessedit_char_whitelist={whitelist}" if whitelist else ""),
        output_type=pytesseract.Output.DICT,
    )
    words: list[list[tuple[int, str]]] = [[] for _ in boxes]
    for text, left, top, h in zip(
        data["text"], data["left"], data["top"], data["height"], strict=True
    ):
        for i, (s0, s1) in enumerate(slots):
            if text.strip() and s0 <= top + h / 2 < s1:
                words[i].append((left, text.strip()))
    texts = [" ".join(t for _, t in sorted(w)) for w in words]
    return [
        (t[0] if len(t) <= 2 and len(set(t)) == 1 else "?" if t else "") if _single(b) else t
        for t, b in zip(texts, boxes, strict=True)
    ]


def split_units(text: str) -> tuple[str, Units | None]:
    """(number part, unit) of a label read as e.g. ``240``, ``>300kPa`` or ``10.0m/s``."""
    for spelling, unit in _UNIT_SPELLINGS:
        if text.endswith(spelling):
            return text[: -len(spelling)].rstrip(), unit  # type: ignore[return-value]
    return text, None


def _restore_dot(text: str, box: Box, glyphs: list[Box]) -> str | None:
    """``text`` with a dropped decimal point put back where the ink has one; None if unsure.

    A dot is a small blob on the baseline. Where Tesseract gave no '.', the dot goes after
    as many digits as lie left of it, counted both by glyphs and by width; when the counts
    differ, or the ink and the text disagree on how many dots there are, None.
    """
    rest, unit = split_units(text)
    if not rest.replace(".", "").isdigit():
        return text
    dots = [
        g
        for g in glyphs
        if g.h <= 0.3 * box.h
        and g.w <= 0.4 * box.h
        and g.y2 >= box.y2 - 0.25 * box.h
        and min(g.w, g.h) >= 0.1 * box.h
        and not any(o is not g and o.x < g.x2 and g.x < o.x2 for o in glyphs)
        and any(o.x2 <= g.x for o in glyphs)
        and any(o.x >= g.x2 for o in glyphs)
    ]  # a blob on the baseline between glyphs, nothing above it (not a stroke's broken end)
    if rest.count(".") == len(dots):
        return text
    if rest.count(".") or len(dots) != 1:
        return None
    dot = dots[0]
    by_glyphs = sum(1 for g in glyphs if g is not dot and g.h > 0.5 * box.h and g.x2 <= dot.x + 1)
    by_width = round(len(rest) * (dot.x - box.x) / max(box.w - dot.w, 1))
    if by_glyphs != by_width or not 0 < by_glyphs < len(rest):
        return None
    return f"{rest[:by_glyphs]}.{rest[by_glyphs:]}{unit or ''}"


def _vote(views: list[str], box: Box, glyphs: list[Box]) -> tuple[str | None, bool]:
    """The label's text and whether every view that read something read the same."""
    fixed = []
    for text in views:
        if text:
            rest, unit = split_units(text)
            fixed.append(_restore_dot(rest + (unit or ""), box, glyphs))
    said = [t for t in fixed if t is not None]
    if not said:
        return None, False
    if len(set(fixed)) == 1 and len(fixed) >= 2:
        return said[0], True
    return collections.Counter(said).most_common(1)[0][0], False


def _alnum(text: str) -> str:
    """Letters, digits and '.' of a reading, units dropped: what a second opinion must match."""
    rest = split_units(text)[0]
    return "".join(c for c in rest if c.isalnum() or c == ".")


def _label_region(img: np.ndarray, bar: Box) -> Box:
    height, width = img.shape[:2]
    reach = max(90, 6 * bar.w)
    x0, y0 = max(bar.x - reach, 0), max(bar.y - 60, 0)
    return Box(x0, y0, min(bar.x2 + reach, width) - x0, min(bar.y2 + 40, height) - y0)


def read_labels(rgb: np.ndarray, bar: Box) -> ScaleReading | Refusal:
    """Read and check the labels printed by ``bar``; a reading or the reason there is none."""
    img = to_rgb_u8(rgb)
    region = _label_region(img, bar)
    contrast = _ink_contrast(img[region.y : region.y2, region.x : region.x2])
    local = Box(bar.x - region.x, bar.y - region.y, bar.w, bar.h)
    near = []
    for box, glyphs in _text_boxes(contrast):
        beside = max(local.x - box.x2, box.x - local.x2, 0) <= 3 * box.h + local.w
        centre = box.y + box.h / 2
        if beside and local.y - 4 * box.h <= centre <= local.y2 + 3 * box.h:
            near.append((box, glyphs))
    if not near:
        return Refusal("No text was found beside the color bar.")
    try:
        boxes = [b for b, _ in near]
        views = [_read_view(contrast, boxes, h) for h in _VIEW_HEIGHTS]
        free = _read_view(contrast, boxes, _VIEW_HEIGHTS[1], whitelist=None)
    except (pytesseract.TesseractNotFoundError, pytesseract.TesseractError) as exc:
        return Refusal(f"Tesseract could not run ({exc}); install tesseract-ocr (see README).")
    labels = []
    for i, (box, glyphs) in enumerate(near):
        said = [v[i] for v in views]
        text, unanimous = _vote(said, box, glyphs)
        if text is not None and not _single(box) and _alnum(free[i]) != _alnum(text):
            unanimous = False  # without the whitelist a letter shows ("8O"); a lone 0 is an O
        if text is None:
            return Refusal(f"A label beside the bar could not be read (read as {said}).")
        frame_box = Box(box.x + region.x, box.y + region.y, box.w, box.h)
        labels.append(Label(frame_box, text, unanimous, tuple(said)))
    return check_labels(labels, bar)


def _title_candidates(label: Label) -> list[float]:
    """Values a number printed above the bar may stand for (``≥`` read as '2', '=' or '7')."""
    values = []
    for view in {split_units(v)[0] for v in label.views if v} | {split_units(label.text)[0]}:
        for text in (view, view[1:] if view[:1] in _COMPARATOR_LOOKALIKES else ""):
            m = _NUMBER.match(text)
            if m:
                values.append(float(m["num"]))
    return sorted(set(values))


def _position(box: Box, bar: Box) -> float:
    """Height along the bar a side label stands for: an end label aligned with an end is at it."""
    centre = box.y + box.h / 2
    if box.y >= bar.y2 - 2 or abs(centre - bar.y2) <= box.h:
        return float(bar.y2)
    if abs(centre - bar.y) <= box.h:
        return float(bar.y)
    return centre


def _side_numbers(
    labels: list[Label], bar: Box
) -> tuple[list[tuple[float, float, Label]], list[Label], set[str], Refusal | None]:
    """Numbers beside the bar (height, value, label), labels above it, units; or a refusal."""
    side, titles, units = [], [], set()
    for label in labels:
        rest, unit = split_units(label.text)
        units |= {unit} if unit else set()
        if not rest:
            continue
        m = _NUMBER.match(rest)
        if label.box.y2 <= bar.y + 2:
            titles.append(label)
        elif m is None or m["cmp"]:
            reason = f"A label beside the bar reads {label.text!r}: not a number."
            return [], [], units, Refusal(reason, tuple(labels))
        else:
            side.append((_position(label.box, bar), float(m["num"]), label))
    return side, titles, units, None


def _pitch(label: Label) -> float:
    """Ink width per character read (a '.' counts less): one font prints every label."""
    rest = split_units(label.text)[0]
    return label.box.w / (len(rest) - 0.2 - 0.6 * rest.count("."))


def check_labels(labels: list[Label], bar: Box) -> ScaleReading | Refusal:
    """Accept the labels' range only when they agree with each other and with the bar.

    Three numbers at least (a number above the bar counts) must lie on one line, so that a
    misread digit shows; numbers read differently at different magnifications, or with a
    letter when read without the whitelist, are left out. A bar labelled only at its two
    ends is therefore always refused: its range is entered once per scanner preset.
    """
    found = tuple(labels)
    side, titles, units, refusal = _side_numbers(labels, bar)
    if refusal is not None:
        return refusal
    if len(units) != 1:
        what = "no unit (kPa or m/s)" if not units else f"two units ({', '.join(sorted(units))})"
        return Refusal(f"The labels show {what} by the bar.", found)
    unit: Units = units.pop()  # type: ignore[assignment]
    if len(titles) > 1:
        return Refusal("Two numbers are printed above the bar.", found)
    if side and max(map(_pitch, (s[2] for s in side))) > _MAX_PITCH_RATIO * min(
        map(_pitch, (s[2] for s in side))
    ):
        return Refusal(
            "A number beside the bar is wider or narrower than its digits allow: a character "
            "was probably lost or added.",
            found,
        )
    sure = [s for s in side if s[2].unanimous]
    if len(sure) < len(side) and len(sure) < 3:
        return Refusal(
            "A label reads differently at different magnifications, and too few numbers "
            "are printed to check it.",
            found,
        )
    title = _title_candidates(titles[0]) if titles else []
    if len(sure) + (1 if title else 0) < 3 or len(sure) < 2:
        return Refusal(
            "Fewer than three numbers could be read by the bar: with two, nothing would "
            "catch a misread digit.",
            found,
        )
    sure.sort(key=lambda s: s[0])
    ys, vs = np.array([s[0] for s in sure]), np.array([s[1] for s in sure])
    if np.any(np.diff(ys) < 4) or not np.all(np.diff(vs) < 0):
        return Refusal("The numbers do not decrease from the top of the bar down.", found)
    slope, intercept = np.polyfit(ys, vs, 1)
    off_px = float(np.max(np.abs(slope * ys + intercept - vs)) / abs(slope))
    if off_px > max(3.0, _MAX_RESIDUAL_STEP * float(np.median(np.diff(ys)))):
        return Refusal(
            f"The numbers are not evenly spaced along the bar (one is {off_px:.0f} px off).",
            found,
        )
    if ys[0] - bar.y > 0.55 * bar.h or bar.y2 - ys[-1] > 0.55 * bar.h:
        return Refusal("The numbers cover too little of the bar.", found)
    high, low = slope * bar.y + intercept, slope * bar.y2 + intercept
    span, step = high - low, float(np.min(-np.diff(vs)))  # a left-out tick widens a gap

    def snap(value: float) -> float | None:
        """An end is a printed number or a tick-grid value it lies on; None when neither."""
        for printed in vs:
            if abs(value - printed) <= _END_AGREEMENT * span:
                return float(printed)
        grid = round(value / step) * step
        return float(round(grid, 6)) if abs(value - grid) <= 0.1 * step else None

    low_end, high_end = snap(low), snap(high)
    if titles:
        agreeing = [v for v in title if abs(v - high) <= _END_AGREEMENT * span]
        if not agreeing:
            return Refusal(
                f"The number above the bar ({titles[0].text}) disagrees with the ticks, "
                f"which give {high:.3g} at the top.",
                found,
            )
        high_end = agreeing[0]
    if low_end is None or high_end is None:
        return Refusal(
            f"An end of the bar ({low:.3g} or {high:.3g}) falls between the ticks.", found
        )
    if low_end < 0:
        return Refusal(f"The bar would start below zero ({low_end:g} {unit}).", found)
    return ScaleReading(low_end, high_end, unit, found)


def shear_speed_to_kpa(speed_m_s: np.ndarray | float) -> np.ndarray | float:
    """Young's modulus in kPa from shear-wave speed in m/s: E = 3ρc², ρ = 1000 kg/m³.

    Soft tissue is taken as incompressible and isotropic with the density of water, as the
    scanners do when they display kPa; E in Pa is 3000·c², so kPa is 3·c².
    """
    return 3.0 * np.square(speed_m_s)
