"""Report (admin): the STARD / CLAIM / TRIPOD+AI study report of chosen runs, as one zip."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from core.report.bundle import build_report
from core.report.table1 import RunNotReadyError, run_label
from core.services.review import finished_runs
from core.stats.delong import StatisticsInputError
from pages.components import get_db, require_admin

db = get_db()
require_admin()
st.title("Study report")
st.caption(
    "Participant flow, characteristics by subset, accuracy with calibration and decision "
    "curves, readers versus models, subgroups, model card and the STARD 2015, CLAIM 2024 "
    "and TRIPOD+AI checklists, built from one snapshot of the database. The same runs give "
    "byte-identical tables on a rerun."
)

runs = finished_runs(db)
if not runs:
    st.info(
        "No finished training run yet. Train models on the Training page, then build the "
        "report of the runs you compare in the paper."
    )
    st.stop()

labels = {run_label(r): r.id for r in runs}
chosen = st.multiselect("Runs in the report", list(labels), default=list(labels)[:3])
if st.button("Build the report", type="primary", key="report_build") and chosen:
    with st.spinner("Building tables, figures, HTML and PDF…"):
        try:
            st.session_state["report_zip"] = build_report(db, [labels[c] for c in chosen])
        except (RunNotReadyError, StatisticsInputError, ValueError) as exc:
            st.session_state.pop("report_zip", None)
            st.error(f"The report could not be built: {exc}")
if "report_zip" in st.session_state:
    st.success("The report is ready.")
    st.download_button(
        "Download the report (zip)",
        st.session_state["report_zip"],
        file_name=f"study-report-{dt.date.today():%Y%m%d}.zip",
        mime="application/zip",
        type="primary",
    )
