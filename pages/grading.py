"""Grading: next ungraded case, one-click grade, crop boxes on GSU and SWE, save and next."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit_drawable_canvas import st_canvas

from core.boxes import Box
from core.canvas_boxes import drawing_with, fit_scale, last_drawn_box
from core.display import png_bytes, reading_view
from core.labels import GRADE_DESCRIPTIONS, GRADES
from core.roi_detect import detect_boxes
from db.cases import patient_codes
from db.grading import (
    BlindingError,
    GradingError,
    gsu_image_of,
    image_info,
    next_ungraded,
    own_box,
    own_grade,
    progress,
    save_box,
    save_grade,
    sibling_image,
    unblinded_view,
)
from db.readers import get_reader
from pages.components import display_pixels, get_db, plain, require_reader

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "grade_reference"
MAX_W, MAX_H = 760, 620
IMAGE_KEY = "grading_image"

db = get_db()
reader = require_reader()


@st.cache_data(max_entries=256, show_spinner=False)
def proposal(relpath: str, modality: str) -> tuple[int, int, int, int] | None:
    """The automatic box: the ultrasound area on GSU, the color box on SWE."""
    found = detect_boxes(display_pixels(relpath))
    box = found.ultrasound_area if modality == "GSU" else found.color_box
    return box.as_tuple() if box else None


@st.cache_data(max_entries=32, show_spinner=False)
def background(relpath: str, scale: float, level: float, window: float) -> bytes:
    return png_bytes(reading_view(display_pixels(relpath), scale, level, window))


def view_controls() -> tuple[float, float, float]:
    with st.sidebar:
        st.subheader("Display")
        level = st.slider("Brightness (level)", 0.2, 0.8, 0.5, 0.05, key="wl_level")
        window = st.slider("Contrast (window)", 0.3, 1.5, 1.0, 0.05, key="wl_window")
        zoom = st.select_slider("Zoom", [1.0, 1.5, 2.0], 1.0, key="zoom")
        st.caption("Display only: the stored image is never changed.")
    return level, window, zoom


def _jump() -> None:
    code = st.session_state.get("jump")
    if code:
        with db.read() as session:
            st.session_state[IMAGE_KEY] = gsu_image_of(session, code)


def queue_controls(done: int, total: int) -> None:
    st.progress(done / max(total, 1), text=f"{done} of {total} graded by you")
    with db.read() as session:
        codes = patient_codes(session)
    st.selectbox(
        "Jump to patient",
        codes,
        index=None,
        placeholder="Patient code",
        key="jump",
        on_change=_jump,
    )


def box_canvas(image_id: int, label: str, zoom: float, level: float, window: float):
    """The image on a drawing canvas with the reader's saved box; returns the drawn box."""
    with db.read() as session:
        info = image_info(session, image_id)
        saved = own_box(session, image_id, reader.id)
    scale = fit_scale(info.width, info.height, MAX_W, MAX_H, zoom)
    nonce = st.session_state.get(f"nonce-{image_id}", 0)
    result = st_canvas(
        fill_color="rgba(0, 229, 255, 0.08)",
        stroke_width=2,
        stroke_color="#00E5FF",
        background_image=background(info.path, scale, level, window),
        width=round(info.width * scale),
        height=round(info.height * scale),
        drawing_mode="rect",
        initial_drawing=drawing_with(saved, scale),
        key=f"canvas-{image_id}-{nonce}",
    )
    drawn = last_drawn_box(result.json_data if result else None, scale)
    cols = st.columns(3)
    auto = proposal(info.path, info.modality)
    if auto and cols[0].button(f"Use proposed {label}", key=f"auto-{image_id}"):
        store_box(image_id, auto, auto_accepted=True)
    if saved and cols[1].button("Clear box", key=f"clear-{image_id}"):
        store_box(image_id, None)
    cols[2].caption(f"Saved box: {saved.as_tuple() if saved else 'none'} (x, y, w, h px)")
    if drawn is not None and drawn != saved:
        st.caption(f"Drawn box: {drawn.as_tuple()}, stored with Save and next")
    return drawn, saved


def store_box(image_id: int, box: Box | tuple | None, auto_accepted: bool = False) -> None:
    value = Box(*box) if isinstance(box, tuple) else box
    try:
        db.write(
            lambda s: save_box(
                s, image_id, get_reader(s, reader.username), value, auto_accepted=auto_accepted
            )
        )
    except GradingError as exc:
        st.error(plain(str(exc)))
        return
    st.session_state[f"nonce-{image_id}"] = st.session_state.get(f"nonce-{image_id}", 0) + 1
    st.rerun()


st.title("Grading")
level, window, zoom = view_controls()
with db.read() as session:
    done, total = progress(session, reader.id)
    if st.session_state.get(IMAGE_KEY) is None:
        st.session_state[IMAGE_KEY] = next_ungraded(session, reader.id)
queue_controls(done, total)
gsu_id = st.session_state.get(IMAGE_KEY)
if gsu_id is None:
    st.success("You have graded every case. Pick a patient above to review or change a grade.")
    st.stop()

with db.read() as session:
    gsu = image_info(session, gsu_id)
    swe_id = sibling_image(session, gsu_id, "SWE")
    current = own_grade(session, gsu_id, reader.id)
st.subheader(f"Patient {gsu.patient_code}")

left, right = st.columns([3, 1])
with left:
    tabs = st.tabs(["GSU: ultrasound area", "SWE: color box"] if swe_id else ["GSU"])
    with tabs[0]:
        gsu_drawn, gsu_saved = box_canvas(gsu_id, "ultrasound area", zoom, level, window)
    swe_drawn = swe_saved = None
    if swe_id:
        with tabs[1]:
            swe_drawn, swe_saved = box_canvas(swe_id, "color box", zoom, level, window)

with right:
    grade = st.segmented_control(
        "Echogenicity grade",
        list(GRADES),
        default=current,
        key=f"grade-{gsu_id}",
        format_func=str,
    )
    for g in GRADES:
        st.caption(f"**{g}** · {GRADE_DESCRIPTIONS[g]}")
    if st.button("Save and next", type="primary", key="save_next"):
        if grade is None:
            st.error("Pick a grade first.")
        else:

            def work(session) -> None:
                me = get_reader(session, reader.username)
                save_grade(session, gsu_id, me, grade)
                for image_id, drawn, saved in (
                    (gsu_id, gsu_drawn, gsu_saved),
                    (swe_id, swe_drawn, swe_saved),
                ):
                    if image_id and drawn is not None and drawn != saved:
                        save_box(session, image_id, me, drawn)

            try:
                db.write(work)
            except GradingError as exc:
                st.error(f"Not saved: {plain(str(exc))}")
            else:
                with db.read() as session:
                    st.session_state[IMAGE_KEY] = next_ungraded(
                        session, reader.id, after_code=gsu.patient_code
                    )
                st.rerun()
    if current is not None:
        st.divider()
        st.caption("Your grade is in; other readers' grades are now visible.")
        try:
            with db.read() as session:
                view = unblinded_view(session, gsu_id, reader)
        except BlindingError:
            view = None
        if view:
            for other in view.others:
                st.text(f"{other.display_name}: grade {other.grade}")
            if view.consensus_grade is not None:
                st.text(f"Consensus: {view.consensus_grade} ({view.consensus_method})")

with st.expander("Reference images, grades 0–3 (synthetic phantom)"):
    cols = st.columns(4)
    for g, col in zip(GRADES, cols, strict=True):
        path = ASSETS / f"grade_{g}.png"
        if path.exists():
            col.image(str(path), caption=f"{g}: {GRADE_DESCRIPTIONS[g]}")
