"""Intensity normalization of ultrasound images to float32 in [0, 1].

Yi et al. (Sci Rep 2022) normalized GSU and SWE images "in a nonlinear way" to a standard
intensity range but do not say how, so the method is a setting:

- ``percentile_gamma`` (the default): clip to the image's 1st–99th percentile, stretch that
  range onto [0, 1], then apply an optional gamma. The clipping makes it nonlinear, it
  removes differences in scanner gain and dynamic range between patients, and, being one
  global curve per image, it keeps the brightness of muscle *relative to* fat, fascia and
  bone, which is exactly what echogenicity grading (Heckmatt) judges. It needs no
  reference image. Caveat: on a crop of muscle alone it also removes absolute echo
  intensity, so crop the whole ultrasound area (as the study did for GSU) before using it,
  and measure echo intensity (``core.learning.features``) on the unnormalized image.
- ``clahe``: contrast-limited adaptive histogram equalization (OpenCV). It equalizes
  locally, which can flatten the diffuse brightness rise that marks grades 2–3.
- ``histogram_match``: map the image's histogram onto a reference image's
  (scikit-image), for cohorts where one scan is agreed to be the standard.
- ``none``: only scale the stored bit depth to [0, 1].

Colour: ``normalize`` returns gray (luma); ``normalize_rgb`` returns (H, W, 3) and
normalizes the luma channel only, keeping the chroma (YCrCb Cr, Cb) unchanged, so that the
SWE colour hue, which codes stiffness, is preserved. Use ``method="none"`` before decoding
stiffness from the colour scale bar, because any luminance remap shifts the colours away
from the bar's.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, get_args

import cv2
import numpy as np
from skimage.exposure import match_histograms

NormalizationMethod = Literal["percentile_gamma", "clahe", "histogram_match", "none"]
NORMALIZATION_METHODS: tuple[str, ...] = get_args(NormalizationMethod)
DEFAULT_METHOD: NormalizationMethod = "percentile_gamma"

_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma, the weights OpenCV's RGB→gray and RGB→YCrCb use."""

_CONSTANT_RANGE_EPS = 1e-6


class ImageFormatError(ValueError):
    """The array is not an image this module can normalize (dtype, shape or value range)."""


def _check_shape(img: np.ndarray) -> None:
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ImageFormatError(
            f"Expected a gray (H, W) or (H, W, 1) image or an RGB/RGBA (H, W, 3|4) image; "
            f"got an array of shape {img.shape}."
        )
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageFormatError(f"The image is empty (shape {img.shape}).")


def _scale_to_unit(img: np.ndarray) -> np.ndarray:
    """Bit depth → float32 in [0, 1], channels untouched."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if np.issubdtype(img.dtype, np.floating):
        if not np.all(np.isfinite(img)):
            raise ImageFormatError("The float image contains NaN or infinite values.")
        lo, hi = float(img.min()), float(img.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageFormatError(
                f"A float image must already lie in [0, 1]; this one spans [{lo:g}, {hi:g}]. "
                "Pass the original uint8/uint16 pixels, or scale the floats to [0, 1] first."
            )
        return img.astype(np.float32)
    raise ImageFormatError(
        f"Unsupported pixel type {img.dtype}; pass uint8, uint16, or float in [0, 1]."
    )


def _to_rgb01(img: np.ndarray) -> np.ndarray:
    """Any supported image → float32 (H, W, 3) in [0, 1]; gray is replicated, alpha dropped."""
    img = np.asarray(img)
    _check_shape(img)
    x = _scale_to_unit(img)
    if x.ndim == 2:
        return np.repeat(x[:, :, None], 3, axis=2)
    if x.shape[2] == 1:
        return np.repeat(x, 3, axis=2)
    return np.ascontiguousarray(x[:, :, :3])


def to_float01(img: np.ndarray) -> np.ndarray:
    """Scale a uint8/uint16/float image to float32 gray in [0, 1].

    RGB is converted to BT.601 luma (channels assumed in RGB order, as PIL and pydicom
    return them); an alpha channel is ignored. Floats must already lie in [0, 1], because
    their intended range cannot be guessed.
    """
    img = np.asarray(img)
    _check_shape(img)
    x = _scale_to_unit(img)
    if x.ndim == 3:
        x = x[:, :, 0] if x.shape[2] == 1 else x[:, :, :3] @ _LUMA_WEIGHTS
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def percentile_gamma(
    img: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0, gamma: float = 1.0
) -> np.ndarray:
    """Clip to the [low_pct, high_pct] percentiles, stretch onto [0, 1], then raise to ``gamma``.

    A constant image has no range to stretch; it is returned scaled to [0, 1] only.
    """
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(
            f"Percentiles must satisfy 0 ≤ low_pct < high_pct ≤ 100; got {low_pct}, {high_pct}."
        )
    if not gamma > 0.0:
        raise ValueError(f"gamma must be positive; got {gamma}.")
    x = to_float01(img)
    lo, hi = np.percentile(x, [low_pct, high_pct])
    if hi - lo < _CONSTANT_RANGE_EPS:
        return x
    y = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return np.power(y, gamma).astype(np.float32)


def clahe(
    img: np.ndarray, clip_limit: float = 2.0, tile_grid: tuple[int, int] = (8, 8)
) -> np.ndarray:
    """OpenCV CLAHE on the 8-bit gray image.

    It always runs on 8 bits: ultrasound is displayed in 8 bits, and OpenCV's clip limit is
    defined per histogram bin, so a 65,536-bin run would change what ``clip_limit`` means.
    """
    if not clip_limit > 0.0:
        raise ValueError(f"clip_limit must be positive; got {clip_limit}.")
    if len(tile_grid) != 2 or any(int(t) != t or t < 1 for t in tile_grid):
        raise ValueError(f"tile_grid must be two positive integers; got {tile_grid}.")
    x8 = np.round(to_float01(img) * 255.0).astype(np.uint8)
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=tuple(int(t) for t in tile_grid))
    return op.apply(x8).astype(np.float32) / np.float32(255.0)


def histogram_match(img: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map the gray histogram of ``img`` onto that of ``reference`` (scikit-image)."""
    if reference is None:
        raise ValueError("histogram_match needs a reference image; pass reference=<array>.")
    x = to_float01(img)
    ref = to_float01(reference)
    y = match_histograms(x, ref)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _gray_method(
    method: str, x: np.ndarray, reference: np.ndarray | None, params: dict[str, Any]
) -> np.ndarray:
    if method not in NORMALIZATION_METHODS:
        raise ValueError(
            f"Unknown normalization method {method!r}; choose one of {list(NORMALIZATION_METHODS)}."
        )
    if method == "none":
        func, allowed = to_float01, set()
    else:
        func = {
            "percentile_gamma": percentile_gamma,
            "clahe": clahe,
            "histogram_match": histogram_match,
        }[method]
        allowed = set(inspect.signature(func).parameters) - {"img", "reference"}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(
            f"Method {method!r} does not take {sorted(unknown)}; "
            f"its settings are {sorted(allowed) or 'none'}."
        )
    if method == "histogram_match":
        return histogram_match(x, reference)
    if reference is not None:
        raise ValueError(f"A reference image only applies to 'histogram_match', not {method!r}.")
    return func(x, **params)


def normalize(
    img: np.ndarray,
    method: NormalizationMethod = DEFAULT_METHOD,
    *,
    reference: np.ndarray | None = None,
    **params: Any,
) -> np.ndarray:
    """Normalize any uint8/uint16/float, gray or RGB image to float32 gray (H, W) in [0, 1].

    ``params`` go to the chosen method (e.g. ``gamma=0.8`` for ``percentile_gamma``);
    ``reference`` is required by, and only accepted for, ``histogram_match``.
    """
    return _gray_method(method, to_float01(img), reference, params)


def normalize_rgb(
    img: np.ndarray,
    method: NormalizationMethod = DEFAULT_METHOD,
    *,
    reference: np.ndarray | None = None,
    **params: Any,
) -> np.ndarray:
    """Like ``normalize`` but return float32 (H, W, 3): only the luma is normalized.

    The image goes to YCrCb, Y is replaced by its normalized version, and Cr/Cb stay as they
    were, so the hue that codes stiffness in SWE is kept (values are clipped to [0, 1]
    afterwards). ``method="none"`` returns the exactly scaled RGB, skipping the colour-space
    round trip. Gray input gives three equal channels, the shape ImageNet backbones expect.
    """
    rgb = _to_rgb01(img)
    if method == "none" and not params and reference is None:
        return rgb
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    y = np.clip(ycrcb[:, :, 0], 0.0, 1.0)
    ycrcb[:, :, 0] = _gray_method(method, y, reference, params)
    out = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
