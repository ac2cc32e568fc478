"""A real browser: a reader cannot open the admin page, not from the menu and not by URL.

``app.py`` registers the admin page (``pages/admin.py``, URL ``/admin``) only for admins,
and the page checks the role itself as well. Three ways in are tried:

- the menu: a reader has no admin entry;
- the URL within a signed-in session (what the browser's history does): the admin, as the
  control, gets the page there, which proves the URL and the markers right; the reader
  stays on the Cases page;
- the URL typed into the address bar: a new session, so the reader signs in there and
  still never sees the admin page.

And the first visitors after a restart, who type a page's URL before anyone opened the
app's root. Streamlit then runs ``pages/<name>.py`` itself, bypassing ``app.py`` and its
sign-in (its old ``pages/`` folder mode, left on until a script calls ``st.navigation``), so
every page must refuse a visitor who is not signed in on its own.
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
PAGES = Path(__file__).resolve().parents[1] / "pages"
ADMIN_TITLE = "Readers"
ADMIN_BUTTON = "Create reader"
SIGNED_OUT_TITLES = {"Sign in", "Create the first administrator"}
DATA_MARKERS = ("patient(s) match", "DEMO-0")
"""Text that only a page showing patient data contains."""


def _new_page(browser, url: str):
    """A page in a fresh browser context (nothing shared with other pages) at ``url``."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url, wait_until="networkidle")
    _wait_idle(page)  # the first script run finished, not only started
    return page


def _signed_in(browser, url: str, username: str):
    page = _new_page(browser, url)
    not_found = page.get_by_role("dialog").filter(has_text="Page not found")
    if not_found.count():
        page.keyboard.press("Escape")
        not_found.wait_for(state="hidden")
    sign_in(page, username, DEMO_PASSWORD)
    _wait_idle(page)
    return page


def _go_within_session(page, path: str) -> None:
    """Change the URL the way the browser's back and forward buttons do: no reload."""
    page.evaluate(
        "path => { history.pushState({}, '', path);"
        " dispatchEvent(new PopStateEvent('popstate', {state: {}})); }",
        path,
    )
    page.wait_for_timeout(500)
    _wait_idle(page)


def _admin_content(page) -> int:
    heading = page.get_by_role("heading", name=ADMIN_TITLE, exact=True)
    return heading.count() + page.get_by_role("button", name=ADMIN_BUTTON).count()


def _menu(page) -> list[str]:
    """The page titles in the sidebar menu (each link's text ends with its title)."""
    links = page.get_by_test_id("stSidebarNav").get_by_role("link").all_inner_texts()
    return [text.split("\n")[-1].strip() for text in links]


def test_reader_cannot_reach_the_admin_page_by_menu_or_url(demo_env, browser):
    with streamlit_server(demo_env) as (base, _):
        admin = _signed_in(browser, base, "admin")
        assert ADMIN_TITLE in _menu(admin)
        _go_within_session(admin, "/admin")
        admin.get_by_role("button", name=ADMIN_BUTTON).wait_for(timeout=60_000)
        assert admin.url.rstrip("/").endswith("/admin")

        reader = _signed_in(browser, base, "radiologist1")
        menu = _menu(reader)
        assert "Cases" in menu and ADMIN_TITLE not in menu
        _go_within_session(reader, "/admin")
        reader.get_by_role("heading", name="Cases", exact=True).wait_for(timeout=60_000)
        assert _admin_content(reader) == 0

        typed = _signed_in(browser, f"{base}/admin", "radiologist1")
        typed.get_by_role("heading", name="Cases", exact=True).wait_for(timeout=60_000)
        assert _admin_content(typed) == 0
        assert ADMIN_TITLE not in _menu(typed)


def test_first_visitors_after_a_restart_get_no_page_by_url(demo_env, browser):
    names = sorted(p.stem for p in PAGES.glob("*.py") if p.stem != "__init__")
    assert {"admin", "cases", "grading"} <= set(names)
    with streamlit_server(demo_env) as (base, _):
        shown = {}
        for name in names:
            page = _new_page(browser, f"{base}/{name}")
            titles = set(page.locator("h1").all_inner_texts())
            text = page.get_by_test_id("stMain").inner_text()
            leaked = [marker for marker in DATA_MARKERS if marker in text]
            shown[name] = (titles - SIGNED_OUT_TITLES, leaked, _admin_content(page))
            page.context.close()
    assert shown == {name: (set(), [], 0) for name in names}
