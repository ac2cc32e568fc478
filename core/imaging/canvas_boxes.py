"""Convert between crop boxes in source pixels and Fabric.js rectangles on a scaled canvas.

The grading page shows an image scaled by ``scale`` (display px per source px) on a
``streamlit-drawable-canvas``. A rectangle the reader draws or resizes comes back as a
Fabric object whose true size is ``width * scaleX`` by ``height * scaleY`` in canvas pixels;
dividing by the display scale gives source pixels, which is what the database stores.
"""

from __future__ import annotations

from typing import Any

from core.common.boxes import Box, clamp_box

_ORIGIN_OFFSET = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}
RECT_TYPES = ("rect", "labeledrect")
"""Fabric type names of rectangles, lower-cased (Fabric 6 writes "Rect", older "rect")."""


def fit_scale(
    width: int,
    height: int,
    max_width: int,
    max_height: int,
    zoom: float = 1.0,
    *,
    enlarge: bool = False,
) -> float:
    """Display scale: the whole image fits ``max_width``×``max_height`` at ``zoom`` 1.

    Without ``enlarge`` a small image stays at native size; with it, it grows to use the
    space the layout has. Zoom multiplies the fit, and the canvas scrolls to pan.
    """
    fit = min(max_width / width, max_height / height)
    return (fit if enlarge else min(fit, 1.0)) * zoom


def canvas_key(image_id: int, scale: float, generation: int = 0) -> str:
    """Widget key of an image's canvas: a new scale is a new canvas.

    A canvas's drawing is in its own pixels; keying by scale means a drawing is never
    read back with a scale it was not drawn at (the zoom-after-draw bug).
    """
    return f"canvas-{image_id}-{scale:.5f}-{generation}"


def rect_to_box(obj: dict[str, Any], scale: float) -> Box:
    """One Fabric rectangle (canvas pixels) → a box in source-image pixels."""
    width = float(obj.get("width", 0)) * float(obj.get("scaleX", 1))
    height = float(obj.get("height", 0)) * float(obj.get("scaleY", 1))
    left = float(obj.get("left", 0)) - _ORIGIN_OFFSET[obj.get("originX", "left")] * width
    top = float(obj.get("top", 0)) - _ORIGIN_OFFSET[obj.get("originY", "top")] * height
    x1, y1 = left / scale, top / scale
    x2, y2 = (left + width) / scale, (top + height) / scale
    return Box(round(x1), round(y1), round(x2) - round(x1), round(y2) - round(y1))


def last_drawn_box(json_data: dict[str, Any] | None, scale: float) -> Box | None:
    """The most recently drawn rectangle of a canvas drawing, in source pixels."""
    if not json_data:
        return None
    rects = [
        o for o in json_data.get("objects", []) if str(o.get("type", "")).lower() in RECT_TYPES
    ]
    return rect_to_box(rects[-1], scale) if rects else None


BOX_FILL = "rgba(0, 229, 255, 0.08)"
"""The optional low-alpha fill of a box; off by default so the outline never tints the muscle."""
NO_FILL = "rgba(0, 0, 0, 0)"


def box_to_rect(
    box: Box, scale: float, color: str = "#00E5FF", fill: str = BOX_FILL
) -> dict[str, Any]:
    """A Fabric rectangle showing ``box`` on the scaled canvas (for ``initial_drawing``)."""
    return {
        "type": "rect",
        "left": box.x * scale,
        "top": box.y * scale,
        "width": box.w * scale,
        "height": box.h * scale,
        "originX": "left",
        "originY": "top",
        "scaleX": 1,
        "scaleY": 1,
        "angle": 0,
        "fill": fill,
        "stroke": color,
        "strokeWidth": 2,
        "strokeUniform": True,
    }


def drawing_with(box: Box | None, scale: float, fill: str = BOX_FILL) -> dict[str, Any]:
    """A canvas drawing holding ``box`` alone: redrawn from source pixels at every scale,
    so a zoom change never leaves the rectangle where the old scale put it."""
    return {"objects": [box_to_rect(box, scale, fill=fill)] if box else []}


def drawn_in_image(
    json_data: dict[str, Any] | None, scale: float, width: int, height: int
) -> tuple[Box | None, bool]:
    """The last drawn rectangle in source pixels, clamped to the image; and whether it was.

    A drag past the image edge stops at the edge instead of producing a box the
    database refuses.
    """
    drawn = last_drawn_box(json_data, scale)
    if drawn is None:
        return None, False
    inside = clamp_box(drawn, width, height)
    return inside, inside != drawn
