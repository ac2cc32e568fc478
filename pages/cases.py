"""Cases: the patient list with status and filters, one patient's images, metadata edits."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import streamlit as st

from core.cases.importer import Cleaning, import_upload
from core.cases.manifest import (
    FieldError,
    check_age,
    check_date,
    check_height,
    check_reason,
    check_sma,
    check_weight,
)
from core.cases.preview import BundleImage, ImagePreview, bundle_images, preview_image
from core.common.boxes import Box
from core.imaging.pixel_deid import Corrections
from core.services.swe_presets import PresetSummary, preset_overview
from db.audit import patient_history
from db.cases import (
    CaseFilter,
    case_labels,
    get_patient,
    list_cases,
    update_patient,
)
from db.readers import get_reader
from pages.components import (
    demo_offer,
    display_pixels,
    get_db,
    get_store,
    plain,
    reader_names,
    require_reader,
    show_image,
    show_table,
)
from pages.swe_scale_form import describe_preset, scale_range_form

PAGE_SIZE = 50
FULL_PROBLEMS = 5  # up to this many import problems show as sentences; more as a table

db = get_db()
reader = require_reader()
st.title("Cases")

if demo_offer(reader) and reader.role != "admin":
    st.stop()


def filters() -> CaseFilter:
    cols = st.columns([2, 1, 2, 1])
    code = cols[0].text_input("Patient code contains", max_chars=64)
    sex = cols[1].selectbox("Sex", ["any", "M", "F"])
    sarcopenia = cols[2].selectbox(
        "Sarcopenia (CT)", ["any", "sarcopenic", "not sarcopenic", "excluded"]
    )
    consensus = cols[3].selectbox("Consensus", ["any", "done", "pending"])
    return CaseFilter(code, sex, sarcopenia, consensus)


case_filter = filters()
with db.read() as session:
    _, total = list_cases(session, case_filter, limit=1, viewer=reader)
pages = max(1, -(-total // PAGE_SIZE))
page = st.number_input(f"Page (of {pages})", 1, pages, 1) if pages > 1 else 1
with db.read() as session:
    rows, total = list_cases(
        session, case_filter, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, viewer=reader
    )
st.caption(f"{total} patient(s) match.")
if reader.role != "admin":
    st.caption("The consensus shows only for patients you have graded (blinding).")
table = pd.DataFrame([r.__dict__ for r in rows]).drop(columns=["id"], errors="ignore")
selection = show_table(
    table,
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key="case_table",
    column_config={
        "code": "Patient",
        "smi": st.column_config.NumberColumn("SMI (cm²/m²)", format="%.1f"),
        "grades_done": "Grades",
        "consensus": "Consensus grade",
    },
)
chosen = selection.selection.rows if selection else []
code = rows[chosen[0]].code if chosen and chosen[0] < len(rows) else None


def patient_detail(code: str) -> None:
    with db.read() as session:
        patient = get_patient(session, code)
        if patient is None:
            st.warning("That patient no longer exists.")
            return
        derived = case_labels(patient)
        images = {i.modality: i.path for i in patient.images}
    st.subheader(f"Patient {plain(patient.code)}")
    facts = st.columns(5)
    facts[0].metric("Sex / age", f"{patient.sex} / {patient.age}")
    facts[1].metric("Height", f"{patient.height_cm:.0f} cm")
    facts[2].metric("SMI", f"{derived.smi:.1f}" if derived.smi else "—")
    facts[3].metric("Sarcopenia", {True: "yes", False: "no", None: "excluded"}[derived.sarcopenic])
    facts[4].metric(
        "US–CT days", derived.interval_days if derived.interval_days is not None else "—"
    )
    if derived.exclusion_reason:
        st.text(f"Excluded from CT labels: {derived.exclusion_reason}")
    left, right = st.columns(2)
    for column, modality in ((left, "GSU"), (right, "SWE")):
        with column:
            if modality in images:
                show_image(display_pixels(images[modality]), caption=modality)
            else:
                st.caption(f"No {modality} image.")
    history(patient.id)
    if reader is not None and reader.role == "admin":
        edit_form(patient)


def history(patient_id: int) -> None:
    """The patient's audit trail: everything for admins, a reader's own changes otherwise."""
    is_admin = reader is not None and reader.role == "admin"
    with db.read() as session:
        events = patient_history(
            session, patient_id, only_actor_id=None if is_admin else getattr(reader, "id", -1)
        )
    with st.expander(f"History ({len(events)} changes)"):
        if not is_admin:
            st.caption("Your own changes; other readers' stay hidden (blinding).")
        names = reader_names()
        show_table(
            pd.DataFrame(
                [
                    {
                        "when (UTC)": e.at,
                        "who": names.get(e.actor, e.actor),
                        "what": e.action,
                        "before": json.dumps(e.before) if e.before else "",
                        "after": json.dumps(e.after) if e.after else "",
                    }
                    for e in events
                ]
            ),
            hide_index=True,
        )


def edit_form(patient) -> None:
    ct = patient.ct
    with st.expander("Edit metadata (admin)"), st.form(f"edit-{patient.code}"):
        cols = st.columns(3)
        sex = cols[0].selectbox("Sex", ["M", "F"], index=["M", "F"].index(patient.sex))
        age = cols[1].number_input("Age", 0, 120, patient.age)
        height = cols[2].number_input("Height (cm)", 50.0, 250.0, float(patient.height_cm))
        weight = cols[0].text_input(
            "Weight (kg)", f"{patient.weight_kg:g}" if patient.weight_kg else ""
        )
        us_date = cols[1].text_input(
            "US date", patient.us_date.isoformat() if patient.us_date else ""
        )
        ct_date = cols[2].text_input("CT date", ct.ct_date.isoformat() if ct and ct.ct_date else "")
        sma = cols[0].text_input("L3 SMA (cm²)", f"{ct.sma_cm2:g}" if ct and ct.sma_cm2 else "")
        reason = cols[1].text_input("Exclusion reason", (ct.exclusion_reason or "") if ct else "")
        if not st.form_submit_button("Save"):
            return
    try:
        patient_changes = {
            "sex": sex,
            "age": check_age(age),
            "height_cm": check_height(height),
            "weight_kg": check_weight(weight),
            "us_date": check_date("US date", us_date),
        }
        ct_changes = {
            "ct_date": check_date("CT date", ct_date),
            "sma_cm2": check_sma(sma),
            "exclusion_reason": check_reason(reason),
        }
    except FieldError as exc:
        st.error(f"Not saved: {plain(str(exc))}")
        return

    def work(session) -> None:
        fresh = get_patient(session, patient.code)
        actor = get_reader(session, reader.username)
        update_patient(session, fresh, actor, patient_changes, ct_changes)

    db.write(work)
    st.success("Saved; SMI and sarcopenia were recomputed.")
    st.rerun()


if code:
    patient_detail(code)

PREVIEW_KEY = "import_preview"
OUTLINES = (
    "green: views · magenta: colour box · yellow: colour bar · red: blanked · blue: kept text"
)


def _cleaned(data: bytes, image: BundleImage, fixes: Corrections, ocr: bool) -> ImagePreview:
    """The preview of one image, kept for this upload (the text search takes a second or two)."""
    shown = st.session_state[PREVIEW_KEY]["shown"]
    key = (image.file, fixes, ocr)
    if key not in shown:
        with st.spinner("Searching the image for burned-in text…"):
            shown[key] = preview_image(data, image, fixes, pixel_ocr=ocr)
    return shown[key]


def _correct(state: dict, image: BundleImage, fixes: Corrections) -> None:
    state["corrections"][image.file] = fixes
    st.rerun()


def review_image(data: bytes, state: dict, ocr: bool) -> None:
    """One image of the upload as it will be stored, and the admin's corrections to it."""
    images: list[BundleImage] = state["images"]
    index = st.selectbox(
        "Image to check",
        range(len(images)),
        format_func=lambda i: images[i].label(),
        key="preview_image",
    )
    image = images[index]
    fixes = state["corrections"].get(image.file, Corrections())
    shown = _cleaned(data, image, fixes, ocr)
    if shown.problem:
        st.error(plain(shown.problem))
        return
    show_image(shown.picture, caption=OUTLINES)
    lines = shown.blanked + shown.kept
    if lines:
        show_table(
            pd.DataFrame(
                [
                    {
                        "text": line.text,
                        "what": line.reason,
                        "box (x, y, w, h)": line.box.as_tuple(),
                    }
                    for line in lines
                ]
            ),
            hide_index=True,
        )
    texts = {
        line.box: line.text
        for line in lines
        if line.reason == "kept: by the admin" or (line in shown.blanked and line.text)
    }
    keep = st.multiselect(
        "Leave these as they are (not identifying)",
        list(texts),
        default=[box for box in fixes.keep if box in texts],
        format_func=lambda box: f"{texts[box]!r} at {box.as_tuple()}",
        key=f"keep-{image.file}",
    )
    if tuple(keep) != fixes.keep:
        _correct(state, image, Corrections(fixes.blank, tuple(keep)))
    with st.form(f"blank-{image.file}", border=False):
        cols = st.columns(4)
        values = [
            col.number_input(name, min_value=0, step=1, key=f"{name}-{image.file}")
            for col, name in zip(cols, ("x", "y", "width", "height"), strict=True)
        ]
        if st.form_submit_button("Blank this rectangle too"):
            if min(values[2:]) < 1:
                st.error("Give the rectangle a width and a height of at least 1 pixel.")
            else:
                _correct(state, image, Corrections((*fixes.blank, Box(*values)), fixes.keep))
    if fixes.blank and st.button("Undo the rectangles added here", key=f"undo-{image.file}"):
        _correct(state, image, Corrections((), fixes.keep))


def import_panel() -> None:
    """Upload, preview every image as it will be stored, correct, then import."""
    st.caption(
        "Columns: patient_code, sex, age, height_cm, weight_kg, gsu_file, swe_file, "
        "us_date, ct_date, l3_sma_cm2, exclusion_reason. Images: PNG, JPEG, TIFF or DICOM, "
        "de-identified before storage: check each image below, then import."
    )
    upload = st.file_uploader("Zip file", type=["zip"])
    skip = st.checkbox("Import the valid rows and skip the others")
    known_clean = st.checkbox(
        "These images carry no burned-in text: skip the text search",
        help="Only for crops or exports made without the scanner's banner: nothing is then "
        "blanked unless you draw it, and DICOM files do not claim cleaned pixels.",
    )
    if upload is None:
        st.session_state.pop(PREVIEW_KEY, None)
        return
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    state = st.session_state.get(PREVIEW_KEY)
    if state is None or state["digest"] != digest:
        images, problems = bundle_images(data)
        state = {"digest": digest, "images": images, "problems": problems}
        state |= {"corrections": {}, "shown": {}}
        st.session_state[PREVIEW_KEY] = state
    show_problems(state["problems"])
    if state["images"]:
        review_image(data, state, not known_clean)
    corrected = sum(bool(c.blank or c.keep) for c in state["corrections"].values())
    if st.button(f"Import as previewed ({corrected} image(s) corrected)", key="import_confirm"):
        bar = st.progress(0.0, text="Checking cases…")
        report = import_upload(
            data,
            db,
            get_store(),
            skip_invalid=skip,
            actor_name=reader.username,
            progress=lambda done, total: bar.progress(done / max(total, 1)),
            cleaning=Cleaning(dict(state["corrections"]), pixel_ocr=not known_clean),
        )
        (st.success if report.ok else st.error)(report.summary())
        show_problems(report.problems)


def show_problems(problems: list) -> None:
    """Up to ``FULL_PROBLEMS`` as sentences, more as a table."""
    if len(problems) <= FULL_PROBLEMS:
        for problem in problems:
            st.error(plain(str(problem)))
        return
    show_table(
        pd.DataFrame([{"row": p.row, "file": p.file, "reason": p.reason} for p in problems]),
        hide_index=True,
        column_config={"reason": st.column_config.TextColumn(width="large")},
    )


def scale_presets() -> list[PresetSummary]:
    """Each scanner preset among the SWE images, reading one bar per scanner (cached)."""
    bar = st.progress(0.0, text="Reading one SWE scale per scanner…")
    summaries = preset_overview(
        db, get_store(), progress=lambda done, total: bar.progress(done / max(total, 1))
    )
    bar.empty()
    return summaries


def scale_presets_panel(summaries: list[PresetSummary]) -> None:
    """What each scanner's SWE labels read, and the range form for the chosen scanner."""
    rows = [
        {
            "scanner preset": s.key.describe(),
            "SWE images": s.images,
            "example patient": s.example or "—",
            "range entered": describe_preset(s.preset) if s.preset else "—",
            "printed labels": s.labels,
        }
        for s in summaries
    ]
    show_table(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={"printed labels": st.column_config.TextColumn(width="large")},
    )
    needing = [i for i, s in enumerate(summaries) if s.needs_range]
    if needing:
        st.warning(
            f"{len(needing)} scanner preset(s) decode stiffness in relative units (0–1): their "
            "labels could not be read with confidence. Enter the range printed on the bar."
        )
    choice = st.selectbox(
        "Scanner preset",
        range(len(summaries)),
        index=needing[0] if needing else 0,
        format_func=lambda i: summaries[i].key.describe(),
        key="swe_preset_choice",
    )
    picked = summaries[choice]
    scale_range_form(picked.key, picked.preset, reader, form_key="cases_swe_range")


if reader is not None and reader.role == "admin":
    with st.expander("Import cases (zip with manifest.csv)"):
        import_panel()
    summaries = scale_presets()
    if summaries:
        attention = any(s.needs_range for s in summaries)
        with st.expander("SWE scale ranges per scanner", expanded=attention):
            scale_presets_panel(summaries)
