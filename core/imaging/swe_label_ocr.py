"""Find the text boxes beside an SWE color bar and read each one with Tesseract, many ways.

One reading can be wrong in a way nothing shows ('90' read as '80'), so every label is read
in several *views*: upscaled with cubic interpolation to several glyph heights (Tesseract's
LSTM is most reliable for 24–44 px text) and binarized at several ink levels (Otsu, thin
and bold strokes). All views of all labels go into one image, one line each, so a single
Tesseract call reads them all (its start-up, not the reading, is what costs time). The
caller (``core.imaging.swe_scale_labels``) votes across views and checks the numbers against
each other and against the bar.
"""

from __future__ import annotations

import itertools
from typing import Literal

import cv2
import numpy as np
import pytesseract
from PIL import Image

from core.common.boxes import Box
from core.imaging.roi_detect import BAR_MIN_CHROMA, chroma

Units = Literal["kPa", "m/s"]

WHITELIST = "0123456789.-kPam/s>"
VIEW_HEIGHTS = (24, 30, 36, 44)
"""Label heights (px) Tesseract reads at."""
INK_LEVELS = (None, 0.3, 0.6)
"""Binarization of each height: Otsu, then bold (30 % of the ink's contrast) and thin (60 %)."""
_UNIT_SPELLINGS = (("kPa", "kPa"), ("m/s", "m/s"), ("ms", "m/s"))
"""Spellings of a unit as Tesseract returns it (the '/' of m/s is lost at small sizes)."""
_MAX_GLYPH_PX = 40


def ink_contrast(rgb: np.ndarray) -> np.ndarray:
    """Distance of each pixel's gray from the panel's (median) gray; colored pixels get 0."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    contrast = np.abs(gray.astype(np.int16) - int(np.median(gray))).astype(np.uint8)
    contrast[chroma(rgb) > BAR_MIN_CHROMA] = 0
    return contrast


def _group_lines(glyphs: list[Box]) -> list[list[Box]]:
    """Glyphs side by side on one line (gap under 0.6 line heights) form one label."""
    groups: list[list[Box]] = []
    for g in sorted(glyphs, key=lambda b: b.x):
        for group in groups:
            gy0, gy1 = min(b.y for b in group), max(b.y2 for b in group)
            tall = max(gy1 - gy0, g.h)
            overlap = min(gy1, g.y2) - max(gy0, g.y)
            gap = g.x - max(b.x2 for b in group)
            if overlap >= 0.5 * min(g.h, gy1 - gy0) and -tall <= gap <= 0.6 * tall:
                group.append(g)
                break
        else:
            groups.append([g])
    return groups


def text_boxes(contrast: np.ndarray) -> list[tuple[Box, list[Box]]]:
    """Label boxes (with their glyph boxes) on a plain surround, not cut by the region edge."""
    strong = contrast[contrast > 20]
    level = max(40, int(0.3 * np.percentile(strong, 95))) if strong.size else 40
    n, _, stats, _ = cv2.connectedComponentsWithStats((contrast >= level).astype(np.uint8), 8)
    glyphs = [
        Box(*(int(v) for v in stats[i, :4]))
        for i in range(1, n)
        if stats[i, 2] <= _MAX_GLYPH_PX and stats[i, 3] <= _MAX_GLYPH_PX
    ]
    rh, rw = contrast.shape
    found = []
    for group in _group_lines(glyphs):
        x0, y0 = min(b.x for b in group), min(b.y for b in group)
        box = Box(x0, y0, max(b.x2 for b in group) - x0, max(b.y2 for b in group) - y0)
        if not 5 <= box.h <= _MAX_GLYPH_PX or box.x < 4 or box.y < 4:
            continue
        if box.x2 > rw - 4 or box.y2 > rh - 4:
            continue
        ring = contrast[box.y - 4 : box.y2 + 4, box.x - 4 : box.x2 + 4].copy()
        ring[3:-3, 3:-3] = 0  # the ring 2–4 px out: past the glyphs' anti-aliased fringe
        if np.count_nonzero(ring >= level // 2) > 0.05 * (ring.size - (box.w + 2) * (box.h + 2)):
            continue  # speckle or more text runs on: not a label standing alone
        found.append((box, group))
    return found


def single(box: Box) -> bool:
    """A box narrower than tall holds one glyph."""
    return box.w <= 0.9 * box.h


def _tile(contrast: np.ndarray, box: Box, height: int, level: float | None) -> np.ndarray:
    """The label at ``height`` px, black on white; a lone glyph twice, side by side.

    Tesseract often returns nothing for one glyph alone (a lone '0' looks like an 'O',
    which the whitelist excludes); as a pair it reads it, and both halves must agree.
    ``level``: ink threshold as a share of the label's strongest ink; None for Otsu.
    """
    patch = contrast[box.y - 2 : box.y2 + 2, box.x - 2 : box.x2 + 2]
    if single(box):
        patch = np.hstack([patch, np.zeros((patch.shape[0], 2), np.uint8), patch])
    scale = height / box.h
    big = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    if level is None:
        return cv2.threshold(big, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)[1]
    cut = level * float(np.percentile(big, 99))
    return np.where(big > cut, 0, 255).astype(np.uint8)


def read_views(
    contrast: np.ndarray,
    boxes: list[Box],
    views: list[tuple[int, float | None]],
    whitelist: str | None = WHITELIST,
) -> list[list[str]]:
    """Each view's reading of every label (``[view][label]``), in one Tesseract call.

    Every (view, label) tile is one line of the image. Words Tesseract separates by a space
    stay separate ("1 0" is not the number 10).
    """
    tiles = [_tile(contrast, b, h, level) for h, level in views for b in boxes]
    gap = max(h for h, _ in views)
    canvas = np.full(
        (sum(t.shape[0] + gap for t in tiles) + gap, max(t.shape[1] for t in tiles) + 2 * gap),
        255,
        np.uint8,
    )
    slots, y = [], gap
    for t in tiles:
        canvas[y : y + t.shape[0], gap : gap + t.shape[1]] = t
        slots.append((y - gap / 2, y + t.shape[0] + gap / 2))
        y += t.shape[0] + gap
    data = pytesseract.image_to_data(
        Image.fromarray(canvas),
        config="--psm 6" + (f" -c tessedit_char_whitelist={whitelist}" if whitelist else ""),
        output_type=pytesseract.Output.DICT,
    )
    words: list[list[tuple[int, str]]] = [[] for _ in tiles]
    for text, left, top, h in zip(
        data["text"], data["left"], data["top"], data["height"], strict=True
    ):
        for i, (s0, s1) in enumerate(slots):
            if text.strip() and s0 <= top + h / 2 < s1:
                words[i].append((left, text.strip()))
    texts = [" ".join(t for _, t in sorted(w)) for w in words]
    said = [
        (t[0] if len(t) <= 2 and len(set(t)) == 1 else "?" if t else "") if single(b) else t
        for t, b in zip(texts, boxes * len(views), strict=True)
    ]
    return [said[i * len(boxes) : (i + 1) * len(boxes)] for i in range(len(views))]


def split_units(text: str) -> tuple[str, Units | None]:
    """(number part, unit) of a label read as e.g. ``240``, ``>300kPa`` or ``10.0m/s``."""
    for spelling, unit in _UNIT_SPELLINGS:
        if text.endswith(spelling):
            return text[: -len(spelling)].rstrip(), unit  # type: ignore[return-value]
    return text, None


def restore_dot(text: str, box: Box, glyphs: list[Box]) -> str | None:
    """``text`` with a dropped decimal point put back where the ink has one; None if unsure.

    A dot is a small blob on the baseline. Where Tesseract gave no '.', the dot goes after
    as many digits as lie left of it, counted both by glyphs and by width; when the counts
    differ, or the ink shows more dots than the text, None. A '.' Tesseract read is kept
    (a dot fused with its neighbour at small sizes is no blob of its own).
    """
    rest, unit = split_units(text)
    if not rest.replace(".", "").isdigit():
        return text
    dots = [
        g
        for g in glyphs
        if g.h <= 0.3 * box.h
        and g.w <= 0.4 * box.h
        and g.y2 >= box.y2 - 0.25 * box.h
        and min(g.w, g.h) >= 0.1 * box.h
        and not any(o is not g and o.x < g.x2 and g.x < o.x2 for o in glyphs)
        and any(o.x2 <= g.x for o in glyphs)
        and any(o.x >= g.x2 for o in glyphs)
    ]  # a blob on the baseline between glyphs, nothing above it (not a stroke's broken end)
    if rest.count(".") >= len(dots) and (rest.count(".") or not dots):
        return text
    if rest.count(".") or len(dots) != 1:
        return None
    dot = dots[0]
    by_glyphs = sum(1 for g in glyphs if g is not dot and g.h > 0.5 * box.h and g.x2 <= dot.x + 1)
    by_width = round(len(rest) * (dot.x - box.x) / max(box.w - dot.w, 1))
    if by_glyphs != by_width or not 0 < by_glyphs < len(rest):
        return None
    return f"{rest[:by_glyphs]}.{rest[by_glyphs:]}{unit or ''}"


_LOOKALIKES = str.maketrans("OoDQSsIlZzBg", "000055112289")
"""Letters Tesseract returns, without the whitelist, for digits of an unusual font."""


def letter_free(text: str) -> str:
    """Letters, digits and '.' of a reading without its unit, digit lookalikes as digits.

    Read without the whitelist, a glyph that is no digit shows as a letter ('8O'); an 'S'
    for a '5' or an 'O' for a '0' is the same glyph in another font, not a sign of one.
    """
    rest = split_units(text)[0].translate(_LOOKALIKES)
    return "".join(c for c in rest if c.isalnum() or c == ".")


def glyph_samples(
    contrast: np.ndarray, text: str, box: Box, glyphs: list[Box]
) -> list[tuple[str, np.ndarray]]:
    """(character, glyph image) for each digit of a label; [] when the glyphs do not add up.

    Digits that touch (small bold fonts) form one blob: a blob as wide as two digits is cut
    at its faintest column near the middle. Cutting only ever opens a counter, never adds
    one, so a bad cut can only make ``shapes_agree`` refuse.
    """
    digits = [c for c in split_units(text)[0] if c.isdigit()]
    tall = sorted((g for g in glyphs if g.h > 0.5 * box.h), key=lambda g: g.x)
    if not digits or not tall:
        return []
    pitch = sum(g.w for g in tall) / len(digits)
    pieces = []
    for g in tall:
        patch = contrast[g.y : g.y2, g.x : g.x2]
        count = max(1, round(g.w / pitch)) if len(tall) < len(digits) else 1
        cuts = [0]
        for k in range(1, count):
            lo, hi = int(g.w * (k - 0.3) / count), int(g.w * (k + 0.3) / count)
            cuts.append(lo + int(np.argmin(patch[:, lo:hi].sum(axis=0))))
        cuts.append(g.w)
        pieces += [patch[:, a:b] for a, b in itertools.pairwise(cuts) if b > a]
    if len(pieces) != len(digits):
        return []
    return list(zip(digits, pieces, strict=True))


def glyph_match(
    patch: np.ndarray, samples: list[tuple[str, np.ndarray]]
) -> tuple[str | None, float, float]:
    """The character whose samples ``patch`` matches best, its score, and the margin.

    All labels of a bar are printed in one font, so a glyph Tesseract cannot read alone
    (a lone '0') is compared with the same character inside labels it read surely.
    Normalized cross-correlation at the sample's size; samples of another size do not count.
    """
    best: dict[str, float] = {}
    for char, sample in samples:
        if abs(sample.shape[0] - patch.shape[0]) > 1 or abs(sample.shape[1] - patch.shape[1]) > 2:
            continue
        resized = cv2.resize(patch, sample.shape[::-1], interpolation=cv2.INTER_AREA)
        a, b = resized.astype(np.float32).ravel(), sample.astype(np.float32).ravel()
        a, b = a - a.mean(), b - b.mean()
        score = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-6))
        best[char] = max(best.get(char, -1.0), score)
    if not best:
        return None, 0.0, 0.0
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    margin = ranked[0][1] - (ranked[1][1] if len(ranked) > 1 else 0.0)
    return ranked[0][0], ranked[0][1], margin


_HOLES = {d: ("",) for d in "12357"} | {"0": ("c",), "6": ("l",), "8": ("ul",), "9": ("u",)}
_HOLES["4"] = ("", "c", "u", "l")  # open or closed, by font
"""Enclosed counters of each digit, top to bottom: (u)pper, (l)ower or (c)entral/tall."""
_MIN_HOLE = 0.01
"""Share of the glyph's box a counter must fill: smaller gaps are where strokes nearly touch."""


def _holes(patch: np.ndarray) -> str:
    """The glyph's enclosed counters, top to bottom, as in ``_HOLES``.

    Ink is what passes 35 % of the glyph's strongest contrast, at its own resolution: a
    thin stroke of an anti-aliased glyph still closes its counter, and no interpolation
    can open one. A counter reaching from the upper third into the lower one is central
    (a 0's); one that does not is upper (a 9's) or lower (a 6's) by its centre.
    """
    ink = (patch > 0.35 * float(np.percentile(patch, 99))).astype(np.uint8)
    ink = cv2.copyMakeBorder(ink, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(1 - ink, connectivity=4)
    height = ink.shape[0]
    found = []
    for i in range(1, n):
        if labels[0, 0] == i or stats[i, cv2.CC_STAT_AREA] < _MIN_HOLE * ink.size:
            continue  # the outside, or a pinhole where two strokes nearly meet
        top = stats[i, cv2.CC_STAT_TOP] / height
        bottom = top + stats[i, cv2.CC_STAT_HEIGHT] / height
        where = centroids[i][1] / height
        found.append((where, "c" if top < 0.35 and bottom > 0.65 else "u" if where < 0.5 else "l"))
    return "".join(kind for _, kind in sorted(found))


def shape_fits(char: str, patch: np.ndarray) -> bool:
    """The glyph has the counters of ``char``; 0 and 8 are also told apart by the waist.

    Mono fonts print a 0 with a dot or slash inside, which has an 8's two counters; the
    outline tells them apart (``_waist``), so a 0 may have two counters and no waist, and
    an 8 must have a waist.
    """
    holes = _holes(patch)
    if char == "0" and holes == "ul":
        return _waist(patch) >= _ZERO_WAIST
    if char == "8":
        return holes in _HOLES["8"] and _waist(patch) < _ZERO_WAIST
    return holes in _HOLES[char]


def shapes_agree(contrast: np.ndarray, text: str, box: Box, glyphs: list[Box]) -> bool:
    """Every digit of ``text`` is one glyph whose counters are the digit's (9 has one, 8 two).

    Tesseract's confusions that leave every view in agreement ('90' read as '80', '6' as
    '9') change a digit's counters; this check needs no second example of the digit.
    """
    samples = glyph_samples(contrast, text, box, glyphs)
    return bool(samples) and all(shape_fits(c, p) for c, p in samples)


_ZERO_WAIST = 0.9
"""An 8's outline narrows between its counters; a 0's (dotted or slashed) does not."""


def zero_positions(contrast: np.ndarray, text: str, box: Box, glyphs: list[Box]) -> set[int]:
    """Indices into ``text`` of the digits read as 0 or 8 whose glyph is shaped like a 0.

    Mono fonts print a 0 with a dot or slash inside, which Tesseract reads as an 8 and
    whose two counters are an 8's. The outline tells them apart: an 8 has a waist where its
    counters meet (at most 0.85 of its width in the fonts measured), a 0 is an oval
    (0.9–1.0); a glyph with an 8's counters or one tall counter and no waist is a 0.
    """
    samples = glyph_samples(contrast, text, box, glyphs)
    digits = [i for i, c in enumerate(split_units(text)[0]) if c.isdigit()]
    if not samples:
        return set()  # the glyphs do not add up to the digits read
    return {
        i
        for i, (char, patch) in zip(digits, samples, strict=True)
        if char in "08" and _holes(patch) in ("c", "ul") and _waist(patch) >= _ZERO_WAIST
    }


def _waist(patch: np.ndarray) -> float:
    """Narrowest width of the glyph's middle third over its widest row (ink as in ``_holes``)."""
    ink = patch > 0.35 * float(np.percentile(patch, 99))
    spans = [np.flatnonzero(row) for row in ink]
    widths = [int(c[-1] - c[0] + 1) if c.size else 0 for c in spans]
    h = len(widths)
    return min(widths[int(0.35 * h) : int(0.65 * h) + 1]) / max(max(widths), 1)
