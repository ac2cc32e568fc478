"""Comparison: the study's Table 1 from chosen runs, with CIs, ROC, DeLong and calibration."""

from __future__ import annotations

import hashlib

import streamlit as st

from core.report.table1 import (
    PAPER_SOURCE,
    PAPER_TABLE1,
    RunNotReadyError,
    RunScores,
    baseline_scores,
    calibration_figure,
    delong_figure,
    delong_matrix_from_scores,
    roc_figure,
    run_label,
    run_scores,
    table1_from_scores,
)
from core.services.export import export_zip, figure_html, figure_png, table_csv
from core.services.review import finished_runs
from core.stats.delong import StatisticsInputError
from pages.components import get_db, get_store, plain, require_reader, show_table
from pages.downloads import download, prepared_download

DEFAULT_COLUMNS = 6

db = get_db()
reader = require_reader()
st.title("Model comparison")

runs = finished_runs(db)
if not runs:
    st.info(
        "No finished training run yet. Train models on the Training page or with "
        "`python -m core train --all`, then compare them here."
    )
    st.stop()

labels = {run_label(r): r.id for r in runs}
controls = st.columns([4, 1, 1])
chosen = controls[0].multiselect(
    "Runs (columns)", list(labels), default=list(labels)[:DEFAULT_COLUMNS], key="cmp_runs"
)
subset = controls[1].radio("Patients", ["test", "val"], horizontal=True, key="cmp_subset")
threshold = controls[2].radio(
    "Threshold",
    ["0.5", "youden"],
    format_func=lambda t: "0.5" if t == "0.5" else "Youden (on val)",
    key="cmp_threshold",
)
options = st.columns(3)
with_baseline = options[0].toggle("Radiomics baseline", key="cmp_baseline")
details = options[1].toggle("Counts and likelihood ratios", key="cmp_details")
n_bins = options[2].number_input("Calibration bins", 2, 10, 5, key="cmp_bins")


@st.cache_data(show_spinner="Fitting the radiomics baseline…", max_entries=8)
def _baseline(run_id: int, stamp: str) -> RunScores:
    """Cached per run (and its finish time, so a retrained run refits)."""
    return baseline_scores(db, get_store(), run_id)


scores: list[RunScores] = []
for label in chosen:
    try:
        scores.append(run_scores(db, labels[label], subset))
    except (RunNotReadyError, StatisticsInputError) as exc:
        st.warning(str(exc))
if with_baseline and chosen:
    first = next(r for r in runs if r.id == labels[chosen[0]])
    try:
        scores.append(_baseline(first.id, str(first.finished_at)))
    except (ValueError, RunNotReadyError) as exc:
        st.warning(f"No baseline: {exc}")
    if subset != "test":
        st.caption("The baseline is scored on the test patients of the first run's split.")

if not scores:
    st.caption("Choose at least one run.")
    st.stop()

table = table1_from_scores(scores, threshold, details=details)
st.subheader("Table 1")
st.caption(
    "Percent with Wilson 95% CI; AUC with DeLong 95% CI. Labels are today's (CT and "
    "consensus as stored now)."
)
show_table(table)
for note in table.attrs.get("notes", []):
    st.caption(plain(note))
download("Table 1 (CSV)", table_csv(table), "table1.csv", "text/csv", key="dl_table")

with st.expander("The paper's figures (Yi et al. 2022, for reference)", expanded=True):
    show_table(PAPER_TABLE1)
    st.caption(PAPER_SOURCE)
    download(
        "Paper's Table 1 (CSV)",
        table_csv(PAPER_TABLE1),
        "table1_paper.csv",
        "text/csv",
        key="dl_paper",
    )


def downloads(fig, name: str) -> None:
    """PNG (kaleido) and self-contained HTML of one figure, each built when asked for."""
    stamp = hashlib.sha256(fig.to_json().encode()).hexdigest()
    prepared_download(
        "PNG", lambda: figure_png(fig), f"{name}.png", "image/png", key=f"png_{name}", stamp=stamp
    )
    prepared_download(
        "HTML",
        lambda: figure_html(fig),
        f"{name}.html",
        "text/html",
        key=f"html_{name}",
        stamp=stamp,
    )


title = "test" if subset == "test" else "validation"
roc = roc_figure(scores, title=f"ROC curves ({title} set)")
st.plotly_chart(roc, key="roc")
downloads(roc, "roc")

st.subheader("Paired DeLong tests")
matrix = delong_matrix_from_scores(scores)
if len(scores) > 1:
    st.caption(
        "p-values of the AUC difference, each pair on the patients both models scored; "
        "empty where the models predict different things or share too few patients."
    )
    st.dataframe(matrix.style.format("{:.3f}", na_rep="—"))
    heat = delong_figure(matrix)
    downloads(heat, "delong")
else:
    st.caption("Choose two or more runs to test their AUCs against each other.")

calibration = calibration_figure(scores, int(n_bins), title=f"Calibration ({title} set)")
st.plotly_chart(calibration, key="calibration")
downloads(calibration, "calibration")

if reader.role == "admin":
    st.subheader("Labeled export")
    st.caption(
        "One row per patient: metadata, CT labels, every reader's grade, the consensus, "
        "boxes, echo intensity and stiffness, and the chosen runs' splits and predictions; "
        "with a data dictionary. Image features are measured once and cached."
    )
    run_ids = [labels[label] for label in chosen]
    prepared_download(
        "export (zip)",
        lambda: export_zip(db, get_store(), run_ids),
        "labeled_export.zip",
        "application/zip",
        key="dl_export",
        stamp=",".join(map(str, run_ids)),
    )
