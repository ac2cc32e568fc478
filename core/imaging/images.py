"""Pixels of stored images, for display and for the imaging pipeline.

Stored files are either lossless PNG (from PNG/JPEG sources) or de-identified DICOM;
both decode to exactly the pixels that were imported, never re-encoded lossily.
"""

from __future__ import annotations

import cv2
import numpy as np

from core.common.store import ImageStore
from core.imaging import imageio


def decode_stored(data: bytes, relpath: str) -> np.ndarray:
    """RGB uint8 (H, W, 3), or gray (H, W) uint8/uint16, exactly as stored."""
    if relpath.endswith(".png"):
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise imageio.ImageReadError(relpath, "the stored PNG is unreadable", "Re-import it.")
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if pixels.ndim == 3 else pixels
    return imageio.decode_image(data, name=relpath).pixels


def load_pixels(store: ImageStore, relpath: str) -> np.ndarray:
    return decode_stored(store.read(relpath), relpath)


def to_display_rgb(pixels: np.ndarray) -> np.ndarray:
    """8-bit RGB for the screen; 16-bit gray is scaled by its full range, not clipped."""
    if pixels.dtype == np.uint16:
        pixels = (pixels.astype(np.float32) / 257.0).round().astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels


def window_level(rgb: np.ndarray, level: float = 0.5, window: float = 1.0) -> np.ndarray:
    """Brightness/contrast for display only: maps [level ± window/2] (0–1 units) to 0–255."""
    window = max(window, 1e-3)
    lut = np.clip(((np.arange(256) / 255.0 - (level - window / 2)) / window) * 255.0, 0, 255)
    return lut.astype(np.uint8)[rgb]
