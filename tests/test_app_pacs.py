"""The PACS page against a real Orthanc: search, propose and import one study in a real
browser; admins only; the Review page shows what the PACS holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from core.common import config
from core.common.store import ImageStore
from core.services.pacs.client import PacsClient
from core.services.pacs.link import PseudonymLink
from core.services.pacs.writeback import send_report
from db.engine import Database
from db.models import Image, Patient
from tests.apptest_helpers import open_page
from tests.pacs_helpers import clinical_csv, hospital_study
from tests.serve import streamlit_server
from tests.test_browser_grading import _wait_idle, sign_in
from tests.test_pacs_roundtrip import _dciodvfy_errors, _grade, _import_patient
from tests.tiny_runs import add_tiny_run

PATIENT = "PAGE-0001"


@pytest.fixture
def pacs_env(orthanc, demo_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SARCOPENIA_PACS_URL", orthanc.url)
    monkeypatch.setenv("SARCOPENIA_PACS_USER", orthanc.username)
    monkeypatch.setenv("SARCOPENIA_PACS_PASSWORD", orthanc.secret)
    monkeypatch.setenv("SARCOPENIA_SECRETS_FILE", str(demo_env / "no-secrets.toml"))
    return orthanc


def test_admin_searches_and_gets_a_proposal(pacs_env, corpus) -> None:
    PacsClient(pacs_env).store(hospital_study(corpus, "APPTEST-1"))
    at = open_page("pages/pacs.py", "admin")
    assert not at.exception and [t.value for t in at.title] == ["PACS"]
    assert pacs_env.secret not in str(at.selectbox[0].options)
    next(b for b in at.button if b.label == "Check the connection").click().run()
    assert [s.value for s in at.success] == ["Connected."]
    at.text_input[0].input("APPTEST-1")
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception and [e.value for e in at.error] == []
    assert list(at.dataframe[0].value["patient ID"]) == ["APPTEST-1"]
    at.multiselect(key="pacs_chosen").select(at.multiselect(key="pacs_chosen").options[0]).run()
    next(b for b in at.button if b.label == "Propose GSU and SWE images").click().run()
    assert not at.exception
    (pick,) = at.session_state["pacs_picks"]
    assert pick.gsu is not None and pick.swe is not None and pick.note == ""
    thumbnails = at.session_state["pacs_thumbnails"]
    assert len(thumbnails) == 2 and all(max(t.shape[:2]) <= 240 for t in thumbnails.values())
    assert _types(at.main).count("image") == 2


def test_review_shows_what_the_pacs_holds(
    pacs_env, corpus, demo_env, tiny_models, tmp_path
) -> None:
    db, store = Database(config.database_url()), ImageStore(config.images_dir())
    run_id = add_tiny_run(db, store, tiny_models["gsu"])
    link = PseudonymLink()
    client = PacsClient(pacs_env)
    _, _, report = _import_patient(client, db, store, corpus, "REVIEW-1", link)
    code = report.results[0].pseudonym
    _grade(db, code)
    # A patient fresh from the PACS has no stored prediction: the model predicts it now.
    sent = send_report(client, db, store, code, run_ids=[run_id], link=link, gradcam_images=True)
    (model,) = sent.content.models
    assert model.run_id == run_id and 0 <= model.probability <= 1
    (capture,) = [
        ds
        for ds in client.instances(sent.study_instance_uid)
        if str(ds.get("SeriesDescription", "")).startswith(f"Grad-CAM, run {run_id}")
    ]
    image = client.retrieve_dataset(
        sent.study_instance_uid, str(capture.SeriesInstanceUID), str(capture.SOPInstanceUID)
    )
    assert image.PatientID == "REVIEW-1" and image.pixel_array.shape[2] == 3
    assert _dciodvfy_errors(image, tmp_path) == []
    db.dispose()
    at = open_page("pages/review.py", "admin")
    at.selectbox(key="review_patient").select(code).run()
    assert not at.exception
    lines = [t.value for t in at.text if t.value.startswith("In PACS")]
    assert len(lines) == 1 and lines[0].startswith("In PACS: 1 report(s), latest ")
    assert "consensus grade 2, 2 reader grade(s)" in lines[0] and "1 model result(s)" in lines[0]


def test_admin_writes_back_once_then_is_stopped(pacs_env, corpus, demo_env) -> None:
    db, store = Database(config.database_url()), ImageStore(config.images_dir())
    _, _, report = _import_patient(
        PacsClient(pacs_env), db, store, corpus, "WRITE-1", PseudonymLink()
    )
    _grade(db, report.results[0].pseudonym)
    db.dispose()
    at = open_page("pages/pacs.py", "admin")
    send = next(b for b in at.button if b.label == "Send report to the PACS")
    send.click().run()
    assert not at.exception and [e.value for e in at.error] == []
    assert at.success[0].value.startswith("Report sent on ")
    next(b for b in at.button if b.label == "Send report to the PACS").click().run()
    assert [e.value for e in at.error] == ["No report was sent."]
    assert any("was already sent" in t.value for t in at.text)


def test_a_reader_cannot_open_the_pacs_page(pacs_env) -> None:
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        open_page("pages/pacs.py", "radiologist1")


@pytest.mark.browser
def test_browser_searches_and_imports_one_study(pacs_env, corpus, demo_env, browser, tmp_path):
    PacsClient(pacs_env).store(hospital_study(corpus, PATIENT))
    csv = tmp_path / "clinical.csv"
    csv.write_text(clinical_csv(PATIENT))
    with streamlit_server(demo_env) as (base, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base, wait_until="networkidle")
        sign_in(page, "admin")
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="PACS").click()
        page.get_by_role("heading", name="PACS").wait_for(timeout=60_000)
        page.get_by_role("textbox", name="Patient ID").fill(PATIENT)
        page.get_by_role("button", name="Search").click()
        _wait_idle(page)
        page.get_by_text("Studies to import").wait_for(timeout=60_000)
        page.get_by_test_id("stMultiSelect").click()
        page.get_by_role("option").first.click()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Propose GSU and SWE images").click()
        page.get_by_text("Images per patient").wait_for(timeout=120_000)
        _wait_idle(page)
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(csv))
        _wait_idle(page)
        page.get_by_role("button", name="Import 1 patient(s)").click()
        page.get_by_text("1 imported, 0 already present, 0 refused").wait_for(timeout=180_000)
        _wait_idle(page)
        page.screenshot(path=str(tmp_path / "pacs-page.png"), full_page=True)
    pseudonym = PseudonymLink().pseudonyms()[PATIENT]
    db = Database(config.database_url())
    with db.read() as session:
        images = session.scalars(
            select(Image.modality).join(Patient).where(Patient.code == pseudonym)
        ).all()
    db.dispose()
    assert sorted(images) == ["GSU", "SWE"]


def _types(node) -> list[str]:
    """Element types of a page, depth first (AppTest has no accessor for images)."""
    found = [getattr(node, "type", "?")]
    for child in getattr(node, "children", {}).values():
        found += _types(child)
    return found
