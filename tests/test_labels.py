import datetime as dt

import pytest

from core.common.labels import (
    EXCLUSION_HARDWARE_L3,
    EXCLUSION_NO_CT,
    ct_eligibility,
    dichotomize_grade,
    is_sarcopenic,
    smi,
)


def test_smi_is_area_over_height_squared():
    assert smi(49.0, 100.0) == pytest.approx(49.0)
    assert smi(160.0, 170.0) == pytest.approx(160.0 / 1.7**2)


@pytest.mark.parametrize("height", [0.0, -170.0])
def test_smi_refuses_non_positive_height(height):
    with pytest.raises(ValueError, match="Height"):
        smi(150.0, height)


@pytest.mark.parametrize(
    ("sex", "value", "expected"),
    [
        ("M", 48.99, True),
        ("M", 49.0, True),
        ("M", 49.01, False),
        ("F", 30.99, True),
        ("F", 31.0, True),
        ("F", 31.01, False),
    ],
)
def test_knhanes_cutoffs_at_the_boundary(sex, value, expected):
    assert is_sarcopenic(value, sex) is expected


def test_unknown_sex_is_refused():
    with pytest.raises(ValueError, match="'M' or 'F'"):
        is_sarcopenic(40.0, "X")


US = dt.date(2020, 3, 1)


@pytest.mark.parametrize(
    ("days", "eligible"),
    [(0, True), (29, True), (30, True), (31, False), (-30, True), (-31, False)],
)
def test_ct_window_boundaries(days, eligible):
    result = ct_eligibility(US, US + dt.timedelta(days=days), 150.0)
    assert result.eligible is eligible
    assert result.interval_days == abs(days)
    assert result.reason == (None if eligible else EXCLUSION_NO_CT)


def test_missing_ct_is_excluded_with_reason():
    result = ct_eligibility(US, None, None)
    assert not result.eligible
    assert result.reason == EXCLUSION_NO_CT


def test_recorded_reason_wins_over_a_valid_window():
    result = ct_eligibility(US, US, 150.0, recorded_reason=EXCLUSION_HARDWARE_L3)
    assert not result.eligible
    assert result.reason == EXCLUSION_HARDWARE_L3


@pytest.mark.parametrize(("grade", "high"), [(0, 0), (1, 0), (2, 1), (3, 1)])
def test_grade_dichotomy(grade, high):
    assert dichotomize_grade(grade) == high


@pytest.mark.parametrize("grade", [-1, 4, 1.5])
def test_out_of_range_grade_is_refused(grade):
    with pytest.raises(ValueError, match="0, 1, 2 or 3"):
        dichotomize_grade(grade)
