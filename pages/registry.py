"""Model registry: every training run with its settings, status, metrics and learning curves.

Readers can look; only admins delete (checked on the server when the button is pressed).
"""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.learning.dataset import TASKS, task_title
from core.report.table1 import ARCH_NAMES
from core.services.jobs import RunActiveError, delete_run, reap_dead_runs
from db.runs import get_run, list_runs, metrics_rows, run_history, run_predictions
from pages.components import get_db, require_admin, require_reader, runs_table, show_table

reader = require_reader()
db = get_db()
reap_dead_runs(db)
st.title("Model registry")

with db.read() as session:
    runs = list_runs(session)
if not runs:
    st.info(
        "No training run yet. Admins start runs on the Training page or with "
        "`python -m core train`."
    )
    st.stop()

show_table(runs_table(runs).drop(columns=["error"]), hide_index=True)

labels = {
    r.id: f"Run {r.id} · {task_title(r.task)} · {ARCH_NAMES.get(r.arch, r.arch)} · {r.status}"
    for r in runs
}
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="registry_run")
with db.read() as session:
    run = get_run(session, run_id)
    blinded = (
        run is not None and reader.role != "admin" and TASKS[run.task].label == "echogenicity_high"
    )
    predictions = (
        run_predictions(session, run_id, graded_by=reader.id if blinded else None)
        if run is not None
        else []
    )
if run is None:
    st.warning("This run was deleted meanwhile.")
    st.stop()

st.subheader(labels[run_id])
if run.error:
    st.text(f"Message: {run.error}")
if run.model_path:
    st.text(f"Model file: {run.model_path}")

rows = metrics_rows(run)
if rows:
    show_table(pd.DataFrame(rows), hide_index=True)
cv = (run.metrics or {}).get("cv")
if cv and cv.get("test_auc_mean") is not None:
    sd = cv.get("test_auc_sd")
    st.text(
        f"Cross-validation test AUC: {cv['test_auc_mean']:.3f}"
        + (f" ± {sd:.3f} (SD)" if sd is not None else "")
    )


def curves(history: list[dict], metrics: tuple[str, str], title: str) -> go.Figure:
    fig = go.Figure()
    folds = sorted({h.get("fold", 0) for h in history})
    for fold in folds:
        points = [h for h in history if h.get("fold", 0) == fold]
        suffix = f" (fold {fold + 1})" if len(folds) > 1 else ""
        for metric in metrics:
            fig.add_trace(
                go.Scatter(
                    x=[p["epoch"] for p in points],
                    y=[p.get(metric) for p in points],
                    mode="lines+markers",
                    name=f"{metric}{suffix}",
                )
            )
    fig.update_layout(title=title, xaxis_title="epoch", height=320, margin={"t": 40})
    return fig


history = run_history(run)
if history:
    left, right = st.columns(2)
    left.plotly_chart(curves(history, ("loss", "val_loss"), "Loss"), key="loss_curve")
    right.plotly_chart(curves(history, ("auc", "val_auc"), "AUC"), key="auc_curve")
else:
    st.caption("No finished epoch yet.")

with st.expander("Settings"):
    st.json(run.settings)
if blinded:
    st.caption("Echogenicity predictions show only for patients you have graded (blinding).")
if predictions:
    with st.expander(f"Predictions ({len(predictions)})"):
        show_table(pd.DataFrame([asdict(p) for p in predictions]), hide_index=True)

if reader.role == "admin":
    st.divider()
    confirm = st.checkbox(f"Yes, delete run {run_id} with its predictions and model file")
    if st.button("Delete run", disabled=not confirm):
        require_admin()
        try:
            delete_run(db, run_id)
        except (RunActiveError, ValueError) as exc:
            st.error("The run was not deleted.")
            st.text(str(exc))
        else:
            st.session_state.pop("registry_run", None)
            st.rerun()
