"""Ultrasound views from what a DICOM header declares, with image analysis as the fallback.

``SequenceOfUltrasoundRegions`` (PS3.3 C.8.5.5) gives each view's pixel box, its kind and
its physical pixel spacing. :func:`propose_regions` takes those first, checks them against
the pixels (a region far larger than the visible fan is shrunk to it), and falls back to the
pixel detectors of :mod:`core.imaging.roi_detect` for files without regions: screenshots
and stripped DICOM.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from core.common.boxes import Box
from core.imaging.color_box import color_box_excluding
from core.imaging.roi_detect import (
    NoImageContentError,
    dense_components,
    detect_scale_bar,
    odd_kernel,
    to_rgb_u8,
    ultrasound_fans,
)
from core.imaging.sector import fan_mask

VISIBLE_SHARE_TRUSTED = 0.9
"""A DICOM ultrasound region is taken as it is when the visible image fills at least this
share of it; below, the region is shrunk to what is visible."""

MIN_VIEW_SIDE = 32
"""A visible part narrower than this is noise, not a view."""

FAINT_FALLBACK_SHARE = 0.25
"""When the dense visible part fills less than this share of its region, the region is
searched again for a faint fan (sparse speckle of a probe in air)."""

FAINT_DENSITY = 0.02
"""Share of a wide neighbourhood that must differ from the background to count as faint fan:
a sparse speckle field scores 0.02–0.15, the flat screen 0."""


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of a DICOM ``SequenceOfUltrasoundRegions`` (PS3.3 C.8.5.5.1)."""

    box: Box
    spatial_format: int
    """RegionSpatialFormat: 1 is a 2D image; 2 M-mode, 3 spectral, 4 waveform, 5 graphics."""
    data_type: int
    """RegionDataType: 1 tissue, 2 color flow, 3–4 spectral Doppler, 10 ECG, 13–14 bars."""
    mm_per_pixel: tuple[float, float] | None
    """(x, y) pixel spacing in mm when both physical units are centimetres (code 3)."""


REGION_2D = 1
REGION_TISSUE = 1
REGION_COLOR_FLOW = 2
_UNITS_CM = 3


def dicom_regions(header: dict[str, Any] | None) -> list[UltrasoundRegion]:
    """The ultrasound regions a DICOM header declares, in pixel boxes; [] when it has none.

    Items with missing or inverted corners are skipped rather than trusted. The region's
    maxima are inclusive in DICOM, so the box's width is ``MaxX1 - MinX0 + 1``.
    """
    regions = []
    for item in (header or {}).get("SequenceOfUltrasoundRegions") or []:
        if not isinstance(item, dict):
            continue
        try:
            x0, y0 = int(item["RegionLocationMinX0"]), int(item["RegionLocationMinY0"])
            x1, y1 = int(item["RegionLocationMaxX1"]), int(item["RegionLocationMaxY1"])
        except (KeyError, TypeError, ValueError):
            continue
        if x1 < x0 or y1 < y0 or x0 < 0 or y0 < 0:
            continue
        regions.append(
            UltrasoundRegion(
                Box(x0, y0, x1 - x0 + 1, y1 - y0 + 1),
                _int_or(item.get("RegionSpatialFormat"), 0),
                _int_or(item.get("RegionDataType"), 0),
                _mm_per_pixel(item),
            )
        )
    return regions


def _int_or(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _mm_per_pixel(item: dict[str, Any]) -> tuple[float, float] | None:
    units = (item.get("PhysicalUnitsXDirection"), item.get("PhysicalUnitsYDirection"))
    try:
        dx, dy = float(item["PhysicalDeltaX"]), float(item["PhysicalDeltaY"])
    except (KeyError, TypeError, ValueError):
        return None
    if any(_int_or(u, 0) != _UNITS_CM for u in units) or not (dx > 0 and dy > 0):
        return None
    return (10.0 * dx, 10.0 * dy)


@dataclass(frozen=True)
class RegionProposal:
    """Every ultrasound view of a frame, its color box and bar, and where they came from."""

    views: tuple[Box, ...]
    """Ultrasound views, the main one first; empty when nothing was found."""
    color_box: Box | None
    scale_bar: Box | None
    mm_per_pixel: tuple[float, float] | None
    """Pixel spacing of the main view from the DICOM regions; None when not calibrated."""
    source: str
    """"dicom" (regions in the header), "pixels" (image analysis) or "none" (nothing found)."""


@dataclass(frozen=True)
class Calibration:
    """Physical size of an image's pixels and where that figure comes from."""

    mm_per_pixel: tuple[float, float]
    """(x, y) in millimetres."""
    source: str

    def describe(self) -> str:
        """One line for the reader, e.g. ``0.0616 mm per pixel (DICOM ultrasound regions)``."""
        x, y = self.mm_per_pixel
        size = f"{x:.3g}" if abs(x - y) <= 0.005 * max(x, y) else f"{x:.3g} × {y:.3g}"
        return f"{size} mm per pixel ({self.source})"


def calibration(header: dict[str, Any] | None) -> Calibration | None:
    """The pixel spacing of the first calibrated 2D ultrasound region; None when unknown."""
    for region in dicom_regions(header):
        if region.spatial_format == REGION_2D and region.mm_per_pixel is not None:
            return Calibration(region.mm_per_pixel, "DICOM ultrasound regions")
    return None


def view_names(views: tuple[Box, ...] | list[Box]) -> list[str]:
    """Names a reader can tell apart: ``View 1 of 2 (upper)``, by where each view lies."""
    if len(views) < 2:
        return ["Ultrasound view"] * len(views)
    xs = [v.x + v.w / 2 for v in views]
    ys = [v.y + v.h / 2 for v in views]
    stacked = max(ys) - min(ys) >= max(xs) - min(xs)
    places = []
    for x, y in zip(xs, ys, strict=True):
        if stacked:
            places.append("upper" if y == min(ys) else "lower" if y == max(ys) else "middle")
        else:
            places.append("left" if x == min(xs) else "right" if x == max(xs) else "middle")
    return [f"View {i} of {len(views)} ({place})" for i, place in enumerate(places, start=1)]


def offered_boxes(
    pixels: np.ndarray, header: dict[str, Any] | None, modality: str
) -> list[tuple[str, Box]]:
    """The boxes the grading page offers, named: every view of a GSU screen (the reader
    chooses the one the crop belongs to), the color box of an SWE screen."""
    found = propose_regions(pixels, header)
    if modality == "GSU":
        return list(zip(view_names(found.views), found.views, strict=True))
    return [("Color box", found.color_box)] if found.color_box else []


def propose_regions(pixels: np.ndarray, header: dict[str, Any] | None = None) -> RegionProposal:
    """Views, color box and scale bar of one frame: what the DICOM says first, pixels otherwise.

    A declared 2D region is trusted when the image fills it; when the visible image covers
    clearly less (a region drawn for the whole screen area around a small fan), the region
    is shrunk to what is visible. A region reaching past the frame (one row past the last is
    a common off-by-one) is cut to the frame. Nothing found is a valid answer (the reader
    draws by hand), never an exception.
    """
    img = to_rgb_u8(pixels)
    height, width = img.shape[:2]
    bar = detect_scale_bar(img)
    regions = [
        replace(r, box=_clipped(r.box, width, height))
        for r in dicom_regions(header)
        if r.spatial_format == REGION_2D and _clipped(r.box, width, height).area > 0
    ]
    spacing = None
    if regions:
        background = _background_level(img)
        fans = [(_visible_part(img, r.box, background), None) for r in regions]
        spacing = regions[0].mm_per_pixel
        source = "dicom"
    else:
        try:
            fans = ultrasound_fans(img, bar)
        except NoImageContentError:
            return RegionProposal((), None, bar, None, "none")
        source = "pixels"
    color = None
    for view, fan in fans:
        inside = None if fan is None else fan_mask(fan, width, height)
        color = color_box_excluding(img, view, bar, within=inside)
        if color is not None:
            break
    return RegionProposal(tuple(view for view, _ in fans), color, bar, spacing, source)


def _background_level(img: np.ndarray) -> int:
    """The screen's background gray: the commonest value on the frame's outer border."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    border = np.concatenate([gray[:2].ravel(), gray[-2:].ravel(), gray[:, :2].ravel()])
    return int(np.bincount(np.concatenate([border, gray[:, -2:].ravel()])).argmax())


def _visible_part(img: np.ndarray, region: Box, background: int) -> Box:
    """``region`` shrunk to the part that differs from the background, if clearly smaller.

    Any difference counts, however faint: the fan of a probe in air may sit only one gray
    level above the screen. A pixel is visible image where most of its neighbourhood
    differs (so lossy-compression ringing around text does not count), and thin marks
    (depth ticks, text) are erased by an opening.
    """
    gray = cv2.cvtColor(img[region.y : region.y2, region.x : region.x2], cv2.COLOR_RGB2GRAY)
    differs = (gray != background).astype(np.float32)
    n, labels, stats = dense_components(differs, window=min(gray.shape) / 16)
    if n < 2:
        return region
    largest = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = cv2.boundingRect((largest & (differs > 0)).astype(np.uint8))
    if w * h >= VISIBLE_SHARE_TRUSTED * region.area or min(w, h) < MIN_VIEW_SIDE:
        return region
    if w * h < FAINT_FALLBACK_SHARE * region.area:
        faint = _faint_layers(differs, Box(x, y, w, h))
        if faint is not None and faint.area > w * h:
            x, y, w, h = faint.as_tuple()
    return Box(region.x + x, region.y + y, w, h)


def _faint_layers(differs: np.ndarray, seed: Box) -> Box | None:
    """The box of the faint fan around ``seed`` (the dense part found first), or None.

    Sparse speckle is where a wide neighbourhood differs at all from the background. Such a
    fan breaks into layers (near-field rings, speckle, a far arc); layers stacked on one
    another and sharing most of their width are one view. Parts touching the region's
    border (side panels, gray bars, measurement tables) are not.
    """
    height, width = differs.shape
    k = odd_kernel(min(height, width) / 16)
    sparse = (cv2.blur(differs, (k, k)) > FAINT_DENSITY).astype(np.uint8)
    opening = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * k // 3, 2 * k // 3))
    opened = cv2.morphologyEx(sparse, cv2.MORPH_OPEN, opening)
    n, _, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    parts = [
        Box(*(int(v) for v in stats[i, :4]))
        for i in range(1, n)
        if stats[i, 0] > 0
        and stats[i, 1] > 0
        and stats[i, 0] + stats[i, 2] < width
        and stats[i, 1] + stats[i, 3] < height
    ]
    group = next((p for p in parts if p.iou(seed) > 0), None)
    grown = group is not None
    while grown:
        grown = False
        for p in parts:
            shares_width = _overlap(p.x, p.x2, group.x, group.x2) >= 0.5 * min(p.w, group.w)
            stacked = _overlap(p.y - k, p.y2 + k, group.y, group.y2) > 0
            if shares_width and stacked and _union(group, p) != group:
                group, grown = _union(group, p), True
    return group


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _union(a: Box, b: Box) -> Box:
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    return Box(x0, y0, max(a.x2, b.x2) - x0, max(a.y2, b.y2) - y0)


def _clipped(box: Box, width: int, height: int) -> Box:
    """``box`` cut to a ``width`` × ``height`` frame."""
    x0, y0 = max(0, box.x), max(0, box.y)
    x1, y1 = min(width, box.x2), min(height, box.y2)
    return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))
