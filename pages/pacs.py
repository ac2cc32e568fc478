"""PACS (admin): search the hospital PACS, pick each patient's GSU and SWE image, import
them under a pseudonym, and write results back as DICOM Structured Reports."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from core.common.errors import UserError
from core.learning.dataset import task_title
from core.services.pacs.client import PacsClient
from core.services.pacs.endpoints import configured_endpoints
from core.services.pacs.link import PseudonymLink
from core.services.pacs.retrieve import (
    SEARCH_LIMIT,
    PatientPick,
    import_picks,
    propose_pick,
    search_studies,
    ultrasound_images,
)
from core.services.pacs.writeback import send_report
from core.services.review import finished_runs
from pages.components import get_db, get_store, require_admin, show_table

admin = require_admin()
db = get_db()
store = get_store()
st.title("PACS")
st.caption(
    "Studies come in under a pseudonym through the same checks as a zip import; the link "
    "to the hospital's patient ID is kept in its own file, outside the research database."
)

try:
    endpoints = configured_endpoints()
except UserError as exc:
    st.error("The PACS settings could not be read.")
    st.text(str(exc))
    st.stop()
if not endpoints:
    st.info(
        "No PACS is set up on this server. Set SARCOPENIA_PACS_URL (with the user and "
        "password or a token) or add a [pacs.<name>] table to .streamlit/secrets.toml; see "
        "docs/deployment.md."
    )
    st.stop()
names = {e.name: e for e in endpoints}
endpoint = names[st.selectbox("PACS", list(names), format_func=lambda n: names[n].describe())]
client = PacsClient(endpoint)
link = PseudonymLink()
if st.button("Check the connection"):
    try:
        client.check()
    except UserError as exc:
        st.error("The PACS cannot be used.")
        st.text(str(exc))
    else:
        st.success("Connected.")

tab_import, tab_write = st.tabs(["Query and import", "Write back"])

with tab_import:
    with st.form("pacs_search"):
        left, right = st.columns(2)
        patient_id = left.text_input("Patient ID")
        accession = right.text_input("Accession number")
        date_from = left.date_input("Study date from", value=None)
        date_to = right.date_input("Study date to", value=None)
        modality = left.text_input("Modality", value="US")
        searched = st.form_submit_button("Search")
    if searched:
        try:
            st.session_state["pacs_hits"] = search_studies(
                client,
                patient_id=patient_id,
                accession_number=accession,
                date_from=date_from,
                date_to=date_to,
                modality=modality.strip(),
            )
            st.session_state.pop("pacs_picks", None)
        except UserError as exc:
            st.error("The search failed.")
            st.text(str(exc))
    hits = st.session_state.get("pacs_hits")
    if hits is not None:
        if not hits:
            st.info("No study matches.")
        elif len(hits) >= SEARCH_LIMIT:
            st.warning(f"Only the first {SEARCH_LIMIT} studies are shown: narrow the search.")
        known = link.pseudonyms()
        table = pd.DataFrame(
            [
                {
                    "patient ID": h.patient_id,
                    "pseudonym": known.get(h.patient_id, ""),
                    "date": h.study_date,
                    "accession": h.accession_number,
                    "description": h.description,
                    "modalities": h.modalities,
                    "images": h.instances,
                }
                for h in hits
            ]
        )
        show_table(table, hide_index=True)
        labels = {f"{h.patient_id} · {h.study_date} · {h.accession_number}": h for h in hits}
        chosen = st.multiselect("Studies to import", list(labels), key="pacs_chosen")
        if chosen and st.button("Propose GSU and SWE images"):
            picks: list[PatientPick] = []
            options: dict[str, list] = {}
            thumbnails: dict = {}
            bar = st.progress(0.0, text="Looking at the images")
            for index, label in enumerate(chosen):
                study = labels[label]
                try:
                    images = ultrasound_images(client, study)
                    picks.append(propose_pick(client, study.patient_id, images, thumbnails))
                    options[study.patient_id] = images
                except UserError as exc:
                    st.warning(f"{label}: nothing proposed.")
                    st.text(str(exc))
                bar.progress((index + 1) / len(chosen), text=f"Study {index + 1} of {len(chosen)}")
            st.session_state["pacs_picks"] = picks
            st.session_state["pacs_options"] = options
            st.session_state["pacs_thumbnails"] = thumbnails

    proposed = st.session_state.get("pacs_picks") or []
    options = st.session_state.get("pacs_options") or {}
    thumbnails = st.session_state.get("pacs_thumbnails") or {}
    picks = []
    if proposed:
        st.markdown("**Images per patient** (proposed: SWE = the image with a colour region)")
    for pick in proposed:
        images = [None, *options.get(pick.patient_id, [])]

        def name(image) -> str:
            if image is None:
                return "none"
            return f"{image.series_description or 'series'} · …{image.sop_uid[-12:]}"

        left, right = st.columns(2)
        gsu = left.selectbox(
            f"{pick.patient_id}: GSU", images, index=images.index(pick.gsu), format_func=name
        )
        swe = right.selectbox(
            f"{pick.patient_id}: SWE", images, index=images.index(pick.swe), format_func=name
        )
        for column, image in ((left, gsu), (right, swe)):
            if image is not None and image.sop_uid in thumbnails:
                column.image(thumbnails[image.sop_uid], width=200)
        if pick.note:
            st.caption(f"{pick.patient_id}: {pick.note}")
        picks.append(PatientPick(pick.patient_id, gsu, swe, pick.note))
    if picks:
        clinical = st.file_uploader(
            "Clinical CSV (patient_id or accession_number, sex, age, height_cm, weight_kg, "
            "us_date, ct_date, l3_sma_cm2, exclusion_reason)",
            type=["csv"],
        )
        if st.button(f"Import {len(picks)} patient(s)", disabled=clinical is None):
            bar = st.progress(0.0, text="Retrieving")
            try:
                report = import_picks(
                    client,
                    db,
                    store,
                    picks,
                    clinical.getvalue().decode("utf-8-sig"),
                    link=link,
                    actor_name=admin.username,
                    progress=lambda done, total, text: bar.progress(done / total, text=text),
                )
            except (UserError, UnicodeDecodeError) as exc:
                st.error("Nothing was imported.")
                st.text(str(exc))
            else:
                st.text(report.summary())
                if report.stopped:
                    st.warning("The import stopped early; run it again to resume.")
                    st.text(report.stopped)
                show_table(
                    pd.DataFrame(
                        [
                            {
                                "patient ID": r.patient_id,
                                "pseudonym": r.pseudonym or "",
                                "result": r.status,
                                "problems": " ".join(r.problems),
                            }
                            for r in report.results
                        ]
                    ),
                    hide_index=True,
                )

with tab_write:
    pseudonyms = sorted(link.pseudonyms().values())
    if not pseudonyms:
        st.info("No patient was imported from a PACS yet.")
    else:
        code = st.selectbox("Patient (pseudonym)", pseudonyms, key="pacs_write_code")
        runs = {f"Run {r.id} · {task_title(r.task)} · {r.arch}": r.id for r in finished_runs(db)}
        run_labels = st.multiselect("Model results to include", list(runs))
        sent = link.sent_reports(code)
        if sent:
            st.text(f"Already sent: {len(sent)} report(s), last on {sent[-1].sent_at}.")
        again = st.checkbox("Send again (a new version)", value=False, disabled=not sent)
        with_gradcam = st.checkbox("Also send each model's Grad-CAM image", value=False)
        if st.button("Send report to the PACS"):
            try:
                result = send_report(
                    client,
                    db,
                    store,
                    code,
                    run_ids=[runs[label] for label in run_labels],
                    link=link,
                    actor_name=admin.username,
                    again=again,
                    gradcam_images=with_gradcam,
                )
            except UserError as exc:
                st.error("No report was sent.")
                st.text(str(exc))
            else:
                st.success(
                    f"Report sent on {dt.date.today().isoformat()} (SR {result.sop_instance_uid})."
                )
