"""Sessions that survive a reload: bounded, idle-limited, revocable (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from core.services import auth, passwords, sessions
from db.models import UserSession
from tests.test_auth import add_demo_account

PASSWORD = "correct horse battery"
T0 = dt.datetime(2026, 3, 2, 9, 0)


@pytest.fixture(autouse=True)
def fast_hasher(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(passwords, "HASHER", hasher)


def _at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


@pytest.fixture
def alice(db):
    return auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)


def test_a_session_resumes_and_only_its_hash_is_stored(db, alice):
    token = sessions.start_session(db, alice, client="ip:10.0.0.5", now=T0)
    assert len(token) >= 43
    resumed = sessions.resume_session(db, token, now=_at(5))
    assert resumed.reader is not None and resumed.reader.username == "alice"
    with db.read() as s:
        row = s.scalar(select(UserSession))
    assert row.token_hash == sessions.token_hash(token) != token
    assert row.client == "ip:10.0.0.5" and row.last_seen_at == _at(5)
    assert sessions.resume_session(db, token + "x", now=_at(5)).reader is None


def test_idle_sign_out_after_the_configured_minutes(db, alice, monkeypatch):
    monkeypatch.setenv("SARCOPENIA_IDLE_MINUTES", "10")
    token = sessions.start_session(db, alice, client="ip:a", now=T0)
    assert sessions.resume_session(db, token, now=_at(9)).reader is not None
    assert not sessions.is_idle(db, token, now=_at(18))
    assert sessions.is_idle(db, token, now=_at(19.5))
    ended = sessions.resume_session(db, token, now=_at(19.5))
    assert ended.reader is None and "10 minutes without activity" in ended.message
    assert sessions.resume_session(db, token, now=_at(19.6)).reader is None


def test_the_default_idle_limit_is_thirty_minutes(db, alice, monkeypatch):
    monkeypatch.delenv("SARCOPENIA_IDLE_MINUTES", raising=False)
    token = sessions.start_session(db, alice, client="ip:a", now=T0)
    assert sessions.resume_session(db, token, now=_at(29)).reader is not None
    assert sessions.resume_session(db, token, now=_at(60)).reader is None


def test_activity_never_extends_a_session_past_its_lifetime(db, alice, monkeypatch):
    monkeypatch.setenv("SARCOPENIA_SESSION_HOURS", "1")
    token = sessions.start_session(db, alice, client="ip:a", now=T0)
    for minute in range(0, 60, 10):
        assert sessions.resume_session(db, token, now=_at(minute)).reader is not None
    ended = sessions.resume_session(db, token, now=_at(60))
    assert ended.reader is None and "time limit" in ended.message


def test_sign_out_deactivation_and_a_new_password_revoke_sessions(db, alice):
    signed_out = sessions.start_session(db, alice, client="ip:a", now=T0)
    sessions.end_session(db, signed_out, now=_at(1))
    assert sessions.resume_session(db, signed_out, now=_at(2)) == sessions.Resumed(None)

    other_tab = sessions.start_session(db, alice, client="ip:a", now=T0)
    auth.set_password(db, "alice", "another long password")
    assert sessions.resume_session(db, other_tab, now=_at(2)).reader is None

    token = sessions.start_session(db, alice, client="ip:a", now=T0)
    auth.set_active(db, "alice", False)
    assert sessions.resume_session(db, token, now=_at(2)).reader is None
    auth.set_active(db, "alice", True)
    assert sessions.resume_session(db, token, now=_at(3)).reader is None


def test_demo_sessions_end_when_the_server_runs_for_real_use(db, monkeypatch):
    demo = add_demo_account(db, "radiologist1")
    token = sessions.start_session(db, demo, client="ip:a", now=T0)
    monkeypatch.setenv("SARCOPENIA_DEMO", "0")
    ended = sessions.resume_session(db, token, now=_at(1))
    assert ended.reader is None and "SARCOPENIA_DEMO=0" in ended.message


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_bad_idle_setting_is_refused_with_its_name(monkeypatch, value):
    from core.common import config

    monkeypatch.setenv("SARCOPENIA_IDLE_MINUTES", value)
    with pytest.raises(ValueError, match="SARCOPENIA_IDLE_MINUTES must be a positive number"):
        config.idle_timeout()


def test_upgrading_a_demo_database_flags_its_demo_accounts(db):
    """Migration 0005 on a database with rows: existing demo accounts get the flag, and the
    reader table is altered in place (its grades and audit rows keep their keys)."""
    from alembic import command
    from sqlalchemy import text

    from db.migrate import alembic_config, upgrade

    command.downgrade(alembic_config(db.url), "0004")
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reader (username, display_name, role, active, created_at) VALUES "
                "('admin', 'Demo administrator', 'admin', :t, :now), "
                "('dr.real', 'Dr Real', 'reader', :t, :now)"
            ),
            {"t": True, "now": T0},
        )
        conn.execute(
            text(
                "INSERT INTO patient (code, sex, age, height_cm, synthetic, created_at) "
                "VALUES ('DEMO-001', 'F', 70, 155.0, :t, :now)"
            ),
            {"t": True, "now": T0},
        )
        conn.execute(
            text(
                "INSERT INTO audit_event (at, actor_id, actor, action, entity) "
                "VALUES (:now, 1, 'admin', 'x', 'reader')"
            ),
            {"now": T0},
        )
    upgrade(db.url)
    with db.engine.connect() as conn:
        flags = dict(conn.execute(text("SELECT username, demo FROM reader")).all())
    assert flags == {"admin": True, "dr.real": False}
