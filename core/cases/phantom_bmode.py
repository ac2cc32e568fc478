"""The phantom's B-mode picture: per-seed anatomy, tissue echo levels, speckle and blur.

Echo levels per layer follow the study's 4-point echogenicity grade (Yi et al., Sci Rep
2022): a higher grade brightens the muscle, adds perimysium and attenuates depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

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


def bmode(
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
