"""``python -m core pacs``: connection check, write-back line per patient, link copy."""

from __future__ import annotations

import pytest

from core.cli import main
from core.services.pacs.client import PacsClient
from core.services.pacs.link import PseudonymLink
from tests.test_pacs_roundtrip import _import_patient


@pytest.fixture
def pacs_env(orthanc, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SARCOPENIA_PACS_URL", orthanc.url)
    monkeypatch.setenv("SARCOPENIA_PACS_USER", orthanc.username)
    monkeypatch.setenv("SARCOPENIA_PACS_PASSWORD", orthanc.secret)
    monkeypatch.setenv("SARCOPENIA_SECRETS_FILE", str(tmp_path / "none.toml"))
    return orthanc


def test_check_names_the_endpoint_or_the_refusal(pacs_env, monkeypatch, capsys):
    assert main(["pacs", "check"]) == 0
    assert capsys.readouterr().out.startswith(f"Connected: default: {pacs_env.url}")
    monkeypatch.setenv("SARCOPENIA_PACS_PASSWORD", "wrong")
    assert main(["pacs", "check"]) != 0
    assert "refused the credentials" in capsys.readouterr().err


def test_send_reports_each_patient_and_copy_link(pacs_env, corpus, db, store, tmp_path, capsys):
    link = PseudonymLink()
    _, _, report = _import_patient(PacsClient(pacs_env), db, store, corpus, "CLI-1", link)
    code = report.results[0].pseudonym
    assert main(["pacs", "send"]) == 1
    assert capsys.readouterr().out.startswith(f"{code}: not sent. Patient {code} has no consensus")
    assert main(["pacs", "copy-link", str(tmp_path / "copy.db")]) == 0
    assert PseudonymLink(tmp_path / "copy.db").pseudonyms() == {"CLI-1": code}
