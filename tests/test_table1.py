"""Table 1 with confidence intervals, paired DeLong tests, ROC and calibration from runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sqlalchemy import select

from core.report.table1 import (
    PAPER_TABLE1,
    ROWS,
    RunNotReadyError,
    RunScores,
    baseline_scores,
    calibration_figure,
    calibration_frame,
    delong_matrix,
    delong_matrix_from_scores,
    resolve_threshold,
    roc_figure,
    roc_points,
    run_metrics,
    run_scores,
    table1,
    table1_from_scores,
)
from core.stats.delong import StatisticsInputError, delong_test
from core.stats.metrics import diagnostic_metrics, format_auc_ci, format_pct_ci, youden_threshold
from db.cases import case_labels
from db.models import CtMeasurement, Patient, TrainingRun
from tests.tiny_runs import add_tiny_run, split_of


def _scores(y, p, label="model", task="sarcopenia_gsu", ids=None, val=None) -> RunScores:
    y = np.asarray(y)
    return RunScores(
        label=label,
        task=task,
        patient_ids=np.asarray(ids if ids is not None else np.arange(len(y))),
        y=y,
        prob=np.asarray(p, dtype=float),
        val_y=None if val is None else np.asarray(val[0]),
        val_prob=None if val is None else np.asarray(val[1], dtype=float),
    )


def test_the_layout_and_cells_of_table_1():
    # The hand-computed case: 8 of 9 positives and 8 of 11 negatives called right.
    y = [1] * 9 + [0] * 11
    p = [0.9] * 8 + [0.2] + [0.1] * 8 + [0.7] * 3
    table = table1_from_scores([_scores(y, p, "SWE VGG19 (run 1)")])
    assert list(table.index) == list(ROWS)
    column = table["SWE VGG19 (run 1)"]
    assert column["Sensitivity"].startswith("88.9 (")
    assert column["Specificity"].startswith("72.7 (")
    assert column["PPV"].startswith("72.7 (")
    assert column["NPV"].startswith("88.9 (")
    assert column["Accuracy"].startswith("80.0 (")
    metrics = diagnostic_metrics(y, p)
    assert column["AUC"] == format_auc_ci(metrics.auc)
    assert column["Sensitivity"] == format_pct_ci(metrics.sensitivity)
    detailed = table1_from_scores([_scores(y, p, "m")], details=True)
    assert detailed.loc["TP / FP / TN / FN", "m"] == "8 / 3 / 8 / 1"
    assert detailed.loc["n (positive)", "m"] == "20 (9)"


def test_paper_figures_are_labelled_as_the_papers():
    assert all(c.endswith("(paper)") for c in PAPER_TABLE1.columns)
    assert PAPER_TABLE1.loc["AUC", "SWE VGG19 (paper)"] == "0.84"
    assert PAPER_TABLE1.loc["Accuracy", "GSU DenseNet121 (paper)"] == "65.0"
    assert "Yi et al." in PAPER_TABLE1.attrs["source"]


def test_youden_is_chosen_on_validation_never_on_test():
    val_y = [0, 0, 0, 1, 1, 1]
    val_p = [0.1, 0.2, 0.35, 0.3, 0.8, 0.9]
    test_y = [0, 0, 1, 1]
    test_p = [0.05, 0.6, 0.65, 0.7]
    scores = _scores(test_y, test_p, val=(val_y, val_p))
    chosen = resolve_threshold(scores, "youden")
    assert chosen == youden_threshold(val_y, val_p)
    assert chosen != youden_threshold(test_y, test_p)
    assert resolve_threshold(scores, "0.5") == 0.5
    assert resolve_threshold(scores, 0.3) == 0.3
    with pytest.raises(ValueError, match="threshold must be"):
        resolve_threshold(scores, "best")
    with pytest.raises(StatisticsInputError, match="no validation"):
        resolve_threshold(_scores(test_y, test_p), "youden")
    table = table1_from_scores([_scores(test_y, test_p, "baseline")], "youden")
    assert any("0.5 threshold" in note for note in table.attrs["notes"])


def test_delong_matrix_pairs_common_patients_only():
    rng = np.random.default_rng(3)
    y = np.array([0, 1] * 15)
    a = _scores(y, np.clip(0.3 * y + rng.uniform(0, 0.7, 30), 0, 1), "A")
    b = _scores(y, np.clip(0.1 * y + rng.uniform(0, 0.9, 30), 0, 1), "B")
    subset = np.arange(5, 30)
    c = _scores(y[subset], b.prob[subset], "C", ids=subset)
    echo = _scores(y, a.prob, "E", task="echogenicity_gsu")
    matrix = delong_matrix_from_scores([a, b, c, echo])
    assert math.isnan(matrix.loc["A", "A"])
    assert matrix.loc["A", "B"] == matrix.loc["B", "A"]
    assert matrix.loc["A", "B"] == pytest.approx(delong_test(y, a.prob, b.prob).p_value)
    expected = delong_test(y[subset], a.prob[subset], b.prob[subset]).p_value
    assert matrix.loc["A", "C"] == pytest.approx(expected)
    assert math.isnan(matrix.loc["A", "E"])


def test_run_metrics_use_current_labels_of_stored_predictions(agreed_demo, tiny_models):
    db, store = agreed_demo
    split = split_of(db, store, "sarcopenia_gsu")
    scored = sorted(c for c, s in split.items() if s != "train")
    rng = np.random.default_rng(0)
    probs = {c: float(rng.uniform()) for c in scored}
    run_id = add_tiny_run(db, store, tiny_models["gsu"], probabilities=probs)
    with db.read() as session:
        patients = {
            p.code: p for p in session.scalars(select(Patient).where(Patient.code.in_(scored)))
        }
        for p in patients.values():
            p.ct  # noqa: B018 - load the CT before the session closes
    truth = {c: int(case_labels(patients[c]).sarcopenic) for c in scored}
    test = sorted(c for c in scored if split[c] == "test")
    val = sorted(c for c in scored if split[c] == "val")
    y = [truth[c] for c in test]
    p = [probs[c] for c in test]

    got = run_metrics(db, run_id)
    want = diagnostic_metrics(y, p, 0.5)
    assert (got.tp, got.fp, got.tn, got.fn) == (want.tp, want.fp, want.tn, want.fn)
    assert got.auc.auc == pytest.approx(want.auc.auc)
    youden = run_metrics(db, run_id, threshold="youden")
    assert youden.threshold == youden_threshold([truth[c] for c in val], [probs[c] for c in val])

    other = add_tiny_run(db, store, tiny_models["swe"])
    table = table1(db, [run_id, other])
    assert list(table.columns) == [f"GSU VGG19 (run {run_id})", f"SWE VGG19 (run {other})"]
    assert table.iloc[0, 0] == format_auc_ci(want.auc)
    matrix = delong_matrix(db, [run_id, other])
    assert matrix.shape == (2, 2)

    excluded = test[0]

    def exclude(session) -> None:
        patient = session.scalar(select(Patient).where(Patient.code == excluded))
        session.scalar(
            select(CtMeasurement).where(CtMeasurement.patient_id == patient.id)
        ).exclusion_reason = "surgical hardware at L3"

    db.write(exclude)
    after = run_scores(db, run_id)
    assert len(after.y) == len(test) - 1
    assert any("no longer have a label" in note for note in after.notes)

    points = roc_points(db, run_id)
    assert points["fpr"].is_monotonic_increasing and points["tpr"].iloc[-1] == 1.0
    figure = roc_figure([after])
    assert "AUC" in figure.data[1].name
    assert calibration_frame(after, n_bins=3)["mean_predicted"].between(0, 1).all()
    assert len(calibration_figure([after]).data) == 2


def test_unfinished_runs_are_refused(agreed_demo, tiny_models):
    db, store = agreed_demo
    run_id = add_tiny_run(db, store, tiny_models["gsu"])

    def unfinish(session) -> None:
        session.get(TrainingRun, run_id).status = "failed"

    db.write(unfinish)
    with pytest.raises(RunNotReadyError, match="failed"):
        run_scores(db, run_id)
    with pytest.raises(RunNotReadyError, match="no training run"):
        run_scores(db, 12345)


def test_radiomics_baseline_scores_the_runs_test_patients(agreed_demo, tiny_models):
    db, store = agreed_demo
    run_id = add_tiny_run(db, store, tiny_models["gsu"])
    baseline = baseline_scores(db, store, run_id)
    run = run_scores(db, run_id)
    assert sorted(baseline.patient_ids) == sorted(run.patient_ids)
    order = np.argsort(baseline.patient_ids)
    np.testing.assert_array_equal(baseline.y[order], run.y[np.argsort(run.patient_ids)])
    assert "Radiomics baseline" in baseline.label
    table = table1(db, [run_id], extra=[baseline])
    assert table.shape == (6, 2)
