"""A real browser: an admin enters the SWE bar range of a scanner whose labels OCR refused.

One demo patient's SWE screen comes from "ACME Sono 9" with an unlabelled bar. The admin
finds it under *SWE scale ranges per scanner* on Cases (opened by itself), types the range,
and the Review page then shows that patient's stiffness in kPa from the scanner preset.
``SHOTS`` (a folder) keeps a screenshot of each step.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.common import config
from core.common.store import ImageStore
from db.consensus import auto_agree
from db.engine import Database
from pages.swe_scale_form import SOURCE_TEXT
from tests.serve import CHROMIUM, streamlit_server
from tests.test_browser_grading import _wait_idle, sign_in
from tests.test_swe_presets import swap_in_unlabelled_swe
from tests.tiny_runs import add_tiny_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"
    ),
]
CODE = "DEMO-001"


@pytest.fixture
def acme_demo(demo_env: Path, tiny_models) -> Path:
    db = Database(config.database_url())
    store = ImageStore(config.images_dir())
    db.write(auto_agree)
    add_tiny_run(db, store, tiny_models["swe"])
    swap_in_unlabelled_swe(db, store, CODE)
    db.dispose()
    return demo_env


def _shot(page, name: str) -> None:
    shots = os.environ.get("SHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)


def test_admin_enters_a_scanner_range_and_review_shows_kpa(acme_demo, browser):
    with streamlit_server(acme_demo) as (base, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base, wait_until="networkidle")
        sign_in(page, "admin")
        _wait_idle(page)
        page.get_by_text("1 scanner preset(s) decode stiffness in relative units").wait_for(
            timeout=120_000
        )
        page.get_by_text("Scanner preset: ACME Sono 9, 640×480").scroll_into_view_if_needed()
        _shot(page, "1-cases-scale-ranges")
        page.get_by_label("Top of the bar").fill("150")
        page.get_by_role("button", name="Save the range for this scanner preset").click()
        page.get_by_text("Saved 0–150 kPa for ACME Sono 9, 640×480").wait_for(timeout=60_000)
        _wait_idle(page)
        _shot(page, "2-cases-saved")

        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Review").click()
        page.get_by_text("US–CT days").first.wait_for(timeout=120_000)
        _wait_idle(page)
        page.get_by_text(SOURCE_TEXT["scanner preset"]).wait_for(timeout=120_000)
        page.get_by_text(SOURCE_TEXT["scanner preset"]).scroll_into_view_if_needed()
        page.wait_for_timeout(3000)
        _shot(page, "3-review-kpa")
        assert page.get_by_text(SOURCE_TEXT["none"]).count() == 0
        page.close()
