"""The tables of the study report, each a pure function of a :class:`ReportSnapshot`.

Section numbers follow the report (``core.report.bundle``); the reporting items each
table answers are listed in ``core.report.checklists``. Floats are rounded where they are
formatted, so a rerun on the same snapshot writes byte-identical CSV files.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from core.common.labels import EXCLUSION_NO_CT, GRADES
from core.report.snapshot import ReportSnapshot, RunRecord
from core.stats import standardized_difference as smd
from core.stats.calibration import calibration
from core.stats.decision_curve import net_benefit
from core.stats.delong import StatisticsInputError, delong_auc_ci, delong_test
from core.stats.metrics import diagnostic_metrics, format_auc_ci, format_pct_ci

SUBSETS = ("train", "val", "test")
AGE_BANDS = ((0, 65, "< 65 y"), (65, 75, "65–74 y"), (75, 200, "≥ 75 y"))
"""Age bands for subgroups: the KNHANES-style split at 65 and a band for the oldest."""
MIN_PER_CLASS = 3
"""A subgroup with fewer patients than this in either class is reported, not estimated."""


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def participant_flow(snapshot: ReportSnapshot) -> dict:
    """Enrolled → excluded (by reason) → eligible → train/val/test per run → 2×2 on test.

    STARD 2015 item 19; every number is counted from the database, never typed in.
    """
    cohort = snapshot.cohort
    excluded = cohort[~cohort["eligible"].astype(bool)]
    reasons = Counter(str(r or EXCLUSION_NO_CT) for r in excluded["exclusion_reason"])
    runs = []
    for run in snapshot.runs:
        counts = Counter(run.subsets.values())
        metrics = diagnostic_metrics(run.test.y, run.test.prob, run.test.threshold)
        runs.append(
            {
                "run_id": run.run_id,
                "label": run.label,
                "train": counts.get("train", 0),
                "val": counts.get("val", 0),
                "test": counts.get("test", 0),
                "test_scored": int(run.test.y.size),
                "index_positive": metrics.tp + metrics.fp,
                "index_negative": metrics.tn + metrics.fn,
                "tp": metrics.tp,
                "fp": metrics.fp,
                "fn": metrics.fn,
                "tn": metrics.tn,
            }
        )
    return {
        "enrolled": len(cohort),
        "excluded": len(excluded),
        "excluded_by_reason": dict(sorted(reasons.items())),
        "eligible": int(cohort["eligible"].astype(bool).sum()),
        "runs": runs,
    }


def flow_table(flow: dict) -> pd.DataFrame:
    """The flow as rows of (step, count), for the CSV beside the diagram."""
    rows = [("enrolled", flow["enrolled"]), ("excluded", flow["excluded"])]
    rows += [(f"excluded: {reason}", n) for reason, n in flow["excluded_by_reason"].items()]
    rows.append(("eligible", flow["eligible"]))
    for run in flow["runs"]:
        prefix = f"run {run['run_id']}"
        rows += [(f"{prefix}: {key}", run[key]) for key in ("train", "val", "test")]
        rows += [(f"{prefix}: {key}", run[key]) for key in ("tp", "fp", "fn", "tn")]
    return pd.DataFrame(rows, columns=["step", "patients"])


def _mean_sd(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return "—" if v.empty else f"{v.mean():.1f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.1f}"


def _n_pct(flags: pd.Series) -> str:
    f = flags.dropna().astype(bool)
    return "—" if f.empty else f"{int(f.sum())} ({100 * f.mean():.1f} %)"


def characteristics(snapshot: ReportSnapshot, run: RunRecord) -> pd.DataFrame:
    """Patient characteristics per subset of one run, with standardized differences.

    STARD item 20 / TRIPOD+AI item 20: sex, age, height, weight, L3 SMA, SMI, sarcopenia
    and the consensus echogenicity grade per subset; d compares validation and test with
    training (|d| > 0.1 is the usual imbalance flag).
    """
    cohort = snapshot.cohort.set_index("patient_id")
    parts = {s: cohort.loc[[p for p, sub in run.subsets.items() if sub == s]] for s in SUBSETS}
    numeric = [
        ("age (y)", "age"),
        ("height (cm)", "height_cm"),
        ("weight (kg)", "weight_kg"),
        ("L3 SMA (cm²)", "sma_cm2"),
        ("SMI (cm²/m²)", "smi"),
    ]
    rows = [["patients", *[str(len(parts[s])) for s in SUBSETS], "", ""]]
    men = {s: (parts[s]["sex"] == "M").astype(float) for s in SUBSETS}
    rows.append(
        [
            "men",
            *[_n_pct(men[s]) for s in SUBSETS],
            _fmt(smd.binary(men["val"], men["train"])),
            _fmt(smd.binary(men["test"], men["train"])),
        ]
    )
    for label, column in numeric:
        values = {s: pd.to_numeric(parts[s][column], errors="coerce") for s in SUBSETS}
        rows.append(
            [
                label,
                *[_mean_sd(values[s]) for s in SUBSETS],
                _fmt(smd.continuous(values["val"], values["train"])),
                _fmt(smd.continuous(values["test"], values["train"])),
            ]
        )
    sarcopenic = {s: parts[s]["sarcopenic"].dropna().astype(float) for s in SUBSETS}
    rows.append(
        [
            "sarcopenia",
            *[_n_pct(sarcopenic[s]) for s in SUBSETS],
            _fmt(smd.binary(sarcopenic["val"], sarcopenic["train"])),
            _fmt(smd.binary(sarcopenic["test"], sarcopenic["train"])),
        ]
    )
    for grade in GRADES:
        flags = {s: (parts[s]["consensus_grade"].dropna() == grade).astype(float) for s in SUBSETS}
        rows.append(
            [
                f"echogenicity grade {grade}",
                *[_n_pct(flags[s]) for s in SUBSETS],
                _fmt(smd.binary(flags["val"], flags["train"])),
                _fmt(smd.binary(flags["test"], flags["train"])),
            ]
        )
    columns = ["characteristic", "training", "validation", "test", "d (val vs train)"]
    return pd.DataFrame(rows, columns=[*columns, "d (test vs train)"])


def enrichment_note(run: RunRecord) -> str | None:
    """Says so when the run's test set was enriched (the study's 9 sarcopenic of 20)."""
    enriched = run.settings.get("test_positives")
    if not enriched:
        return None
    return (
        f"The test set of run {run.run_id} was enriched ({enriched} positives chosen on "
        "purpose, as the study's 9 of 20): PPV and NPV do not carry over to the population."
    )


def accuracy(snapshot: ReportSnapshot) -> pd.DataFrame:
    """Per model on its test patients: 2×2, Wilson CIs, DeLong AUC, Brier and calibration."""
    rows = []
    for run in snapshot.runs:
        y, p, threshold = run.test.y, run.test.prob, run.test.threshold
        m = diagnostic_metrics(y, p, threshold)
        cal = calibration(y, p)
        rows.append(
            {
                "model": run.label,
                "test patients": int(y.size),
                "TP": m.tp,
                "FP": m.fp,
                "FN": m.fn,
                "TN": m.tn,
                "threshold": _fmt(threshold),
                "sensitivity % (95% CI)": format_pct_ci(m.sensitivity),
                "specificity % (95% CI)": format_pct_ci(m.specificity),
                "accuracy % (95% CI)": format_pct_ci(m.accuracy),
                "PPV % (95% CI)": format_pct_ci(m.ppv),
                "NPV % (95% CI)": format_pct_ci(m.npv),
                "AUC (95% CI)": format_auc_ci(m.auc),
                "Brier": _fmt(cal.brier, 3),
                "calibration slope (95% CI)": _estimate(cal.slope),
                "calibration intercept (95% CI)": _estimate(cal.intercept),
                "calibration note": cal.note or "",
            }
        )
    return pd.DataFrame(rows)


def _estimate(e) -> str:
    if math.isnan(e.value):
        return "not estimable"
    return f"{e.value:.2f} ({e.lower:.2f} to {e.upper:.2f})"


def decision_curves(snapshot: ReportSnapshot) -> pd.DataFrame:
    """Net benefit per model and threshold, with treat-all and treat-none (long format)."""
    frames = []
    for run in snapshot.runs:
        frame = net_benefit(run.test.y, run.test.prob).frame()
        frame.insert(0, "model", run.label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).round(6)


def readers_versus_models(snapshot: ReportSnapshot) -> pd.DataFrame:
    """The consensus grade (and each reader's grade) as an ordinal predictor of sarcopenia.

    On the same test patients as each sarcopenia model: the grade's AUC with its DeLong CI,
    and the paired DeLong test of model against grade (difference = model − grade).
    """
    rows = []
    grades = snapshot.grades[~snapshot.grades["uncertain"].astype(bool)]
    consensus = snapshot.cohort.set_index("patient_id")["consensus_grade"]
    predictors = {"consensus grade": consensus}
    for reader, part in grades.groupby("reader", sort=True):
        predictors[f"grade of {reader}"] = part.set_index("patient_id")["grade"]
    for run in snapshot.runs:
        if not run.task.startswith("sarcopenia"):
            continue
        ids = run.test.patient_ids
        for name, series in predictors.items():
            grade = series.reindex(ids).to_numpy(dtype=float)
            have = ~np.isnan(grade)
            y, model_p, g = run.test.y[have], run.test.prob[have], grade[have]
            row = {"model": run.label, "reader predictor": name, "patients": int(have.sum())}
            try:
                auc = delong_auc_ci(y, g)
                test = delong_test(y, model_p, g)
            except StatisticsInputError as exc:
                row.update({"grade AUC (95% CI)": "not estimable", "note": str(exc)})
            else:
                row.update(
                    {
                        "grade AUC (95% CI)": format_auc_ci(auc),
                        "model AUC": _fmt(test.auc1),
                        "difference (95% CI)": (
                            f"{test.difference:.2f} ({test.lower:.2f} to {test.upper:.2f})"
                        ),
                        "p (paired DeLong)": _fmt(test.p_value, 3),
                        "note": "",
                    }
                )
            rows.append(row)
    return pd.DataFrame(rows)


def subgroups(snapshot: ReportSnapshot) -> pd.DataFrame:
    """AUC per model by sex and age band, with the counts behind it (TRIPOD+AI fairness)."""
    cohort = snapshot.cohort.set_index("patient_id")
    rows = []
    for run in snapshot.runs:
        info = cohort.reindex(run.test.patient_ids)
        groups = [("sex", s, (info["sex"] == s).to_numpy()) for s in ("F", "M")]
        ages = info["age"].to_numpy(dtype=float)
        groups += [("age", label, (ages >= lo) & (ages < hi)) for lo, hi, label in AGE_BANDS]
        for kind, name, mask in groups:
            y, p = run.test.y[mask], run.test.prob[mask]
            positives, negatives = int(y.sum()), int((1 - y).sum())
            row = {
                "model": run.label,
                "subgroup": f"{kind}: {name}",
                "patients": int(mask.sum()),
                "positives": positives,
                "negatives": negatives,
            }
            if min(positives, negatives) < MIN_PER_CLASS:
                row["AUC (95% CI)"] = f"too small to estimate (< {MIN_PER_CLASS} per class)"
            else:
                row["AUC (95% CI)"] = format_auc_ci(delong_auc_ci(y, p))
            rows.append(row)
    return pd.DataFrame(rows)
