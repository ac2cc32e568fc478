"""The color box: where a color-flow or elastography overlay sits inside the ultrasound view.

Proposed only for saturated colors inside the view that a color scale bar backs, never for
colored text in a title bar or a tinted gray map (see docs/imaging-pipeline.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.common.boxes import Box
from core.imaging.roi_detect import (
    OVERLAY_MIN_CHROMA,
    chroma,
    detect_scale_bar,
    pad_box,
    to_rgb_u8,
    trim_soft_edges,
    ultrasound_area_excluding,
)

MIN_COLOR_PIXELS = 30
"""Fewer colored pixels than this inside the image area means there is no color box."""


@dataclass(frozen=True)
class RoiProposal:
    """All three proposals for one frame (one pass: the scale bar is found once)."""

    ultrasound_area: Box
    color_box: Box | None
    scale_bar: Box | None


def detect_color_box(rgb: np.ndarray, within: Box | None = None) -> Box | None:
    """Bounding box of the color overlay inside the image area, or None when nothing is colored.

    ``within`` is the ultrasound image area (detected when None); colored pixels outside it
    (UI icons, colored text) and the scale bar are ignored. Small colored marks inside the area
    (focus marker, caliper crosses) are dropped: only components with at least a tenth of the
    largest component's area count, so a color box split by unfilled holes stays whole.
    """
    img = to_rgb_u8(rgb)
    bar = detect_scale_bar(img)
    return color_box_excluding(
        img, within if within is not None else ultrasound_area_excluding(img, bar), bar
    )


def color_box_excluding(
    img: np.ndarray,
    area: Box,
    bar: Box | None,
    *,
    require_bar: bool = True,
    within: np.ndarray | None = None,
) -> Box | None:
    """``detect_color_box`` for a uint8 RGB frame whose image area and scale bar are known.

    Without a scale bar there is no color box to propose: a color-flow or elastography
    overlay is always drawn with its color scale, while tinted gray maps, green markers and
    logos are not. The SWE decoder, which knows its frame is elastography, passes
    ``require_bar=False`` to find the overlay of a screen whose bar was cropped away.
    ``within`` (a frame-sized mask, e.g. a fitted fan) leaves out colored pixels outside it:
    text and icons in the corners of a sector's box.
    """
    height, width = img.shape[:2]
    if not area.inside(width, height) or area.area == 0:
        raise ValueError(
            f"The search box {area.as_tuple()} is empty or reaches outside the "
            f"{width}×{height} image."
        )
    sat = chroma(img[area.y : area.y2, area.x : area.x2])  # area coordinates from here on
    colored = (sat >= OVERLAY_MIN_CHROMA).astype(np.uint8)
    if within is not None:
        colored &= within[area.y : area.y2, area.x : area.x2].astype(np.uint8)
    if bar is not None:
        pad = pad_box(bar, max(3, bar.w // 2), width, height)
        colored[
            max(0, pad.y - area.y) : max(0, pad.y2 - area.y),
            max(0, pad.x - area.x) : max(0, pad.x2 - area.x),
        ] = 0
    if (bar is None and require_bar) or cv2.countNonZero(colored) < MIN_COLOR_PIXELS:
        return None
    closed = cv2.morphologyEx(colored, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    kept = 1 + np.flatnonzero(areas >= max(MIN_COLOR_PIXELS, 0.1 * areas.max()))
    if kept.size == 0:  # only specks of color (markers, tinted text): no overlay
        return None
    # A closing never reaches past the bounding box of what it closes, so the components'
    # boxes are the colored pixels' boxes.
    x0, y0 = int(stats[kept, 0].min()), int(stats[kept, 1].min())
    x1 = int((stats[kept, 0] + stats[kept, 2]).max())
    y1 = int((stats[kept, 1] + stats[kept, 3]).max())
    box = Box(x0, y0, x1 - x0, y1 - y0)
    if box.w > 16 and box.h > 16:
        if kept.size < n - 1:
            sat = np.where(np.isin(labels, kept), sat, 0).astype(np.uint8)
        box = trim_soft_edges(sat, box)
    return Box(box.x + area.x, box.y + area.y, box.w, box.h)


def detect_boxes(rgb: np.ndarray) -> RoiProposal:
    """Image area, color box and scale bar of one frame, for the grading page's proposals."""
    img = to_rgb_u8(rgb)
    bar = detect_scale_bar(img)
    area = ultrasound_area_excluding(img, bar)
    return RoiProposal(area, color_box_excluding(img, area, bar), bar)
