"""A real browser: a sign-in survives F5, a page URL opened signed out lands on that page
after sign-in, sign-out ends it for good, and a reader is never offered the demo.

The first visitor of a freshly started server opens a page URL: Streamlit would run the
page file by itself and list the raw ``pages/`` files; the app must show its sign-in form
instead (``pages.components._enter_through_app`` and ``.streamlit/config.toml``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.services.demo import DEMO_PASSWORD
from tests.serve import CHROMIUM, streamlit_server
from tests.test_browser_grading import _wait_idle, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"
    ),
]
REAL_PASSWORD = "a real long password"


def _sidebar_button(page, name: str):
    return page.get_by_test_id("stSidebar").get_by_role("button", name=name)


def _menu(page) -> list[str]:
    links = page.get_by_test_id("stSidebarNav").get_by_role("link").all_inner_texts()
    return [text.split("\n")[-1].strip() for text in links]


def test_f5_keeps_the_session_and_a_page_url_opens_after_sign_in(demo_env, browser):
    with streamlit_server(demo_env) as (base, _):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(f"{base}/grading", wait_until="networkidle")
        page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
        assert page.get_by_role("dialog").filter(has_text="Page not found").count() == 0
        assert not {"components", "app", "admin"} & set(_menu(page))

        sign_in(page, "radiologist1", DEMO_PASSWORD)
        page.get_by_role("heading", name="Grading", exact=True).wait_for(timeout=60_000)
        assert page.url.rstrip("/").endswith("/grading")
        session = [c for c in context.cookies() if c["name"] == "sarcopenia_session"]
        assert len(session) == 1 and session[0]["sameSite"] == "Strict"

        page.reload(wait_until="networkidle")
        _sidebar_button(page, "Sign out").wait_for(timeout=60_000)
        page.get_by_role("heading", name="Grading", exact=True).wait_for(timeout=60_000)
        assert page.url.rstrip("/").endswith("/grading")
        assert "Grading" in _menu(page) and "Readers" not in _menu(page)

        other_tab = context.new_page()
        other_tab.goto(f"{base}/consensus", wait_until="networkidle")
        other_tab.get_by_role("heading", name="Consensus", exact=True).wait_for(timeout=60_000)

        _sidebar_button(page, "Sign out").click()
        page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
        page.reload(wait_until="networkidle")
        page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
        other_tab.reload(wait_until="networkidle")
        other_tab.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
        assert _sidebar_button(other_tab, "Sign out").count() == 0


def test_a_reader_deep_linking_an_admin_page_is_told_and_lands_on_cases(demo_env, browser):
    with streamlit_server(demo_env) as (base, _):
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(f"{base}/admin", wait_until="networkidle")
        page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
        sign_in(page, "radiologist1", DEMO_PASSWORD)
        page.get_by_text("The page you opened (/admin) is for administrators.").wait_for()
        page.get_by_role("heading", name="Cases", exact=True).wait_for(timeout=60_000)
        assert page.get_by_role("button", name="Create reader").count() == 0


def test_a_reader_on_an_empty_database_is_never_offered_the_demo(db, data_dir, browser):
    from core.services.auth import create_first_admin, create_reader

    create_first_admin(db, "chief", "Dr Chief", REAL_PASSWORD)
    create_reader(db, "reader1", "Dr Reader", "reader", REAL_PASSWORD)
    with streamlit_server(Path(data_dir)) as (base, _):
        for username, expected in (
            ("reader1", "an administrator imports them"),
            ("chief", "real accounts"),
        ):
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(base, wait_until="networkidle")
            page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
            sign_in(page, username, REAL_PASSWORD)
            page.get_by_text(expected).first.wait_for(timeout=60_000)
            _wait_idle(page)
            assert page.get_by_role("button", name="Load the synthetic demo cohort").count() == 0
            assert page.get_by_text(DEMO_PASSWORD).count() == 0
            page.context.close()
