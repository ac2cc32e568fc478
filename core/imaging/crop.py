"""Choose a crop box, cut the region of interest, and resize it to the model input size.

Yi et al. (Sci Rep 2022) cropped the elastographic colour box for SWE and the ultrasound
image area without text labels for GSU, then resampled to 84×84 (SWE) and 112×112 (GSU)
because the exported images differ in size. Sizes here are ``(height, width)``, the order
of numpy shapes and Keras ``input_shape``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from core.common.boxes import Box

BoxSource = Literal["consensus", "reader", "auto"]
Aspect = Literal["stretch", "pad"]

GSU_SIZE: tuple[int, int] = (112, 112)
"""GSU model input (height, width), Yi et al. 2022."""
SWE_SIZE: tuple[int, int] = (84, 84)
"""SWE model input (height, width), Yi et al. 2022."""

_CV2_RESIZE_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


class NoBoxError(ValueError):
    """No consensus, reader or automatic box exists for an image."""


class BoxOutsideImageError(ValueError):
    """The crop box reaches outside the image it should be cut from."""

    def __init__(self, image_label: str, box: Box, width: int, height: int) -> None:
        self.image_label = image_label
        self.box = box
        self.image_size = (width, height)
        super().__init__(
            f"The crop box (x, y, w, h) = {box.as_tuple()} for {image_label} reaches outside "
            f"the {width}×{height} image (it spans x {box.x}–{box.x2}, y {box.y}–{box.y2}). "
            "Redraw the box inside the image."
        )


@dataclass(frozen=True)
class ChosenBox:
    """The box to crop with, and where it came from (for the audit trail and the UI)."""

    box: Box
    source: BoxSource
    reader: str | None = None


def choose_box(
    consensus: Box | None,
    reader_boxes: Mapping[str, Box],
    auto: Box | None,
    *,
    image_label: str,
) -> ChosenBox:
    """Pick consensus, else a reader's box, else the automatic box.

    A person's box beats the detector's. With several reader boxes and no consensus, the
    first reader by name wins, so the same database always gives the same crop.
    """
    if consensus is not None:
        return ChosenBox(box=consensus, source="consensus")
    if reader_boxes:
        reader = sorted(reader_boxes)[0]
        return ChosenBox(box=reader_boxes[reader], source="reader", reader=reader)
    if auto is not None:
        return ChosenBox(box=auto, source="auto")
    raise NoBoxError(
        f"{image_label} has no crop box: no consensus box, no reader box and no automatic box. "
        "Draw a box on it, or run automatic box detection first."
    )


def _check_image(img: np.ndarray, what: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(
            f"The {what} must be a 2-D (H, W) or 3-D (H, W, C) array; got {img.shape}."
        )
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"The {what} is empty (shape {img.shape}).")
    return img


def crop(img: np.ndarray, box: Box, *, image_label: str = "image") -> np.ndarray:
    """Return a copy of ``img[y:y+h, x:x+w]``.

    A box touching the image edge is fine; one reaching a pixel beyond it raises
    ``BoxOutsideImageError``. A copy, so that editing the crop never changes the stored image.
    """
    img = _check_image(img, "image")
    if box.w <= 0 or box.h <= 0:
        raise ValueError(f"The crop box {box.as_tuple()} for {image_label} is empty; redraw it.")
    height, width = img.shape[:2]
    if not box.inside(width, height):
        raise BoxOutsideImageError(image_label, box, width, height)
    return img[box.y : box.y2, box.x : box.x2].copy()


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    shrinking = height <= img.shape[0] and width <= img.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(img, (width, height), interpolation=interpolation)
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def resize_crop(crop: np.ndarray, size: tuple[int, int], aspect: Aspect = "stretch") -> np.ndarray:
    """Resize to ``size`` = (height, width), keeping the dtype and the channel axis.

    ``stretch`` (the study) ignores the aspect ratio. ``pad`` scales the crop to fit inside
    ``size`` and centres it on zeros (letterbox), so muscle shape is not distorted. OpenCV
    INTER_AREA is used when shrinking (it averages, avoiding speckle aliasing) and
    INTER_LINEAR otherwise. Supported dtypes: uint8, uint16, int16, float32, float64 (integer
    results are rounded by OpenCV); cast other types first.
    """
    crop = _check_image(crop, "crop")
    if crop.dtype not in _CV2_RESIZE_DTYPES:
        raise ValueError(
            f"Cannot resize a {crop.dtype} array; convert it to uint8, uint16, int16, float32 "
            "or float64 first."
        )
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be two positive integers (height, width); got {size}.")
    out_h, out_w = int(size[0]), int(size[1])
    if aspect == "stretch":
        return _resize(crop, out_h, out_w)
    if aspect != "pad":
        raise ValueError(f"aspect must be 'stretch' or 'pad'; got {aspect!r}.")
    in_h, in_w = crop.shape[:2]
    scale = min(out_h / in_h, out_w / in_w)
    fit_h = min(out_h, max(1, round(in_h * scale)))
    fit_w = min(out_w, max(1, round(in_w * scale)))
    resized = _resize(crop, fit_h, fit_w)
    canvas = np.zeros((out_h, out_w, *crop.shape[2:]), dtype=crop.dtype)
    top = (out_h - fit_h) // 2
    left = (out_w - fit_w) // 2
    canvas[top : top + fit_h, left : left + fit_w] = resized
    return canvas


def crop_and_resize(
    img: np.ndarray,
    box: Box,
    size: tuple[int, int],
    aspect: Aspect = "stretch",
    *,
    image_label: str = "image",
) -> np.ndarray:
    """``crop`` then ``resize_crop``: the model-ready region of interest."""
    return resize_crop(crop(img, box, image_label=image_label), size, aspect)
