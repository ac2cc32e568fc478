"""DeLong AUC intervals and paired tests, checked against pROC's published aSAH results.

The reference values are pROC's own expected results on its ``aSAH`` data set, copied from
its test suite (github.com/xrobin/pROC, version 1.19.0.1, ``tests/testthat``). pROC prints
them with 15 significant digits; ``core.stats.delong`` agrees to a relative 1e-14 (``REL``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.stats.delong import StatisticsInputError, delong_auc_ci, delong_test

ASAH = Path(__file__).parent / "data" / "aSAH.csv"
REL = 1e-14
"""Relative tolerance against pROC: its values carry 15 significant digits, and ours differ
from them by at most 4e-15 relative (the lower end of the difference's interval), within
the last digit printed."""


@pytest.fixture(scope="module")
def asah() -> dict[str, np.ndarray]:
    with ASAH.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "y": np.array([r["outcome"] == "Poor" for r in rows], dtype=int),
        "wfns": np.array([float(r["wfns"]) for r in rows]),
        "s100b": np.array([float(r["s100b"]) for r in rows]),
        "ndka": np.array([float(r["ndka"]) for r in rows]),
    }


def _brute_force_delong_cov(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """DeLong et al. (1988) by definition: O(m·n) kernel, placements, sample covariances."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10 = psi.mean(axis=2)
    v01 = psi.mean(axis=1)
    return np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


def test_auc_ci_matches_proc_ci_auc_on_ndka(asah: dict[str, np.ndarray]) -> None:
    # pROC 1.19.0.1, tests/testthat/test-ci.auc.R, ``expected.ci.auc`` (unchanged since pROC
    # 1.11.0): ci.auc(roc(aSAH$outcome, aSAH$ndka)), DeLong, conf.level 0.95.
    ci = delong_auc_ci(asah["y"], asah["ndka"])
    assert ci.lower == pytest.approx(0.501244999271703, rel=REL, abs=0)
    assert ci.auc == pytest.approx(0.611957994579946, rel=REL, abs=0)
    assert ci.upper == pytest.approx(0.722670989888189, rel=REL, abs=0)


def test_paired_test_matches_proc_roc_test_wfns_vs_s100b(asah: dict[str, np.ndarray]) -> None:
    # pROC 1.19.0.1, tests/testthat/test-roc.test.R, ``t1 <- roc.test(r.wfns, r.s100b)`` with
    # r.wfns <- roc(aSAH$outcome, aSAH$wfns), r.s100b <- roc(aSAH$outcome, aSAH$s100b): the
    # paired DeLong test's statistic Z and p.value (since pROC 1.11.0) and conf.int (since
    # pROC 1.18.0), two-sided, conf.level 0.95.
    res = delong_test(asah["y"], asah["wfns"], asah["s100b"])
    assert res.z == pytest.approx(2.20898359144091, rel=REL, abs=0)
    assert res.p_value == pytest.approx(0.0271757822291882, rel=REL, abs=0)
    assert res.lower == pytest.approx(0.0104061769564846, rel=REL, abs=0)
    assert res.upper == pytest.approx(0.174214419249478, rel=REL, abs=0)
    assert res.difference == pytest.approx(res.auc1 - res.auc2, abs=1e-15)


@pytest.mark.parametrize("column", ["wfns", "s100b", "ndka"])
def test_auc_equals_sklearn_with_ties(asah: dict[str, np.ndarray], column: str) -> None:
    assert delong_auc_ci(asah["y"], asah[column]).auc == pytest.approx(
        roc_auc_score(asah["y"], asah[column]), abs=1e-12
    )


def test_fast_covariance_equals_brute_force_definition(asah: dict[str, np.ndarray]) -> None:
    scores = np.vstack([asah["wfns"], asah["s100b"]])
    cov = _brute_force_delong_cov(asah["y"], scores)
    assert delong_auc_ci(asah["y"], asah["wfns"]).variance == pytest.approx(cov[0, 0], rel=1e-12)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=40)
    tied = rng.integers(0, 4, size=(2, 40)).astype(float)  # heavy ties
    cov = _brute_force_delong_cov(y, tied)
    res = delong_test(y, tied[0], tied[1], alpha=0.05)
    sd = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert res.z == pytest.approx(res.difference / sd, rel=1e-12)


def test_swapping_models_negates_z_and_keeps_p(asah: dict[str, np.ndarray]) -> None:
    ab = delong_test(asah["y"], asah["wfns"], asah["s100b"])
    ba = delong_test(asah["y"], asah["s100b"], asah["wfns"])
    assert ba.z == pytest.approx(-ab.z)
    assert ba.p_value == pytest.approx(ab.p_value)
    assert (ba.lower, ba.upper) == pytest.approx((-ab.upper, -ab.lower))


def test_identical_models_give_z_zero_p_one(asah: dict[str, np.ndarray]) -> None:
    res = delong_test(asah["y"], asah["ndka"], asah["ndka"])
    assert res.z == 0.0
    assert res.p_value == 1.0
    assert res.difference == 0.0


def test_direction_is_never_flipped(asah: dict[str, np.ndarray]) -> None:
    auc = delong_auc_ci(asah["y"], asah["ndka"]).auc
    assert delong_auc_ci(asah["y"], -asah["ndka"]).auc == pytest.approx(1 - auc)


def test_ci_is_clipped_to_unit_interval() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    ci = delong_auc_ci(y, [0.1, 0.2, 0.6, 0.5, 0.8, 0.9])
    assert ci.auc == pytest.approx(8 / 9)
    assert ci.upper == 1.0
    assert 0.0 <= ci.lower < ci.auc


def test_smaller_alpha_gives_wider_interval(asah: dict[str, np.ndarray]) -> None:
    ci95 = delong_auc_ci(asah["y"], asah["ndka"], alpha=0.05)
    ci90 = delong_auc_ci(asah["y"], asah["ndka"], alpha=0.10)
    assert ci95.lower < ci90.lower < ci90.upper < ci95.upper


def test_single_case_gives_auc_without_interval() -> None:
    ci = delong_auc_ci([0, 0, 1], [0.1, 0.3, 0.2])
    assert ci.auc == pytest.approx(0.5)
    assert np.isnan(ci.lower) and np.isnan(ci.upper) and np.isnan(ci.variance)
    with pytest.raises(StatisticsInputError, match="at least 2 positive"):
        delong_test([0, 0, 1], [0.1, 0.3, 0.2], [0.2, 0.1, 0.3])


@pytest.mark.parametrize(
    ("y", "scores", "message"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "Only positive"),
        ([0, 0], [0.1, 0.2], "Only negative"),
        (["Good", "Poor"], [0.1, 0.2], "Labels must be 0/1"),
        ([0, 2], [0.1, 0.2], "Labels must be 0/1"),
        ([0, 1, 1], [0.1, 0.2], "3 labels but 2"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([0, 1], ["a", "b"], "must be numbers"),
        ([], [], "non-empty"),
    ],
)
def test_bad_input_raises_clear_error(y: list, scores: list, message: str) -> None:
    with pytest.raises(StatisticsInputError, match=message):
        delong_auc_ci(y, scores)


def test_bad_alpha_raises() -> None:
    with pytest.raises(StatisticsInputError, match="alpha"):
        delong_auc_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], alpha=1.5)


def test_paired_test_needs_equal_lengths() -> None:
    with pytest.raises(StatisticsInputError, match="scores2"):
        delong_test([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3])
