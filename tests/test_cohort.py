"""The synthetic demo cohort reproduces the study's figures and a learnable, imperfect signal."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from core.cases.cohort import (
    EXCLUSION_HARDWARE_L3,
    EXCLUSION_NO_CT,
    EXCLUSION_NO_WEIGHT,
    SyntheticPatient,
    synthetic_cohort,
)

CUTOFF = {"M": 49.0, "F": 31.0}  # KNHANES L3 SMI cutoffs used by the study


@pytest.fixture(scope="module")
def cohort() -> list[SyntheticPatient]:
    return synthetic_cohort()


def _eligible(cohort: list[SyntheticPatient]) -> list[SyntheticPatient]:
    return [p for p in cohort if p.exclusion_reason is None]


def _sarcopenic(p: SyntheticPatient) -> bool:
    assert p.l3_sma_cm2 is not None
    return p.l3_sma_cm2 / (p.height_cm / 100) ** 2 <= CUTOFF[p.sex]


def test_sex_age_and_grade_marginals(cohort: list[SyntheticPatient]) -> None:
    assert len(cohort) == 160
    assert Counter(p.sex for p in cohort) == {"M": 62, "F": 98}
    for sex, lo, hi, mean in (("M", 21, 87, 57.4), ("F", 24, 85, 56.4)):
        ages = [p.age for p in cohort if p.sex == sex]
        assert (min(ages), max(ages)) == (lo, hi)
        assert np.mean(ages) == pytest.approx(mean, abs=0.05)
    assert Counter(p.true_grade for p in cohort) == {0: 27, 1: 84, 2: 39, 3: 10}
    assert len({p.code for p in cohort}) == 160
    assert len({p.seed for p in cohort}) == 160


def test_eligibility_and_exclusion_reasons(cohort: list[SyntheticPatient]) -> None:
    eligible = _eligible(cohort)
    assert Counter(p.sex for p in eligible) == {"M": 56, "F": 85}
    assert Counter(p.exclusion_reason for p in cohort if p.exclusion_reason) == {
        EXCLUSION_NO_CT: 16,
        EXCLUSION_NO_WEIGHT: 1,
        EXCLUSION_HARDWARE_L3: 2,
    }
    gaps = [abs((p.ct_date - p.us_date).days) for p in eligible if p.ct_date]
    assert len(gaps) == 141 and max(gaps) == 30
    assert all(p.weight_kg is not None and p.l3_sma_cm2 is not None for p in eligible)
    for p in cohort:
        if p.exclusion_reason == EXCLUSION_NO_CT:
            assert p.ct_date is None or abs((p.ct_date - p.us_date).days) >= 35
            assert (p.ct_date is None) == (p.l3_sma_cm2 is None)
        assert (p.weight_kg is None) == (p.exclusion_reason == EXCLUSION_NO_WEIGHT)


def test_body_size_and_dates_are_plausible(cohort: list[SyntheticPatient]) -> None:
    for p in cohort:
        assert 135 < p.height_cm < 200
        assert p.weight_kg is None or 30 < p.weight_kg < 130
        assert 2019 <= p.us_date.year <= 2020
        assert set(p.reader_grades) <= {0, 1, 2, 3}
        assert 3 < p.swe_median_kpa < 100
    men = np.mean([p.height_cm for p in cohort if p.sex == "M"])
    women = np.mean([p.height_cm for p in cohort if p.sex == "F"])
    assert men > women + 8


def test_sarcopenia_counts_follow_the_study(cohort: list[SyntheticPatient]) -> None:
    eligible = _eligible(cohort)
    sarcopenic = [p for p in eligible if _sarcopenic(p)]
    assert abs(len(sarcopenic) - 29) <= 3
    assert abs(sum(p.sex == "M" for p in sarcopenic) - 22) <= 3
    assert abs(sum(p.sex == "F" for p in sarcopenic) - 7) <= 3


def test_readers_agree_with_truth_and_each_other_like_radiologists(
    cohort: list[SyntheticPatient],
) -> None:
    truth = [p.true_grade for p in cohort]
    for reader in (0, 1):
        grades = [p.reader_grades[reader] for p in cohort]
        kappa = cohen_kappa_score(truth, grades, weights="linear")
        assert 0.6 <= kappa <= 0.8, kappa
    disagreement = np.mean([p.reader_grades[0] != p.reader_grades[1] for p in cohort])
    assert 0.2 <= disagreement <= 0.35


def test_signal_is_learnable_but_imperfect(cohort: list[SyntheticPatient]) -> None:
    eligible = _eligible(cohort)
    labels = [_sarcopenic(p) for p in eligible]
    for proxy in ([p.swe_median_kpa for p in eligible], [p.true_grade for p in eligible]):
        auc = roc_auc_score(labels, proxy)
        assert 0.65 < auc < 0.95, auc
    # Echogenicity follows the latent quality too.
    quality = [p.quality for p in cohort]
    high_grade = [p.true_grade >= 2 for p in cohort]
    assert 0.7 < roc_auc_score(high_grade, -np.asarray(quality)) < 0.99


def test_same_seed_same_cohort_other_seed_other_cohort(cohort: list[SyntheticPatient]) -> None:
    assert synthetic_cohort(2022) == cohort
    assert synthetic_cohort(7) != cohort


def test_other_sizes_keep_the_proportions() -> None:
    big = synthetic_cohort(1, 10_000)
    assert len(big) == 10_000
    grades = Counter(p.true_grade for p in big)
    assert [grades[g] for g in range(4)] == [1688, 5250, 2437, 625]
    assert sum(p.sex == "M" for p in big) == 3875
    eligible = _eligible(big)
    assert abs(len(eligible) - 141 * 62.5) <= 2
    share = np.mean([_sarcopenic(p) for p in eligible])
    assert share == pytest.approx(29 / 141, abs=0.01)
    assert len(synthetic_cohort(0, 1)) == 1


@pytest.mark.parametrize(("seed", "n"), [(-1, 160), (1, 0), (1.5, 160)])
def test_bad_arguments_are_refused(seed, n) -> None:
    with pytest.raises(ValueError, match=r"seed|n must"):
        synthetic_cohort(seed, n)
