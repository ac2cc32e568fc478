"""Display-only image transforms for the reading view; stored pixels are never changed."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from core.common.boxes import Box
from core.imaging.images import window_level


def reading_view(
    rgb: np.ndarray, scale: float, level: float = 0.5, window: float = 1.0
) -> np.ndarray:
    """Window/level then resize by ``scale`` with nearest-neighbour, so no smoothing is added.

    At ``scale == 1`` every stored pixel reaches the screen unchanged (when W/L is neutral).
    """
    shown = rgb if (level, window) == (0.5, 1.0) else window_level(rgb, level, window)
    if scale == 1.0:
        return shown
    height, width = shown.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(shown, size, interpolation=cv2.INTER_NEAREST)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Lossless PNG for the browser."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("Could not encode the image for display.")
    return buffer.tobytes()


BOX_COLORS = ((0, 229, 255), (255, 196, 0), (255, 64, 160), (120, 255, 120))
"""Distinct outline colors for the readers' boxes, in reader order."""
BOX_COLOR_NAMES = ("cyan", "amber", "pink", "green")
"""What a person calls each of ``BOX_COLORS``, for legends."""


def box_color_name(index: int) -> str:
    """The colour name of the ``index``-th box drawn by ``draw_boxes``."""
    return BOX_COLOR_NAMES[index % len(BOX_COLOR_NAMES)]


def box_legend_html(owners: Sequence[str]) -> str:
    """A legend for boxes drawn in this order: a colour swatch, its name, and whose box.

    Owner names are escaped (they are user text); the rest is fixed markup.
    """
    items = []
    for index, owner in enumerate(owners):
        r, g, b = BOX_COLORS[index % len(BOX_COLORS)]
        swatch = (
            '<span style="display:inline-block;width:0.9em;height:0.9em;'
            f"vertical-align:middle;border:2px solid rgb({r},{g},{b});"
            f'margin-right:0.3em"></span>'
        )
        items.append(
            f'<span style="margin-right:1.2em">{swatch}{box_color_name(index)}: '
            f"{html.escape(owner)}</span>"
        )
    return f'<div class="box-legend">{"".join(items)}</div>'


def draw_boxes(rgb: np.ndarray, boxes: list[Box | None], thickness: int = 2) -> np.ndarray:
    """A copy of ``rgb`` with each box outlined in its reader's color."""
    out = rgb.copy()
    for index, box in enumerate(boxes):
        if box is not None:
            color = BOX_COLORS[index % len(BOX_COLORS)]
            cv2.rectangle(out, (box.x, box.y), (box.x2 - 1, box.y2 - 1), color, thickness)
    return out


GRADING_PANEL_PX = 280
"""Width of the grade panel beside the images."""
SIDE_BY_SIDE_MIN_PX = 1000
"""Narrower main areas show GSU and SWE as tabs: two images would each be too small."""
_COLUMN_GAP_PX = 16


@dataclass(frozen=True)
class GradingLayout:
    side_by_side: bool
    image_width: int
    image_height: int


def grading_layout(main_width: int, viewport_height: int) -> GradingLayout:
    """GSU and SWE side by side when the main area is wide enough, else tabs.

    Each image gets the width its column has and a height that keeps the whole
    image on screen at zoom 1.
    """
    side_by_side = main_width >= SIDE_BY_SIDE_MIN_PX
    images = main_width - GRADING_PANEL_PX - _COLUMN_GAP_PX
    if side_by_side:
        images = (images - _COLUMN_GAP_PX) // 2
    return GradingLayout(side_by_side, max(images, 240), max(viewport_height - 260, 320))
