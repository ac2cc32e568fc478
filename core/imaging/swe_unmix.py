"""Undo the SWE overlay's alpha blending: one alpha per frame, each pixel's nearest bar color.

The scanner blends ``alpha·color + (1−alpha)·gray``; in the plane orthogonal to the gray
axis of display RGB (the "opponent plane") a pixel is exactly ``alpha`` times its bar color
whatever the gray underneath, so the fit and the matching happen there (see
:mod:`core.imaging.swe_decode`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree

from core.common.boxes import Box
from core.imaging.roi_detect import (
    OVERLAY_MIN_CHROMA,
    NoImageContentError,
    chroma,
    pad_box,
    ultrasound_area_excluding,
)

_ALPHA_MIN = 0.2


_ALPHA_SAMPLE = 600


CURVE_POINTS = 1024


def opponent(rgb: np.ndarray) -> np.ndarray:
    """The plane orthogonal to gray, scaled so distances are isotropic: (R−G, (R+G−2B)/√3)."""
    rgb = rgb.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack([r - g, (r + g - 2.0 * b) / math.sqrt(3.0)], axis=-1)


def dense_curve(colors: np.ndarray) -> np.ndarray:
    """Resample bar colors (bottom → top) to a fine curve, linear in RGB between samples."""
    src = np.linspace(0.0, 1.0, colors.shape[0])
    dst = np.linspace(0.0, 1.0, CURVE_POINTS)
    return np.stack([np.interp(dst, src, colors[:, c]) for c in range(3)], axis=1)


class AlphaFit:
    """Distances from sampled pixels to the scaled bar curve, for many candidate alphas.

    ``|p − a·c|² = |p|² − 2a·p·c + a²|c|²``: the dot products are computed once, so each
    candidate alpha costs one pass over a (pixels × curve samples) array.
    """

    def __init__(self, pixels: np.ndarray, curve: np.ndarray) -> None:
        self.curve = curve[:: max(1, curve.shape[0] // 256)]
        self.pixels = pixels
        pts, crv = opponent(pixels), opponent(self.curve).astype(np.float32)
        self.cross2 = 2.0 * (pts @ crv.T)
        self.p2 = (pts * pts).sum(axis=1)
        self.c2 = (crv * crv).sum(axis=1)[None, :]
        self.cap = 0.1 * float(np.median(np.sqrt(self.c2)))

    def _part(self, alpha: float) -> np.ndarray:
        """``|p − a·c|² − |p|²`` divided by ``a``, for every pixel and curve sample."""
        return np.float32(alpha) * self.c2 - self.cross2

    def color_cost(self, alpha: float) -> float:
        """Mean capped distance: how well ``alpha`` explains the pixels' colors."""
        d2 = self.p2 + alpha * self._part(alpha).min(axis=1)
        return float(np.minimum(np.sqrt(np.maximum(d2, 0.0)), self.cap).mean())

    def gray_cost(self, alpha: float, expected_gray: np.ndarray) -> float:
        """How far the gray left after removing ``alpha`` × the matched color is from the expected.

        ``mean(P) − alpha·mean(C)`` should equal ``(1 − alpha)·gray``; the median residual over
        the pixels is near zero only for the right alpha.
        """
        idx = self._part(alpha).argmin(axis=1)
        rest = self.pixels.mean(axis=1) - alpha * self.curve[idx].mean(axis=1)
        return abs(float(np.median(rest - (1.0 - alpha) * expected_gray)))


def fit_alpha(
    pixels: np.ndarray,
    curve: np.ndarray,
    border: Callable[[], tuple[np.ndarray, np.ndarray] | None],
) -> tuple[float, bool]:
    """The overlay opacity of one frame, and whether it had to be guessed.

    The colors fix alpha when they span hues: a wrong alpha moves the cyan-to-red pixels off
    the scaled curve. Pixels of one hue only (a whole box in jet's dark-blue to blue run, soft
    muscle on a wide scale) fit a plateau of alphas equally. Then ``border()`` decides:
    colored pixels paired with the gray they should hide (the GSU frame, or the B-mode just
    outside the color box, whose brightness continues under its edge). The second value is
    True when neither could decide.
    """
    rng = np.random.default_rng(0)

    def sample(n: int) -> np.ndarray:
        return rng.choice(n, _ALPHA_SAMPLE, replace=False) if n > _ALPHA_SAMPLE else np.arange(n)

    fit = AlphaFit(pixels[sample(pixels.shape[0])], curve)
    coarse = np.round(np.arange(_ALPHA_MIN, 1.0001, 0.05), 2)
    costs = np.array([fit.color_cost(a) for a in coarse])
    best = float(costs.min())
    plateau = coarse[costs <= best + max(1.5, 0.5 * best)]
    pairs = border() if plateau.max() - plateau.min() >= 0.1 else None
    if pairs is None:
        start = float(coarse[int(np.argmin(costs))])
        chooser, guessed = fit.color_cost, plateau.max() - plateau.min() >= 0.1
    else:
        pick = sample(pairs[0].shape[0])
        gray_fit, expected = AlphaFit(pairs[0][pick], curve), pairs[1][pick]
        start = min(plateau, key=lambda a: gray_fit.gray_cost(a, expected))
        chooser, guessed = (lambda a: gray_fit.gray_cost(a, expected)), False
    fine = np.arange(max(_ALPHA_MIN, start - 0.04), min(1.0, start + 0.04) + 1e-9, 0.01)
    return float(round(min(fine, key=chooser), 2)), guessed


def nearest_on_curve(
    pixels: np.ndarray, curve_opp: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest point of ``alpha × curve`` and the distance, per uint8 RGB pixel.

    In the opponent plane a uint8 pixel has integer coordinates (R−G, R+G−2B), and the
    gray underlay does not change them, so a frame holds only a few thousand distinct ones:
    the KD-tree is queried once per distinct point.
    """
    p = pixels.astype(np.int32)
    u = p[:, 0] - p[:, 1]
    w = p[:, 0] + p[:, 1] - 2 * p[:, 2]
    codes, inverse = np.unique((u + 255) * 1021 + (w + 510), return_inverse=True)
    pts = np.stack([codes // 1021 - 255, (codes % 1021 - 510) / math.sqrt(3.0)], axis=1)
    dist, idx = cKDTree(alpha * curve_opp).query(pts)
    return idx[inverse], dist[inverse]


def border_pairs(
    img: np.ndarray, gray: np.ndarray, mask: np.ndarray, box: Box, bar: Box | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Colored pixels just inside the color box edge, paired with the B-mode gray outside it.

    The tissue continues under the box edge, so the median gray 3–8 px outside (uncolored,
    within the image area, past the box outline) estimates the gray the overlay hides just
    inside. None when either band is too thin to trust (box filling the image area).
    """
    height, width = gray.shape
    inner = np.zeros_like(mask)
    inner[box.y : box.y2, box.x : box.x2] = True
    inner[box.y + 4 : box.y2 - 4, box.x + 4 : box.x2 - 4] = False
    inner &= mask
    far, near = pad_box(box, 8, width, height), pad_box(box, 2, width, height)
    outer = np.zeros_like(mask)
    outer[far.y : far.y2, far.x : far.x2] = True
    outer[near.y : near.y2, near.x : near.x2] = False
    try:
        area = ultrasound_area_excluding(img, bar)
    except NoImageContentError:
        return None
    within = np.zeros_like(mask)
    within[area.y : area.y2, area.x : area.x2] = True
    outer &= within & (chroma(img) < OVERLAY_MIN_CHROMA)
    if np.count_nonzero(inner) < 50 or np.count_nonzero(outer) < 50:
        return None
    expected = np.full(np.count_nonzero(inner), np.median(gray[outer]), np.float32)
    return img[inner].astype(np.float32), expected
