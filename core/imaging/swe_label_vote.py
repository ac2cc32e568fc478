"""Vote each SWE label's reading across its OCR views, and the corrections a refused bar may try.

``core.imaging.swe_label_ocr`` reads every label box in 12 views; here the views are voted
into one :class:`Label` (``vote_labels``), and, for a bar the checks in
``core.imaging.swe_scale_labels`` refused, dotted or slashed zeros read as 8 are taken as
0 where the glyph's outline says so, and lost decimal points are put back in the format of
the other labels (``restore_decimals``). The checks decide on every corrected reading.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

import numpy as np

from core.common.boxes import Box
from core.imaging.swe_label_ocr import (
    glyph_match,
    glyph_samples,
    letter_free,
    restore_dot,
    shapes_agree,
    single,
    split_units,
    zero_positions,
)

__all__ = ["NUMBER", "Label", "restore_decimals", "vote_labels"]

NUMBER = re.compile(r"^(?P<cmp>>)?(?P<num>-?(?:0|[1-9]\d*)(?:\.\d+)?)$")
"""A number as printed by a bar, with the '>' of a title such as '>200'."""
_SURE_SHARE = 2 / 3
"""A label's reading counts when at least this share of its views read exactly it."""
ALTERNATIVE_VIEWS = 3
"""Views that must give a reading for it to count as one the label may say."""
_MAX_ALTERNATIVES = 3
_GLYPH_SCORE, _GLYPH_MARGIN = 0.9, 0.1
"""A lone glyph matches a character of the other labels: correlation, lead over the next."""


@dataclass(frozen=True)
class Label:
    """One text box by the bar and what was read there (``views``: each view's reading).

    ``sure``: enough views read exactly ``text`` (and, read without the whitelist, no
    letter showed); a label that is not sure is left out of the checks. ``shapes_agree``:
    each digit is one glyph with the digit's counters (``swe_label_ocr.shapes_agree``),
    and no other number a view read has them.
    """

    box: Box
    text: str
    sure: bool
    views: tuple[str, ...]
    shapes_agree: bool = False
    alternatives: tuple[str, ...] = ()
    """Readings (decimal points restored) that at least ``ALTERNATIVE_VIEWS`` views gave,
    commonest first; none where a letter shows without the whitelist."""


def _undotted(text: str) -> str:
    """A reading without its unit and decimal points (dots are checked on the ink)."""
    return split_units(text)[0].replace(".", "")


def _letter_shows(free: str, text: str) -> bool:
    """A letter that is no digit's lookalike, read without the whitelist where ``text`` has none.

    The whitelist makes Tesseract call any glyph a digit; read freely, a letter shows. A
    digit read differently there is only one more view, and the whitelisted views outvote it.
    """
    return any(c.isalpha() for c in letter_free(free)) and not any(
        c.isalpha() for c in letter_free(text)
    )


def _tally(views: list[str], box: Box, glyphs: list[Box]) -> collections.Counter[str]:
    """How many views gave each reading, decimal points checked on the ink (``restore_dot``)."""
    fixed = (restore_dot(t, box, glyphs) for t in views if t)
    return collections.Counter(t for t in fixed if t is not None)


def _alternatives(tally: collections.Counter[str]) -> tuple[str, ...]:
    """Readings that enough views gave (``ALTERNATIVE_VIEWS``), commonest first."""
    counted = tally.most_common(_MAX_ALTERNATIVES)
    return tuple(t for t, n in counted if n >= ALTERNATIVE_VIEWS)


def _vote(views: list[str], tally: collections.Counter[str]) -> tuple[str | None, bool]:
    """The label's commonest reading, and whether enough of the views read exactly it.

    A view that read nothing does not disagree; a majority of all views must still agree.
    """
    if not tally:
        return None, False
    text, count = tally.most_common(1)[0]
    return text, count >= _SURE_SHARE * len([v for v in views if v]) and 2 * count > len(views)


def _only_shape(
    contrast: np.ndarray, text: str, said: list[str], box: Box, glyphs: list[Box]
) -> bool:
    """The glyphs' counters fit ``text`` and no other number a view read ('90', not '30')."""
    others = {v for v in said if NUMBER.match(split_units(v)[0])} - {text}
    return shapes_agree(contrast, text, box, glyphs) and not any(
        shapes_agree(contrast, v, box, glyphs) for v in others if _undotted(v) != _undotted(text)
    )


def restore_decimals(labels: list[Label]) -> list[Label]:
    """Sure numbers given back the decimal point that every other decimal number shows.

    One scale prints its numbers in one format (10.0/7.5/5.0/2.5); with 6–7 px digits the
    point merges into the next digit and is lost ('75'). Where at least two sure numbers
    have a point and all the same digits after it, a sure number without one gets the point
    before as many digits; the checks then decide. Nothing is ever taken away.
    """
    decimals = collections.Counter(
        len(rest) - rest.index(".") - 1
        for label in labels
        if label.sure
        and (rest := split_units(label.text)[0]).count(".") == 1
        and NUMBER.match(rest)
    )
    if len(decimals) != 1 or next(iter(decimals.values())) < 2:
        return labels
    ((after, _),) = decimals.items()
    out = []
    for label in labels:
        rest, unit = split_units(label.text)
        if label.sure and rest.isdigit() and len(rest) > after:
            text = f"{rest[:-after]}.{rest[-after:]}{unit or ''}"
            label = Label(label.box, text, True, label.views)  # shapes unchecked: no end pair
        out.append(label)
    return out


def _zero_fixed(
    contrast: np.ndarray, said: list[str], text: str, box: Box, glyphs: list[Box]
) -> tuple[list[str], bool]:
    """Views with each 0-shaped glyph read as 0 (``swe_label_ocr.zero_positions``); changed?

    ``text`` is the views' commonest reading. A view is rewritten only where it differs
    from it just at those glyphs, where it read 0, 6, 8 or 9, so that a dotted 0 read as 8
    in some views and 0 in others is voted as the 0 its outline shows.
    """
    zeros = zero_positions(contrast, text, box, glyphs)
    if not zeros:
        return said, False
    target = "".join("0" if i in zeros else c for i, c in enumerate(text))

    def zero_only(view: str) -> bool:
        """``view`` differs from ``target`` (if at all) only at 0-shaped glyphs."""
        return len(view) == len(target) and all(
            a == b or (i in zeros and a in "0689")
            for i, (a, b) in enumerate(zip(view, target, strict=True))
        )

    dotted = [restore_dot(v, box, glyphs) or v for v in said]
    if not any(v and zero_only(d) and d != target for v, d in zip(said, dotted, strict=True)):
        return said, False
    return [target if v and zero_only(d) else v for v, d in zip(said, dotted, strict=True)], True


def vote_labels(
    contrast: np.ndarray,
    near: list[tuple[Box, list[Box]]],
    region: Box,
    views: list[list[str]],
    free: list[str],
    zeros: bool,
) -> list[Label]:
    """Each box's voted label; ``zeros``: 0-shaped glyphs read as 8 taken as 0 (no end-pair use)."""
    voted = []
    for i, (box, glyphs) in enumerate(near):
        said = [v[i] for v in views]
        tally = _tally(said, box, glyphs)
        text, sure = _vote(said, tally)
        changed = False
        if zeros and text:
            said, changed = _zero_fixed(contrast, said, text, box, glyphs)
            if changed:
                tally = _tally(said, box, glyphs)
                text, sure = _vote(said, tally)
        others = _alternatives(tally)
        if text and not single(box) and _letter_shows(free[i], text):
            sure, others = False, ()  # without the whitelist a letter shows ("8e")
        voted.append((text, sure, said, changed, others))
    samples = [
        sample
        for (box, glyphs), (text, sure, *_) in zip(near, voted, strict=True)
        if sure and text and not single(box)
        for sample in glyph_samples(contrast, text, box, glyphs)
    ]
    labels = []
    for (box, glyphs), (text, sure, said, changed, others) in zip(near, voted, strict=True):
        if single(box) and not sure:
            char, score, margin = glyph_match(contrast[box.y : box.y2, box.x : box.x2], samples)
            if char in said and score >= _GLYPH_SCORE and margin >= _GLYPH_MARGIN:
                text, sure = char, True  # a reading of some view, confirmed by the font's own glyph
        frame_box = Box(box.x + region.x, box.y + region.y, box.w, box.h)
        shapes = bool(sure and text) and not changed
        shapes = shapes and _only_shape(contrast, text or "", said, box, glyphs)
        labels.append(Label(frame_box, text or "", sure, tuple(said), shapes, others))
    return labels
