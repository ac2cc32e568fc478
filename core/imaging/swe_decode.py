"""Separate the SWE color overlay from its gray-scale underlay and decode it into stiffness.

Yi et al. (Sci Rep 2022) fed whole SWE screenshots to the networks because they "cannot
extract elastography images from fusion images of underlying GSU". Lee, Kim & Lee
(Diagnostics 2020;10:362) showed for lower-limb muscles, the rectus femoris included, that
mapping the colors back through the scale bar gives a usable stiffness map. This module does
that for one frame:

1. find the color scale bar and sample its colors from bottom (soft, blue) to top (hard, red);
2. read the bar's range from the labels printed beside it (kPa, or m/s converted to kPa with
   E = 3ρc², ρ = 1000 kg/m³), or take a configured range; without either, stiffness is
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from scipy.spatial import cKDTree
from skimage.color import lab2rgb, rgb2lab

from core.common.boxes import Box
from core.imaging.roi_detect import (
    OVERLAY_MIN_CHROMA,
    NoImageContentError,
    chroma,
    color_box_excluding,
    detect_scale_bar,
    pad_box,
    to_rgb_u8,
    ultrasound_area_excluding,
)
from core.imaging.swe_scale_labels import Refusal, Units, read_labels, shear_speed_to_kpa

ScaleSource = Literal["read from labels", "configured", "none"]

KPA_UNITS = "kPa"
RELATIVE_UNITS = "relative (0–1)"

_ALPHA_MIN = 0.2
_ALPHA_SAMPLE = 600
_CURVE_POINTS = 1024
_OPAQUE_ALPHA = 0.9
"""Above this alpha the gray under the overlay is too faint to solve for: inpaint instead."""
_OFF_SCALE_FRACTION = 0.25
"""A pixel farther from the scaled bar curve than this fraction of the bar's median chroma
is not a scale color (caliper marks, annotations) and gets NaN stiffness."""


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
    rgb: np.ndarray, bar: Box | None = None, kpa_range: tuple[float, float] | None = None
) -> ColorScale | None:
    """Sample the scale bar (median across its width per row, bottom → top) and its range.

    ``bar`` defaults to the detected scale bar; None is returned when there is none. A
    configured ``kpa_range`` always wins over the printed labels; without either the scale is
    relative (``kpa_range`` None, source "none", ``refusal`` saying why the labels were not
    trusted).
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


def _opponent(rgb: np.ndarray) -> np.ndarray:
    """The plane orthogonal to gray, scaled so distances are isotropic: (R−G, (R+G−2B)/√3)."""
    rgb = rgb.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack([r - g, (r + g - 2.0 * b) / math.sqrt(3.0)], axis=-1)


def _dense_curve(colors: np.ndarray) -> np.ndarray:
    """Resample bar colors (bottom → top) to a fine curve, linear in RGB between samples."""
    src = np.linspace(0.0, 1.0, colors.shape[0])
    dst = np.linspace(0.0, 1.0, _CURVE_POINTS)
    return np.stack([np.interp(dst, src, colors[:, c]) for c in range(3)], axis=1)


class _AlphaFit:
    """Distances from sampled pixels to the scaled bar curve, for many candidate alphas.

    ``|p − a·c|² = |p|² − 2a·p·c + a²|c|²``: the dot products are computed once, so each
    candidate alpha costs one pass over a (pixels × curve samples) array.
    """

    def __init__(self, pixels: np.ndarray, curve: np.ndarray) -> None:
        self.curve = curve[:: max(1, curve.shape[0] // 256)]
        self.pixels = pixels
        pts, crv = _opponent(pixels), _opponent(self.curve).astype(np.float32)
        self.cross2 = 2.0 * (pts @ crv.T)
        self.p2 = (pts * pts).sum(axis=1)
        self.c2 = (crv * crv).sum(axis=1)[None, :]
        self.cap = 0.1 * float(np.median(np.sqrt(self.c2)))

    def _part(self, alpha: float) -> np.ndarray:
        """``|p − a·c|² − |p|²`` divided by ``a``, for every pixel and curve sample."""
        return np.float32(alpha) * self.c2 - self.cross2

    def color_cost(self, alpha: float) -> float:
        """Mean capped distance: how well ``alpha`` explains the pixels' colors."""
        d2 = self.p2 + alpha * self._part(alpha).min(axis=1)
        return float(np.minimum(np.sqrt(np.maximum(d2, 0.0)), self.cap).mean())

    def gray_cost(self, alpha: float, expected_gray: np.ndarray) -> float:
        """How far the gray left after removing ``alpha`` × the matched color is from the expected.

        ``mean(P) − alpha·mean(C)`` should equal ``(1 − alpha)·gray``; the median residual over
        the pixels is near zero only for the right alpha.
        """
        idx = self._part(alpha).argmin(axis=1)
        rest = self.pixels.mean(axis=1) - alpha * self.curve[idx].mean(axis=1)
        return abs(float(np.median(rest - (1.0 - alpha) * expected_gray)))


def _fit_alpha(
    pixels: np.ndarray,
    curve: np.ndarray,
    border: Callable[[], tuple[np.ndarray, np.ndarray] | None],
) -> tuple[float, bool]:
    """The overlay opacity of one frame, and whether it had to be guessed.

    The colors fix alpha when they span hues: a wrong alpha moves the cyan-to-red pixels off
    the scaled curve. Pixels of one hue only (a whole box in jet's dark-blue to blue run, soft
    muscle on a wide scale) fit a plateau of alphas equally. Then ``border()`` decides:
    colored pixels paired with the gray they should hide (the GSU frame, or the B-mode just
    outside the color box, whose brightness continues under its edge). The second value is
    True when neither could decide.
    """
    rng = np.random.default_rng(0)

    def sample(n: int) -> np.ndarray:
        return rng.choice(n, _ALPHA_SAMPLE, replace=False) if n > _ALPHA_SAMPLE else np.arange(n)

    fit = _AlphaFit(pixels[sample(pixels.shape[0])], curve)
    coarse = np.round(np.arange(_ALPHA_MIN, 1.0001, 0.05), 2)
    costs = np.array([fit.color_cost(a) for a in coarse])
    best = float(costs.min())
    plateau = coarse[costs <= best + max(1.5, 0.5 * best)]
    pairs = border() if plateau.max() - plateau.min() >= 0.1 else None
    if pairs is None:
        start = float(coarse[int(np.argmin(costs))])
        chooser, guessed = fit.color_cost, plateau.max() - plateau.min() >= 0.1
    else:
        pick = sample(pairs[0].shape[0])
        gray_fit, expected = _AlphaFit(pairs[0][pick], curve), pairs[1][pick]
        start = min(plateau, key=lambda a: gray_fit.gray_cost(a, expected))
        chooser, guessed = (lambda a: gray_fit.gray_cost(a, expected)), False
    fine = np.arange(max(_ALPHA_MIN, start - 0.04), min(1.0, start + 0.04) + 1e-9, 0.01)
    return float(round(min(fine, key=chooser), 2)), guessed


def _nearest_on_curve(
    pixels: np.ndarray, curve_opp: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest point of ``alpha × curve`` and the distance, per uint8 RGB pixel.

    In the opponent plane a uint8 pixel has integer coordinates (R−G, R+G−2B), and the
    gray underlay does not change them, so a frame holds only a few thousand distinct ones:
    the KD-tree is queried once per distinct point.
    """
    p = pixels.astype(np.int32)
    u = p[:, 0] - p[:, 1]
    w = p[:, 0] + p[:, 1] - 2 * p[:, 2]
    codes, inverse = np.unique((u + 255) * 1021 + (w + 510), return_inverse=True)
    pts = np.stack([codes // 1021 - 255, (codes % 1021 - 510) / math.sqrt(3.0)], axis=1)
    dist, idx = cKDTree(alpha * curve_opp).query(pts)
    return idx[inverse], dist[inverse]


def _scale_for(
    img: np.ndarray, kpa_range: tuple[float, float] | None
) -> tuple[Box | None, np.ndarray, tuple[float, float] | None, Units, str | None]:
    """The scale bar, its colors (bottom → top, RGB), range, its units and a warning, if any."""
    bar = detect_scale_bar(img)
    scale = read_color_scale(img, bar, kpa_range) if bar is not None else None
    units: Units = "kPa"
    refusal = None
    if scale is None:
        colors = jet_reference()
        rng = _check_range(kpa_range) if kpa_range is not None else None
        warning = (
            "No color scale bar found: colors were read against an assumed jet (blue → red) scale."
        )
    else:
        colors = np.rint(np.clip(lab2rgb(scale.colors_lab[None])[0], 0, 1) * 255.0)
        rng, units, refusal = scale.kpa_range, scale.units, scale.refusal
        warning = None
    if rng is None:
        why = f" ({refusal})" if refusal else ""
        extra = (
            "Stiffness is in relative units (0–1), not kPa: the scale labels could not be "
            f"read with confidence{why} and no range was configured. "
            "Enter the scale range to get kPa."
        )
        warning = f"{warning} {extra}" if warning else extra
    return bar, colors, rng, units, warning


def _check_alpha(alpha: float) -> float:
    value = float(alpha)
    if not 0.05 <= value <= 1.0:
        raise ValueError(
            f"alpha is the overlay opacity and must lie in [0.05, 1], got {alpha!r}; "
            "pass None to fit it from the frame."
        )
    return value


def _border_pairs(
    img: np.ndarray, gray: np.ndarray, mask: np.ndarray, box: Box, bar: Box | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Colored pixels just inside the color box edge, paired with the B-mode gray outside it.

    The tissue continues under the box edge, so the median gray 3–8 px outside (uncolored,
    within the image area, past the box outline) estimates the gray the overlay hides just
    inside. None when either band is too thin to trust (box filling the image area).
    """
    height, width = gray.shape
    inner = np.zeros_like(mask)
    inner[box.y : box.y2, box.x : box.x2] = True
    inner[box.y + 4 : box.y2 - 4, box.x + 4 : box.x2 - 4] = False
    inner &= mask
    far, near = pad_box(box, 8, width, height), pad_box(box, 2, width, height)
    outer = np.zeros_like(mask)
    outer[far.y : far.y2, far.x : far.x2] = True
    outer[near.y : near.y2, near.x : near.x2] = False
    try:
        area = ultrasound_area_excluding(img, bar)
    except NoImageContentError:
        return None
    within = np.zeros_like(mask)
    within[area.y : area.y2, area.x : area.x2] = True
    outer &= within & (chroma(img) < OVERLAY_MIN_CHROMA)
    if np.count_nonzero(inner) < 50 or np.count_nonzero(outer) < 50:
        return None
    expected = np.full(np.count_nonzero(inner), np.median(gray[outer]), np.float32)
    return img[inner].astype(np.float32), expected


def decode_swe(
    rgb: np.ndarray,
    *,
    color_box: Box | None = None,
    kpa_range: tuple[float, float] | None = None,
    gsu: np.ndarray | None = None,
    alpha: float | None = None,
) -> SweDecoding:
    """Decode one SWE frame into a stiffness map and the gray-scale image under the overlay.

    ``color_box`` defaults to the detected one; ``kpa_range`` (min, max) overrides the printed
    labels; ``gsu``, the same scan without the overlay (same size), supplies the underlay
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
    bar, colors, rng_kpa, scale_units, warning = _scale_for(img, kpa_range)
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
        return SweDecoding(
            stiffness, mask, under if under is not None else gray, units, warning, color_box
        )

    curve = _dense_curve(colors.astype(np.float64))
    curve_opp = _opponent(curve)
    pix = img[mask].astype(np.float32)

    def border() -> tuple[np.ndarray, np.ndarray] | None:
        if under is not None:
            return pix, under[mask]
        return _border_pairs(img, gray, mask, color_box, bar)

    if alpha is None:
        alpha, guessed = _fit_alpha(pix, curve, border)
        if guessed:
            note = (
                "The overlay opacity could not be fitted (the colors span one hue and there is "
                "no B-mode around the color box): stiffness near the ends of the scale may be "
                "off. Give the opacity, or the GSU frame of the same scan."
            )
            warning = f"{warning} {note}" if warning else note
    else:
        alpha = _check_alpha(alpha)
    idx, dist = _nearest_on_curve(pix, curve_opp, alpha)
    t = idx / (_CURVE_POINTS - 1)
    on_scale = dist <= _OFF_SCALE_FRACTION * alpha * np.median(np.linalg.norm(curve_opp, axis=1))
    values = t if rng_kpa is None else rng_kpa[0] + t * (rng_kpa[1] - rng_kpa[0])
    if rng_kpa is not None and scale_units == "m/s":
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
    return SweDecoding(stiffness, mask, under, units, warning, color_box, alpha)


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
