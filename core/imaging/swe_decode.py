"""Separate the SWE color overlay from its gray-scale underlay and decode it into stiffness.

Yi et al. (Sci Rep 2022) fed whole SWE screenshots to the networks because they "cannot
extract elastography images from fusion images of underlying GSU". Lee, Kim & Lee
(Diagnostics 2020;10:362) showed for lower-limb muscles, the rectus femoris included, that
mapping the colors back through the scale bar gives a usable stiffness map. This module does
that for one frame:

1. find the color scale bar and sample its colors from bottom (soft, blue) to top (hard, red);
2. read the bar's kPa range from the labels printed beside it, or take a configured range;
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

import functools
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

ScaleSource = Literal["read from labels", "configured", "none"]

KPA_UNITS = "kPa"
RELATIVE_UNITS = "relative (0–1)"

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MIN_GLYPH_SCORE = 0.6
_MIN_WORD_SCORE = 0.75
_INK_LEVEL = 100
_TEXT_LEVEL = 110
_BLACK_BACKGROUND = 50
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
    source: ScaleSource


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


# ---------------------------------------------------------------------------------------
# Reading the printed labels
# ---------------------------------------------------------------------------------------


def _normalize_glyph(patch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resampled to ``size`` (w, h), blurred, zero mean, unit norm: ready for correlation."""
    g = cv2.resize(patch.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    g = cv2.GaussianBlur(g, (0, 0), 0.8)
    g -= g.mean()
    return g / max(float(np.linalg.norm(g)), 1e-6)


def _ink_crop(canvas: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(canvas > _INK_LEVEL)
    return canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _render(text: str, scale: float, thickness: int) -> np.ndarray:
    (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    canvas = np.zeros((th + baseline + 12, tw + 12), np.uint8)
    cv2.putText(canvas, text, (5, th + 5), _FONT, scale, 255, thickness, cv2.LINE_AA)
    return _ink_crop(canvas)


def _font_sizes(height: int) -> list[tuple[float, int, float]]:
    """(scale, thickness, resample ratio) at which digit ink is ``height`` px tall (±1 px).

    At label sizes (7–20 px) the rasterization depends on the exact font scale and stroke
    thickness, so several scales (±15 %) and thicknesses 1–2 are tried; each rendering is
    then resampled to exactly ``height`` rows.
    """
    sizes = []
    for thickness in (1, 2):
        base = _render("0", 1.0, thickness).shape[0]
        for factor in np.linspace(0.85, 1.15, 7):
            scale = height / base * factor
            ink = _render("0", scale, thickness).shape[0]
            if abs(ink - height) <= 1:
                sizes.append((float(scale), thickness, height / ink))
    return sizes


def _resampled(crop: np.ndarray, ratio: float, height: int) -> np.ndarray:
    width = max(1, round(crop.shape[1] * ratio))
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _word_templates(height: int, text: str) -> tuple[np.ndarray, ...]:
    """``text`` drawn by cv2.putText (FONT_HERSHEY_SIMPLEX), ink ``height`` px tall."""
    return tuple(
        _resampled(_render(text, scale, thickness), ratio, height)
        for scale, thickness, ratio in _font_sizes(height)
    )


@dataclass(frozen=True)
class _DigitFont:
    """The ten digits at one font size, with the spacing cv2.putText gives them."""

    glyphs: dict[str, np.ndarray]
    pitch: float  # origin-to-origin advance of a digit, px
    dot: float  # extra advance a '.' adds between two digits, px
    scale: float
    thickness: int
    ratio: float  # resampling that brings the rendered ink to the strip height


@functools.lru_cache(maxsize=64)
def _digit_fonts(height: int) -> tuple[_DigitFont, ...]:
    fonts = []
    for scale, thickness, ratio in _font_sizes(height):
        glyphs = {d: _resampled(_render(d, scale, thickness), ratio, height) for d in "0123456789"}
        ten = cv2.getTextSize("0" * 10, _FONT, scale, thickness)[0][0]
        two = cv2.getTextSize("00", _FONT, scale, thickness)[0][0]
        dotted = cv2.getTextSize("0.0", _FONT, scale, thickness)[0][0]
        pitch, dot = ten / 10 * ratio, (dotted - two) * ratio
        fonts.append(_DigitFont(glyphs, pitch, dot, scale, thickness, ratio))
    return tuple(fonts)


def _matches_word(patch: np.ndarray, text: str, min_score: float = _MIN_GLYPH_SCORE) -> bool:
    """Whether a whole word patch looks like ``text`` drawn at its height (any font size).

    Both are resampled to the patch size after a width check (±25 %), so this compares
    shape, not spacing; the glyph-by-glyph reading checks the spacing.
    """
    h, w = patch.shape
    obs = _normalize_glyph(patch, (w, h))
    for tmpl in _word_templates(h, text):
        if abs(math.log(w / tmpl.shape[1])) > 0.25:
            continue
        if float((obs * _normalize_glyph(tmpl, (w, h))).sum()) >= min_score:
            return True
    return False


def _best_digits(padded: np.ndarray, font: _DigitFont) -> tuple[np.ndarray, np.ndarray]:
    """Best digit correlation, and that digit, for a glyph centred at each half-pixel."""
    best = np.full(2 * padded.shape[1] + 2, -1.0)
    digit = np.full(best.shape, "", dtype="<U1")
    for d, glyph in font.glyphs.items():
        gw = glyph.shape[1]
        if gw > padded.shape[1]:
            continue
        resp = cv2.matchTemplate(padded, glyph, cv2.TM_CCOEFF_NORMED)[0]
        centers = 2 * np.arange(resp.size) + gw - 1
        better = resp > best[centers]
        best[centers[better]] = resp[better]
        digit[centers[better]] = d
    return best, digit


def _read_number(strip: np.ndarray) -> str | None:
    """Read a number (digits, at most one '.') printed in FONT_HERSHEY_SIMPLEX.

    cv2.putText sets digits on a fixed pitch, and a '.' widens one step by its own advance.
    For each font size, every layout (number of digits, where the dot is) is scored by the
    best digit correlation at each grid position (±½ px). A layout counts when every digit
    correlates at least ``_MIN_GLYPH_SCORE``, its glyphs start and end within 1 px of the
    ink, and a dot position holds ink near the baseline. The best layout wins unless one
    reading otherwise comes within 0.03. Touching or broken glyphs, which defeat connected
    components at these sizes, read fine; a lost '.' or a space fits no layout, so "2.5"
    never reads "25".
    """
    h, w = strip.shape
    pad = 2
    padded = cv2.copyMakeBorder(strip.astype(np.float32), 0, 0, pad, pad, cv2.BORDER_CONSTANT, 0)
    base_ink = (padded[int(0.6 * h) :] > _INK_LEVEL).any(axis=0)
    half = max(1, round(0.18 * h))
    results: dict[str, tuple[float, _DigitFont]] = {}
    for font in _digit_fonts(h):
        best, digit = _best_digits(padded, font)
        widths = {d: g.shape[1] for d, g in font.glyphs.items()}
        mean_w = float(np.mean(list(widths.values())))
        for n in range(1, 9):
            for dot_after in [None, *range(n - 1)]:
                dotted = font.dot if dot_after is not None else 0.0
                if abs((n - 1) * font.pitch + dotted + mean_w - w) > 0.25 * h + 1:
                    continue
                offsets = font.pitch * np.arange(n) + font.dot * (
                    np.arange(n) > (dot_after if dot_after is not None else n)
                )
                starts = 2 * pad + mean_w - 1 + np.arange(-4, 5)  # first centre, half-pixels
                lo = np.maximum(np.rint(starts[:, None] + 2 * offsets[None, :]).astype(int) - 1, 0)
                window = np.minimum(lo[:, :, None] + np.arange(3), best.size - 1)
                found = np.take_along_axis(window, best[window].argmax(axis=2)[:, :, None], axis=2)[
                    :, :, 0
                ]
                scores = best[found]
                for row, score in zip(
                    found[scores.min(axis=1) >= _MIN_GLYPH_SCORE],
                    scores.mean(axis=1)[scores.min(axis=1) >= _MIN_GLYPH_SCORE],
                    strict=True,
                ):
                    left = (row[0] - widths[digit[row[0]]] + 1) / 2
                    right = (row[-1] + widths[digit[row[-1]]] + 1) / 2
                    if abs(left - pad) > 1 or abs(right - (w + pad)) > 1:
                        continue  # the layout leaves ink unread or reads past it
                    text = "".join(digit[row])
                    if dot_after is not None:
                        mid = round((row[dot_after] + row[dot_after + 1]) / 4)
                        if not base_ink[max(0, mid - half) : mid + half + 1].any():
                            continue
                        text = f"{text[: dot_after + 1]}.{text[dot_after + 1 :]}"
                    if text not in results or score > results[text][0]:
                        results[text] = (float(score), font)
    if not results:
        return None
    ranked = sorted(results.items(), key=lambda kv: kv[1][0], reverse=True)
    text, (score, _) = ranked[0]
    if len(ranked) > 1 and ranked[1][1][0] > score - 0.03:
        return None
    # Render the reading and compare it with the whole strip: a part of a word, or letters
    # taken for digits one by one, does not look like the number drawn as a whole.
    if not _matches_word(strip, text, _MIN_WORD_SCORE):
        return None
    return text


def _read_word(gray: np.ndarray, box: Box) -> str | None:
    """Read a word as "kPa" or a number (digits with at most one '.'); None when neither."""
    patch = gray[box.y : box.y2, box.x : box.x2]
    if _matches_word(patch, "kPa"):
        return "kPa"
    return _read_number(patch)


def _words(gray: np.ndarray, region: Box) -> list[Box]:
    """Boxes of the words of white text on black inside ``region`` (frame coordinates).

    Text is told from B-mode speckle by its surround: the 2-px ring around a glyph is mostly
    black, around a bright speckle grain mostly gray. A word whose line runs on past its
    ends into anything bright (a glyph lost to the speckle test, the frame edge) is dropped,
    so a number is never read in part.
    """
    gray = gray[region.y : region.y2, region.x : region.x2]
    dark = cv2.integral((gray < _BLACK_BACKGROUND).astype(np.uint8))
    rh, rw = gray.shape

    def dark_count(x0: int, y0: int, x1: int, y1: int) -> int:
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, rw), min(y1, rh)
        return int(dark[y1, x1] - dark[y0, x1] - dark[y1, x0] + dark[y0, x0])

    def on_black(b: Box) -> bool:
        outer = (min(b.x2 + 2, rw) - max(b.x - 2, 0)) * (min(b.y2 + 2, rh) - max(b.y - 2, 0))
        ring = dark_count(b.x - 2, b.y - 2, b.x2 + 2, b.y2 + 2) - dark_count(b.x, b.y, b.x2, b.y2)
        return ring >= 0.6 * (outer - b.area)

    white = (gray >= _TEXT_LEVEL).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(white, connectivity=8)
    glyphs = [
        box
        for box in (Box(*(int(v) for v in stats[i, :4])) for i in range(1, n))
        if box.h <= 40 and box.w <= 40 and on_black(box)
    ]
    glyphs.sort(key=lambda b: b.x)
    groups: list[list[Box]] = []
    for g in glyphs:
        for group in groups:
            gy0, gy1 = min(b.y for b in group), max(b.y2 for b in group)
            overlap = min(gy1, g.y2) - max(gy0, g.y)
            gap = g.x - max(b.x2 for b in group)
            if overlap >= 0.5 * min(g.h, gy1 - gy0) and gap <= 0.6 * max(gy1 - gy0, g.h):
                group.append(g)
                break
        else:
            groups.append([g])
    words = []
    for group in groups:
        x0, y0 = min(b.x for b in group), min(b.y for b in group)
        box = Box(x0, y0, max(b.x2 for b in group) - x0, max(b.y2 for b in group) - y0)
        if box.h < 5 or box.x < 4 or box.x2 > gray.shape[1] - 4:
            continue  # too small, or cut by the search region or the frame edge
        left = gray[box.y : box.y2, box.x - 4 : box.x - 1]
        right = gray[box.y : box.y2, box.x2 + 1 : box.x2 + 4]
        if (left >= _TEXT_LEVEL).any() or (right >= _TEXT_LEVEL).any():
            continue
        words.append(Box(box.x + region.x, box.y + region.y, box.w, box.h))
    return words


def read_scale_labels(rgb: np.ndarray, bar: Box) -> tuple[float, float] | None:
    """The (min, max) kPa printed at the bottom and top of the scale bar, or None.

    Handles the labels the phantom and GE LOGIQ screenshots print: white digits in a
    FONT_HERSHEY_SIMPLEX-like stroke font beside or above the bar ends, and the unit "kPa"
    above the bar. Each glyph is matched against digits drawn with cv2.putText at the same
    height. Other fonts may not read; the function then returns None rather than guessing,
    and the caller must configure the range. A reading needs the unit "kPa" near the top of
    the bar (so an m/s scale is never taken for kPa), a number as tall as the unit at the top
    and one at the bottom, with top > bottom.
    """
    img = to_rgb_u8(rgb)
    height, width = img.shape[:2]
    _check_box(bar, width, height, "scale bar box")
    region = pad_box(bar, max(90, 6 * bar.w), width, height)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    gray[chroma(img) > 40] = 0  # white text only: the bar and colored marks are not glyphs
    words = _words(gray, region)
    units = [
        box
        for box in words
        if box.y2 <= bar.y + 0.15 * bar.h
        and max(bar.x - box.x2, box.x - bar.x2, 0) <= 3 * box.h + bar.w
        and _matches_word(gray[box.y : box.y2, box.x : box.x2], "kPa")
    ]
    if not units:
        return None
    text_h = units[0].h  # digits are as tall as "kPa" in this font; lower-case words are not

    def pick(end_y: float) -> float | None:
        """The number printed nearest to one end of the bar, beside or beyond it."""
        near = []
        for box in words:
            dy = abs(box.y + box.h / 2 - end_y)
            dx = max(bar.x - box.x2, box.x - bar.x2, 0)
            if (
                dx <= 2.5 * box.h + bar.w
                and dy <= max(3 * box.h, 0.15 * bar.h)
                and abs(box.h - text_h) <= 0.12 * text_h + 1
            ):
                near.append((dy + dx, box))
        for _, box in sorted(near, key=lambda item: item[0]):
            text = _read_word(gray, box)
            if text not in (None, "kPa"):
                return float(text)
        return None

    top, bottom = pick(bar.y), pick(bar.y2)
    if top is None or bottom is None or top <= bottom:
        return None
    return bottom, top


def read_color_scale(
    rgb: np.ndarray, bar: Box | None = None, kpa_range: tuple[float, float] | None = None
) -> ColorScale | None:
    """Sample the scale bar (median across its width per row, bottom → top) and its kPa range.

    ``bar`` defaults to the detected scale bar; None is returned when there is none. A
    configured ``kpa_range`` always wins over the printed labels; without either the scale is
    relative (``kpa_range`` None, source "none").
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
    labels = read_scale_labels(img, bar)
    return ColorScale(lab, labels, "read from labels" if labels else "none")


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
) -> tuple[Box | None, np.ndarray, tuple[float, float] | None, str | None]:
    """The scale bar, its colors (bottom → top, RGB), its kPa range and a warning, if any."""
    bar = detect_scale_bar(img)
    scale = read_color_scale(img, bar, kpa_range) if bar is not None else None
    if scale is None:
        colors = jet_reference()
        rng_kpa = _check_range(kpa_range) if kpa_range is not None else None
        warning = (
            "No color scale bar found: colors were read against an assumed jet (blue → red) scale."
        )
    else:
        colors = np.rint(np.clip(lab2rgb(scale.colors_lab[None])[0], 0, 1) * 255.0)
        rng_kpa = scale.kpa_range
        warning = None
    if rng_kpa is None:
        extra = (
            "Stiffness is in relative units (0–1), not kPa: no kPa range could be read from "
            "the screen and none was configured. Enter the scale range to get kPa."
        )
        warning = f"{warning} {extra}" if warning else extra
    return bar, colors, rng_kpa, warning


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
    bar, colors, rng_kpa, warning = _scale_for(img, kpa_range)
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
