"""Review: one patient at a time, every chosen model's call and Grad-CAM beside the truth."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.imaging.display import draw_boxes
from core.report.table1 import run_label
from core.services.pacs.writeback import pacs_line_for
from core.services.review import (
    NOT_IN_RUN,
    ModelPathError,
    ModelView,
    ReviewError,
    RunPredictor,
    filter_review,
    finished_runs,
    patient_review,
    predict_job_status,
    review_table,
    start_predict_job,
)
from pages.components import (
    display_pixels,
    get_db,
    get_predictor,
    get_store,
    load_models,
    plain,
    reader_names,
    require_reader,
    show_box_legend,
    show_image,
    show_table,
)
from pages.swe_scale_form import SOURCE_TEXT, scale_range_form

DEFAULT_MODELS = 3
SUBSETS = ["any", "test", "val", "train", NOT_IN_RUN]

db = get_db()
store = get_store()
reader = require_reader()
st.title("Review")

runs = finished_runs(db)
if not runs:
    st.info("No finished training run yet: train a model first, then review its calls here.")
    st.stop()
labels = {run_label(r): r for r in runs}
chosen = st.multiselect(
    "Models", list(labels), default=list(labels)[:DEFAULT_MODELS], key="review_models"
)
chosen_runs = [labels[label] for label in chosen]
run_ids = [r.id for r in chosen_runs]
load_models(chosen_runs)


@st.cache_data(ttl=30, show_spinner="Reading the PACS")
def cached_pacs_line(code: str) -> str | None:
    """The "in PACS" line (reports read back from the PACS), re-read at most every 30 s."""
    return pacs_line_for(code)


def predictor_for(run_id: int) -> RunPredictor:
    return get_predictor(next(r for r in chosen_runs if r.id == run_id))


def job_panel() -> None:
    """Cohort prediction jobs: start one per model; the bar follows its status file."""
    for run in chosen_runs:
        status = predict_job_status(run.id)
        cols = st.columns([3, 1])
        if status is not None and status.state == "queued":
            cols[0].progress(0.0, text=f"Run {run.id}: waiting for a worker to predict the cohort")
        elif status is not None and status.active:
            done, total = status.done, status.total or "?"
            text = f"Run {run.id}: predicting the cohort, {done} of {total} patients"
            cols[0].progress(status.fraction, text=text)
        elif status is not None and status.state == "failed":
            cols[0].error(f"Run {run.id}: the cohort prediction failed.")
            cols[0].text(status.error or "")
        elif status is not None and status.state == "done":
            cols[0].caption(f"Run {run.id}: all {status.total} patients predicted.")
        can_start = reader.role == "admin" and (status is None or not status.active)
        if can_start and cols[1].button("Predict cohort", key=f"cohort_{run.id}"):
            try:
                start_predict_job(run.id)
            except ReviewError as exc:
                st.warning(str(exc))
            else:
                st.rerun()


if chosen_runs:
    busy = any((s := predict_job_status(r.id)) is not None and s.active for r in chosen_runs)
    with st.expander("Whole-cohort predictions (background jobs)", expanded=busy):
        if busy:
            st.caption("Updating every 2 s; the rest of the page stays usable.")
        st.fragment(job_panel, run_every=2.0 if busy else None)()

table = review_table(db, run_ids, viewer=reader)
filters = st.columns([1, 1, 1])
wrong = filters[0].toggle("Misclassified only", key="f_wrong")
disagree = filters[1].toggle("Models disagree", key="f_disagree")
subset = filters[2].selectbox("Subset (any model)", SUBSETS, key="f_subset")
shown = filter_review(
    table, misclassified=wrong, disagreement=disagree, subset=None if subset == "any" else subset
)
st.caption(f"{len(shown)} of {len(table)} patients.")
view = shown.drop(columns=["patient_id"]).reset_index(drop=True)
selection = show_table(
    view,
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key="review_table",
    column_config={
        "code": "Patient",
        "sarcopenia": st.column_config.NumberColumn("Sarcopenia (CT)", format="%d"),
        "echogenicity_high": st.column_config.NumberColumn("High echo", format="%d"),
        **{f"run {r} p": st.column_config.NumberColumn(format="%.3f") for r in run_ids},
    },
)
rows = selection.selection.rows if selection else []
codes = list(view["code"])
if not codes:
    st.stop()
picked = codes[rows[0]] if rows and rows[0] < len(codes) else None
code = st.selectbox(
    "Patient", codes, index=codes.index(picked) if picked else 0, key="review_patient"
)

try:
    review = patient_review(
        db,
        store,
        code,
        run_ids,
        viewer=reader,
        predictor_for=predictor_for,
        full_pixels=display_pixels,
    )
except (ReviewError, ModelPathError) as exc:
    st.error("This patient cannot be reviewed.")
    st.text(str(exc))
    st.stop()

st.subheader(f"Patient {plain(review.code)}")
facts = st.columns(6)
facts[0].metric("Sex / age", f"{review.sex} / {review.age}")
facts[1].metric("Height", f"{review.height_cm:.0f} cm")
facts[2].metric("L3 SMA", f"{review.sma_cm2:.1f} cm²" if review.sma_cm2 else "—")
facts[3].metric("SMI", f"{review.smi:.1f}" if review.smi else "—")
facts[4].metric("Sarcopenia (CT)", {True: "yes", False: "no", None: "excluded"}[review.sarcopenic])
facts[5].metric("US–CT days", review.interval_days if review.interval_days is not None else "—")
if review.exclusion_reason:
    st.text(f"Excluded from the sarcopenia label: {review.exclusion_reason}")

st.markdown("**Readers**")
if review.blinded:
    st.info("Grade this patient's GSU image first: other grades stay hidden until then.")
elif review.grades is not None:
    grade_rows = [{"reader": g.display_name, "grade": g.grade} for g in review.grades]
    if review.consensus_grade is not None:
        grade_rows.append(
            {"reader": f"consensus ({review.consensus_method})", "grade": review.consensus_grade}
        )
    show_table(pd.DataFrame(grade_rows, columns=["reader", "grade"]), hide_index=True)
if reader.role == "admin":
    pacs_line = cached_pacs_line(review.code)
    if pacs_line:
        st.text(pacs_line)

names = reader_names()


def owner_name(owner: str) -> str:
    """Whose box: the consensus, the automatic proposal, or a reader by display name."""
    return {"consensus": "consensus", "auto": "automatic proposal"}.get(
        owner, names.get(owner, owner)
    )


image_cols = st.columns(3)
for column, modality in zip(image_cols[:2], ("GSU", "SWE"), strict=True):
    with column:
        image = review.images.get(modality)
        if image is None:
            st.caption(f"No {modality} image.")
            continue
        owners = list(image.boxes)
        show_image(
            draw_boxes(display_pixels(image.path), [image.boxes[o] for o in owners]),
            caption=modality,
        )
        if owners:
            show_box_legend([owner_name(o) for o in owners])
        else:
            st.caption("No box.")
with image_cols[2]:
    if review.stiffness is None:
        st.caption("No decoded stiffness (no SWE image or box).")
    else:
        s = review.stiffness
        show_image(s.rgb, caption=f"Stiffness {s.low:.1f}–{s.high:.1f} {s.units}")
        show_table(pd.DataFrame([{k: round(v, 3) for k, v in s.stats.items()}]), hide_index=True)
        st.text(SOURCE_TEXT.get(s.scale_source, s.scale_source))
        if s.warning:
            st.text(s.warning)
        if reader.role == "admin" and s.scale_source in ("none", "scanner preset"):
            with st.expander("Scale range for this scanner", expanded=s.scale_source == "none"):
                scale_range_form(s.preset_key, s.preset, reader, form_key="review_swe_range")


def model_card(view: ModelView) -> None:
    with st.container(border=True):
        st.text(view.label)
        if view.tested:
            st.badge("test-set patient", color="green")
        st.text(f"Subset: {view.subset}")
        if view.error:
            st.warning(plain(view.error))
            return
        cols = st.columns([1, 2, 2])
        if view.probability is not None:
            truth = {None: "unknown", 1: "positive", 0: "negative"}[view.truth]
            verdict = {None: "", True: " ✓", False: " ✗"}[view.correct]
            cols[0].metric("Probability", f"{view.probability:.3f}")
            cols[0].text(f"Predicted: {'positive' if view.predicted_label else 'negative'}")
            cols[0].text(f"Truth: {truth}{verdict}")
            cols[0].caption(f"{view.source}, threshold {view.threshold:.2f}")
        if view.note:
            cols[0].caption(plain(view.note))
        if view.overlay_crop is not None:
            with cols[1]:
                show_image(
                    view.overlay_crop, caption=f"Grad-CAM on the {view.input_name.upper()} crop"
                )
            with cols[2]:
                st.image(view.overlay_full, caption="Grad-CAM in the whole scan")
            if view.cam_note:
                cols[1].warning(view.cam_note)


st.subheader("Models")
if not review.models:
    st.caption("Choose models above.")
for model_view in review.models:
    model_card(model_view)
