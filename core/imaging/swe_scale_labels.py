"""Read the range printed beside an SWE color bar with OCR, and accept it only when consistent.

A wrong range shifts every stiffness value of the image without any visible sign, so a
reading is accepted only when the printed labels agree with each other and with the bar:

1. the labels' text boxes are found next to the bar and each is read in 12 views
   (``core.imaging.swe_label_ocr``); a label is *sure* when most views read exactly the
   same text, and a lone glyph may be confirmed by the same digit inside a sure label;
2. the sure numbers must decrease from top to bottom, step by whole tick steps on a grid
   from zero, sit on a straight line against their height along the bar (residual at most
   12 % of a tick step), cover the bar, and one unit (kPa or m/s) must be printed by the
   bar. The ends of the bar are read off that line. A number printed above the bar
   (``≥300 kPa``, ``>200 kPa``: Tesseract knows no ``≥``) must agree with the ticks' line;
3. two numbers alone, one at each end, are accepted only when the views agree and each
   digit's glyph has that digit's counters and no other reading's (``_end_labels_certain``);
4. a refused bar is checked once more with 0-shaped glyphs read as 8 taken as 0 and lost
   decimal points put back in the other labels' format; all checks above still apply;
5. a bar still refused is accepted when every combination of the readings enough views
   gave (or leaving a label out) that passes the checks gives one and the same range
   (``every_reading``).

Anything else gives a :class:`Refusal` with the reason; the caller then asks for the range
once per scanner preset (``core.imaging.swe_presets``) and marks stiffness as relative.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytesseract

from core.common.boxes import Box
from core.imaging.roi_detect import to_rgb_u8
from core.imaging.swe_label_ocr import (
    INK_LEVELS,
    VIEW_HEIGHTS,
    Units,
    ink_contrast,
    read_views,
    split_units,
    text_boxes,
)
from core.imaging.swe_label_vote import NUMBER, Label, restore_decimals, vote_labels

__all__ = ["Label", "Refusal", "ScaleReading", "Units", "check_labels", "read_labels"]

_COMPARATOR_LOOKALIKES = "2=7>"
"""Tesseract reads '≥' as '2' or '=', and '>' now and then as '7'."""
_MAX_RESIDUAL_STEP = 0.12
_MAX_PITCH_RATIO = 1.4
_END_AGREEMENT = 0.03
_MAX_SPEED = 20.0
_MAX_COMBINATIONS = 5000


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


def _label_region(img: np.ndarray, bar: Box) -> Box:
    height, width = img.shape[:2]
    reach = max(90, 6 * bar.w)
    x0, y0 = max(bar.x - reach, 0), max(bar.y - 60, 0)
    return Box(x0, y0, min(bar.x2 + reach, width) - x0, min(bar.y2 + 40, height) - y0)


def read_labels(rgb: np.ndarray, bar: Box) -> ScaleReading | Refusal:
    """Read and check the labels printed by ``bar``; a reading or the reason there is none."""
    img = to_rgb_u8(rgb)
    region = _label_region(img, bar)
    contrast = ink_contrast(img[region.y : region.y2, region.x : region.x2])
    local = Box(bar.x - region.x, bar.y - region.y, bar.w, bar.h)
    near = []
    for box, glyphs in text_boxes(contrast):
        beside = max(local.x - box.x2, box.x - local.x2, 0) <= 3 * box.h + local.w
        centre = box.y + box.h / 2
        if beside and local.y - 4 * box.h <= centre <= local.y2 + 3 * box.h:
            near.append((box, glyphs))
    if not near:
        return Refusal("No text was found beside the color bar.")
    boxes = [b for b, _ in near]
    try:
        views = read_views(contrast, boxes, [(h, lv) for h in VIEW_HEIGHTS for lv in INK_LEVELS])
        free = read_views(contrast, boxes, [(VIEW_HEIGHTS[1], None)], whitelist=None)[0]
    except (pytesseract.TesseractNotFoundError, pytesseract.TesseractError) as exc:
        return Refusal(f"Tesseract could not run ({exc}); install tesseract-ocr (see README).")
    labels = vote_labels(contrast, near, region, views, free, zeros=False)
    reading = check_labels(labels, bar)
    if isinstance(reading, ScaleReading):
        return reading
    zeros = vote_labels(contrast, near, region, views, free, zeros=True)
    for retry in (zeros, restore_decimals(labels), restore_decimals(zeros)):
        if retry != labels and isinstance(again := check_labels(retry, bar), ScaleReading):
            return again  # a reading only the glyphs' shapes or the labels' format explain
    return every_reading(labels, bar) or reading


def _choices(label: Label, bar: Box) -> list[Label]:
    """What a number beside the bar may say: its voted text if sure, each alternative, or
    nothing (left out); labels above the bar and units stay as voted."""
    if label.box.y2 <= bar.y + 2 or not any(c.isdigit() for t in label.alternatives for c in t):
        return [label]
    said = [label] if label.sure else []
    said += [
        dataclasses.replace(label, text=text, sure=True, shapes_agree=False)
        for text in label.alternatives
        if not (label.sure and text == label.text)
    ]
    return [*said, dataclasses.replace(label, sure=False)]


def every_reading(labels: list[Label], bar: Box) -> ScaleReading | Refusal | None:
    """The range when every consistent way of reading the labels gives the same one.

    Where views of a label disagree (7.5 in five views, 7.9 in seven), voting alone leaves
    the label out and a bar may keep too few numbers. Each label may instead say any
    reading at least three views gave, or be left out; every combination goes through
    ``check_labels``. One range from all that pass is accepted; two different ones are a
    refusal naming both, as a wrong digit that still passes would be one of them. None
    when no combination passes (or there are too many to try).
    """
    options = [_choices(label, bar) for label in labels]
    if math.prod(map(len, options)) > _MAX_COMBINATIONS:
        return None
    found: dict[tuple[float, float, str], ScaleReading] = {}
    for combination in itertools.product(*options):
        reading = check_labels(list(combination), bar)
        if isinstance(reading, ScaleReading):
            found.setdefault((reading.low, reading.high, reading.units), reading)
    if len(found) > 1:
        ranges = " or ".join(f"{lo:g}–{hi:g} {unit}" for lo, hi, unit in sorted(found))
        return Refusal(
            f"The labels can be read as {ranges}: the range is not certain.", tuple(labels)
        )
    return next(iter(found.values()), None)


def _title_candidates(label: Label) -> list[float]:
    """Values a number printed above the bar may stand for (``≥`` read as '2', '=' or '7')."""
    values = []
    for view in {split_units(v)[0] for v in label.views if v} | {split_units(label.text)[0]}:
        for text in (view, view[1:] if view[:1] in _COMPARATOR_LOOKALIKES else ""):
            m = NUMBER.match(text)
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
    """Sure numbers beside the bar (height, value, label), labels above it, units; or a refusal.

    A unit counts when the label's commonest reading is one, or when a label without
    digits reads as one in any view (the '/' of 'm/s' is often misread): two units refuse.
    """
    side, titles, units = [], [], set()
    for label in labels:
        rest, unit = split_units(label.text)
        units |= {unit} if unit else set()
        if not any(c.isdigit() for c in label.text):
            units |= {u for u in (split_units(v)[1] for v in label.views) if u}
        if not rest or not any(c.isdigit() for c in rest):
            continue
        m = NUMBER.match(rest)
        if label.box.y2 <= bar.y + 2:
            titles.append(label)
        elif not label.sure:
            continue
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


def _on_grid(values: np.ndarray, step: float) -> bool:
    """Every value a whole multiple of ``step``.

    Scales print round numbers from zero (240/180/120/60, 7.5/5.0/2.5); a digit misread
    the same way in every label ('0' read as '8': 158/58/8) keeps the steps even but
    leaves the grid.
    """
    ratios = values / step
    return bool(np.all(np.abs(ratios - np.round(ratios)) <= 1e-6))


def _reading(
    low: float, high: float, unit: Units, found: tuple[Label, ...]
) -> ScaleReading | Refusal:
    """The range, unless no scanner shows it: below zero, or shear waves over 20 m/s.

    Soft tissue's shear-wave speed stays under about 16 m/s (800 kPa); a bar reaching
    far beyond is a scale whose decimal point was lost ('7.5' read as '75').
    """
    if low < 0:
        return Refusal(f"The bar would start below zero ({low:g} {unit}).", found)
    if unit == "m/s" and high > _MAX_SPEED:
        return Refusal(
            f"The bar would reach {high:g} m/s: a decimal point was probably lost.", found
        )
    return ScaleReading(low, high, unit, found)


def _only_reading(label: Label) -> bool:
    """At least half the views read exactly ``label.text``."""
    return 2 * label.views.count(label.text) >= len(label.views)


def _end_labels_certain(side: list[tuple[float, float, Label]], bar: Box) -> bool:
    """Two numbers, one at each end of the bar, that no reading could have gotten wrong.

    Nothing else on the bar can check them, so at least half the views must have read
    exactly the text, the digits' glyphs must have the counters of the digits read and not
    those of any other number a view read ('30' for '90'), and the top number must be the
    larger. No '8': a zero with a dot or slash inside (mono
    fonts) has an 8's two counters, and Tesseract reads it as one. A lone 0 at the bottom
    needs its shape only: Tesseract often reads nothing in a glyph that small, and any
    other bottom number than 0 would have to be a whole multiple of the range.
    """
    top, bottom = sorted(side, key=lambda s: s[0])
    return (
        top[0] == bar.y
        and bottom[0] == bar.y2
        and top[1] > bottom[1]
        and _only_reading(top[2])
        and (_only_reading(bottom[2]) or bottom[2].text == "0")
        and all(s[2].shapes_agree and "8" not in s[2].text for s in side)
    )


def check_labels(labels: list[Label], bar: Box) -> ScaleReading | Refusal:
    """Accept the labels' range only when they agree with each other and with the bar.

    Three numbers at least (a number above the bar counts) must lie on one line and step
    by whole multiples of one tick step, so that a misread digit shows; labels that are
    not sure (too few views agree, or a letter shows without the whitelist) are left out.
    A bar labelled only at its two ends is therefore always refused: its range is entered
    once per scanner preset.
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
    sure = side
    title = _title_candidates(titles[0]) if titles else []
    if len(sure) == 2 and not titles and _end_labels_certain(sure, bar):
        low, high = min(s[1] for s in sure), max(s[1] for s in sure)
        if _on_grid(np.array([low]), high - low):
            return _reading(low, high, unit, found)
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
    gaps = -np.diff(vs)
    if not _on_grid(gaps, gaps.min()) or not _on_grid(vs, gaps.min()):
        return Refusal(
            "The numbers do not step by whole tick steps from zero (a digit was probably misread).",
            found,
        )
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
    return _reading(low_end, high_end, unit, found)


def shear_speed_to_kpa(speed_m_s: np.ndarray | float) -> np.ndarray | float:
    """Young's modulus in kPa from shear-wave speed in m/s: E = 3ρc², ρ = 1000 kg/m³.

    Soft tissue is taken as incompressible and isotropic with the density of water, as the
    scanners do when they display kPa; E in Pa is 3000·c², so kPa is 3·c².
    """
    return 3.0 * np.square(speed_m_s)
