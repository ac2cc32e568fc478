"""Sector geometry (core.imaging.sector): the whole fan from its visible part.

The screens are built here: a phased-array fan whose far field and sides are black (a
heart's chambers), with a depth ruler beside it; a linear probe's rectangle and a curved
panorama, which are not sectors; and a DICOM region around a faint fan of a probe in air.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from core.common.boxes import Box
from core.imaging.regions import propose_regions
from core.imaging.sector import (
    Sector,
    depth_rulers,
    fit_sector,
    rectangle_deepened_by_ruler,
)

APEX = (320, 60)
RADIUS = 360
HALF_ANGLE = math.radians(45)
TRUE_FAN = Sector(APEX, -HALF_ANGLE, HALF_ANGLE, RADIUS, APEX[1]).box(640, 480)


def _fan_mask(height: int, width: int, radius: float, half_angle: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    dx, dy = xx - APEX[0], yy - APEX[1]
    return (np.hypot(dx, dy) <= radius) & (np.abs(np.arctan2(dx, dy)) <= half_angle) & (dy > 0)


def _dark_fan_screen(ruler: bool) -> np.ndarray:
    """A fan whose echoes reach only 75 % of its depth, with a black chamber in it: below,
    the far field is as black as the screen."""
    rng = np.random.default_rng(3)
    height, width = 480, 640
    visible = _fan_mask(height, width, 0.75 * RADIUS, HALF_ANGLE)
    speckle = np.clip(rng.rayleigh(40.0, (height, width)), 0, 255)
    gray = np.where(visible, speckle, 0).astype(np.uint8)
    cv2.ellipse(gray, (330, 230), (70, 50), 0, 0, 360, 0, -1)
    cv2.putText(gray, "PATIENT NAME 01/02/2003", (20, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    if ruler:  # a tick per cm from the apex row down to the fan's full depth
        for y in np.linspace(APEX[1], APEX[1] + RADIUS - 1, 16):
            gray[int(y) - 1 : int(y) + 1, 590:596] = 220
    return np.repeat(gray[:, :, None], 3, axis=2)


def test_a_fan_with_a_dark_far_field_reaches_the_ruler_depth() -> None:
    found = propose_regions(_dark_fan_screen(ruler=True))
    assert found.source == "pixels"
    assert found.views[0].iou(TRUE_FAN) >= 0.9, found.views


def test_without_a_ruler_the_fan_ends_where_its_echoes_end() -> None:
    view = propose_regions(_dark_fan_screen(ruler=False)).views[0]
    assert view.iou(TRUE_FAN) < 0.8
    assert abs(view.y2 - (APEX[1] + 0.75 * RADIUS)) <= 6
    assert view.w == pytest.approx(2 * 0.75 * RADIUS * math.sin(HALF_ANGLE), rel=0.05)


def test_colored_text_beside_the_fan_is_not_part_of_the_color_box() -> None:
    """Settings text in a scanner's accent colour sits inside the fan's bounding box but
    outside the fan: the Doppler box is searched inside the fitted fan only."""
    screen = _dark_fan_screen(ruler=True)
    rng = np.random.default_rng(4)
    doppler = Box(280, 150, 80, 110)
    flow = rng.random((doppler.h, doppler.w)) < 0.6
    patch = screen[doppler.y : doppler.y2, doppler.x : doppler.x2]
    patch[flow] = np.where(rng.random((flow.sum(), 1)) < 0.5, (220, 30, 20), (20, 60, 230))
    ramp = np.linspace(255, 0, 200).astype(np.uint8).reshape(-1, 1)
    bar = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    screen[100:300, 612:624] = bar
    for i, text in enumerate(("Map 3", "150dB/C 3", "Persist Low", "2D Opt:Gen")):
        cv2.putText(
            screen, text, (70, 80 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (250, 160, 60), 2
        )
    found = propose_regions(screen)
    assert found.views[0].iou(TRUE_FAN) >= 0.9
    assert found.color_box is not None and found.color_box.iou(doppler) >= 0.9, found.color_box


def test_rectangle_and_curved_panorama_are_not_sectors() -> None:
    rectangle = np.zeros((300, 400), bool)
    rectangle[40:280, 60:340] = True
    assert fit_sector(rectangle) is None
    yy, xx = np.mgrid[:400, :800]
    distance = np.hypot(xx - 400, yy - 900)  # a rainbow: centre far below the screen
    panorama = (distance <= 850) & (distance >= 550) & (yy < 380)
    assert fit_sector(panorama) is None


def test_a_linear_view_with_a_black_deep_half_reaches_its_ruler() -> None:
    """A linear probe over muscle whose deep half is black (an Esaote MSK screen): the
    ruler on the image's right edge spans the imaged depth."""
    rng = np.random.default_rng(6)
    gray = np.zeros((480, 640), np.uint8)
    gray[60:240, 100:560] = np.clip(rng.rayleigh(40.0, (180, 460)), 0, 255).astype(np.uint8)
    for y in range(60, 440, 38):  # ticks every 5 mm from the probe face down to 440
        gray[y : y + 2, 562:568] = 220
    view = propose_regions(np.repeat(gray[:, :, None], 3, axis=2)).views[0]
    assert view.iou(Box(100, 60, 460, 380)) >= 0.9, view
    ticks = [(565.0, np.arange(60, 441, 38))]
    middle = [(330.0, np.arange(60, 441, 38))]  # across the image: a caliper, not the ruler
    assert rectangle_deepened_by_ruler(Box(100, 60, 460, 180), middle).y2 == 240
    assert rectangle_deepened_by_ruler(Box(100, 200, 460, 40), ticks).y2 == 240  # late start


def test_depth_rulers_need_evenly_spaced_ticks() -> None:
    gray = np.zeros((400, 200), np.uint8)
    for y in range(20, 380, 30):
        gray[y : y + 2, 100:106] = 200
    for y in (20, 40, 130, 150, 330):  # uneven marks: text or calipers, not a ruler
        gray[y : y + 2, 20:26] = 200
    rulers = depth_rulers(gray)
    assert len(rulers) == 1
    assert rulers[0][0] == pytest.approx(102.5) and rulers[0][1][-1] == 351


def test_a_faint_fan_in_a_dicom_region_is_found_whole() -> None:
    """A probe in air: bright rings at the probe face, then sparse speckle one gray level
    above the screen. The declared region is the whole screen area."""
    rng = np.random.default_rng(5)
    height, width = 600, 800
    gray = np.ones((height, width), np.uint8)
    yy, xx = np.mgrid[:height, :width]
    distance = np.hypot(xx - 400, yy - 40)
    fan = (distance >= 80) & (distance <= 480) & (np.abs(np.arctan2(xx - 400, yy - 40)) < 0.9)
    rings = fan & (distance <= 150)
    gray[rings] = np.clip(rng.normal(160, 40, rings.sum()), 0, 255).astype(np.uint8)
    sparse = fan & ~rings & (rng.random((height, width)) < 0.06)
    gray[sparse] = 6
    truth = Box(*cv2.boundingRect(fan.astype(np.uint8)))
    header = {
        "SequenceOfUltrasoundRegions": [
            {
                "RegionLocationMinX0": 0,
                "RegionLocationMinY0": 20,
                "RegionLocationMaxX1": width - 1,
                "RegionLocationMaxY1": height,  # one row past the frame, as some scanners write
                "RegionSpatialFormat": 1,
                "RegionDataType": 1,
            }
        ]
    }
    found = propose_regions(np.repeat(gray[:, :, None], 3, axis=2), header)
    assert found.source == "dicom"
    assert found.views[0].iou(truth) >= 0.85, (found.views, truth)
