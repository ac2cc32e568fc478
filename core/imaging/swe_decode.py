"""Separate the SWE color overlay from its gray-scale underlay and decode it into stiffness.

Yi et al. (Sci Rep 2022) fed whole SWE screenshots to the networks because they "cannot
extract elastography images from fusion images of underlying GSU". Lee, Kim & Lee
(Diagnostics 2020;10:362) showed for lower-limb muscles, the rectus femoris included, that
mapping the colors back through the scale bar gives a usable stiffness map. This module does
that for one frame:

1. find the color scale bar and sample its colors from bottom (soft, blue) to top (hard, red);
2. read the bar's range from the labels printed beside it (kPa, or m/s converted to kPa with
   E = 3ρc², ρ = 1000 kg/m³), or take a configured range; when the labels are refused, take
   the range entered for the scanner preset (``db.swe_presets``); without any, stiffness is
   relative (0–1) and says so;
3. mask the colored pixels inside the color box;
4. undo the alpha blending and map each pixel to the nearest bar color.

Why not match colors in Lab directly: the scanner blends ``alpha·color + (1−alpha)·gray``,
and the B-mode speckle under each pixel shifts the blended color by a different amount. In
display RGB the gray underlay only moves a pixel along the gray axis (1, 1, 1), so its
component in the plane orthogonal to that axis (the "opponent plane") is exactly
``alpha`` times the bar color's component, whatever the gray was. Decoding matches there,
with one ``alpha`` per frame fitted to the pixels; the gray under each pixel then follows
from the same equation. Lab holds the bar samples in ``ColorScale`` (a perceptual space
for display and comparison).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from skimage.color import lab2rgb, rgb2lab

from core.common.boxes import Box
from core.imaging.color_box import color_box_excluding
from core.imaging.roi_detect import (
    OVERLAY_MIN_CHROMA,
    chroma,
    detect_scale_bar,
    to_rgb_u8,
    ultrasound_area_excluding,
)
from core.imaging.swe_scale_labels import Refusal, Units, read_labels, shear_speed_to_kpa
from core.imaging.swe_unmix import (
    CURVE_POINTS,
    border_pairs,
    dense_curve,
    fit_alpha,
    nearest_on_curve,
    opponent,
)

ScaleSource = Literal["read from labels", "configured", "scanner preset", "none"]

KPA_UNITS = "kPa"
RELATIVE_UNITS = "relative (0–1)"

_OPAQUE_ALPHA = 0.9
"""Above this alpha the gray under the overlay is too faint to solve for: inpaint instead."""
_OFF_SCALE_FRACTION = 0.25
"""A pixel farther from the scaled bar curve than this fraction of the bar's median chroma
is not a scale color (caliper marks, annotations) and gets NaN stiffness."""


@dataclass(frozen=True)
class PresetRange:
    """The bar range entered for a scanner preset; used only where the labels are refused."""

    low: float
    high: float
    units: Units = "kPa"


@dataclass(frozen=True)
class ColorScale:
    """The scale bar's colors from bottom (min) to top (max) and what they mean."""

    colors_lab: np.ndarray
    kpa_range: tuple[float, float] | None
    """The range at the bar's ends in ``units``: kPa, or m/s for a shear-speed scale."""
    source: ScaleSource
    units: Units = "kPa"
    refusal: str | None = None
    """Why the printed labels were not trusted (None when read or configured)."""


@dataclass(frozen=True)
class SweDecoding:
    """A decoded SWE frame: stiffness and B-mode as separate channels, plus how they were got."""

    stiffness: np.ndarray
    overlay_mask: np.ndarray
    underlay_gray: np.ndarray
    units: str
    warning: str | None
    color_box: Box | None
    alpha: float | None = None
    """The overlay opacity fitted to this frame (None when nothing was colored)."""
    scale_source: ScaleSource = "none"
    """Where the kPa range came from; "none" when stiffness is relative."""


def _check_range(kpa_range: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in kpa_range)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"kpa_range must be two numbers (min, max) in kPa, got {kpa_range!r}."
        ) from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi <= lo:
        raise ValueError(
            f"kpa_range must be finite with 0 ≤ min < max, got {kpa_range!r}; "
            "enter the values printed at the bottom and top of the scale bar."
        )
    return lo, hi


def _check_box(box: Box, width: int, height: int, what: str) -> None:
    if box.w <= 0 or box.h <= 0 or not box.inside(width, height):
        raise ValueError(
            f"The {what} {box.as_tuple()} is empty or reaches outside the {width}×{height} "
            "image; redraw it inside the image."
        )


def _bar_rows_rgb(img: np.ndarray, bar: Box) -> np.ndarray:
    """Median color of each bar row, bottom first; rows that are not colored are dropped."""
    inset = 1 if bar.w > 4 else 0
    inner = img[bar.y : bar.y2, bar.x + inset : bar.x2 - inset]
    rows = np.median(inner, axis=1).astype(np.uint8)
    keep = chroma(rows[None])[0] >= OVERLAY_MIN_CHROMA
    return rows[keep][::-1]


def read_scale_labels(rgb: np.ndarray, bar: Box) -> tuple[float, float] | None:
    """The (min, max) printed at the bottom and top of the scale bar, or None when not trusted.

    ``core.imaging.swe_scale_labels`` reads the labels with OCR and accepts them only when
    they are consistent; ``read_color_scale`` also says why a reading was refused and in
    which units (kPa or m/s) the range is printed.
    """
    reading = read_labels(rgb, bar)
    return None if isinstance(reading, Refusal) else (reading.low, reading.high)


def read_color_scale(
    rgb: np.ndarray,
    bar: Box | None = None,
    kpa_range: tuple[float, float] | None = None,
    preset: PresetRange | None = None,
) -> ColorScale | None:
    """Sample the scale bar (median across its width per row, bottom → top) and its range.

    ``bar`` defaults to the detected scale bar; None is returned when there is none. A
    configured ``kpa_range`` always wins over the printed labels; the scanner ``preset`` is
    the fallback when they are refused; without any the scale is relative (``kpa_range``
    None, source "none", ``refusal`` saying why the labels were not trusted).
    """
    img = to_rgb_u8(rgb)
    height, width = img.shape[:2]
    bar = bar if bar is not None else detect_scale_bar(img)
    if bar is None:
        return None
    _check_box(bar, width, height, "scale bar box")
    rows = _bar_rows_rgb(img, bar)
    if rows.shape[0] < 8:
        raise ValueError(
            f"The scale bar box {bar.as_tuple()} holds {rows.shape[0]} colored rows; it needs "
            "at least 8. Draw the box over the color bar itself."
        )
    lab = rgb2lab(rows[None].astype(np.float64) / 255.0)[0]
    if kpa_range is not None:
        return ColorScale(lab, _check_range(kpa_range), "configured")
    reading = read_labels(img, bar)
    if isinstance(reading, Refusal):
        if preset is not None:
            rng = _check_range((preset.low, preset.high))
            return ColorScale(lab, rng, "scanner preset", preset.units, reading.reason)
        return ColorScale(lab, None, "none", refusal=reading.reason)
    return ColorScale(lab, (reading.low, reading.high), "read from labels", reading.units)


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------


def jet_reference(n: int = 256) -> np.ndarray:
    """A MATLAB-style jet (dark blue → red), (n, 3) uint8: the assumed scale when no bar shows."""
    v = np.linspace(0.0, 1.0, n)[:, None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return np.rint(rgb * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class _Scale:
    bar: Box | None
    colors: np.ndarray
    """Bar colors bottom → top, RGB."""
    range: tuple[float, float] | None
    units: Units
    source: ScaleSource
    warning: str | None


def _scale_for(
    img: np.ndarray, kpa_range: tuple[float, float] | None, preset: PresetRange | None
) -> _Scale:
    """The scale bar, its colors, range, units, where the range came from, and a warning."""
    bar = detect_scale_bar(img)
    scale = read_color_scale(img, bar, kpa_range, preset) if bar is not None else None
    units: Units = "kPa"
    refusal = None
    if scale is None:
        colors = jet_reference()
        rng, source = None, "none"
        if kpa_range is not None:
            rng, source = _check_range(kpa_range), "configured"
        elif preset is not None:
            rng, units = _check_range((preset.low, preset.high)), preset.units
            source = "scanner preset"
        warning = (
            "No color scale bar found: colors were read against an assumed jet (blue → red) scale."
        )
    else:
        colors = np.rint(np.clip(lab2rgb(scale.colors_lab[None])[0], 0, 1) * 255.0)
        rng, units, refusal = scale.kpa_range, scale.units, scale.refusal
        source = scale.source
        warning = None
    if rng is None:
        why = f" ({refusal})" if refusal else ""
        extra = (
            "Stiffness is in relative units (0–1), not kPa: the scale labels could not be "
            f"read with confidence{why} and no range was configured. "
            "Enter the scale range to get kPa."
        )
        warning = f"{warning} {extra}" if warning else extra
    return _Scale(bar, colors, rng, units, source, warning)


def _check_alpha(alpha: float) -> float:
    value = float(alpha)
    if not 0.05 <= value <= 1.0:
        raise ValueError(
            f"alpha is the overlay opacity and must lie in [0.05, 1], got {alpha!r}; "
            "pass None to fit it from the frame."
        )
    return value


def decode_swe(
    rgb: np.ndarray,
    *,
    color_box: Box | None = None,
    kpa_range: tuple[float, float] | None = None,
    preset: PresetRange | None = None,
    gsu: np.ndarray | None = None,
    alpha: float | None = None,
) -> SweDecoding:
    """Decode one SWE frame into a stiffness map and the gray-scale image under the overlay.

    ``color_box`` defaults to the detected one; ``kpa_range`` (min, max) overrides the printed
    labels; ``preset``, the range entered for the scanner preset, is used where the labels are
    refused; ``gsu``, the same scan without the overlay (same size), supplies the underlay
    instead of estimating it; ``alpha`` is the overlay opacity when known (fitted otherwise).
    Stiffness is NaN where nothing is colored or a color is not on the scale. Without a
    readable or configured range the result is in relative units with a warning, never
    guessed kPa.
    """
    img = to_rgb_u8(rgb)
    height, width = img.shape[:2]
    under = None
    if gsu is not None:
        under_rgb = to_rgb_u8(gsu)
        if under_rgb.shape != img.shape:
            raise ValueError(
                f"The GSU frame is {under_rgb.shape[1]}×{under_rgb.shape[0]} but the SWE frame "
                f"is {width}×{height}; pass the GSU screenshot of the same scan."
            )
        under = cv2.cvtColor(under_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    scale = _scale_for(img, kpa_range, preset)
    bar, rng_kpa, warning = scale.bar, scale.range, scale.warning
    if color_box is None:
        area = ultrasound_area_excluding(img, bar)
        color_box = color_box_excluding(img, area, bar, require_bar=False)
    else:
        _check_box(color_box, width, height, "color box")

    mask = np.zeros((height, width), bool)
    if color_box is not None:
        sub = img[color_box.y : color_box.y2, color_box.x : color_box.x2]
        mask[color_box.y : color_box.y2, color_box.x : color_box.x2] = (
            chroma(sub) >= OVERLAY_MIN_CHROMA
        )
    if bar is not None:
        mask[bar.y : bar.y2, bar.x : bar.x2] = False

    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    stiffness = np.full((height, width), np.nan, np.float32)
    units = KPA_UNITS if rng_kpa is not None else RELATIVE_UNITS
    if not mask.any():
        underlay = under if under is not None else gray
        return SweDecoding(
            stiffness, mask, underlay, units, warning, color_box, scale_source=scale.source
        )

    curve = dense_curve(scale.colors.astype(np.float64))
    curve_opp = opponent(curve)
    pix = img[mask].astype(np.float32)

    def border() -> tuple[np.ndarray, np.ndarray] | None:
        if under is not None:
            return pix, under[mask]
        return border_pairs(img, gray, mask, color_box, bar)

    if alpha is None:
        alpha, guessed = fit_alpha(pix, curve, border)
        if guessed:
            note = (
                "The overlay opacity could not be fitted (the colors span one hue and there is "
                "no B-mode around the color box): stiffness near the ends of the scale may be "
                "off. Give the opacity, or the GSU frame of the same scan."
            )
            warning = f"{warning} {note}" if warning else note
    else:
        alpha = _check_alpha(alpha)
    idx, dist = nearest_on_curve(pix, curve_opp, alpha)
    t = idx / (CURVE_POINTS - 1)
    on_scale = dist <= _OFF_SCALE_FRACTION * alpha * np.median(np.linalg.norm(curve_opp, axis=1))
    values = t if rng_kpa is None else rng_kpa[0] + t * (rng_kpa[1] - rng_kpa[0])
    if rng_kpa is not None and scale.units == "m/s":
        values = shear_speed_to_kpa(values)  # the bar is linear in speed, not in kPa
    stiffness[mask] = np.where(on_scale, values, np.nan)

    if under is None:
        if alpha <= _OPAQUE_ALPHA:
            under = gray.copy()
            solved = (pix.mean(axis=1) - alpha * curve[idx].mean(axis=1)) / (1.0 - alpha)
            under[mask] = np.clip(solved, 0.0, 255.0)
        else:
            gray_u8 = np.rint(gray).astype(np.uint8)
            under = cv2.inpaint(gray_u8, mask.astype(np.uint8), 5, cv2.INPAINT_TELEA)
            under = under.astype(np.float32)
    return SweDecoding(stiffness, mask, under, units, warning, color_box, alpha, scale.source)


def stiffness_stats(stiffness: np.ndarray, roi: Box | None = None) -> dict[str, float]:
    """Mean, median, quartiles, IQR and colored fraction of a stiffness map (NaN-aware).

    Median and IQR are what muscle SWE studies report (skewed, heterogeneous maps);
    ``fraction_colored`` tells how much of the ROI had a shear-wave estimate at all.
    """
    arr = np.asarray(stiffness, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"Expected a 2-D stiffness map, got shape {arr.shape}.")
    if roi is not None:
        _check_box(roi, arr.shape[1], arr.shape[0], "ROI")
        arr = arr[roi.y : roi.y2, roi.x : roi.x2]
    values = arr[np.isfinite(arr)]
    nan = float("nan")
    if values.size == 0:
        return {
            "mean": nan,
            "median": nan,
            "q1": nan,
            "q3": nan,
            "iqr": nan,
            "fraction_colored": 0.0,
        }
    q1, median, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    return {
        "mean": float(values.mean()),
        "median": median,
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "fraction_colored": values.size / arr.size if arr.size else 0.0,
    }
