"""A real browser: a reader with no grades sees no consensus anywhere.

The served demo holds the simulated readers' grades and boxes, the automatic consensus,
an adjudicated one and finished sarcopenia and echogenicity runs. radiologist1, who has
graded nothing, opens every page in their menu; no page may name another reader or show
a consensus in its text, table cells included (Streamlit's canvas grid keeps the cells
on screen in a hidden table for screen readers). ``SHOTS`` (a folder) keeps a screenshot
of each page.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from core.common import config
from core.common.store import ImageStore
from db.consensus import adjudicate, auto_agree, disagreements
from db.engine import Database
from db.models import Reader
from db.readers import get_reader
from tests.serve import CHROMIUM, streamlit_server
from tests.test_browser_grading import FINISHED, _wait_idle, sign_in
from tests.tiny_runs import add_tiny_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"
    ),
]
READER_MENU = {
    "Cases": "DEMO-001",
    "Grading": "Save and next",
    "Consensus": "Inter-reader agreement",
    "Comparison": "Paired DeLong tests",
    "Review": "US–CT days",
    "Models": "Model registry",
}
"""Each page of a reader's menu, and a text that is there once the page has rendered."""


@pytest.fixture
def served_demo(demo_env: Path, tiny_models) -> list[str]:
    """The demo with consensus of both kinds and three runs; returns the other readers' names."""
    db = Database(config.database_url())
    store = ImageStore(config.images_dir())
    db.write(auto_agree)
    add_tiny_run(db, store, tiny_models["gsu"])
    add_tiny_run(db, store, tiny_models["gsu"], task="echogenicity_gsu")
    with db.read() as s:
        first = disagreements(s)[0]
    db.write(lambda s: adjudicate(s, first.image_id, get_reader(s, "admin"), 1, None))
    with db.read() as s:
        names = [
            name
            for r in s.scalars(select(Reader).where(Reader.role == "reader"))
            if r.username != "radiologist1"
            for name in (r.username, r.display_name)
        ]
    db.dispose()
    return names


def test_a_reader_with_no_grades_sees_no_consensus_anywhere(served_demo, demo_env, browser):
    shots = os.environ.get("SHOTS")
    with streamlit_server(demo_env) as (base, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base, wait_until="networkidle")
        sign_in(page, "radiologist1")
        _wait_idle(page)
        seen = {}
        for title, ready in READER_MENU.items():
            page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
            page.get_by_text(ready).first.wait_for(state="attached", timeout=120_000)
            page.locator(FINISHED).wait_for(state="attached", timeout=120_000)
            _wait_idle(page)
            text = page.get_by_test_id("stMain").text_content()
            if title == "Cases":
                cases_text = text
            if shots:
                page.screenshot(path=f"{shots}/reader-{title.lower()}.png", full_page=True)
            seen[title] = (
                [name for name in served_demo if name in text],
                [w for w in ("agreement)", "adjudication)", "consensus (") if w in text],
            )
            assert page.get_by_test_id("stException").count() == 0, title
    assert seen == {title: ([], []) for title in READER_MENU}
    assert "DEMO-001" in cases_text  # the grid's cells were read, so a consensus would be


def test_a_download_right_after_another_arrives(served_demo, demo_env, browser):
    """Issue 12: Export failed silently ("Deferred file … not found") when clicked about
    1 s after another download on Comparison. Each download here must reach the browser."""
    with streamlit_server(demo_env) as (base, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(base, wait_until="networkidle")
        sign_in(page, "admin")
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Comparison").click()
        page.get_by_text("Paired DeLong tests").first.wait_for(timeout=120_000)
        _wait_idle(page)
        page.get_by_role("button", name="Prepare export (zip)").click()
        download_export = page.get_by_role("button", name="Download export (zip)")
        download_export.wait_for(timeout=120_000)
        _wait_idle(page)
        names = []
        for button in (
            page.get_by_role("button", name="Table 1 (CSV)", exact=True),
            download_export,
            page.get_by_role("button", name="Paper's Table 1 (CSV)", exact=True),
            download_export,
        ):
            with page.expect_download(timeout=30_000) as info:
                button.click()
            names.append(info.value.suggested_filename)
            assert info.value.failure() is None
        if os.environ.get("SHOTS"):
            page.screenshot(path=f"{os.environ['SHOTS']}/admin-comparison.png", full_page=True)
    assert names == ["table1.csv", "labeled_export.zip", "table1_paper.csv", "labeled_export.zip"]
