"""AppTest of the app shell's sign-in: sessions, idle sign-out and the reload-proof limit."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from streamlit.testing.v1 import AppTest

from core.services import sign_in
from core.services.demo import DEMO_PASSWORD
from db.engine import Database
from db.models import UserSession
from tests.apptest_helpers import APP, TIMEOUT

SUBMIT = "FormSubmitter:sign_in-Sign in"


def _sign_in(username: str, password: str) -> AppTest:
    """A fresh browser session (what a reload gives) submitting the sign-in form."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    next(t for t in at.text_input if t.label == "Username").set_value(username)
    next(t for t in at.text_input if t.label == "Password").set_value(password)
    return at.button(key=SUBMIT).click().run()


def _sessions() -> list[UserSession]:
    with Database().read() as s:
        return list(s.scalars(select(UserSession)))


def test_sign_in_starts_a_session_that_sign_out_revokes(demo_env):
    at = _sign_in("radiologist1", DEMO_PASSWORD)
    assert not at.exception
    assert [t.value for t in at.title] == ["Cases"]
    token = at.session_state["session_token"]
    [row] = _sessions()
    assert row.revoked_at is None and row.token_hash != token
    at.sidebar.button(key="sign_out").click().run()
    assert [t.value for t in at.title] == ["Sign in"]
    assert _sessions()[0].revoked_at is not None


def test_an_idle_session_is_signed_out_with_a_notice(demo_env):
    at = _sign_in("radiologist1", DEMO_PASSWORD)
    assert [t.value for t in at.title] == ["Cases"]
    long_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=31)
    with Database().transaction() as s:
        s.execute(update(UserSession).values(last_seen_at=long_ago))
    at.run()
    assert [t.value for t in at.title] == ["Sign in"]
    assert any("30 minutes without activity" in i.value for i in at.info)
    assert "reader_username" not in at.session_state


def test_a_new_browser_session_does_not_reset_the_client_limit(demo_env, monkeypatch):
    monkeypatch.setattr(sign_in, "CLIENT_FREE_FAILURES", 2)
    monkeypatch.setattr(sign_in, "FIRST_DELAY", dt.timedelta(minutes=10))
    for username in ("nobody1", "nobody2"):
        assert _sign_in(username, "wrong password!").error
    refused = _sign_in("radiologist1", DEMO_PASSWORD)
    assert [t.value for t in refused.title] == ["Sign in"]
    assert any("Too many failed sign-ins" in e.value for e in refused.error)
