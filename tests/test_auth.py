"""Sign-in, rate limits, roles and reader accounts (SQLite, and PostgreSQL in CI)."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import threading

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from core.cli.admin import add_admin_parser
from core.services import auth, passwords, sign_in
from core.services.auth import AccountError, AdminExistsError, PasswordPolicyError, PermissionDenied
from core.services.sign_in import DEACTIVATED, WRONG_CREDENTIALS
from db.engine import Database
from db.models import AuditEvent, LoginAttempt, Reader

PASSWORD = "correct horse battery"
T0 = dt.datetime(2026, 3, 2, 9, 0)


@pytest.fixture(autouse=True)
def fast_hasher(monkeypatch: pytest.MonkeyPatch) -> PasswordHasher:
    """Cheap Argon2 parameters: the real ones take ~0.3 s per hash on a small CI machine."""
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(passwords, "HASHER", hasher)
    passwords.dummy_hash.cache_clear()
    return hasher


def _minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def _sign_in(db: Database, username: str, password: str, client: str = "c1", at: float = 0):
    return auth.authenticate(db, username, password, client_key=client, now=_minutes(at))


def test_hash_is_salted_argon2id_and_verifies():
    first, second = auth.hash_password(PASSWORD), auth.hash_password(PASSWORD)
    assert first.startswith("$argon2id$")
    assert first != second
    assert PASSWORD not in first
    assert auth.verify_password(first, PASSWORD)
    assert not auth.verify_password(first, PASSWORD + "!")
    assert not auth.verify_password("not a hash", PASSWORD)


def test_default_hasher_is_argon2id():
    assert PasswordHasher().type.name == "ID"


@pytest.mark.parametrize(
    ("password", "expected"),
    [("short pw", "at least 10"), ("          ", "only spaces"), ("Alice.Smith", "username")],
)
def test_password_policy_refuses_with_a_reason(password, expected):
    with pytest.raises(PasswordPolicyError, match=expected):
        auth.check_password_policy(password, username="alice.smith")


def test_weak_password_creates_no_account(db):
    with pytest.raises(PasswordPolicyError):
        auth.create_reader(db, "alice", "Alice", "reader", "short")
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Reader)) == 0


@pytest.mark.parametrize("name", ["a", "-bob", "bob smith", "b" * 33, "bob!", "élodie"])
def test_username_pattern(db, name):
    with pytest.raises(AccountError, match="not allowed"):
        auth.create_reader(db, name, "Someone", "reader", PASSWORD)


def test_username_is_normalized_to_lower_case(db):
    reader = auth.create_reader(db, " Alice ", "Alice", "reader", PASSWORD)
    assert reader.username == "alice"
    assert _sign_in(db, "ALICE", PASSWORD).ok


def test_sign_in_and_a_failure_that_does_not_reveal_the_username(db):
    auth.create_reader(db, "alice", "Alice A.", "reader", PASSWORD)
    wrong_password = _sign_in(db, "alice", "wrong password!")
    unknown_user = _sign_in(db, "mallory", PASSWORD)
    assert not wrong_password.ok and wrong_password.reader is None
    assert wrong_password.message == unknown_user.message == WRONG_CREDENTIALS

    result = _sign_in(db, "alice", PASSWORD)
    assert result.ok and result.reader is not None
    assert result.reader.username == "alice"
    assert "Alice A." in result.message

    with db.read() as s:
        rows = s.execute(select(LoginAttempt.username, LoginAttempt.success)).all()
        texts = [
            str(v) for row in s.execute(select(AuditEvent.before, AuditEvent.after)) for v in row
        ]
    assert sorted(rows) == [("alice", False), ("alice", True), ("mallory", False)]
    assert not any(PASSWORD in t for t in texts)


def _seconds(n: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=n)


def test_failures_make_the_username_wait_twice_as_long_each_time_up_to_five_minutes(db):
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)
    for i in range(4):
        assert _sign_in(db, "alice", "wrong password!", client=f"c{i}", at=i).message == (
            WRONG_CREDENTIALS
        )
    fifth = _sign_in(db, "alice", "wrong password!", client="c4", at=4)
    assert fifth.retry_at == _minutes(4) + sign_in.FIRST_DELAY
    assert "wait 2 seconds (until 09:04:02 UTC)" in fifth.message

    early = auth.authenticate(db, "alice", PASSWORD, client_key="fresh", now=_seconds(241))
    assert not early.ok and "wait 1 seconds" in early.message

    waits = []
    at = fifth.retry_at
    for _ in range(10):
        result = auth.authenticate(db, "alice", "wrong password!", client_key="x", now=at)
        waits.append((result.retry_at - at).total_seconds())
        at = result.retry_at
    assert waits == [4, 8, 16, 32, 64, 128, 256, 300, 300, 300]

    restarted = Database(db.url)  # another app process, or the app after a restart
    try:
        before = at - dt.timedelta(seconds=1)
        assert not auth.authenticate(restarted, "alice", PASSWORD, client_key="y", now=before).ok
        assert auth.authenticate(restarted, "alice", PASSWORD, client_key="y", now=at).ok
    finally:
        restarted.dispose()


def test_refused_attempts_are_not_recorded(db):
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)
    for i in range(5):
        _sign_in(db, "alice", "wrong password!", at=i)
    auth.authenticate(db, "alice", "wrong password!", client_key="c1", now=_seconds(241))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(LoginAttempt)) == 5


def test_many_failures_from_one_address_make_that_address_wait(db):
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)
    for i in range(sign_in.CLIENT_FREE_FAILURES):
        _sign_in(db, f"user{i}", PASSWORD, client="ip:10.0.0.9", at=i / 60)
    refused = _sign_in(db, "alice", PASSWORD, client="ip:10.0.0.9", at=20 / 60)
    assert not refused.ok and "wait" in refused.message
    assert _sign_in(db, "alice", PASSWORD, client="ip:10.0.0.7", at=2).ok


def test_failures_older_than_a_day_are_forgotten(db):
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)
    for hours in (0, 25, 50, 75, 100):
        _sign_in(db, "alice", "wrong password!", at=hours * 60)
    assert _sign_in(db, "alice", PASSWORD, at=100 * 60 + 0.01).ok


def test_a_success_resets_the_username_count(db):
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)
    for minute in (0, 1, 2, 3):
        _sign_in(db, "alice", "wrong password!", client=f"c{minute}", at=minute)
    assert _sign_in(db, "alice", PASSWORD, client="c9", at=4).ok
    for minute in (5, 6, 7, 8):
        _sign_in(db, "alice", "wrong password!", client=f"d{minute}", at=minute)
    assert _sign_in(db, "alice", PASSWORD, client="c9", at=9).ok


def test_an_admin_lifts_the_wait_and_it_is_audited(db, capsys):
    boss = auth.create_first_admin(db, "boss", "Boss", PASSWORD)
    alice = auth.create_reader(db, "alice", "Alice", "reader", PASSWORD, actor=boss)
    for i in range(7):
        _sign_in(db, "alice", "wrong password!", client=f"c{i}", at=i)
    now = _seconds(6 * 60 + 1)
    summary = {r.username: r for r in auth.list_readers_for_admin(db, now=now)}
    assert summary["alice"].waiting_until == _seconds(6 * 60 + 8)
    assert summary["boss"].waiting_until is None
    assert "sign-in delayed until 09:06:08 UTC" in auth.account_notes(summary["alice"])
    assert not auth.authenticate(db, "alice", PASSWORD, client_key="c", now=now).ok

    with pytest.raises(PermissionDenied):
        auth.unlock(db, "alice", actor=alice)
    assert auth.unlock(db, "alice", actor=boss) == 7
    assert auth.authenticate(db, "alice", PASSWORD, client_key="c", now=now).ok
    with db.read() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "unlock_reader"))
    assert (event.actor, event.after) == (
        "boss",
        {"username": "alice", "failed_attempts_cleared": 7},
    )

    from core.cli import main as cli_main

    for _ in range(5):
        auth.authenticate(db, "alice", "wrong password!", client_key="c", now=None)
    assert cli_main(["admin", "unlock", "--username", "alice"]) == 0
    assert "5 failed attempts forgotten" in capsys.readouterr().out


def add_demo_account(db: Database, username: str, role: str = "reader") -> Reader:
    """A demo account (``reader.demo``) whose password is ``PASSWORD``."""
    from db.auth import insert_reader

    password_hash = auth.hash_password(PASSWORD)
    return db.write(
        lambda s: insert_reader(
            s,
            actor=None,
            username=username,
            display_name=username,
            role=role,
            password_hash=password_hash,
            demo=True,
        )
    )


def test_demo_accounts_are_refused_when_the_server_runs_for_real_use(db, monkeypatch):
    add_demo_account(db, "admin", "admin")
    assert _sign_in(db, "admin", PASSWORD).ok
    monkeypatch.setenv("SARCOPENIA_DEMO", "0")
    assert _sign_in(db, "admin", PASSWORD, at=1).message == sign_in.DEMO_REFUSED
    assert _sign_in(db, "admin", "wrong password!", at=2).message == WRONG_CREDENTIALS


def test_deactivated_reader_cannot_sign_in(db):
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)
    auth.set_active(db, "alice", False)
    assert _sign_in(db, "alice", PASSWORD).message == DEACTIVATED
    assert _sign_in(db, "alice", "wrong password!").message == WRONG_CREDENTIALS
    auth.set_active(db, "alice", True)
    assert _sign_in(db, "alice", PASSWORD).ok


def test_reader_without_password_cannot_sign_in(db):
    from db.readers import ensure_reader

    db.write(lambda s: ensure_reader(s, "importer"))
    assert _sign_in(db, "importer", "").message == WRONG_CREDENTIALS


def test_sign_in_upgrades_a_weaker_hash(db, monkeypatch):
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    monkeypatch.setattr(passwords, "HASHER", stronger)
    assert _sign_in(db, "alice", PASSWORD).ok
    with db.read() as s:
        stored = s.scalar(select(Reader.password_hash).where(Reader.username == "alice"))
    assert not stronger.check_needs_rehash(stored)
    assert _sign_in(db, "alice", PASSWORD, at=1).ok


def test_account_changes_write_audit_events_without_secrets(db):
    admin = auth.create_first_admin(db, "boss", "The Boss", PASSWORD)
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD, actor=admin)
    auth.set_password(db, "alice", "another long password", actor=admin)
    auth.set_role(db, "alice", "admin", actor=admin)
    auth.set_active(db, "alice", False, actor=admin)
    with db.read() as s:
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        hashes = set(s.scalars(select(Reader.password_hash)))
    assert [e.action for e in events] == [
        "create_reader",
        "create_reader",
        "set_password",
        "set_role",
        "deactivate_reader",
    ]
    assert [e.actor for e in events[1:]] == ["boss"] * 4
    dumped = " ".join(str(e.before) + str(e.after) for e in events)
    assert "another long password" not in dumped
    assert not any(h in dumped for h in hashes)
    assert _sign_in(db, "alice", "another long password").message == DEACTIVATED


def test_first_admin_only_once(db):
    assert not auth.admin_exists(db)
    auth.create_first_admin(db, "boss", "The Boss", PASSWORD)
    assert auth.admin_exists(db)
    with pytest.raises(AdminExistsError, match="already exists"):
        auth.create_first_admin(db, "intruder", "Intruder", PASSWORD)


def test_racing_first_run_forms_make_one_admin(db):
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def submit(name: str) -> None:
        barrier.wait()
        try:
            outcomes[name] = auth.create_first_admin(db, name, name.title(), PASSWORD)
        except Exception as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=submit, args=(n,)) for n in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kinds = sorted(type(v).__name__ for v in outcomes.values())
    assert kinds == ["AdminExistsError", "Reader"]
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Reader).where(Reader.role == "admin")) == 1


def test_the_last_admin_stays(db):
    auth.create_first_admin(db, "boss", "The Boss", PASSWORD)
    with pytest.raises(AccountError, match="last active admin"):
        auth.set_active(db, "boss", False)
    with pytest.raises(AccountError, match="last active admin"):
        auth.set_role(db, "boss", "reader")
    auth.create_reader(db, "deputy", "Deputy", "admin", PASSWORD)
    auth.set_active(db, "boss", False)
    assert [r.active for r in auth.list_readers_for_admin(db)] == [False, True]


def test_duplicate_username_is_refused(db):
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)
    with pytest.raises(AccountError, match="already taken"):
        auth.create_reader(db, "alice", "Other Alice", "reader", PASSWORD)


def test_permissions_by_role():
    reader = Reader(username="alice", display_name="Alice", role="reader", active=True)
    admin = Reader(username="boss", display_name="Boss", role="admin", active=True)
    retired = Reader(username="old", display_name="Old", role="admin", active=False)
    for action in ("grade", "view_consensus"):
        auth.require(reader, action)
    for action in ("adjudicate", "edit_patient", "import", "train", "export", "manage_readers"):
        auth.require(admin, action)
        with pytest.raises(PermissionDenied, match="needs the admin role"):
            auth.require(reader, action)
    with pytest.raises(PermissionDenied, match="Sign in"):
        auth.require(None, "grade")
    with pytest.raises(PermissionDenied, match="deactivated"):
        auth.require(retired, "train")
    with pytest.raises(ValueError, match="Unknown action"):
        auth.require(admin, "delete_everything")


def test_only_a_current_admin_manages_accounts(db):
    boss = auth.create_first_admin(db, "boss", "Boss", PASSWORD)
    alice = auth.create_reader(db, "alice", "Alice", "reader", PASSWORD, actor=boss)
    with pytest.raises(PermissionDenied):
        auth.create_reader(db, "bob", "Bob", "reader", PASSWORD, actor=alice)
    deputy = auth.create_reader(db, "deputy", "Deputy", "admin", PASSWORD, actor=boss)
    auth.set_active(db, "deputy", False, actor=boss)
    assert deputy.active  # the page still holds the old object; the database knows better
    with pytest.raises(PermissionDenied, match="deactivated"):
        auth.set_password(db, "alice", "taken over, ha ha", actor=deputy)
    with pytest.raises(PermissionDenied):
        auth.list_readers_for_admin(db, actor=alice)


def test_list_readers_shows_last_sign_in_not_hashes(db):
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)
    auth.create_reader(db, "bob", "Bob", "reader", PASSWORD)
    _sign_in(db, "alice", PASSWORD, at=3)
    rows = {r.username: r for r in auth.list_readers_for_admin(db)}
    assert rows["alice"].last_sign_in == _minutes(3)
    assert rows["bob"].last_sign_in is None
    assert rows["bob"].has_password
    assert not hasattr(rows["alice"], "password_hash")


def test_change_own_password_checks_the_current_one(db):
    auth.create_reader(db, "alice", "Alice", "reader", PASSWORD)
    with pytest.raises(AccountError, match="wrong password"):
        auth.change_own_password(db, "alice", "wrong password!", "brand new secret", client_key="c")
    auth.change_own_password(db, "alice", PASSWORD, "brand new secret", client_key="c")
    assert _sign_in(db, "alice", "brand new secret", at=1).ok
    assert not _sign_in(db, "alice", PASSWORD, at=2).ok


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_admin_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_create_list_reset_deactivate(db, monkeypatch, capsys):
    from core.common.errors import UserError

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    args = _cli(
        ["admin", "create", "--username", "boss", "--display-name", "Boss", "--password-stdin"]
    )
    assert args.handler(args) == 0
    args = _cli(
        ["admin", "create", "--username", "alice", "--display-name", "A", "--role", "reader"]
    )
    prompts = iter(["alice's password", "alice's password"])
    monkeypatch.setattr("getpass.getpass", lambda _prompt: next(prompts))
    assert args.handler(args) == 0
    assert _sign_in(db, "alice", "alice's password").ok

    args = _cli(["admin", "set-password", "--username", "alice"])
    prompts = iter(["one new password", "another password"])
    with pytest.raises(UserError, match="differ"):
        args.handler(args)

    args = _cli(["admin", "deactivate", "--username", "alice"])
    assert args.handler(args) == 0
    args = _cli(["admin", "deactivate", "--username", "boss"])
    with pytest.raises(UserError, match="last active admin"):
        args.handler(args)

    capsys.readouterr()
    args = _cli(["admin", "list"])
    assert args.handler(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["username", "role", "active"]
    assert lines[1].split()[:3] == ["alice", "reader", "no"]
    assert lines[2].split()[:3] == ["boss", "admin", "yes"]


def test_cli_takes_no_password_argument():
    with pytest.raises(SystemExit):
        _cli(["admin", "create", "--username", "x1", "--display-name", "X", "--password", "p"])
