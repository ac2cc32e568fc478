"""Deterministic phantom screenshots of a transverse rectus femoris (RF) scan.

The study's images (Yi et al., Sci Rep 2022; GE LOGIQ E9, linear 9–5 MHz probe) cannot ship,
so the demo, the tests and the benchmarks render look-alikes: a 640×480 GE-LOGIQ-like
screenshot with burned-in text, a depth scale, and the layers a radiologist expects from
the skin down (skin, subcutaneous fat with septa, RF fascia, the lens-shaped RF belly with
its "starry night" perimysium, deep aponeurosis, vastus intermedius, femur with shadow).
The echogenicity follows the study's 4-point grade, and the SWE frame overlays a jet-coded
stiffness map in a color box, with the color scale bar at the left of the screen as in the
study (Fig. 4). Every ground truth (boxes, scale, painted stiffness, RF mask) comes back
with the pixels, so ROI and SWE decoders can be checked against it.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

import cv2
import numpy as np

from core.cases.phantom_bmode import bmode
from core.common.boxes import Box

FRAME_W, FRAME_H = 640, 480
US_BOX = Box(150, 56, 400, 360)
"""Where the ultrasound image lies in every phantom frame (fixed, like one scanner preset)."""
DEPTH_CM = 4.0
PX_PER_CM = US_BOX.h / DEPTH_CM
SCALE_BAR_BOX = Box(118, 96, 12, 200)
"""The SWE color scale bar: left of the image area, as on the study's scanner."""
SWE_ALPHA = 0.65
"""Opacity of the stiffness colors over the B-mode, close to the scanner's default."""
SCALE_MAX_CHOICES_KPA = (40.0, 60.0, 80.0, 100.0, 120.0, 150.0, 200.0, 300.0)
"""Scale tops a sonographer picks from; the phantom takes the first ≥ 3× the median."""

_TEXT_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_LIGHT_GRAY = (200, 200, 200)


class PhantomError(ValueError):
    """A phantom was asked for with inputs that a real scan could not have."""


@dataclass(frozen=True)
class PhantomCase:
    """One rendered patient: both screenshots and the ground truth a decoder is checked on."""

    gsu: np.ndarray
    swe: np.ndarray
    us_box: Box
    color_box: Box
    scale_bar_box: Box
    scale_kpa: tuple[float, float]
    stiffness_kpa: np.ndarray
    rf_mask: np.ndarray


def jet_colormap(values01: np.ndarray) -> np.ndarray:
    """MATLAB-style jet (dark blue → red), the scanner's soft → hard color coding.

    Values are clipped to [0, 1]; returns uint8 RGB with one more trailing axis of size 3.
    """
    v = np.clip(np.asarray(values01, dtype=np.float32), 0.0, 1.0)[..., None]
    centers = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # R, G, B
    rgb = np.clip(1.5 - np.abs(4.0 * v - 4.0 * centers), 0.0, 1.0)
    return np.rint(rgb * 255.0).astype(np.uint8)


def _put(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.4, color=_WHITE) -> None:
    cv2.putText(img, text, (x, y), _TEXT_FONT, scale, color, 1, cv2.LINE_AA)


def _put_right(img: np.ndarray, text: str, x_right: int, y: int, scale: float = 0.4) -> None:
    (tw, _), _ = cv2.getTextSize(text, _TEXT_FONT, scale, 1)
    _put(img, text, x_right - tw, y, scale)


def _annotate(frame: np.ndarray, site: str, when: datetime.datetime, gain: int, swe: bool) -> None:
    """Burned-in text, depth scale and gray map, laid out like a LOGIQ screenshot."""
    _put(frame, site.upper()[:34], 8, 20, 0.5)
    _put(frame, "ML6-15   MSK", 8, 42, 0.45)
    _put(frame, when.strftime("%Y/%m/%d  %H:%M:%S"), 432, 20, 0.45)
    _put(frame, "MI 1.1  TIs 0.2", 470, 42, 0.4, _LIGHT_GRAY)
    lines = ["B", "Frq 12.0", f"Gn {gain}", "E/A 2/1", "Map G", "D 4.0cm", "DR 66", "FR 23"]
    if swe:
        lines = ["SWE", "Frq 9.0", f"Gn {gain}", "Opa 65%", "Map 1", "D 4.0cm", "FR 1.1", "RT"]
    for i, text in enumerate(lines):
        _put(frame, text, 8, 320 + 16 * i, 0.4, _LIGHT_GRAY)
    _put(frame, "RT RF TRANS", US_BOX.x + 6, US_BOX.y2 + 26, 0.5)
    # Depth scale: a tick every 0.5 cm, numbers every cm.
    for i in range(int(DEPTH_CM * 2) + 1):
        y = round(US_BOX.y + i * PX_PER_CM / 2) - (1 if i == int(DEPTH_CM * 2) else 0)
        length = 8 if i % 2 == 0 else 4
        cv2.line(frame, (US_BOX.x2 + 2, y), (US_BOX.x2 + 2 + length, y), _LIGHT_GRAY, 1)
        if i % 2 == 0 and i > 0:
            _put(frame, str(i // 2), US_BOX.x2 + 14, y + 5, 0.4)
    _put(frame, "cm", US_BOX.x2 + 28, US_BOX.y2 + 5, 0.35, _LIGHT_GRAY)
    # Focus marker at 2.0 cm.
    fy = int(US_BOX.y + 2.0 * PX_PER_CM)
    tri = np.array([[US_BOX.x2 + 30, fy], [US_BOX.x2 + 38, fy - 4], [US_BOX.x2 + 38, fy + 4]])
    cv2.fillPoly(frame, [tri.astype(np.int32)], _LIGHT_GRAY)
    # Gray map bar.
    ramp = np.linspace(255, 0, 120).astype(np.uint8)
    frame[70:190, 612:622] = ramp[:, None, None]


def _stiffness(
    rng: np.random.Generator,
    gray_box: np.ndarray,
    rf_box: np.ndarray,
    median_kpa: float,
    scale: tuple[float, float],
) -> np.ndarray:
    """Smooth, heterogeneous kPa map for the color box; NaN where no shear wave was tracked."""
    bh, bw = gray_box.shape
    coarse = rng.standard_normal((7, 9)).astype(np.float32)
    field = cv2.resize(coarse, (bw, bh), interpolation=cv2.INTER_CUBIC)
    field /= max(float(field.std()), 1e-6)
    fine = cv2.GaussianBlur(rng.standard_normal((bh, bw)).astype(np.float32), (0, 0), 3.0)
    fine /= max(float(fine.std()), 1e-6)
    echo = cv2.GaussianBlur(gray_box.astype(np.float32), (0, 0), 6.0)
    echo = (echo - echo.mean()) / max(float(echo.std()), 1e-6)
    # Echogenic (fibrotic, fatty) muscle is stiffer; outside the belly is softer tissue.
    log_k = 0.22 * field + 0.08 * fine + 0.12 * echo + np.where(rf_box, 0.0, -0.35)
    ref = rf_box if rf_box.any() else np.ones_like(rf_box)
    log_k += math.log(median_kpa) - float(np.median(log_k[ref]))
    kpa = np.clip(np.exp(log_k), scale[0], scale[1]).astype(np.float32)

    holes = np.zeros((bh, bw), np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        center = (int(rng.integers(0, bw)), int(rng.integers(0, bh)))
        axes = (int(rng.integers(3, 10)), int(rng.integers(2, 7)))
        cv2.ellipse(holes, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    kpa[holes > 0] = np.nan
    return kpa


def render_case(
    seed: int,
    grade: int,
    quality: float,
    swe_median_kpa: float,
    *,
    scan_date: datetime.date | None = None,
    site: str = "DEMO GENERAL HOSPITAL",
) -> PhantomCase:
    """Render the GSU and SWE screenshots of one synthetic RF scan, byte-identical per input.

    ``grade`` is the study's echogenicity grade 0–3; ``quality`` a muscle-quality z-score
    (higher = healthier) that shifts echo and texture within a grade; ``swe_median_kpa`` the
    median stiffness painted over the RF belly.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhantomError(f"seed must be a non-negative integer, got {seed!r}.")
    if isinstance(grade, bool) or not isinstance(grade, (int, np.integer)) or not 0 <= grade <= 3:
        raise PhantomError(f"grade must be an echogenicity grade 0, 1, 2 or 3, got {grade!r}.")
    if not math.isfinite(float(quality)):
        raise PhantomError(f"quality must be a finite z-score, got {quality!r}.")
    if not math.isfinite(float(swe_median_kpa)) or not 0.5 <= swe_median_kpa <= 250.0:
        raise PhantomError(
            f"swe_median_kpa must be a stiffness between 0.5 and 250 kPa, got {swe_median_kpa!r}."
        )
    grade = int(grade)
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    h, w = US_BOX.h, US_BOX.w

    gray, rf, anat = bmode(rng, grade, float(quality), h, w)

    gsu = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    gsu[US_BOX.y : US_BOX.y2, US_BOX.x : US_BOX.x2] = gray[:, :, None]
    rf_mask = np.zeros((FRAME_H, FRAME_W), bool)
    rf_mask[US_BOX.y : US_BOX.y2, US_BOX.x : US_BOX.x2] = rf

    day = scan_date or datetime.date(2019, 1, 2) + datetime.timedelta(
        days=int(rng.integers(0, 210))
    )
    when = datetime.datetime.combine(day, datetime.time()) + datetime.timedelta(
        seconds=int(rng.integers(8 * 3600, 17 * 3600))
    )
    gain = int(rng.integers(44, 60))
    swe = gsu.copy()
    _annotate(gsu, site, when, gain, swe=False)
    _annotate(swe, site, when, gain, swe=True)

    # Color box over the RF belly, kept one pixel inside the image area for its outline.
    bx0 = int(np.clip(anat.rf_center_x - 0.72 * anat.rf_half_width, 2, w - 120))
    bx1 = int(np.clip(anat.rf_center_x + 0.72 * anat.rf_half_width, bx0 + 100, w - 2))
    by0 = int(np.clip(anat.rf_center_top - 12, 2, h - 120))
    by1 = int(np.clip(anat.rf_center_top + anat.rf_thickness + 8, by0 + 80, h - 2))
    color_box = Box(US_BOX.x + bx0, US_BOX.y + by0, bx1 - bx0, by1 - by0)

    scale_max = next(
        (s for s in SCALE_MAX_CHOICES_KPA if s >= 3.0 * swe_median_kpa), SCALE_MAX_CHOICES_KPA[-1]
    )
    scale = (0.0, scale_max)
    kpa = _stiffness(rng, gray[by0:by1, bx0:bx1], rf[by0:by1, bx0:bx1], swe_median_kpa, scale)

    stiffness = np.full((FRAME_H, FRAME_W), np.nan, np.float32)
    stiffness[color_box.y : color_box.y2, color_box.x : color_box.x2] = kpa
    painted = np.isfinite(kpa)
    colors = jet_colormap(np.where(painted, (kpa - scale[0]) / (scale[1] - scale[0]), 0.0))
    region = swe[color_box.y : color_box.y2, color_box.x : color_box.x2]
    blended = np.rint(SWE_ALPHA * colors + (1.0 - SWE_ALPHA) * region).astype(np.uint8)
    region[painted] = blended[painted]
    cv2.rectangle(
        swe,
        (color_box.x - 1, color_box.y - 1),
        (color_box.x2, color_box.y2),
        _LIGHT_GRAY,
        1,
    )

    bar = SCALE_BAR_BOX
    swe[bar.y : bar.y2, bar.x : bar.x2] = jet_colormap(np.linspace(1.0, 0.0, bar.h))[:, None, :]
    _put(swe, "kPa", bar.x - 10, bar.y - 10)
    _put_right(swe, f"{scale_max:.0f}", bar.x - 4, bar.y + 9)
    _put_right(swe, f"{scale_max / 2:.0f}", bar.x - 4, bar.y + bar.h // 2 + 4)
    _put_right(swe, f"{scale[0]:.0f}", bar.x - 4, bar.y2)

    return PhantomCase(
        gsu=gsu,
        swe=swe,
        us_box=US_BOX,
        color_box=color_box,
        scale_bar_box=SCALE_BAR_BOX,
        scale_kpa=(float(scale[0]), float(scale_max)),
        stiffness_kpa=stiffness,
        rf_mask=rf_mask,
    )
