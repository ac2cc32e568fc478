"""PACS failures against real Orthanc servers: each gives one clear sentence and leaves
nothing partial (wrong credentials, server gone mid-retrieval, a study without ultrasound,
a report the server refuses), plus the endpoint settings and the link kept out of backups."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.common import config
from core.common.errors import UserError
from core.services.backup import backup
from core.services.pacs import endpoints
from core.services.pacs.client import PacsClient, PacsError
from core.services.pacs.link import PseudonymLink, copy_link
from core.services.pacs.retrieve import (
    import_picks,
    propose_pick,
    search_studies,
    ultrasound_images,
)
from core.services.pacs.sr import build_report
from core.services.pacs.writeback import reports_in_pacs, send_report
from db.models import Image, Patient
from tests.pacs_helpers import clinical_csv, hospital_study, start_orthanc, stop_orthanc
from tests.test_pacs_roundtrip import _grade, _import_patient


def _patients(db) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(Patient.code).order_by(Patient.code)))


def test_wrong_credentials_are_named_as_such(orthanc):
    wrong = endpoints.Endpoint(orthanc.name, orthanc.url, "basic", orthanc.username, "nope")
    with pytest.raises(PacsError, match=r"refused the credentials .* \(HTTP 401\)"):
        search_studies(PacsClient(wrong), patient_id="anyone")


def test_a_server_that_is_not_there_is_named_as_such():
    gone = endpoints.Endpoint("gone", "http://127.0.0.1:9/dicom-web", timeout_s=5)
    with pytest.raises(PacsError, match="Could not reach the PACS 'gone'"):
        PacsClient(gone).check()


class _StopsOnRetrieve(PacsClient):
    """A client for a real server that shuts the server down before its n-th retrieval."""

    def __init__(self, endpoint, stop_before: int) -> None:
        super().__init__(endpoint)
        self.calls, self.stop_before = 0, stop_before

    def retrieve(self, *uids: str) -> bytes:
        self.calls += 1
        if self.calls == self.stop_before:
            stop_orthanc(self.endpoint)
        return super().retrieve(*uids)


def test_pacs_down_mid_retrieval_keeps_finished_patients_and_resumes(
    orthanc, corpus, db, store, data_dir, tmp_path
):
    throwaway = start_orthanc(tmp_path / "orthanc")
    first, second = hospital_study(corpus, "DOWN-1"), hospital_study(corpus, "DOWN-2")
    client = PacsClient(throwaway)
    client.store(first + second)
    picks = []
    for patient_id in ("DOWN-1", "DOWN-2"):
        (study,) = search_studies(client, patient_id=patient_id)
        picks.append(propose_pick(client, patient_id, ultrasound_images(client, study)))
    link = PseudonymLink()
    csv = clinical_csv("DOWN-1", "DOWN-2")

    # The second patient's GSU image arrives, then the server goes away before its SWE image.
    report = import_picks(_StopsOnRetrieve(throwaway, 4), db, store, picks, csv, link=link)
    assert [r.status for r in report.results] == ["imported", "not done"]
    assert report.summary() == "1 imported, 0 already present, 0 refused, 1 not done"
    assert "Could not reach the PACS" in report.stopped and "nothing half-done" in report.stopped
    pseudonym = link.pseudonyms()["DOWN-1"]
    assert _patients(db) == [pseudonym]
    with db.read() as session:
        assert session.scalar(select(func.count(Image.id))) == 2
    assert sum(1 for p in (data_dir / "images").rglob("*") if p.is_file()) == 2
    assert link.instances(link.pseudonyms()["DOWN-2"]) == {}

    # The same studies on a server that answers: the run resumes where it stopped.
    PacsClient(orthanc).store(first + second)
    resumed = import_picks(PacsClient(orthanc), db, store, picks, csv, link=link)
    assert [r.status for r in resumed.results] == ["already present", "imported"]
    assert len(_patients(db)) == 2


def test_a_study_without_ultrasound_images_is_refused_by_name(orthanc, corpus, db):
    client = PacsClient(orthanc)
    gsu, _ = hospital_study(corpus, "SR-ONLY")
    report = build_report(_empty_content(), gsu, None)
    client.store([report])
    assert search_studies(client, patient_id="SR-ONLY") == []
    (study,) = search_studies(client, patient_id="SR-ONLY", modality="")
    with pytest.raises(PacsError, match=r"holds no ultrasound images \(modalities: SR\)"):
        ultrasound_images(client, study)
    assert _patients(db) == []


def _empty_content():
    from core.services.pacs.sr import ReportContent

    return ReportContent(1, None, (), None, (), ())


def test_a_report_the_pacs_refuses_is_reported_and_not_recorded(corpus, db, store, tmp_path):
    script = tmp_path / "refuse-sr.lua"
    script.write_text(
        "function ReceivedInstanceFilter(dicom, origin, info)\n"
        "  return dicom.Modality ~= 'SR'\nend\n"
    )
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"LuaScripts": [str(script)]}))
    strict = start_orthanc(tmp_path / "orthanc", extra)
    try:
        client = PacsClient(strict)
        link = PseudonymLink()
        _, _, report = _import_patient(client, db, store, corpus, "STRICT-1", link)
        code = report.results[0].pseudonym
        _grade(db, code)
        with pytest.raises(PacsError, match="refused the report"):
            send_report(client, db, store, code, link=link)
        assert link.sent_reports(code) == []
        assert reports_in_pacs(client, code, link) == []
    finally:
        stop_orthanc(strict)


def test_writing_back_needs_a_pacs_patient_and_a_consensus(orthanc, corpus, db, store):
    client = PacsClient(orthanc)
    link = PseudonymLink()
    with pytest.raises(UserError, match="was not imported from a PACS"):
        send_report(client, db, store, "PX-00000000", link=link)
    _, _, report = _import_patient(client, db, store, corpus, "NOCONS-1", link)
    with pytest.raises(UserError, match="has no consensus grade yet"):
        send_report(client, db, store, report.results[0].pseudonym, link=link)


def test_a_patient_missing_from_the_clinical_csv_is_refused(orthanc, corpus, db, store):
    client = PacsClient(orthanc)
    client.store(hospital_study(corpus, "NOCSV-1"))
    (study,) = search_studies(client, patient_id="NOCSV-1")
    pick = propose_pick(client, "NOCSV-1", ultrasound_images(client, study))
    report = import_picks(client, db, store, [pick], clinical_csv("SOMEONE-ELSE"))
    assert report.results[0].status == "refused"
    assert "no row for patient ID 'NOCSV-1'" in report.results[0].problems[0]
    bad = import_picks(client, db, store, [pick], clinical_csv("NOCSV-1").replace(",61,", ",400,"))
    assert bad.results[0].status == "refused" and "clinical CSV row 2" in bad.results[0].problems[0]
    assert _patients(db) == []
    by_accession = "accession_number" + clinical_csv("ACCNOCSV-1").removeprefix("patient_id")
    done = import_picks(client, db, store, [pick], by_accession)
    assert done.results[0].status == "imported", done.results[0].problems
    assert _patients(db) == [done.results[0].pseudonym]


def test_a_clinical_csv_that_cannot_be_used_stops_before_any_retrieval(orthanc, db, store):
    client = PacsClient(orthanc)
    for text, message in (
        ('patient_id,sex\n"A' + "x" * 200_000 + '",F\n', "cannot be read"),
        ("name,sex\nA,F\n", "needs a patient_id or accession_number column"),
        ("patient_id,sex,shoe_size\nA,F,9\n", "unknown columns: shoe_size"),
        ("patient_id,sex\nA,F\nA,M\n", "row 3: patient_id 'A' is also on row 2"),
    ):
        with pytest.raises(UserError, match=message):
            import_picks(client, db, store, [], text)
    assert _patients(db) == []


def test_the_link_stays_out_of_research_backups_unless_copied(orthanc, corpus, db, store, tmp_path):
    link = PseudonymLink()
    _import_patient(PacsClient(orthanc), db, store, corpus, "BACKUP-1", link)
    folder = backup(config.database_url(), tmp_path / "backup")
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files and not any(b"BACKUP-1" in p.read_bytes() for p in files)
    copy = copy_link(tmp_path / "link-copy.db", link)
    assert PseudonymLink(copy).pseudonyms() == link.pseudonyms()
    assert copy.stat().st_mode & 0o077 == 0


def test_endpoints_come_from_the_environment_or_secrets_and_hide_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        '[pacs.radiology]\nurl = "https://pacs.example.org/dicom-web/"\n'
        'auth = "bearer"\ntoken = "s3cr3t-token"\ntimeout_s = 5\n'
    )
    monkeypatch.setenv(endpoints.SECRETS_FILE_ENV, str(secrets))
    monkeypatch.setenv("SARCOPENIA_PACS_URL", "http://127.0.0.1:8042/dicom-web")
    monkeypatch.setenv("SARCOPENIA_PACS_USER", "sarco")
    monkeypatch.setenv("SARCOPENIA_PACS_PASSWORD", "pw-123")
    found = endpoints.configured_endpoints()
    assert [(e.name, e.auth, e.url) for e in found] == [
        ("default", "basic", "http://127.0.0.1:8042/dicom-web"),
        ("radiology", "bearer", "https://pacs.example.org/dicom-web"),
    ]
    shown = " ".join(repr(e) + e.describe() for e in found)
    assert "s3cr3t-token" not in shown and "pw-123" not in shown
    assert endpoints.endpoint("radiology").secret == "s3cr3t-token"
    assert [e.timeout_s for e in found] == [30.0, 5.0]
    with pytest.raises(UserError, match="no PACS endpoint 'other'"):
        endpoints.endpoint("other")
    secrets.write_text(secrets.read_text().replace("timeout_s = 5", "timeout_s = 0.1"))
    with pytest.raises(UserError, match="timeout_s must be between 1 and 600 seconds"):
        endpoints.configured_endpoints()
    monkeypatch.delenv("SARCOPENIA_PACS_PASSWORD")
    with pytest.raises(UserError, match="basic authentication needs a username and a password"):
        endpoints.configured_endpoints()
    monkeypatch.delenv("SARCOPENIA_PACS_URL")
    monkeypatch.setenv(endpoints.SECRETS_FILE_ENV, str(tmp_path / "absent.toml"))
    with pytest.raises(UserError, match="No PACS is set up"):
        endpoints.endpoint()


def test_two_imports_of_a_new_patient_agree_on_one_pseudonym(tmp_path: Path):
    path = tmp_path / "link.db"
    PseudonymLink(path)
    start = threading.Barrier(12)
    found: list[str] = []
    errors: list[BaseException] = []

    def take() -> None:
        link = PseudonymLink(path)
        start.wait()
        try:
            found.append(link.pseudonym_for("RACE-1"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=take) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(found) == 12 and len(set(found)) == 1


def test_two_sends_at_once_record_one_report(tmp_path: Path):
    from core.services.pacs.link import SentReport

    link = PseudonymLink(tmp_path / "link.db")
    code = link.pseudonym_for("TWICE-1")
    start = threading.Barrier(8)
    outcomes: list[bool] = []

    def claim(number: int) -> None:
        report = SentReport(f"2.25.{number}", code, "2.25.1", "2.25.2", "x", "now", "boss")
        other = PseudonymLink(link.path)
        start.wait()
        outcomes.append(other.claim_send(report) is None)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    assert len(link.sent_reports(code)) == 1
