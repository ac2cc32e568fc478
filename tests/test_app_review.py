"""AppTest of the Comparison and Review pages on a database holding two tiny trained runs.

The pages run directly (``AppTest.from_file`` on the page script), signed in through the
session state, so they are tested whatever ``app.py`` registers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from core.common import config
from core.common.store import ImageStore
from db.consensus import auto_agree
from db.engine import Database
from db.models import Patient
from pages.swe_scale_form import SOURCE_TEXT
from tests.test_swe_presets import swap_in_unlabelled_swe
from tests.tiny_runs import add_tiny_run

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


def _page(name: str, reader: str | None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    if reader:
        at.session_state["reader_username"] = reader
    return at.run()


@pytest.fixture
def two_runs(demo_env: Path, tiny_models) -> tuple[int, int]:
    db = Database(config.database_url())
    store = ImageStore(config.images_dir())
    db.write(auto_agree)
    runs = (
        add_tiny_run(db, store, tiny_models["gsu"]),
        add_tiny_run(db, store, tiny_models["swe"]),
    )
    db.dispose()
    return runs


def test_pages_ask_to_sign_in(demo_env):
    for name in ("comparison", "review"):
        at = _page(name, None)
        assert not at.exception
        assert any("Sign in" in i.value for i in at.info)


def test_pages_explain_when_there_is_no_run(demo_env):
    at = _page("comparison", "admin")
    assert not at.exception
    assert any("No finished training run" in i.value for i in at.info)
    at = _page("review", "admin")
    assert not at.exception
    assert any("No finished training run" in i.value for i in at.info)


def test_comparison_shows_table_1_beside_the_paper(two_runs):
    gsu, swe = two_runs
    at = _page("comparison", "admin")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table.index) == ["AUC", "Sensitivity", "Specificity", "PPV", "NPV", "Accuracy"]
    assert list(table.columns) == [f"SWE VGG19 (run {swe})", f"GSU VGG19 (run {gsu})"]
    assert all("(" in cell or cell == "n/a" for cell in table.stack())
    assert "(" in table.iloc[0, 0]
    paper = at.dataframe[1].value
    assert paper.loc["AUC", "SWE VGG19 (paper)"] == "0.84"
    assert len(at.get("plotly_chart")) == 2
    labels = {b.label for b in at.get("download_button")}
    assert {"Table 1 (CSV)", "Paper's Table 1 (CSV)"} <= labels
    prepare = {b.label for b in at.button}
    assert {"Prepare PNG", "Prepare HTML", "Prepare export (zip)"} <= prepare
    assert any("Paired DeLong" in h.value for h in at.subheader)

    at.toggle(key="cmp_details").set_value(True).run()
    assert not at.exception
    assert "TP / FP / TN / FN" in at.dataframe[0].value.index
    at.toggle(key="cmp_baseline").set_value(True).run()
    assert not at.exception
    assert any(c.startswith("Radiomics baseline") for c in at.dataframe[0].value.columns)


def test_a_reader_sees_no_export(two_runs):
    at = _page("comparison", "radiologist1")
    assert not at.exception
    labels = {b.label for b in at.get("download_button")}
    assert "Table 1 (CSV)" in labels
    assert not any("export" in b.label.lower() for b in at.button)


def test_review_shows_a_test_patient_with_every_model(two_runs):
    gsu, swe = two_runs
    at = _page("review", "admin")
    assert not at.exception
    assert len(at.dataframe[0].value) == 24
    at.selectbox(key="f_subset").set_value("test").run()
    test_codes = list(at.dataframe[0].value["code"])
    assert len(test_codes) == 6
    at.selectbox(key="review_patient").set_value(test_codes[0]).run()
    assert not at.exception
    assert any(test_codes[0] in h.value.replace("\\", "") for h in at.subheader)
    texts = [t.value for t in at.text]
    assert f"GSU VGG19 (run {gsu})" in texts and f"SWE VGG19 (run {swe})" in texts
    assert texts.count("Subset: test") == 2
    assert sum("test-set patient" in m.value for m in at.markdown) == 2
    assert sum(m.label == "Probability" for m in at.metric) == 2
    assert any(t.startswith("Truth: ") for t in texts)
    readers = at.dataframe[1].value
    assert {"Simulated reader A", "consensus (agreement)"} <= set(readers["reader"])

    at.toggle(key="f_wrong").set_value(True).run()
    assert not at.exception


def test_review_blinds_a_reader_who_has_not_graded(two_runs):
    at = _page("review", "radiologist1")
    assert not at.exception
    assert any("other grades stay hidden" in i.value for i in at.info)
    assert at.dataframe[0].value["echogenicity_high"].isna().all()


def test_cohort_jobs_start_from_the_page_and_show_progress(two_runs, monkeypatch):
    import json
    import os

    import core.services.review
    from core.learning.train import process_tag

    gsu, swe = two_runs
    started = []
    monkeypatch.setattr(
        core.services.review, "start_predict_job", lambda run_id: started.append(run_id)
    )
    at = _page("review", "admin")
    assert not at.exception
    at.button(key=f"cohort_{gsu}").click().run()
    assert not at.exception
    assert started == [gsu]

    tag = process_tag()
    status = {"state": "running", "done": 5, "total": 24, **tag}
    path = core.services.review.prediction_root() / f"run-{swe}" / "job.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(status))
    at = _page("review", "admin")
    assert not at.exception
    bars = at.get("progress")
    assert len(bars) == 1 and bars[0].value == int(100 * 5 / 24)
    assert "predicting the cohort, 5 of 24 patients" in bars[0].proto.text
    assert not any(b.key == f"cohort_{swe}" for b in at.button)
    assert tag["pid"] == os.getpid()


def test_downloads_are_never_deferred_and_a_failure_is_shown(two_runs, monkeypatch):
    """Deferred (callable) downloads expire on every rerun and fail without a word
    (``MediaFileStorageError: Deferred file … not found``); every download here is bytes
    with an address that survives reruns, and a file that cannot be built says so."""
    import core.services.export
    from core.services.export import FigureExportError

    at = _page("comparison", "admin")
    at.button(key="prepare_html_roc").click().run()
    buttons = at.get("download_button")
    assert {b.label for b in buttons} >= {"Table 1 (CSV)", "Download HTML"}
    for button in buttons:
        assert button.proto.url.startswith("/mock/media/"), button.label
        assert not button.proto.deferred_file_id and button.proto.ignore_rerun
    before = button.proto.url
    at.toggle(key="cmp_details").set_value(True).run()
    assert at.get("download_button")[-1].proto.url == before  # same file after a rerun

    def no_chromium(fig, **_):
        raise FigureExportError("PNG export failed: no Chromium on this machine.")

    monkeypatch.setattr(core.services.export, "figure_png", no_chromium)
    at.button(key="prepare_png_roc").click().run()
    assert not at.exception
    assert "PNG could not be prepared." in [e.value for e in at.error]
    assert any("no Chromium" in t.value for t in at.text)


def test_review_asks_an_admin_for_the_scale_range_of_a_scanner_it_cannot_read(two_runs):
    db, store = Database(config.database_url()), ImageStore(config.images_dir())
    with db.read() as session:
        code = session.scalars(select(Patient.code).order_by(Patient.id)).first()
    swap_in_unlabelled_swe(db, store, code)
    at = _page("review", "admin")
    at.selectbox(key="review_patient").set_value(code).run()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert SOURCE_TEXT["none"] in texts and "Scanner preset: ACME Sono 9, 640×480" in texts
    at.number_input(key="review_swe_range-high").set_value(8.0)
    at.selectbox(key="review_swe_range-units").set_value("m/s")
    at.button(key="FormSubmitter:review_swe_range-Save the range for this scanner preset").click()
    at.run()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert SOURCE_TEXT["scanner preset"] in texts
    assert any(t.startswith("Range now: 0–8 m/s, set by admin") for t in texts)
    reader = _page("review", "radiologist1")
    reader.selectbox(key="review_patient").set_value(code).run()
    assert "Scanner preset: ACME Sono 9, 640×480" not in [t.value for t in reader.text]
    db.dispose()
