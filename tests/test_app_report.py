"""The Report page: admins build and download the bundle; readers never reach it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common import config
from core.common.store import ImageStore
from db.consensus import auto_agree
from db.engine import Database
from tests.apptest_helpers import open_page
from tests.serve import CHROMIUM, LAUNCH_ARGS, streamlit_server
from tests.test_browser_grading import _wait_idle, sign_in
from tests.tiny_runs import add_tiny_run

PAGE = Path(__file__).resolve().parents[1] / "pages" / "report.py"


@pytest.fixture
def report_demo(demo_env: Path, tiny_models) -> Path:
    db = Database(config.database_url())
    db.write(auto_agree)
    add_tiny_run(db, ImageStore(config.images_dir()), tiny_models["gsu"])
    db.dispose()
    return demo_env


def test_admin_builds_and_downloads_the_report(report_demo: Path) -> None:
    at = open_page("pages/report.py", "admin")
    assert not at.exception
    assert [t.value for t in at.title] == ["Study report"]
    at.button(key="report_build").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == []
    assert [s.value for s in at.success] == ["The report is ready."]
    bundle = zipfile.ZipFile(io.BytesIO(at.session_state["report_zip"]))
    assert "report.html" in bundle.namelist()


def test_a_reader_cannot_open_the_report(report_demo: Path) -> None:
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        open_page("pages/report.py", "radiologist1")  # not registered for readers
    direct = AppTest.from_file(str(PAGE), default_timeout=90)
    direct.session_state["reader_username"] = "radiologist1"
    direct.run()
    assert [e.value for e in direct.error] == ["This page is for administrators."]
    assert not direct.button


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed")
def test_browser_downloads_the_report_bundle(report_demo: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with streamlit_server(report_demo) as (base, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(base, wait_until="networkidle")
        sign_in(page, "admin")
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Report").click()
        page.get_by_role("heading", name="Study report").wait_for(timeout=60_000)
        page.get_by_role("button", name="Build the report").click()
        button = page.get_by_role("button", name="Download the report (zip)")
        button.wait_for(timeout=240_000)
        _wait_idle(page)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        with page.expect_download(timeout=60_000) as info:
            button.click()
        target = tmp_path / "bundle.zip"
        info.value.save_as(target)
        browser.close()
    names = zipfile.ZipFile(target).namelist()
    assert {"report.html", "report.pdf", "tables/checklists.csv"} <= set(names)
