"""AppTest of the admin page: create, reset, deactivate; and a reader is stopped at the door.

The page runs as its own script, so these tests hold whether or not ``app.py`` registers it:
they check the page's own server-side guard (``require_admin``), not the navigation. The
navigation is checked too: a reader's app has no admin page to switch to.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from core.services.auth import authenticate, verify_password
from core.services.sign_in import DEACTIVATED
from db.engine import Database
from db.models import AuditEvent, Reader
from tests.apptest_helpers import APP, TIMEOUT

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "admin.py")
NEW_PASSWORD = "a long enough passphrase"


def open_page(page: str, reader: str | None) -> AppTest:
    at = AppTest.from_file(page, default_timeout=TIMEOUT)
    if reader:
        at.session_state["reader_username"] = reader
    return at.run()


def _field(at, label: str):
    return next(t for t in at.text_input if t.label == label)


def _reader(username: str) -> Reader | None:
    with Database().read() as session:
        return session.scalar(select(Reader).where(Reader.username == username))


def _audit(action: str) -> list[tuple[str, int | None]]:
    with Database().read() as session:
        rows = session.execute(
            select(AuditEvent.actor, AuditEvent.entity_id).where(AuditEvent.action == action)
        )
        return [tuple(r) for r in rows]


def test_admin_sees_every_account_with_role_state_and_last_sign_in(demo_env):
    authenticate(Database(), "radiologist1", "synthetic-demo", client_key="test")
    at = open_page(PAGE, "admin")
    assert not at.exception
    assert [t.value for t in at.title] == ["Readers"]
    table = at.dataframe[0].value.set_index("username")
    assert {"admin", "radiologist1", "radiologist2"} <= set(table.index)
    assert list(table.columns) == [
        "name",
        "role",
        "active",
        "last sign-in (UTC)",
        "password set",
        "notes",
    ]
    assert table.loc["radiologist1", "notes"] == "demo account (public password)"
    assert table.loc["admin", "role"] == "admin" and table.loc["radiologist1", "role"] == "reader"
    assert table.loc["radiologist1", "last sign-in (UTC)"] != "never"
    assert table.loc["radiologist2", "last sign-in (UTC)"] == "never"
    assert not any("argon2" in str(v) for v in table.to_numpy().ravel())


def test_admin_creates_a_reader_who_can_then_sign_in(demo_env):
    at = open_page(PAGE, "admin")
    _field(at, "Username").set_value("newreader")
    _field(at, "Display name").set_value("Dr **New** <b>Reader</b>")
    _field(at, "Initial password (at least 10 characters)").set_value(NEW_PASSWORD)
    _field(at, "Repeat the password").set_value(NEW_PASSWORD)
    at.button(key="FormSubmitter:create_reader-Create reader").click().run()
    assert not at.exception and not at.error
    assert [s.value for s in at.success] == ["Created reader newreader."]
    assert "newreader" in set(at.dataframe[0].value["username"])
    created = _reader("newreader")
    assert created is not None and created.role == "reader" and created.active
    assert created.display_name == "Dr **New** <b>Reader</b>"
    assert verify_password(created.password_hash, NEW_PASSWORD)
    assert NEW_PASSWORD not in created.password_hash
    assert _audit("create_reader")[-1] == ("admin", created.id)
    assert authenticate(Database(), "newreader", NEW_PASSWORD, client_key="t").ok


def test_bad_new_accounts_are_refused_with_a_message(demo_env):
    demo_accounts = _audit("create_reader")
    at = open_page(PAGE, "admin")
    for username, password, again, phrase in (
        ("shorty", "short", "short", "at least 10 characters"),
        ("mismatch", NEW_PASSWORD, NEW_PASSWORD + "x", "differ"),
        ("radiologist1", NEW_PASSWORD, NEW_PASSWORD, "already taken"),
        ("Bad Name!", NEW_PASSWORD, NEW_PASSWORD, "not allowed"),
    ):
        _field(at, "Username").set_value(username)
        _field(at, "Display name").set_value("Someone")
        _field(at, "Initial password (at least 10 characters)").set_value(password)
        _field(at, "Repeat the password").set_value(again)
        at.button(key="FormSubmitter:create_reader-Create reader").click().run()
        assert not at.exception
        assert any(phrase in e.value for e in at.error), (username, [e.value for e in at.error])
    assert _reader("shorty") is None and _reader("mismatch") is None
    assert _audit("create_reader") == demo_accounts


def test_admin_deactivates_and_reactivates_a_reader(demo_env):
    at = open_page(PAGE, "admin")
    at.selectbox(key="admin_toggle_user").set_value("radiologist2").run()
    at.button(key="admin_toggle").click().run()
    assert not at.exception
    assert [s.value for s in at.success] == [
        "radiologist2 is deactivated: they can no longer sign in."
    ]
    assert _reader("radiologist2").active is False
    refused = authenticate(Database(), "radiologist2", "synthetic-demo", client_key="t")
    assert not refused.ok and refused.message == DEACTIVATED
    table = at.dataframe[0].value.set_index("username")
    assert not table.loc["radiologist2", "active"]
    assert at.button(key="admin_toggle").label == "Activate"
    at.button(key="admin_toggle").click().run()
    assert _reader("radiologist2").active is True
    assert [a for a, _ in _audit("deactivate_reader")] == ["admin"]
    assert [a for a, _ in _audit("activate_reader")] == ["admin"]


def test_admin_cannot_deactivate_themself(demo_env):
    at = open_page(PAGE, "admin")
    at.selectbox(key="admin_toggle_user").set_value("admin").run()
    assert not [b for b in at.button if b.key == "admin_toggle"]
    assert any("your own account" in c.value for c in at.caption)


def test_admin_resets_a_password(demo_env):
    at = open_page(PAGE, "admin")
    next(
        s for s in at.selectbox if s.label == "Account" and s.key != "admin_toggle_user"
    ).set_value("radiologist1")
    _field(at, "New password (at least 10 characters)").set_value(NEW_PASSWORD)
    _field(at, "Repeat the new password").set_value(NEW_PASSWORD)
    at.button(key="FormSubmitter:reset_password-Reset password").click().run()
    assert not at.exception and not at.error
    assert [s.value for s in at.success] == [
        "Password of radiologist1 reset; tell them to change it."
    ]
    assert verify_password(_reader("radiologist1").password_hash, NEW_PASSWORD)
    assert not authenticate(Database(), "radiologist1", "synthetic-demo", client_key="t").ok


def test_a_reader_switching_to_the_admin_page_is_stopped(demo_env):
    at = open_page(PAGE, "radiologist1")
    assert not at.exception
    assert [e.value for e in at.error] == ["This page is for administrators."]
    assert "Readers" not in [t.value for t in at.title]
    assert not at.dataframe and not at.text_input and not at.tabs
    assert not [b for b in at.button if b.key and b.key.startswith("FormSubmitter:")]


def test_signed_out_visitor_gets_no_admin_page(demo_env):
    at = open_page(PAGE, None)
    assert not at.exception
    assert "Readers" not in [t.value for t in at.title]
    assert not at.dataframe


def test_a_readers_app_has_no_admin_page_to_switch_to(demo_env):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["reader_username"] = "radiologist1"
    at.run()
    assert not at.exception
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page(PAGE)


def test_admin_is_warned_about_demo_accounts_and_lifts_a_sign_in_delay(demo_env, monkeypatch):
    import datetime as dt

    from core.services import sign_in

    monkeypatch.setattr(sign_in, "FIRST_DELAY", dt.timedelta(minutes=4))
    for i in range(5):
        authenticate(Database(), "radiologist2", "wrong password!", client_key=f"c{i}")
    assert (
        "wait" in authenticate(Database(), "radiologist2", "synthetic-demo", client_key="x").message
    )
    at = open_page(PAGE, "admin")
    assert any("Demo accounts with the public password" in w.value for w in at.warning)
    notes = at.dataframe[0].value.set_index("username")["notes"]
    assert "sign-in delayed until" in notes["radiologist2"]
    at.selectbox(key="admin_unlock_user").set_value("radiologist2").run()
    at.button(key="admin_unlock").click().run()
    assert not at.exception
    assert [s.value for s in at.success] == [
        "Sign-in delay of radiologist2 lifted (5 failed attempts)."
    ]
    assert authenticate(Database(), "radiologist2", "synthetic-demo", client_key="x").ok
    assert [a for a, _ in _audit("unlock_reader")] == ["admin"]
