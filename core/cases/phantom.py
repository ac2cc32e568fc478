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

# Diffuse backscatter (dB re. the brightest specular echo) of the muscle by grade 0–3: low
# echo, a brighter area, nearly as echogenic as the fat septa, isoechoic to fat (Heckmatt
# grading as used by the study).
_MUSCLE_DB = (-37.0, -33.0, -28.5, -25.0)
_FAT_DB = -31.0
_FAT_SEPTUM_DB = -14.0
# Perimysial "starry night" specks: how many per 1,000 px² of muscle, and how bright, by grade.
_PERIMYSIUM_DENSITY = (3.0, 2.2, 1.2, 0.6)
_PERIMYSIUM_DB = (-22.5, -23.5, -25.0, -26.5)
# Extra two-way attenuation in muscle (dB per pixel) that the TGC does not correct: fatty,
# fibrotic muscle attenuates more, so the femur fades at higher grades.
_EXTRA_ATTENUATION_DB_PER_PX = (0.0, 0.012, 0.03, 0.05)
_DYNAMIC_RANGE_DB = 55.0
_NOISE_FLOOR_DB = -48.0
_GRAY_MAP = np.rint(255.0 * np.linspace(0.0, 1.0, 1024) ** 1.3).astype(np.uint8)
"""Display gray map: a mild gamma that keeps muscle dark and fascia bright."""
# Point spread (Gaussian sigma in px at 90 px/cm): wider laterally than axially.
_PSF_SIGMA_LATERAL = 2.0
_PSF_SIGMA_AXIAL = 0.9
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


@dataclass(frozen=True)
class _Anatomy:
    """Per-seed geometry of the scan, in image-area pixels (x across, y down)."""

    fascia_y: np.ndarray  # superficial (fascia lata / RF epimysium) line, per column
    rf_top: np.ndarray  # RF belly upper border per column (NaN outside the belly)
    rf_bottom: np.ndarray  # deep aponeurosis per column (NaN outside the belly)
    rf_center_x: float
    rf_half_width: float
    rf_center_top: float
    rf_thickness: float
    vi_top: np.ndarray  # border between vastus lateralis/medialis and intermedius
    bone_y: np.ndarray  # femur cortex per column (inf where no bone)
    bone_top: float
    bone_radius: float
    septa: list[np.ndarray]  # subcutaneous septa polylines
    tendon: np.ndarray  # RF central aponeurosis polyline


def _anatomy(rng: np.random.Generator, quality: float, h: int, w: int) -> _Anatomy:
    x = np.arange(w, dtype=np.float64)
    fat = rng.uniform(45.0, 85.0)
    cx = w / 2 + rng.uniform(-25.0, 25.0)
    hw = rng.uniform(130.0, 165.0)
    # Healthier muscle is thicker (the study links RF size and quality to sarcopenia).
    thickness = float(np.clip(150.0 + 14.0 * quality + rng.normal(0.0, 12.0), 95.0, 200.0))
    tilt = rng.uniform(-8.0, 8.0)
    wobble_phase = rng.uniform(0.0, 2 * np.pi)

    u = (x - cx) / hw
    inside = np.abs(u) < 1.0
    arc = np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0))
    tip_y = fat + 0.3 * thickness + tilt * u
    # An oval with a flatter superficial and a rounder deep border, rounded at both tips.
    top = tip_y - 0.3 * thickness * arc + 1.5 * np.sin(x / 23.0 + wobble_phase)
    bottom = tip_y + 0.7 * thickness * arc**1.4 * (1.0 + 0.06 * np.sin(2.5 * u + wobble_phase))
    fascia = fat + 0.1 * thickness * u**2 + tilt * u + 2.5 * np.sin(x / 37.0 + wobble_phase)
    fascia = np.clip(fascia, 12.0, h * 0.5)
    rf_top = np.where(inside, np.maximum(top, fascia + 1.0), np.nan)
    rf_bottom = np.where(inside, np.maximum(bottom, rf_top + 1.0), np.nan)
    vi_top = np.where(
        inside,
        np.nan_to_num(rf_bottom, nan=0.0),
        tip_y + 0.3 * np.maximum(np.abs(x - cx) - hw, 0.0),
    )

    bone_top = min(fat + thickness + rng.uniform(55.0, 95.0), h - 35.0)
    radius = rng.uniform(105.0, 140.0)
    fx = cx + rng.uniform(-20.0, 20.0)
    span = 0.95 * radius
    dx = x - fx
    bone_y = np.where(
        np.abs(dx) < span,
        bone_top + radius - np.sqrt(np.maximum(radius**2 - dx**2, 0.0)),
        np.inf,
    )
    vi_top = np.minimum(vi_top, np.where(np.isfinite(bone_y), bone_y - 20.0, h))

    septa = []
    for _ in range(int(rng.integers(3, 7))):
        x0 = rng.uniform(-40.0, w * 0.7)
        length = rng.uniform(60.0, 240.0)
        xs = np.linspace(x0, x0 + length, 12)
        depth_frac = rng.uniform(0.2, 0.85)
        slope = rng.normal(0.0, 0.08)
        ys = 7.0 + depth_frac * (np.interp(xs, x, fascia) - 9.0) + slope * (xs - x0)
        ys = ys + rng.normal(0.0, 1.2, xs.size)
        ys = np.clip(ys, 8.0, np.interp(xs, x, fascia) - 4.0)
        septa.append(np.stack([xs, ys], axis=1))

    tx = cx + rng.uniform(-0.3, 0.3) * hw
    ty0 = fat + 0.4 * thickness
    t = np.linspace(0.0, 1.0, 8)
    tendon = np.stack(
        [tx + rng.uniform(-12.0, 12.0) * t + 4.0 * np.sin(3 * t), ty0 + 0.35 * thickness * t],
        axis=1,
    )
    return _Anatomy(
        fascia_y=fascia,
        rf_top=rf_top,
        rf_bottom=rf_bottom,
        rf_center_x=cx,
        rf_half_width=hw,
        rf_center_top=fat,
        rf_thickness=thickness,
        vi_top=vi_top,
        bone_y=bone_y,
        bone_top=bone_top,
        bone_radius=radius,
        septa=septa,
        tendon=tendon,
    )


def _draw_lines(layer: np.ndarray, lines: list[np.ndarray], value: int, thickness: int) -> None:
    """Anti-aliased polylines with sub-pixel vertices (cv2 ``shift`` of 2 bits)."""
    pts = [np.rint(p * 4.0).astype(np.int32) for p in lines if len(p) >= 2]
    cv2.polylines(layer, pts, False, value, thickness, cv2.LINE_AA, shift=2)


def _curve(xs: np.ndarray, ys: np.ndarray, step: int = 4) -> list[np.ndarray]:
    """Split a per-column curve into polylines at NaN/inf gaps, sampled every ``step`` px."""
    ok = np.isfinite(ys)
    pieces: list[np.ndarray] = []
    start = None
    for i in range(0, xs.size, step):
        if ok[i] and start is None:
            start = i
        if (not ok[i] or i + step >= xs.size) and start is not None:
            end = i if ok[i] else i - step
            idx = np.arange(start, end + 1, step)
            if idx.size >= 2:
                pieces.append(np.stack([xs[idx], ys[idx]], axis=1))
            start = None
    return pieces


def _bmode(
    rng: np.random.Generator, grade: int, quality: float, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, _Anatomy]:
    """Gray B-mode image area (uint8) and RF mask, from tissue reflectivity and speckle."""
    anat = _anatomy(rng, quality, h, w)
    q = float(np.clip(quality, -3.0, 3.0))
    yy = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float64)

    # How squarely the femur faces the beam per column: its echo and shadow fade at its sides.
    cos_incidence = (anat.bone_top + anat.bone_radius - anat.bone_y) / anat.bone_radius
    bone_facing = np.where(
        np.isfinite(anat.bone_y), np.clip((cos_incidence - 0.6) / 0.25, 0.0, 1.0), 0.0
    ).astype(np.float32)
    below_bone = yy > (anat.bone_y[None, :] + 2.0)
    fat = yy < anat.fascia_y[None, :]
    rf = (yy >= anat.rf_top[None, :]) & (yy <= anat.rf_bottom[None, :])
    muscle = ~fat & ~(below_bone & (bone_facing[None, :] > 0.5))

    muscle_db = _MUSCLE_DB[grade] - 1.0 * q + rng.normal(0.0, 0.6)
    db = np.where(fat, _FAT_DB + rng.normal(0.0, 0.8), muscle_db).astype(np.float32)
    db[:10] = -17.0  # dermis
    # Vastus lateralis/medialis and intermedius are a little darker than the RF belly.
    db[muscle & ~rf] -= 1.5
    if grade == 1:
        # "An area of increased echo relative to background muscle": a few bright patches.
        patches = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            px = anat.rf_center_x + rng.uniform(-0.6, 0.6) * anat.rf_half_width
            py = anat.rf_center_top + rng.uniform(0.25, 0.75) * anat.rf_thickness
            rx, ry = rng.uniform(18.0, 45.0), rng.uniform(10.0, 25.0)
            patches += np.exp(-(((xs[None, :] - px) / rx) ** 2) - ((yy - py) / ry) ** 2).astype(
                np.float32
            )
        db += np.where(rf, 6.0 * np.minimum(patches, 1.0), 0.0).astype(np.float32)
    reflect = np.power(10.0, db / 10.0, dtype=np.float32)

    # Bright diffuse scatterers: subcutaneous septa and perimysial septa ("starry night").
    bright = np.zeros((h, w), np.uint8)
    _draw_lines(bright, anat.septa, 255, 1)
    reflect += bright.astype(np.float32) / 255.0 * (10.0 ** (_FAT_SEPTUM_DB / 10.0)) * fat

    area = float(muscle.sum())
    count = int(_PERIMYSIUM_DENSITY[grade] * math.exp(0.2 * q) * area / 1000.0)
    cand_x = rng.uniform(0, w, count * 2)
    cand_y = rng.uniform(0, h, count * 2)
    keep = muscle[cand_y.astype(int), cand_x.astype(int)]
    cand_x, cand_y = cand_x[keep][:count], cand_y[keep][:count]
    angle = rng.normal(0.0, 0.7, cand_x.size)
    bend = rng.normal(0.0, 1.5, cand_x.size)
    half = np.where(rng.random(cand_x.size) < 0.7, 1.2, 3.5) * rng.uniform(1.0, 2.0, cand_x.size)
    c, sn = np.cos(angle), np.sin(angle)
    specks = [
        np.array([[x0 - ci * r, y0 - si * r], [x0, y0 + b], [x0 + ci * r, y0 + si * r]])
        for x0, y0, ci, si, r, b in zip(cand_x, cand_y, c, sn, half, bend, strict=True)
    ]
    perimysium = np.zeros((h, w), np.uint8)
    _draw_lines(perimysium, specks, 255, 1)
    speck_db = _PERIMYSIUM_DB[grade] + 0.5 * q
    reflect += perimysium.astype(np.float32) / 255.0 * (10.0 ** (speck_db / 10.0))

    # Specular (coherent) reflectors: skin, fascia, aponeuroses, tendon, femur cortex.
    spec = np.zeros((h, w), np.uint8)
    _draw_lines(spec, [np.array([[0.0, 3.0], [w - 1.0, 3.0]])], 220, 2)
    _draw_lines(spec, _curve(xs, anat.fascia_y), 160, 2)
    _draw_lines(spec, _curve(xs, anat.rf_top), 140, 2)
    _draw_lines(spec, _curve(xs, anat.rf_bottom), 170, 2)
    _draw_lines(spec, _curve(xs, np.where(np.isnan(anat.rf_top), anat.vi_top, np.nan)), 100, 1)
    _draw_lines(spec, [anat.tendon], 90, 2)
    bone = np.zeros((h, w), np.uint8)
    _draw_lines(bone, _curve(xs, anat.bone_y, step=2), 255, 3)
    amplitude = spec.astype(np.float32) / 255.0
    amplitude = np.maximum(amplitude, bone.astype(np.float32) / 255.0 * bone_facing[None, :])

    # Speckle: complex Gaussian scatterers weighted by reflectivity, through the PSF, with
    # two compounded steering angles (independent speckle, averaged) as on MSK presets.
    noise = rng.standard_normal((4, h, w), dtype=np.float32)
    amp = np.sqrt(reflect)
    blur = {"ksize": (0, 0), "sigmaX": _PSF_SIGMA_LATERAL, "sigmaY": _PSF_SIGMA_AXIAL}
    k_lat = cv2.getGaussianKernel(int(2 * round(3 * _PSF_SIGMA_LATERAL) + 1), _PSF_SIGMA_LATERAL)
    k_ax = cv2.getGaussianKernel(int(2 * round(3 * _PSF_SIGMA_AXIAL) + 1), _PSF_SIGMA_AXIAL)
    norm = math.sqrt(float((k_lat**2).sum() * (k_ax**2).sum()))
    # Specular echoes vary in strength along their length, as real fascia does.
    coarse = rng.standard_normal((h // 4, w // 16)).astype(np.float32)
    ripple = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    specular = cv2.GaussianBlur(amplitude * np.clip(1.0 + 0.35 * ripple, 0.2, 2.0), **blur)
    intensity = np.zeros((h, w), np.float32)
    for k in (0, 2):
        re = cv2.GaussianBlur(amp * noise[k], **blur) / norm + specular
        im = cv2.GaussianBlur(amp * noise[k + 1], **blur) / norm
        intensity += 0.5 * (re * re + im * im)

    extra = _EXTRA_ATTENUATION_DB_PER_PX[grade] * (1.0 - 0.1 * q)
    loss_db = np.cumsum(np.where(muscle, extra, 0.0).astype(np.float32), axis=0)
    loss_db += 0.01 * yy  # imperfect TGC
    shadow = below_bone * bone_facing[None, :]
    loss_db += 32.0 * cv2.GaussianBlur(shadow.astype(np.float32), (0, 0), 2.0)

    # Log compression to the display dynamic range, then the scanner's gray map (a LUT).
    gain_db = rng.normal(0.0, 0.8)
    db_out = (10.0 / math.log(10.0)) * cv2.log(intensity + np.float32(1e-9)) - loss_db
    # Electronic noise floor: shadows are dark gray noise, not pure black.
    db_out = np.maximum(db_out, _NOISE_FLOOR_DB + 3.0 * noise[0])
    level = (db_out + (gain_db + _DYNAMIC_RANGE_DB)) * (_GRAY_MAP.size - 1) / _DYNAMIC_RANGE_DB
    gray = _GRAY_MAP[np.clip(level, 0, _GRAY_MAP.size - 1).astype(np.intp)]
    return gray, rf, anat


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

    gray, rf, anat = _bmode(rng, grade, float(quality), h, w)

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
