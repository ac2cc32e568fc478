"""Consensus: disagreements side by side, adjudication, and inter-reader agreement."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from core.common.labels import GRADES
from core.imaging.display import box_color_name, draw_boxes
from core.stats.agreement import NOT_ESTIMABLE_HELP, PairAgreement, pair_agreement
from db.consensus import (
    ConsensusConflict,
    Disagreement,
    adjudicate,
    auto_agree,
    consensus_counts,
    disagreements,
    grades_version,
    mean_box,
    reader_pairs,
)
from db.consensus_rules import superseded_history
from db.grading import image_info
from db.readers import get_reader
from pages.components import (
    display_pixels,
    get_db,
    get_predictor,
    get_store,
    plain,
    reader_names,
    require_reader,
    show_image,
    show_table,
)

db = get_db()
reader = require_reader()
is_admin = reader.role == "admin"
st.title("Consensus")
names = reader_names()


def name_of(username: str) -> str:
    """A reader as people read them: their display name."""
    return names.get(username, username)


if is_admin:
    agreed = db.write(auto_agree)
    if agreed:
        st.toast(f"{agreed} image(s) where all readers agree got their consensus.")


def visible_disagreements() -> list[Disagreement]:
    """Admins see all; a reader sees only images where their own grade is in (blinding)."""
    with db.read() as session:
        return disagreements(session, graded_by=None if is_admin else reader.id)


@st.cache_data(max_entries=8, show_spinner=False)
def agreement_results(_db_url: str, version: tuple, involving: str | None) -> list[PairAgreement]:
    """Agreement per reader pair, recomputed only when a grade or box changed.

    A reader (``involving``) gets only the pairs they belong to (blinding).
    """
    with db.read() as session:
        pairs = reader_pairs(session, involving=involving)
    return [
        pair_agreement(p.reader_a, p.reader_b, p.grades_a, p.grades_b, p.boxes_a, p.boxes_b)
        for p in pairs
    ]


def adjudication_form(item: Disagreement) -> None:
    boxes = {f"{name_of(g.username)}'s box": g.box for g in item.grades if g.box is not None}
    average = mean_box(list(boxes.values()))
    if average is not None:
        boxes = {"Average of the readers' boxes": average, **boxes}
    boxes["No box"] = None
    with st.form(f"adjudicate-{item.image_id}"):
        grade = st.segmented_control("Consensus grade", list(GRADES), key=f"cg-{item.image_id}")
        choice = st.radio("Consensus box", list(boxes), format_func=plain)
        if not st.form_submit_button("Decide", type="primary"):
            return
    if grade is None:
        st.error("Pick the consensus grade.")
        return
    try:
        db.write(
            lambda s: adjudicate(
                s, item.image_id, get_reader(s, reader.username), grade, boxes[choice]
            )
        )
    except ConsensusConflict as exc:
        st.warning(f"{exc} Reload to see the decision.")
        return
    st.success(f"Consensus for {plain(item.patient_code)} recorded: grade {grade}.")
    st.rerun()


def disagreement_view(items: list[Disagreement]) -> None:
    st.subheader(f"Disagreements to settle ({len(items)})")
    if not items:
        st.caption("None pending.")
        return
    codes = [d.patient_code for d in items]
    code = st.selectbox("Patient", codes, key="consensus_patient")
    item = items[codes.index(code)]
    with db.read() as session:
        info = image_info(session, item.image_id)
    pixels = display_pixels(info.path)
    cols = st.columns(len(item.grades))
    for index, (col, g) in enumerate(zip(cols, item.grades, strict=True)):
        with col:
            st.text(f"{name_of(g.username)}: grade {g.grade}")
            shown = draw_boxes(pixels, [None] * index + [g.box])
            box_text = f"{box_color_name(index)} box" if g.box else "no box"
            show_image(shown, caption=f"{plain(name_of(g.username))}'s {box_text}")
    superseded_note(item.image_id)
    model_advice(item)
    if is_admin:
        adjudication_form(item)
    else:
        st.caption("An admin records the adjudicated consensus.")


def superseded_note(image_id: int) -> None:
    """Earlier consensus of this image that a later grade contradicted, and why."""
    with db.read() as session:
        earlier = superseded_history(session, image_id)
    for old in earlier:
        st.text(
            f"Earlier consensus: grade {old.grade} ({old.method}), superseded "
            f"{old.superseded_at:%Y-%m-%d %H:%M} UTC. {old.reason}"
        )


def model_advice(item: Disagreement) -> None:
    """The echogenicity model as a second reader: advice only, after both readers graded."""
    from core.services.review import (
        SecondReaderUnavailable,
        echogenicity_runs,
        finished_runs,
        second_reader_opinion,
    )

    runs = echogenicity_runs(db)
    if not runs:
        return
    run = next(r for r in finished_runs(db) if r.id == runs[0])
    try:
        advice = second_reader_opinion(
            db,
            get_store(),
            item.image_id,
            run.id,
            predictor=get_predictor(run),
            full_pixels=display_pixels,
        )
    except SecondReaderUnavailable as exc:
        st.caption(plain(str(exc)))
        return
    with st.container(border=True):
        st.text(
            f"Model advice: {advice.grade_label} echogenicity, p = {advice.probability:.2f} "
            f"({advice.run_label})"
        )
        st.caption(advice.note)
        if advice.cam_note:
            st.warning(advice.cam_note)
        left, right = st.columns(2)
        with left:
            show_image(advice.overlay_crop, caption="Grad-CAM on the crop")
        with right:
            show_image(advice.overlay_full, caption="Grad-CAM in the scan")


def agreement_view() -> None:
    st.subheader("Inter-reader agreement")
    with db.read() as session:
        counts = consensus_counts(session)
        version = grades_version(session)
    results = agreement_results(db.url, version, None if is_admin else reader.username)
    st.caption(
        f"Consensus so far: {counts.get('agreement', 0)} by agreement, "
        f"{counts.get('adjudication', 0)} by adjudication."
    )
    if not results:
        st.caption("Agreement needs two readers who graded the same images.")
        return
    table = pd.DataFrame(
        {
            "readers": f"{name_of(r.reader_a)} vs {name_of(r.reader_b)}",
            "images": r.n,
            "agreement %": round(r.percent_agreement, 1),
            "kappa (95% CI)": r.kappa.cell(),
            "linear-weighted": r.kappa_linear.cell(),
            "quadratic-weighted": r.kappa_quadratic.cell(),
            "low/high kappa": r.kappa_dichotomized.cell(),
            "box IoU median": round(r.box_iou_median, 2) if r.box_iou_median is not None else None,
        }
        for r in results
    )
    show_table(table, hide_index=True)
    kappas = [(r.kappa, r.kappa_linear, r.kappa_quadratic, r.kappa_dichotomized) for r in results]
    if any(k.note for row in kappas for k in row):
        st.caption(NOT_ESTIMABLE_HELP)
    if not is_admin:
        st.caption("Only your agreement with each colleague, on images you graded (blinding).")
    labels = [f"{name_of(r.reader_a)} vs {name_of(r.reader_b)}" for r in results]
    chosen = results[labels.index(st.selectbox("Pair", labels))]
    left, right = st.columns(2)
    heat = px.imshow(
        chosen.confusion,
        x=[str(g) for g in GRADES],
        y=[str(g) for g in GRADES],
        text_auto=True,
        color_continuous_scale="Blues",
        labels={"x": name_of(chosen.reader_b), "y": name_of(chosen.reader_a), "color": "images"},
        title="Grades (rows: first reader)",
    )
    left.plotly_chart(heat)
    if chosen.box_ious.size:
        hist = px.histogram(x=chosen.box_ious, nbins=20, title="Crop-box IoU between readers")
        hist.update_layout(xaxis_title="IoU", yaxis_title="images")
        right.plotly_chart(hist)


disagreement_view(visible_disagreements())
agreement_view()
