"""Geometry of a view whose far part is dark: a fan's apex, edges and arc, and depth rulers.

A phased-array or convex probe images a sector. When its far field or its sides are dark
(a heart with black chambers, a probe in air), the visible echoes fill only part of the fan,
and a box around them is too small. Fitting the geometry instead (the apex where the two
straight edges meet, the widest angles the echoes reach, and the depth down to the end of
the depth ruler beside the fan) recovers the whole fan from what is visible. A linear
probe's rectangle with a black deep half is carried down to its ruler's end the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from core.common.boxes import Box

MIN_EDGE_SLOPE = 0.2
"""|dx/dy| of a fan edge: below it a side is near vertical (a linear probe's rectangle)."""

MAX_EDGE_SCATTER = 0.05
"""Median distance of a side's points from its fitted line, as a share of the view's width."""

RULER_LEVEL = 100
"""Gray level above which a pixel may belong to a depth-ruler tick."""

RULER_MIN_TICKS = 6
"""Fewer evenly spaced marks than this in a column is not a depth ruler."""

RULER_MAX_DEEPENING = 1.4
"""A ruler may deepen the fan to at most this multiple of the visible echoes' depth."""


@dataclass(frozen=True)
class Sector:
    """A fan with its apex at ``apex`` (x, y), opening downwards between two angles."""

    apex: tuple[float, float]
    left: float
    """Angle of the left edge from the vertical, in radians (negative: left of the apex)."""
    right: float
    radius: float
    """Depth of the arc from the apex, in pixels."""
    top: float
    """First row of the fan: the apex, or a convex probe's face below a virtual apex."""

    def box(self, width: int, height: int) -> Box:
        """The fan's bounding box, clipped to a ``width`` × ``height`` frame."""
        ax, ay = self.apex
        x0 = ax + self.radius * math.sin(max(self.left, -math.pi / 2))
        x1 = ax + self.radius * math.sin(min(self.right, math.pi / 2))
        straight_down = self.left < 0 < self.right
        reach = 1.0 if straight_down else max(math.cos(self.left), math.cos(self.right))
        left, right = max(0, round(x0)), min(width, round(x1) + 1)
        top, bottom = max(0, round(self.top)), min(height, round(ay + self.radius * reach) + 1)
        return Box(left, top, max(0, right - left), max(0, bottom - top))


FAN_MARGIN = math.radians(2.0)
"""Angle added on each side of a fitted fan when it bounds a search (edge pixels, fit error)."""


def fan_mask(sector: Sector, width: int, height: int) -> np.ndarray:
    """Pixels of a ``width`` × ``height`` frame inside ``sector`` (a little widened): where
    a Doppler or elastography box can be; the box's corners outside the fan cannot."""
    ax, ay = sector.apex
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    phi = np.arctan2(xx - ax, yy - ay)
    inside = (phi >= sector.left - FAN_MARGIN) & (phi <= sector.right + FAN_MARGIN)
    near = np.hypot(xx - ax, yy - ay) <= 1.03 * sector.radius
    return inside & near & (yy >= sector.top - 2)


def fit_sector(mask: np.ndarray, scale: float = 1.0) -> Sector | None:
    """The sector that bounds ``mask`` (one view's content, apex up), or None.

    The apex is where the mask's two sides, fitted as straight lines over the middle of its
    height, meet; or, for a fan whose sides are dark, the mask's top when it narrows to a
    tip there (the near-field cone). The edges are the widest angles the content reaches
    from the apex, the arc its farthest distance. None when the sides do not diverge
    downwards from a common apex near the top: linear, steered and panoramic images.
    ``scale`` maps mask pixels to frame pixels.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size < 20:
        return None
    top = int(rows[0])
    height = int(rows[-1]) - top
    apex = _apex_from_edges(mask, top, height) or _apex_at_tip(mask, top, height)
    if apex is None:
        return None
    ax, ay = apex
    if ay > top + 0.3 * height:
        return None
    if ay < top - 0.1 * height and not _face_sags_in_middle(mask, ax, height):
        return None
    ys, xs = np.nonzero(mask)
    below = ys > ay
    dx, dy = xs[below] - ax, ys[below] - ay
    phi = np.arctan2(dx, dy)
    distance = np.hypot(dx, dy)
    radius = float(np.percentile(distance, 99.8))
    far = distance > 0.3 * radius  # the apex's neighbourhood may hold a logo or marker
    left = float(np.percentile(phi[far], 0.5))
    right = float(np.percentile(phi[far], 99.5))
    if left > -0.1 or right < 0.1:
        return None
    inside = (phi >= left) & (phi <= right)
    first_row = max(ay, float(ys[below][inside].min()))
    return Sector((ax * scale, ay * scale), left, right, radius * scale, first_row * scale)


def _robust_line(y: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``x = a·y + b`` refitted without outliers: (a, b, median residual)."""
    a, b = np.polyfit(y, x, 1)
    residual = np.abs(x - (a * y + b))
    keep = residual <= max(2.0, 2.5 * float(np.median(residual)))
    a, b = np.polyfit(y[keep], x[keep], 1)
    return float(a), float(b), float(np.median(np.abs(x - (a * y + b))))


def _apex_from_edges(mask: np.ndarray, top: int, height: int) -> tuple[float, float] | None:
    """Where the mask's left and right sides meet, when both are straight and diverge."""
    rows = np.flatnonzero(mask.any(axis=1))
    band = rows[(rows >= top + 0.15 * height) & (rows <= top + 0.7 * height)]
    if band.size < 10:
        return None
    sub = mask[band]
    left_x = sub.argmax(axis=1).astype(float)
    right_x = (sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)).astype(float)
    y = band.astype(float)
    a_left, b_left, scatter_left = _robust_line(y, left_x)
    a_right, b_right, scatter_right = _robust_line(y, right_x)
    width = max(1.0, float(np.median(right_x - left_x)))
    if a_left > -MIN_EDGE_SLOPE or a_right < MIN_EDGE_SLOPE:
        return None
    if max(scatter_left, scatter_right) > MAX_EDGE_SCATTER * width:
        return None
    ay = (b_left - b_right) / (a_right - a_left)
    return a_left * ay + b_left, ay


def _apex_at_tip(mask: np.ndarray, top: int, height: int) -> tuple[float, float] | None:
    """The mask's top point, when its first rows are a narrow tip (a phased array's apex)."""
    cols = np.flatnonzero(mask.any(axis=0))
    near = np.flatnonzero(mask[top : top + max(2, int(0.05 * height))].any(axis=0))
    if near[-1] - near[0] > 0.2 * (cols[-1] - cols[0]):
        return None
    return float(np.flatnonzero(mask[top]).mean()), float(top)


def _face_sags_in_middle(mask: np.ndarray, ax: float, height: int) -> bool:
    """A convex probe's face (below a virtual apex) is lowest in its middle; the top of a
    curved panorama, whose sides also converge upwards, is highest there."""
    cols = np.flatnonzero(mask.any(axis=0))
    lo, hi = int(cols[0]), int(cols[-1])
    middle = int(np.clip(round(ax), lo, hi))
    if not mask[:, middle].any():
        return False
    first = mask.argmax(axis=0)
    sides = [c for c in (int(lo + 0.2 * (hi - lo)), int(hi - 0.2 * (hi - lo))) if mask[:, c].any()]
    return all(first[middle] >= first[c] - 0.05 * height for c in sides)


def depth_rulers(gray: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """Columns of small, evenly spaced bright marks: (x, sorted tick rows) per ruler."""
    n, _, stats, centres = cv2.connectedComponentsWithStats((gray > RULER_LEVEL).astype(np.uint8))
    marks = sorted(
        (float(centres[k][0]), float(stats[k, 1] + stats[k, 3] - 1))
        for k in range(1, n)
        if stats[k, 2] <= 16 and stats[k, 3] <= 6 and stats[k, 4] >= 2
    )
    rulers = []
    start = 0
    for k in range(1, len(marks) + 1):
        if k < len(marks) and marks[k][0] - marks[k - 1][0] <= 3:
            continue
        column, start = marks[start:k], k
        rows = np.unique(np.round([row for _, row in column]))
        gaps = np.diff(rows)
        if rows.size < RULER_MIN_TICKS:
            continue
        step = float(np.median(gaps))
        if step >= 4 and np.mean(np.abs(gaps - step) <= 0.15 * step) >= 0.8:
            rulers.append((float(np.mean([x for x, _ in column])), rows))
    return rulers


def deepened_by_ruler(sector: Sector, rulers: list[tuple[float, np.ndarray]]) -> Sector:
    """``sector`` reaching down to the last tick of a depth ruler beside it.

    Scanners draw the depth ruler over the imaged depth, from the probe face down; when the
    far field is black, the echoes stop short of the arc but the ruler does not. A ruler
    counts when it lies outside the fan's angles, starts near the fan's top, and ends below
    the echoes but not absurdly far below them.
    """
    ax, ay = sector.apex
    radius = sector.radius
    for x, rows in rulers:
        phi = math.atan2(x - ax, max(float(np.median(rows)) - ay, 1e-6))
        beside = phi < sector.left or phi > sector.right
        starts_near_top = abs(float(rows[0]) - sector.top) <= 0.25 * sector.radius
        depth = float(rows[-1]) + 1 - ay
        if beside and starts_near_top and depth <= RULER_MAX_DEEPENING * sector.radius:
            radius = max(radius, depth)
    return Sector(sector.apex, sector.left, sector.right, radius, sector.top)


RULER_MAX_RECT_DEEPENING = 2.5
"""A ruler may carry a rectangular view down to at most this multiple of its visible height."""


def rectangle_deepened_by_ruler(view: Box, rulers: list[tuple[float, np.ndarray]]) -> Box:
    """``view`` (a linear probe's rectangle) reaching down to the last tick of a depth ruler
    at its side, when its deep part is too dark to see: as with a fan, the ruler spans the
    imaged depth. The ruler must start at the view's top and stand at its side (outside
    it, or on its edge columns), never across its middle."""
    bottom = view.y2
    edge = max(3, round(0.03 * view.w))
    for x, rows in rulers:
        at_side = x <= view.x + edge or x >= view.x2 - edge
        starts_at_top = abs(float(rows[0]) - view.y) <= max(6.0, 0.05 * view.h)
        end = int(rows[-1]) + 1
        if at_side and starts_at_top and end <= view.y + RULER_MAX_RECT_DEEPENING * view.h:
            bottom = max(bottom, end)
    return Box(view.x, view.y, view.w, bottom - view.y)
