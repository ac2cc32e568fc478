"""Axis-aligned boxes in source-image pixels, the one geometry type every module shares."""

from __future__ import annotations

from dataclasses import dataclass

MIN_BOX_SIDE_PX = 16
"""Smallest crop side a reader may store; smaller boxes carry too little texture to grade."""


@dataclass(frozen=True, slots=True)
class Box:
    """A rectangle ``[x, x+w) × [y, y+h)`` in source-image pixel coordinates."""

    x: int
    y: int
    w: int
    h: int

    @property
    def x2(self) -> int:
        return self.x + self.w

    @property
    def y2(self) -> int:
        return self.y + self.h

    @property
    def area(self) -> int:
        return max(self.w, 0) * max(self.h, 0)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)

    def inside(self, width: int, height: int) -> bool:
        """True when the whole box lies within an image of the given size."""
        return self.x >= 0 and self.y >= 0 and self.x2 <= width and self.y2 <= height

    def iou(self, other: Box) -> float:
        """Intersection over union, 0 for disjoint or empty boxes."""
        ix = max(0, min(self.x2, other.x2) - max(self.x, other.x))
        iy = max(0, min(self.y2, other.y2) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


def validate_box(box: Box, width: int, height: int, min_side: int = MIN_BOX_SIDE_PX) -> str | None:
    """Return a reader-facing reason why ``box`` cannot be stored, or None when it is fine."""
    if not box.inside(width, height):
        return (
            f"The box {box.as_tuple()} reaches outside the {width}×{height} image; "
            "draw it inside the image."
        )
    if box.w < min_side or box.h < min_side:
        return (
            f"The box is {box.w}×{box.h} px; each side must be at least {min_side} px. "
            "Draw a larger box."
        )
    return None


def clamp_box(box: Box, width: int, height: int) -> Box:
    """The part of ``box`` inside a ``width``×``height`` image (a drag past the edge stops there).

    Sides are normalized first, so a box dragged right-to-left is handled the same way.
    The result may be empty (w or h 0) when the box lies wholly outside.
    """
    x1, x2 = sorted((box.x, box.x2))
    y1, y2 = sorted((box.y, box.y2))
    x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
    y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
    return Box(x1, y1, x2 - x1, y2 - y1)
