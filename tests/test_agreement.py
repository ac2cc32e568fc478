"""Inter-reader agreement: kappa values, their intervals, and crop-box IoU."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import cohens_kappa

from core.common.boxes import Box
from core.stats.agreement import (
    AgreementInputError,
    Kappa,
    kappa_with_ci,
    pair_agreement,
)


def _ratings_from_table(table: list[list[int]]) -> tuple[list[int], list[int]]:
    """Expand a contingency table (rows reader A, columns reader B) into paired ratings."""
    a: list[int] = []
    b: list[int] = []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            a += [i] * count
            b += [j] * count
    return a, b


# Hand-checked 4×4 example, grades of 4 images: A = 0 1 2 3, B = 0 1 3 3 (one 2-vs-3 miss).
# Row margins (1,1,1,1)/4, column margins (1,1,0,2)/4.
# Unweighted: po = 3/4, pe = (1·1 + 1·1 + 1·0 + 1·2)/16 = 1/4, kappa = (3/4 − 1/4)/(3/4) = 2/3.
# Linear, w = |i−j|/3: observed disagreement (1/3)/4 = 1/12; expected
#   Σ_i Σ_j |i−j| c_j /(16·3) with c = (1,1,0,2): rows 7 + 5 + 5 + 5 = 22 → 22/48 = 11/24;
#   kappa = 1 − (1/12)/(11/24) = 9/11.
# Quadratic, w = (i−j)²/9: observed (1/9)/4 = 1/36; expected rows 19 + 9 + 7 + 13 = 48 →
#   48/(16·9) = 1/3; kappa = 1 − (1/36)/(1/3) = 11/12.
HAND_A = [0, 1, 2, 3]
HAND_B = [0, 1, 3, 3]


@pytest.mark.parametrize(
    ("weights", "expected"), [(None, 2 / 3), ("linear", 9 / 11), ("quadratic", 11 / 12)]
)
def test_hand_checked_4x4_example(weights: str | None, expected: float) -> None:
    k = kappa_with_ci(HAND_A, HAND_B, weights=weights)
    assert k.value == pytest.approx(expected, abs=1e-12)
    assert k.lower <= k.value <= k.upper
    assert k.note is None


# SAS PROC FREQ example reproduced in statsmodels' own tests (table10, 19 subjects):
# rows A = (5, 8, 6), columns B = (0, 13, 6), diagonal 0 + 8 + 5 = 13.
# Simple: po = 13/19, pe = (5·0 + 8·13 + 6·6)/361 = 140/361, kappa = 107/221 = 0.4842.
# Linear: observed disagreement (4·½ + 1·1 + 1·½)/19 = 66.5/361, expected
#   (5·13·½ + 5·6·1 + 8·6·½ + 6·13·½)/361 = 125.5/361, kappa = 59/125.5 = 0.4701.
SAS_TABLE = [[0, 4, 1], [0, 8, 0], [0, 1, 5]]


@pytest.mark.parametrize(
    ("weights", "exact", "sas"),
    [
        (None, 107 / 221, (0.4842, 0.1380, 0.2137, 0.7547)),
        ("linear", 59 / 125.5, (0.4701, 0.1457, 0.1845, 0.7558)),
    ],
)
def test_sas_reference_values_with_standard_error(
    weights: str | None, exact: float, sas: tuple[float, float, float, float]
) -> None:
    a, b = _ratings_from_table(SAS_TABLE)
    k = kappa_with_ci(a, b, weights=weights, categories=(0, 1, 2))
    assert k.value == pytest.approx(exact, abs=1e-12)
    assert (k.value, k.se, k.lower, k.upper) == pytest.approx(sas, abs=5e-5)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_sklearn_and_statsmodels_agree_on_kappa(weights: str | None) -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 4, size=80)
    b = np.clip(a + rng.integers(-1, 2, size=80), 0, 3)
    table = np.zeros((4, 4))
    np.add.at(table, (a, b), 1)
    k = kappa_with_ci(a, b, weights=weights)
    assert k.value == pytest.approx(cohens_kappa(table, wt=weights).kappa, abs=1e-12)
    assert k.value == pytest.approx(cohen_kappa_score(a, b, weights=weights), abs=1e-12)
    assert k.se == pytest.approx(cohens_kappa(table, wt=weights).std_kappa, abs=1e-12)
    assert k.lower < k.value < k.upper


def test_interval_width_follows_alpha_and_is_clipped() -> None:
    a, b = _ratings_from_table(SAS_TABLE)
    k95 = kappa_with_ci(a, b, categories=(0, 1, 2))
    k80 = kappa_with_ci(a, b, categories=(0, 1, 2), alpha=0.2)
    assert k95.lower < k80.lower < k80.upper < k95.upper
    assert kappa_with_ci(HAND_A, HAND_B).upper == 1.0  # 2/3 + 1.96·0.258 > 1


def test_perfect_agreement_has_zero_se() -> None:
    k = kappa_with_ci([0, 1, 2, 3, 1], [0, 1, 2, 3, 1], weights="quadratic")
    assert (k.value, k.lower, k.upper, k.se) == pytest.approx((1.0, 1.0, 1.0, 0.0))


def test_single_shared_category_is_undefined_with_note() -> None:
    k = kappa_with_ci([1, 1, 1], [1, 1, 1])
    assert math.isnan(k.value) and math.isnan(k.lower) and math.isnan(k.se)
    assert k.note == "both readers used only grade 1"
    assert k.cell() == "not estimable: both readers used only grade 1"


def test_one_constant_reader_gives_zero_kappa_without_interval() -> None:
    k = kappa_with_ci([1, 1, 1, 1], [1, 2, 1, 2])
    assert k.value == pytest.approx(0.0)
    assert k.se == 0.0
    assert math.isnan(k.lower) and math.isnan(k.upper)
    assert k.cell() == "0.00 (CI not estimable: the first reader used only grade 1)"


def test_rounding_noise_in_the_se_is_not_an_interval() -> None:
    """statsmodels returns a variance of ~1e-13 here, which printed as "(-0.00–0.00)"."""
    k = kappa_with_ci([1, 0, 1, 1], [1, 1, 1, 1], weights="quadratic")
    assert k.cell() == "0.00 (CI not estimable: the second reader used only grade 1)"


def test_dichotomized_notes_name_low_and_high() -> None:
    found = pair_agreement("a", "b", [0, 1, 0, 1], [2, 3, 0, 1])
    assert found.kappa_dichotomized.cell() == (
        "0.00 (CI not estimable: the first reader used only low grades)"
    )


@pytest.mark.parametrize(
    ("kappa", "text"),
    [
        (Kappa(0.6234, 0.4111, 0.8367, 0.1), "0.62 (0.41–0.84)"),
        (Kappa(-0.000001, -0.000002, 0.000001, 0.0), "0.00 (0.00–0.00)"),
        (Kappa(math.nan, math.nan, math.nan, math.nan, note="x"), "not estimable: x"),
    ],
)
def test_kappa_cells_never_show_nan_or_negative_zero(kappa: Kappa, text: str) -> None:
    assert kappa.cell() == text
    assert "nan" not in kappa.cell() and "-0.00" not in kappa.cell()


def test_no_grade_pattern_prints_nan_in_a_cell() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(2, 9))
        a = rng.integers(0, 4, n) if rng.random() < 0.7 else np.full(n, rng.integers(0, 4))
        b = rng.integers(0, 4, n) if rng.random() < 0.7 else np.full(n, rng.integers(0, 4))
        found = pair_agreement("a", "b", a, b)
        for k in (found.kappa, found.kappa_linear, found.kappa_quadratic, found.kappa_dichotomized):
            assert "nan" not in k.cell() and "-0.00" not in k.cell(), (a, b, k)


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1], [1], {}, "at least 2"),
        ([1, 2], [1], {}, "one rating per image"),
        ([1, 4], [1, 2], {}, r"Reader A has ratings \[4\]"),
        ([1, 2], [1, 2], {"weights": "cubic"}, "weights"),
        ([1, 2], [1, 2], {"alpha": 0}, "alpha"),
        ([1, 2], [1, 2], {"categories": (1,)}, "two distinct"),
    ],
)
def test_bad_ratings_raise(a: list, b: list, kwargs: dict, message: str) -> None:
    with pytest.raises(AgreementInputError, match=message):
        kappa_with_ci(a, b, **kwargs)


def test_pair_agreement_summary() -> None:
    grades_a = [0, 1, 1, 2, 3, 1, 2, 0]
    grades_b = [0, 1, 2, 2, 3, 0, 1, 0]
    boxes_a = [Box(0, 0, 10, 10), None, Box(0, 0, 10, 10), Box(0, 0, 20, 20)] + [None] * 4
    boxes_b = [Box(5, 0, 10, 10), Box(0, 0, 5, 5), Box(0, 0, 10, 10), Box(0, 0, 10, 10)] + [
        None
    ] * 4
    res = pair_agreement("reader1", "reader2", grades_a, grades_b, boxes_a, boxes_b)
    assert (res.reader_a, res.reader_b, res.n) == ("reader1", "reader2", 8)
    assert res.percent_agreement == pytest.approx(100 * 5 / 8)
    assert res.confusion.shape == (4, 4)
    assert res.confusion.sum() == 8
    assert res.confusion[1, 2] == 1 and res.confusion[2, 1] == 1 and res.confusion[1, 0] == 1
    assert np.trace(res.confusion) == 5
    assert res.kappa.value == pytest.approx(cohen_kappa_score(grades_a, grades_b))
    low_high_a = [int(g >= 2) for g in grades_a]
    low_high_b = [int(g >= 2) for g in grades_b]
    assert res.kappa_dichotomized.value == pytest.approx(cohen_kappa_score(low_high_a, low_high_b))
    assert res.kappa_linear.value != res.kappa_quadratic.value
    # IoUs only where both drew a box: 50/150, 1, 100/400.
    assert res.box_ious == pytest.approx([1 / 3, 1.0, 0.25])
    assert res.box_iou_median == pytest.approx(1 / 3)


def test_pair_agreement_without_boxes() -> None:
    res = pair_agreement("a", "b", [0, 1, 2], [0, 1, 3])
    assert res.box_iou_median is None
    assert res.box_ious.size == 0


def test_pair_agreement_box_count_must_match() -> None:
    with pytest.raises(AgreementInputError, match="one box"):
        pair_agreement("a", "b", [0, 1, 2], [0, 1, 3], [None], [None, None, None])
