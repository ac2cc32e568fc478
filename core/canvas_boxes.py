"""Convert between crop boxes in source pixels and Fabric.js rectangles on a scaled canvas.

The grading page shows an image scaled by ``scale`` (display px per source px) on a
``streamlit-drawable-canvas``. A rectangle the reader draws or resizes comes back as a
Fabric object whose true size is ``width * scaleX`` by ``height * scaleY`` in canvas pixels;
dividing by the display scale gives source pixels, which is what the database stores.
"""

from __future__ import annotations

from typing import Any

from core.boxes import Box

_ORIGIN_OFFSET = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}
RECT_TYPES = ("rect", "labeledrect")
"""Fabric type names of rectangles, lower-cased (Fabric 6 writes "Rect", older "rect")."""


def fit_scale(width: int, height: int, max_width: int, max_height: int, zoom: float = 1.0) -> float:
    """Display scale: native size where it fits (never enlarged past ``zoom``), else shrunk."""
    fit = min(max_width / width, max_height / height, 1.0)
    return fit * zoom


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


def box_to_rect(box: Box, scale: float, color: str = "#00E5FF") -> dict[str, Any]:
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
        "fill": "rgba(0, 229, 255, 0.08)",
        "stroke": color,
        "strokeWidth": 2,
        "strokeUniform": True,
    }


def drawing_with(box: Box | None, scale: float) -> dict[str, Any]:
    return {"objects": [box_to_rect(box, scale)] if box else []}
