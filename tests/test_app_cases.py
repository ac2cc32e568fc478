"""AppTest of the app shell and the Cases page."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.services import demo
from db.engine import Database
from db.models import AuditEvent, Patient
from pages.components import plain

TIMEOUT = 60
APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _app(reader: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if reader:
        at.session_state["reader_username"] = reader
    return at


def test_empty_database_offers_the_synthetic_demo(data_dir, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_PATIENTS", 6)
    at = _app().run()
    assert not at.exception
    assert any("synthetic demo cohort" in m.value for m in at.markdown)
    next(b for b in at.button if b.label == "Load the synthetic demo cohort").click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in"]
    with Database().read() as s:
        assert s.query(Patient).count() == 6


def test_case_list_shows_status_and_filters(demo_env):
    at = _app("radiologist1").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 24
    assert {"code", "images", "ct", "smi", "sarcopenia", "grades_done"} <= set(table.columns)
    sarcopenia = next(s for s in at.selectbox if s.label == "Sarcopenia (CT)")
    sarcopenia.set_value("sarcopenic").run()
    assert set(at.dataframe[0].value["sarcopenia"]) == {"yes"}


def test_admin_edits_metadata_and_derived_fields_update(demo_env):
    at = _app("admin").run()
    assert not at.exception
    code = at.dataframe[0].value["code"].iloc[0]
    at.session_state["case_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert not at.exception
    assert any(f"Patient {plain(code)}" in h.value for h in at.subheader)  # Markdown-escaped
    height = next(n for n in at.number_input if n.label == "Height (cm)")
    height.set_value(120.0)
    at.button(key="FormSubmitter:edit-" + code + "-Save").click().run()
    assert not at.exception
    with Database().read() as s:
        patient = s.query(Patient).filter_by(code=code).one()
        assert patient.height_cm == 120.0
        assert s.query(AuditEvent).filter_by(action="patient.update").count() == 1


def test_bad_metadata_is_refused_with_a_message(demo_env):
    at = _app("admin").run()
    at.session_state["case_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    code = at.dataframe[0].value["code"].iloc[0]
    ct_date = next(t for t in at.text_input if t.label == "CT date")
    ct_date.set_value("31/02/2020")
    at.button(key="FormSubmitter:edit-" + code + "-Save").click().run()
    assert not at.exception
    assert any(plain("YYYY-MM-DD") in e.value for e in at.error)  # Markdown-escaped


def test_history_shows_a_reader_only_their_own_changes(demo_env):
    at = _app("radiologist1").run()
    at.session_state["case_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert not at.exception
    history = next(e for e in at.expander if e.label.startswith("History"))
    assert history.label == "History (0 changes)"
    admin = _app("admin").run()
    admin.session_state["case_table"] = {"selection": {"rows": [0], "columns": []}}
    admin.run()
    full = next(e for e in admin.expander if e.label.startswith("History"))
    assert full.label.startswith("History (") and full.label != "History (0 changes)"
    who = " ".join(full.dataframe[0].value["who"])
    assert "Simulated reader A" in who and "Simulated reader B" in who
    assert "sim_reader" not in who
