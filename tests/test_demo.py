"""The synthetic demo cohort loads through the CLI with the study's counts, and only where
its public password cannot reach real readers or patients."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.cli import main as cli_main
from db.cases import CaseFilter, list_cases
from db.models import AuditEvent, Grade, Image, Patient, Reader


def test_cli_demo_loads_the_study_counts(db, capsys):
    assert cli_main(["demo"]) == 0
    with db.read() as s:
        assert s.scalar(select(func.count(Patient.id))) == 160
        assert s.scalar(select(func.count(Image.id))) == 320
        assert s.scalar(select(func.count(Grade.id))) == 320
        men = s.scalar(select(func.count(Patient.id)).where(Patient.sex == "M"))
        roles = dict(s.execute(select(Reader.username, Reader.role)).all())
        sarcopenic = list_cases(s, CaseFilter(sarcopenia="sarcopenic"), limit=1)[1]
        healthy = list_cases(s, CaseFilter(sarcopenia="not sarcopenic"), limit=1)[1]
        excluded = list_cases(s, CaseFilter(sarcopenia="excluded"), limit=1)[1]
        synthetic = s.scalar(select(func.count(Patient.id)).where(Patient.synthetic))
    assert men == 62
    assert sarcopenic + healthy == 141 and excluded == 19
    assert 26 <= sarcopenic <= 32
    assert synthetic == 160
    assert roles["admin"] == "admin" and roles["radiologist1"] == "reader"
    assert "Loaded 160 synthetic demo patients" in capsys.readouterr().out

    assert cli_main(["demo", "--if-empty"]) == 0
    assert cli_main(["demo"]) == 1
    assert "already holds patients" in capsys.readouterr().err


def _real_reader(db, username: str = "dr.real", role: str = "reader") -> None:
    from core.services.auth import create_reader

    create_reader(db, username, "Dr Real", role, "a real long password")


def test_demo_refuses_real_accounts_unless_forced_and_keeps_them_as_they_are(db, capsys):
    _real_reader(db)
    with db.read() as s:
        real_hash = s.scalar(select(Reader.password_hash).where(Reader.username == "dr.real"))
    assert cli_main(["demo", "--patients", "4"]) == 1
    assert "real accounts (dr.real)" in capsys.readouterr().err
    assert cli_main(["demo", "--if-empty", "--patients", "4"]) == 0
    assert "not loaded" in capsys.readouterr().out
    with db.read() as s:
        assert s.scalar(select(func.count(Patient.id))) == 0

    assert cli_main(["demo", "--force", "--patients", "4"]) == 0
    with db.read() as s:
        rows = {r.username: r for r in s.scalars(select(Reader))}
        loads = s.scalars(select(AuditEvent.after).where(AuditEvent.action == "demo.load")).all()
    assert rows["dr.real"].password_hash == real_hash and not rows["dr.real"].demo
    assert loads == [{"patients": 4, "seed": 2022, "forced": True}]


def test_demo_refuses_real_patients(db, capsys):
    db.write(lambda s: s.add(Patient(code="P001", sex="F", age=70, height_cm=155.0)))
    assert cli_main(["demo", "--patients", "4"]) == 1
    assert "1 real" in capsys.readouterr().err


def test_demo_accounts_are_flagged_audited_and_salted_apart(db):
    assert cli_main(["demo", "--patients", "4"]) == 0
    with db.read() as s:
        readers = list(s.scalars(select(Reader)))
        created = s.scalars(
            select(AuditEvent.after).where(AuditEvent.action == "create_reader")
        ).all()
    assert {r.username for r in readers} == {
        "admin",
        "radiologist1",
        "radiologist2",
        "sim_reader_a",
        "sim_reader_b",
    }
    assert all(r.demo for r in readers)
    hashes = [r.password_hash for r in readers if r.password_hash]
    assert len(hashes) == 3
    salts = {h.split("$")[4] for h in hashes}
    assert len(salts) == 3
    assert sorted(e["username"] for e in created) == sorted(r.username for r in readers)
    assert all(e["demo"] for e in created)


def test_only_an_admin_loads_the_demo_and_never_with_demo_switched_off(db, store, monkeypatch):
    from core.services.auth import PermissionDenied
    from core.services.demo import DemoRefused, load_demo

    reader = Reader(id=1, username="r", display_name="R", role="reader", active=True)
    with pytest.raises(PermissionDenied):
        load_demo(db, store, n=2, actor=reader)
    monkeypatch.setenv("SARCOPENIA_DEMO", "0")
    with pytest.raises(DemoRefused, match="SARCOPENIA_DEMO=0"):
        load_demo(db, store, n=2, force=True)
    assert cli_main(["demo", "--force", "--patients", "2"]) == 1
    with db.read() as s:
        assert s.scalar(select(func.count(Reader.id))) == 0
