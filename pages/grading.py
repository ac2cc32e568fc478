"""Grading: next ungraded case, keyboard grading, crop boxes on GSU and SWE, save and next.

Boxes are kept in source pixels in session state from the moment they are drawn, and the
canvas is redrawn from them at whatever scale the zoom gives, so a zoom or window/level
change never alters what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit_drawable_canvas import st_canvas

from core.common.boxes import Box, validate_box
from core.common.labels import GRADE_DESCRIPTIONS, GRADES
from core.imaging.canvas_boxes import (
    BOX_FILL,
    NO_FILL,
    canvas_key,
    drawing_with,
    drawn_in_image,
    fit_scale,
)
from core.imaging.display import GRADING_PANEL_PX, grading_layout, png_bytes, reading_view
from core.imaging.regions import calibration, offered_boxes
from db.cases import patient_codes
from db.grading import (
    COMMENT_MAX,
    BlindingError,
    GradingError,
    gsu_image_of,
    image_info,
    neighbour_case,
    next_ungraded,
    own_box,
    own_entry,
    progress,
    save_box,
    save_grade,
    sibling_image,
    unblinded_view,
)
from db.readers import get_reader
from pages.components import display_pixels, get_db, plain, require_reader

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "grade_reference"
IMAGE_KEY = "grading_image"
FLASH_KEY = "grading_flash"
ERROR_KEY = "grading_error"
CANVASES_KEY = "grading_canvases"
DEFAULT_VIEW = (1200, 900)  # main-area width and window height until the browser reports
ZOOMS = {1.0: "Fit", 1.5: "1.5×", 2.0: "2×"}
LABELS = {"GSU": "GSU: ultrasound area", "SWE": "SWE: color box"}
KEYS = {  # key → the button (by widget key) it presses
    **{str(g): f"gradebtn-{g}" for g in GRADES},
    "Enter": "save_next",
    "ArrowLeft": "prev_case",
    "ArrowRight": "next_case",
    "a": "use_proposed",
    "g": "show_gsu",
    "s": "show_swe",
}
KEYS_HELP = (
    "Keys: **0–3** grade · **Enter** save and next · **←/→** previous/next case · "
    "**A** use the proposed box · **G/S** GSU/SWE. Keys are ignored while you type a comment."
)

db = get_db()
reader = require_reader()

_viewport = st.components.v2.component(
    "grading_viewport",
    js="""
export default function({ setStateValue, data }) {
  const measure = () => {
    const main = document.querySelector('[data-testid="stMainBlockContainer"]');
    if (!main) return;
    const css = getComputedStyle(main);
    const width = main.clientWidth - parseFloat(css.paddingLeft) - parseFloat(css.paddingRight);
    const size = {width: Math.round(width / 10) * 10, height: Math.round(innerHeight / 10) * 10};
    const known = data && data.known;
    if (!known || known.width !== size.width || known.height !== size.height) {
      setStateValue('size', size);
    }
  };
  let timer = null;
  const later = () => { clearTimeout(timer); timer = setTimeout(measure, 150); };
  window.addEventListener('resize', later);
  measure();
  window.__gradingKeys = (data && data.keys) || {};
  if (!window.__gradingKeyQueue) {
    // One key at a time, each after the previous one's rerun: keys pressed during a rerun
    // would otherwise reach the server together and their buttons run in any order.
    const queue = window.__gradingKeyQueue = [];
    let clicked = 0;  // when the last click was sent, until its rerun is seen starting
    const busy = () => {
      const state = document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState;
      return state === 'running' || state === 'rerunRequested';
    };
    const pump = () => {
      if (clicked) {
        if (busy() || performance.now() - clicked > 1000) clicked = 0;
        else { setTimeout(pump, 15); return; }
      }
      if (!queue.length) return;
      if (busy()) { setTimeout(pump, 15); return; }
      const button = document.querySelector(`.st-key-${queue.shift()} button`);
      if (button && !button.disabled) { button.click(); clicked = performance.now(); }
      setTimeout(pump, 15);
    };
    window.addEventListener('keydown', (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
      const target = e.composedPath()[0] || e.target;
      const typing = 'input, textarea, select, [contenteditable="true"]';
      if (target.closest && target.closest(typing)) return;
      const arrow = e.key.startsWith('Arrow');
      if (arrow && target.closest && target.closest('[role="slider"]')) return;
      const key = window.__gradingKeys[e.key.length === 1 ? e.key.toLowerCase() : e.key];
      if (!key || !document.querySelector(`.st-key-${key} button`)) return;
      e.preventDefault();
      e.stopImmediatePropagation();
      queue.push(key);
      pump();
    }, true);
    document.addEventListener('pointerup', () => setTimeout(() => {
      const el = document.activeElement;
      if (el && (el.tagName === 'BUTTON' || el.getAttribute('role') === 'slider')) el.blur();
    }, 0), true);
  }
  return () => { clearTimeout(timer); window.removeEventListener('resize', later); };
}
""",
)


@dataclass(frozen=True)
class Pending:
    """A box drawn or accepted but not saved yet, in source pixels."""

    box: Box
    auto: bool = False
    clamped: bool = False


def viewport_size() -> tuple[int, int]:
    """Main-area width and window height, reported by the browser (a guess until then).

    The probe also runs the keyboard shortcuts (``KEYS``): it clicks the matching button
    for each key, one rerun at a time, and ignores keys typed into a field. It takes focus
    off a button or slider once clicked, so Enter never clicks that button again.
    """
    known = st.session_state.get("grading_viewport_size")
    result = _viewport(
        key="grading_viewport",
        data={"known": known, "keys": KEYS},
        default={"size": None},
        on_size_change=lambda: None,
        width="content",
        height="content",
    )
    size = result.get("size") or known
    st.session_state["grading_viewport_size"] = size
    return (size["width"], size["height"]) if size else DEFAULT_VIEW


@st.cache_data(max_entries=256, show_spinner=False)
def proposals(
    relpath: str, modality: str, _header: dict[str, Any] | None
) -> list[tuple[str, tuple[int, int, int, int]]]:
    """The automatic boxes, named: every ultrasound view on GSU, the color box on SWE.

    ``_header`` (the stored DICOM header, whose regions come first) is not hashed: it
    belongs to the image at ``relpath``.
    """
    offered = offered_boxes(display_pixels(relpath), _header, modality)
    return [(name, box.as_tuple()) for name, box in offered]


@st.cache_data(max_entries=32, show_spinner=False)
def background(relpath: str, scale: float, level: float, window: float) -> bytes:
    return png_bytes(reading_view(display_pixels(relpath), scale, level, window))


def view_controls() -> tuple[float, float, float, bool]:
    with st.sidebar:
        st.subheader("Display")
        level = st.slider("Brightness (level)", 0.2, 0.8, 0.5, 0.05, key="wl_level")
        window = st.slider("Contrast (window)", 0.3, 1.5, 1.0, 0.05, key="wl_window")
        zoom = st.segmented_control(
            "Zoom", [1.0, 1.5, 2.0], default=1.0, required=True, format_func=ZOOMS.get, key="zoom"
        )
        fill = st.toggle("Tint the inside of boxes", False, key="box_fill")
        st.caption(
            "Display only: the stored image and your boxes (kept in image pixels) are "
            "never changed. When zoomed, scroll inside the image to pan."
        )
    return level, window, zoom, fill


def open_case(gsu_id: int | None) -> None:
    """Show a case: it opens on GSU, with the reader's own grade, flag and comment."""
    st.session_state[IMAGE_KEY] = gsu_id
    if gsu_id is None:
        return
    st.session_state[f"active-{gsu_id}"] = "GSU"
    st.session_state.pop(f"tabs-{gsu_id}", None)
    with db.read() as session:
        mine = own_entry(session, gsu_id, reader.id)
    st.session_state[f"grade-{gsu_id}"] = mine.grade if mine else None
    st.session_state[f"uncertain-{gsu_id}"] = mine.uncertain if mine else False
    st.session_state[f"comment-{gsu_id}"] = (mine.comment or "") if mine else ""


def _jump() -> None:
    code = st.session_state.get("jump")
    if code:
        with db.read() as session:
            open_case(gsu_image_of(session, code))


def _step(code: str, step: int) -> None:
    with db.read() as session:
        target = neighbour_case(session, code, step)
    if target is None:
        where = "before" if step < 0 else "after"
        st.session_state[FLASH_KEY] = f"No case {where} this one."
    else:
        open_case(target)


def _set(key: str, value: object) -> None:
    st.session_state[key] = value


def _show(gsu_id: int, modality: str) -> None:
    st.session_state[f"active-{gsu_id}"] = modality
    st.session_state[f"tabs-{gsu_id}"] = LABELS[modality]


def _tab_changed(gsu_id: int) -> None:
    chosen = st.session_state.get(f"tabs-{gsu_id}")
    st.session_state[f"active-{gsu_id}"] = "SWE" if chosen == LABELS["SWE"] else "GSU"


def _sync_pending(image_id: int, json_data: dict | None) -> bool:
    """Take a new drawing off the canvas into source pixels; True when the box changed.

    A drawing already taken (or overridden by a button since) is not taken again.
    """
    canvas = st.session_state.get(CANVASES_KEY, {}).get(image_id)
    if canvas is None or json_data == canvas["seen"]:
        return False
    canvas["seen"] = json_data
    box, clamped = drawn_in_image(json_data, canvas["scale"], canvas["width"], canvas["height"])
    if box is None or box == canvas["shown"]:
        return False
    st.session_state[f"pending-{image_id}"] = Pending(box, clamped=clamped)
    canvas["shown"] = box
    return True


def _canvas_json(image_id: int) -> dict | None:
    """The drawing the canvas last sent, read from its widget state (for callbacks)."""
    canvas = st.session_state.get(CANVASES_KEY, {}).get(image_id)
    state = st.session_state.get(canvas["key"]) if canvas else None
    return ((state or {}).get("drawing") or {}).get("raw")


def _set_pending(image_id: int, pending: Pending | None) -> None:
    """A box set by a button: the canvas's older drawing must not overwrite it."""
    canvas = st.session_state.get(CANVASES_KEY, {}).get(image_id)
    if canvas is not None:
        canvas["seen"] = _canvas_json(image_id)
    if pending is None:
        st.session_state.pop(f"pending-{image_id}", None)
    else:
        st.session_state[f"pending-{image_id}"] = pending


def _use_proposed(image_id: int, box: tuple[int, int, int, int] | None, name: str) -> None:
    if box is None:
        st.session_state[FLASH_KEY] = f"No {name} was found automatically; draw the box."
        return
    _set_pending(image_id, Pending(Box(*box), auto=True))
    st.session_state[FLASH_KEY] = f"Proposed {name} box set; it is stored with Save and next."


def _use_proposed_on_active(gsu_id: int) -> None:
    """The A key: the proposal of the image in view (one button, so the key never moves)."""
    modality = st.session_state.get(f"active-{gsu_id}", "GSU")
    found = st.session_state.get(f"proposals-{gsu_id}", {}).get(modality)
    if found is not None:
        _use_proposed(*found)


def _clear_box(image_id: int) -> None:
    _set_pending(image_id, None)
    generation = f"canvas-gen-{image_id}"
    st.session_state[generation] = st.session_state.get(generation, 0) + 1
    try:
        db.write(lambda s: save_box(s, image_id, get_reader(s, reader.username), None))
    except GradingError as exc:
        st.session_state[ERROR_KEY] = plain(str(exc))
        return
    st.session_state[FLASH_KEY] = "Box cleared."


def _save_and_next(gsu_id: int, swe_id: int | None, code: str) -> None:
    """Store the grade, flag, comment and pending boxes in one transaction, then move on.

    Keys pressed in quick succession can reach one run together, their callbacks in any
    order: a grade key or A pressed with this Enter is taken into account here.
    """
    pressed = [g for g in GRADES if st.session_state.get(f"gradebtn-{g}")]
    if pressed:
        st.session_state[f"grade-{gsu_id}"] = pressed[-1]
    if st.session_state.get("use_proposed"):
        _use_proposed_on_active(gsu_id)
    grade = st.session_state.get(f"grade-{gsu_id}")
    if grade is None:
        st.session_state[ERROR_KEY] = "Pick a grade first (keys 0–3)."
        return
    images = [i for i in (gsu_id, swe_id) if i is not None]
    for image_id in images:
        _sync_pending(image_id, _canvas_json(image_id))
    pending = {i: st.session_state.get(f"pending-{i}") for i in images}
    uncertain = bool(st.session_state.get(f"uncertain-{gsu_id}"))

    def work(session) -> None:
        me = get_reader(session, reader.username)
        save_grade(
            session,
            gsu_id,
            me,
            grade,
            uncertain=uncertain,
            comment=st.session_state.get(f"comment-{gsu_id}"),
        )
        for image_id, item in pending.items():
            if item is not None:
                save_box(session, image_id, me, item.box, auto_accepted=item.auto)

    try:
        db.write(work)
    except GradingError as exc:
        st.session_state[ERROR_KEY] = f"Not saved: {plain(str(exc))}"
        return
    for image_id in images:
        st.session_state.pop(f"pending-{image_id}", None)
    boxes = sum(item is not None for item in pending.values())
    st.session_state[FLASH_KEY] = (
        f"Saved {code}: grade {grade}"
        + (" (uncertain)" if uncertain else "")
        + (f", {boxes} box{'es' if boxes > 1 else ''}" if boxes else "")
    )
    with db.read() as session:
        open_case(next_ungraded(session, reader.id, after_code=code))


def box_pane(
    image_id: int,
    modality: str,
    gsu_id: int,
    size: tuple[int, int],
    view: tuple[float, float, float, bool],
) -> None:
    """One image on a drawing canvas, its box in source pixels redrawn at the current scale."""
    level, window, zoom, fill = view
    active = st.session_state.get(f"active-{gsu_id}", "GSU") == modality
    with db.read() as session:
        info = image_info(session, image_id)
        saved = own_box(session, image_id, reader.id)
    scale = fit_scale(info.width, info.height, *size, zoom, enlarge=True)
    pending: Pending | None = st.session_state.get(f"pending-{image_id}")
    shown = pending.box if pending else saved
    key = canvas_key(image_id, scale, st.session_state.get(f"canvas-gen-{image_id}", 0))
    canvases = st.session_state.setdefault(CANVASES_KEY, {})
    previous = canvases.get(image_id, {})
    canvases[image_id] = {
        "key": key,
        "scale": scale,
        "width": info.width,
        "height": info.height,
        "shown": shown,
        "seen": previous.get("seen") if previous.get("key") == key else None,
    }
    st.markdown(f"**{LABELS[modality]}**" + (" · *active*" if active else ""))
    result = st_canvas(
        fill_color=BOX_FILL if fill else NO_FILL,
        stroke_width=2,
        stroke_color="#00E5FF",
        background_image=background(info.path, scale, level, window),
        width=round(info.width * scale),
        height=round(info.height * scale),
        drawing_mode="rect",
        initial_drawing=drawing_with(shown, scale, BOX_FILL if fill else NO_FILL),
        max_display_height=size[1],
        key=key,
    )
    if _sync_pending(image_id, result.json_data if result else None):
        st.rerun()
    offered = proposals(info.path, info.modality, info.dicom_header)
    name = "ultrasound area" if modality == "GSU" else "color box"
    auto = offered[0][1] if offered else None
    if len(offered) > 1:
        chosen = st.radio(
            "This box belongs to",
            [n for n, _ in offered],
            key=f"view-{image_id}",
            horizontal=True,
            help="The screen holds several ultrasound views: choose the one to crop.",
        )
        auto = dict(offered)[chosen]
        name = chosen.lower()
    cols = st.columns(2)
    if auto:
        cols[0].button(
            "Use proposed box",
            help=f"The automatically found {name}; stored with Save and next.",
            key=f"auto-{image_id}",
            on_click=_use_proposed,
            args=(image_id, auto, name),
        )
    st.session_state.setdefault(f"proposals-{gsu_id}", {})[modality] = (image_id, auto, name)
    if saved or pending:
        cols[1].button("Clear box", key=f"clear-{image_id}", on_click=_clear_box, args=(image_id,))
    st.caption(f"Saved box: {saved.as_tuple() if saved else 'none'} (x, y, w, h in image pixels)")
    scale_of_pixels = calibration(info.dicom_header)
    if scale_of_pixels is not None:
        st.caption(f"Calibration: {scale_of_pixels.describe()}")
    if pending is not None and pending.box != saved:
        source = "Proposed" if pending.auto else "Drawn"
        st.caption(f"{source} box: {pending.box.as_tuple()}, stored with Save and next")
        if pending.clamped:
            st.info("The drag went past the image edge; the box stops at the edge.")
        problem = validate_box(pending.box, info.width, info.height)
        if problem:
            st.warning(problem)


def grade_panel(gsu_id: int, swe_id: int | None, code: str) -> None:
    chosen = st.session_state.get(f"grade-{gsu_id}")
    st.markdown("**Echogenicity grade**")
    with st.container(horizontal=True, gap="small"):
        for g in GRADES:
            st.button(
                f"Grade {g}",  # Streamlit shows the shortcut key beside the label
                key=f"gradebtn-{g}",
                shortcut=str(g),
                type="primary" if chosen == g else "secondary",
                on_click=_set,
                args=(f"grade-{gsu_id}", g),
            )
    for g in GRADES:
        st.caption(f"**{g}** · {GRADE_DESCRIPTIONS[g]}")
    st.checkbox(
        "Uncertain: keep out of consensus",
        key=f"uncertain-{gsu_id}",
        help="Stored and counted; other readers' grades decide the consensus until you save "
        "this case again without the flag.",
    )
    st.text_input("Comment (optional)", key=f"comment-{gsu_id}", max_chars=COMMENT_MAX)
    error = st.session_state.pop(ERROR_KEY, None)
    if error:
        st.error(error)
    st.button(
        "Save and next",
        type="primary",
        key="save_next",
        shortcut="Enter",
        on_click=_save_and_next,
        args=(gsu_id, swe_id, code),
        width="stretch",
    )
    with st.container(horizontal=True, gap="small"):
        st.button("Previous", key="prev_case", shortcut="Left", on_click=_step, args=(code, -1))
        st.button("Next", key="next_case", shortcut="Right", on_click=_step, args=(code, 1))
    with st.container(horizontal=True, gap="small"):
        st.button(
            "Proposed box",
            key="use_proposed",
            shortcut="A",
            help="Use the automatically found box on the active image.",
            on_click=_use_proposed_on_active,
            args=(gsu_id,),
        )
        if swe_id:
            st.button("GSU", key="show_gsu", shortcut="G", on_click=_show, args=(gsu_id, "GSU"))
            st.button("SWE", key="show_swe", shortcut="S", on_click=_show, args=(gsu_id, "SWE"))
    st.caption(KEYS_HELP)


def unblinded(gsu_id: int) -> None:
    st.divider()
    st.caption("Your grade is in; other readers' grades are now visible.")
    try:
        with db.read() as session:
            view = unblinded_view(session, gsu_id, reader)
    except BlindingError:
        return
    for other in view.others:
        st.text(f"{other.display_name}: grade {other.grade}")
    if view.consensus_grade is not None:
        st.text(f"Consensus: {view.consensus_grade} ({view.consensus_method})")


st.title("Grading")
view = view_controls()
with st.sidebar:
    main_width, height = viewport_size()
flash = st.session_state.pop(FLASH_KEY, None)
if flash:
    st.toast(plain(flash))
with db.read() as session:
    done = progress(session, reader.id)
    codes = patient_codes(session)
    if st.session_state.get(IMAGE_KEY) is None:
        open_case(next_ungraded(session, reader.id))
gsu_id = st.session_state.get(IMAGE_KEY)
if gsu_id is not None:
    with db.read() as session:
        gsu = image_info(session, gsu_id)
        swe_id = sibling_image(session, gsu_id, "SWE")
        graded = own_entry(session, gsu_id, reader.id) is not None
    st.session_state["jump"] = gsu.patient_code
st.progress(
    done.done / max(done.total, 1),
    text=f"{done.done} of {done.total} graded by you"
    + (f" ({done.uncertain} marked uncertain)" if done.uncertain else ""),
)
st.selectbox("Jump to patient", codes, placeholder="Patient code", key="jump", on_change=_jump)
if gsu_id is None:
    st.success("You have graded every case. Pick a patient above to review or change a grade.")
    st.stop()

st.subheader(f"Patient {plain(gsu.patient_code)}")
layout = grading_layout(main_width, height)
size = (layout.image_width, layout.image_height)
modalities = [("GSU", gsu_id)] + ([("SWE", swe_id)] if swe_id else [])
if layout.side_by_side:
    widths = [layout.image_width] * len(modalities) + [GRADING_PANEL_PX]
    *panes, right = st.columns(widths, gap="small")
else:
    left, right = st.columns([main_width - GRADING_PANEL_PX, GRADING_PANEL_PX], gap="small")
    with left:
        panes = st.tabs(
            [LABELS[m] for m, _ in modalities],
            key=f"tabs-{gsu_id}",
            on_change=_tab_changed,
            args=(gsu_id,),
        )
for pane, (modality, image_id) in zip(panes, modalities, strict=True):
    with pane:
        box_pane(image_id, modality, gsu_id, size, view)
with right:
    grade_panel(gsu_id, swe_id, gsu.patient_code)
    if graded:
        unblinded(gsu_id)

with st.expander("Reference images, grades 0–3 (synthetic phantom)"):
    cols = st.columns(4)
    for g, col in zip(GRADES, cols, strict=True):
        path = ASSETS / f"grade_{g}.png"
        if path.exists():
            col.image(str(path), caption=f"{g}: {GRADE_DESCRIPTIONS[g]}")
