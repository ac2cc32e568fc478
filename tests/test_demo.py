"""The synthetic demo cohort loads through the CLI with the study's counts."""

from __future__ import annotations

from sqlalchemy import func, select

from core.cli import main as cli_main
from db.cases import CaseFilter, list_cases
from db.models import Grade, Image, Patient, Reader


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
