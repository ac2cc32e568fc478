"""AppTest helpers shared by the page tests."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 90


def open_page(page: str, reader: str | None) -> AppTest:
    """Run the app as ``reader`` and switch to ``page`` (e.g. "pages/grading.py")."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if reader:
        at.session_state["reader_username"] = reader
    at.run()
    return at.switch_page(page).run()
