"""Agreement between two readers' echogenicity grades and crop boxes.

Yi et al. (Sci Rep 2022) had two musculoskeletal radiologists grade echogenicity 0–3 by
consensus and reported no agreement statistics. This project keeps each reader's own grade,
so it can report Cohen's kappa: unweighted, linear and quadratic weighted (the grades are
ordinal, so a 0-vs-3 disagreement should cost more than 1-vs-2), and on the study's low/high
dichotomy. Point values come from scikit-learn and asymptotic standard errors from
statsmodels (the SAS/Fleiss–Cohen–Everitt formulas), not from hand-written formulas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import norm
from sklearn.metrics import cohen_kappa_score, confusion_matrix
from statsmodels.stats.inter_rater import cohens_kappa

from core.common.boxes import Box
from core.common.labels import GRADES, dichotomize_grade

SE_FLOOR = 1e-6
"""Below this the asymptotic SE is rounding noise of a zero variance (one category only)."""

NOT_ESTIMABLE_HELP = (
    "Kappa is not estimable when both readers used one and the same category for every "
    "image (chance agreement is then 100% and kappa is 0/0), and its interval is not "
    "estimable when one reader used a single category (kappa is then 0 by construction, "
    "with no variance). Read the percent agreement for those images instead."
)


def _only(categories: list[int], label: Callable[[int], str]) -> str:
    return " and ".join(label(c) for c in categories)


def _one_category_note(single: dict[str, list[int]], label: Callable[[int], str]) -> str:
    """Which reader(s) used a single category, in words for a table cell."""
    if len(single) == 2:
        return f"both readers used only {_only(single['first'], label)}"
    ((which, categories),) = single.items()
    return f"the {which} reader used only {_only(categories, label)}"


class AgreementInputError(ValueError):
    """Grades or boxes that an agreement statistic cannot be computed from."""


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa with a Wald interval from its asymptotic standard error.

    The interval is clipped to [−1, 1], the range of kappa. ``note`` explains NaN values.
    """

    value: float
    lower: float
    upper: float
    se: float
    note: str | None = None

    def cell(self) -> str:
        """The table text: "0.62 (0.41–0.83)", or "not estimable" with the reason, never NaN."""
        if math.isnan(self.value):
            return f"not estimable: {self.note}"
        if math.isnan(self.lower) or math.isnan(self.upper):
            return f"{_two(self.value)} (CI not estimable: {self.note})"
        return f"{_two(self.value)} ({_two(self.lower)}–{_two(self.upper)})"


def _two(x: float) -> str:
    """Two decimals without a negative zero ("-0.00")."""
    return f"{round(x, 2) + 0.0:.2f}"


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of two readers over the images both graded.

    ``percent_agreement`` is in percent (0–100). ``confusion`` counts images with rows for
    reader A's grade 0..3 and columns for reader B's. ``box_ious`` holds one IoU per image where
    both readers drew a crop box; ``box_iou_median`` is None when there is none.
    """

    reader_a: str
    reader_b: str
    n: int
    kappa: Kappa
    kappa_linear: Kappa
    kappa_quadratic: Kappa
    kappa_dichotomized: Kappa
    percent_agreement: float
    confusion: np.ndarray
    box_iou_median: float | None
    box_ious: np.ndarray


def _validate_ratings(
    a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray, categories: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    a_arr = np.asarray(a)
    b_arr = np.asarray(b)
    if a_arr.ndim != 1 or b_arr.ndim != 1 or a_arr.shape != b_arr.shape:
        raise AgreementInputError(
            f"Both readers need one rating per image; got {a_arr.size} and {b_arr.size}."
        )
    if a_arr.size < 2:
        raise AgreementInputError(
            f"Agreement needs at least 2 images rated by both readers, got {a_arr.size}."
        )
    if len(set(categories)) < 2 or len(set(categories)) != len(categories):
        raise AgreementInputError(
            f"Give at least two distinct categories in order, got {tuple(categories)}."
        )
    for name, arr in (("A", a_arr), ("B", b_arr)):
        unknown = sorted(set(arr.tolist()) - set(categories))
        if unknown:
            raise AgreementInputError(
                f"Reader {name} has ratings {unknown} outside the categories {tuple(categories)}."
            )
    return a_arr, b_arr


def kappa_with_ci(
    a: Sequence[int] | np.ndarray,
    b: Sequence[int] | np.ndarray,
    weights: Literal["linear", "quadratic"] | None = None,
    categories: Sequence[int] = GRADES,
    alpha: float = 0.05,
    label: Callable[[int], str] = lambda c: f"grade {c}",
) -> Kappa:
    """Cohen's kappa (scikit-learn) with a (1 − alpha) CI from statsmodels' asymptotic SE.

    ``categories`` fixes the table to every possible grade in order, even those nobody used,
    so that weights depend on the grade distance, not on which grades happened to occur.
    When chance agreement is 100% (both readers used a single, identical category) kappa is
    undefined: everything is NaN and ``note`` says why. When one reader used a single
    category, kappa is 0 with no variance: the interval is NaN and ``note`` names the
    reader. ``label`` names a category in the notes.
    """
    if not 0.0 < alpha < 1.0:
        raise AgreementInputError(f"alpha must be between 0 and 1, got {alpha!r}.")
    if weights not in (None, "linear", "quadratic"):
        raise AgreementInputError(
            f"weights must be None, 'linear' or 'quadratic', got {weights!r}."
        )
    a_arr, b_arr = _validate_ratings(a, b, categories)
    labels = list(categories)
    table = confusion_matrix(a_arr, b_arr, labels=labels)
    n = table.sum()
    expected_agreement = float(table.sum(axis=1) @ table.sum(axis=0)) / n**2
    single = {
        which: sorted(set(arr.tolist()))
        for which, arr in (("first", a_arr), ("second", b_arr))
        if len(set(arr.tolist())) == 1
    }
    if math.isclose(expected_agreement, 1.0):
        note = _one_category_note(single, label)
        return Kappa(math.nan, math.nan, math.nan, math.nan, note=note)
    value = float(cohen_kappa_score(a_arr, b_arr, labels=labels, weights=weights))
    with np.errstate(divide="ignore", invalid="ignore"):  # its unused H0 z-test can be 0/0
        result = cohens_kappa(table, wt=weights)
    se = math.sqrt(max(float(result.var_kappa), 0.0))
    if single:
        return Kappa(value, math.nan, math.nan, 0.0, note=_one_category_note(single, label))
    if se < SE_FLOOR and not math.isclose(value, 1.0):
        return Kappa(value, math.nan, math.nan, 0.0, note="its standard error is 0 for this table")
    half = float(norm.isf(alpha / 2.0)) * se
    return Kappa(
        value=value,
        lower=max(value - half, -1.0),
        upper=min(value + half, 1.0),
        se=se,
    )


def _box_ious(
    boxes_a: Sequence[Box | None] | None, boxes_b: Sequence[Box | None] | None, n: int
) -> np.ndarray:
    if boxes_a is None or boxes_b is None:
        return np.empty(0)
    if len(boxes_a) != n or len(boxes_b) != n:
        raise AgreementInputError(
            f"Give one box (or None) per graded image: {n} grades but {len(boxes_a)} boxes "
            f"from reader A and {len(boxes_b)} from reader B."
        )
    return np.array(
        [
            ba.iou(bb)
            for ba, bb in zip(boxes_a, boxes_b, strict=True)
            if ba is not None and bb is not None
        ],
        dtype=float,
    )


def pair_agreement(
    reader_a: str,
    reader_b: str,
    grades_a: Sequence[int],
    grades_b: Sequence[int],
    boxes_a: Sequence[Box | None] | None = None,
    boxes_b: Sequence[Box | None] | None = None,
) -> PairAgreement:
    """All agreement statistics for two readers over the same images, in the same order.

    The dichotomized kappa uses the study's split (grades 0–1 low, 2–3 high; core.common.labels),
    which is the label the echogenicity model learns.
    """
    a_arr, b_arr = _validate_ratings(grades_a, grades_b, GRADES)
    a_bin = [dichotomize_grade(int(g)) for g in a_arr]
    b_bin = [dichotomize_grade(int(g)) for g in b_arr]
    ious = _box_ious(boxes_a, boxes_b, a_arr.size)
    return PairAgreement(
        reader_a=reader_a,
        reader_b=reader_b,
        n=int(a_arr.size),
        kappa=kappa_with_ci(a_arr, b_arr),
        kappa_linear=kappa_with_ci(a_arr, b_arr, weights="linear"),
        kappa_quadratic=kappa_with_ci(a_arr, b_arr, weights="quadratic"),
        kappa_dichotomized=kappa_with_ci(
            a_bin, b_bin, categories=(0, 1), label=lambda c: ("low", "high")[c] + " grades"
        ),
        percent_agreement=100.0 * float(np.mean(a_arr == b_arr)),
        confusion=confusion_matrix(a_arr, b_arr, labels=list(GRADES)),
        box_iou_median=float(np.median(ious)) if ious.size else None,
        box_ious=ious,
    )
