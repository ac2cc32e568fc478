"""PACS round trip against a real Orthanc: STOW real screens, query, pick, import through
the zip checks, grade through the database layer, write the SR back, read it back."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from core.common.boxes import Box
from core.services.pacs.client import PacsClient
from core.services.pacs.link import PseudonymLink
from core.services.pacs.retrieve import (
    import_picks,
    propose_pick,
    search_studies,
    ultrasound_images,
)
from core.services.pacs.writeback import (
    pacs_line_for,
    report_content,
    reports_in_pacs,
    send_report,
)
from core.services.swe_presets import save_scale_preset, swe_preset_key
from db.consensus import adjudicate
from db.grading import save_box, save_grade
from db.models import Image, Patient, Prediction, TrainingRun
from db.readers import ensure_reader
from tests.pacs_helpers import (
    clinical_csv,
    hospital_study,
)

PATIENT = "HOSP-0001"


def _import_patient(client, db, store, corpus, patient_id, link):
    client.store(hospital_study(corpus, patient_id))
    (study,) = search_studies(client, patient_id=patient_id)
    assert dt.date.fromisoformat(study.study_date)  # shown as 2000-03-29, not 20000329
    pick = propose_pick(client, patient_id, ultrasound_images(client, study))
    return (
        study,
        pick,
        import_picks(
            client, db, store, [pick], clinical_csv(patient_id), link=link, actor_name=None
        ),
    )


def _grade(db, code: str) -> None:
    """Two readers disagree (2 and 3), the admin settles on 2; boxes on both images."""

    def work(session) -> None:
        patient = session.scalar(select(Patient).where(Patient.code == code))
        images = {i.modality: i for i in patient.images}
        gsu, swe = images["GSU"].id, images["SWE"].id
        one = ensure_reader(session, "reader_one")
        two = ensure_reader(session, "reader_two")
        admin = ensure_reader(session, "boss", role="admin")
        save_grade(session, gsu, one, 2)
        save_grade(session, gsu, two, 3)
        save_box(session, gsu, one, Box(100, 80, 400, 300))
        save_box(session, gsu, two, Box(110, 90, 380, 290))
        save_box(session, swe, one, Box(250, 150, 120, 110))
        adjudicate(session, gsu, admin, 2, Box(105, 85, 390, 295))
        run = TrainingRun(
            task="sarcopenia_gsu",
            arch="vgg19",
            modality="GSU",
            input_size=[112, 112],
            settings={},
            weights_source="none",
            status="done",
            model_sha256="ab" * 32,
        )
        session.add(run)
        session.flush()
        session.add(
            Prediction(
                run_id=run.id,
                patient_id=patient.id,
                subset="test",
                probability=0.7311,
                threshold=0.5,
                predicted_label=1,
            )
        )

    db.write(work)


def _dciodvfy_errors(dataset: pydicom.Dataset, tmp_path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.fail("The DICOM checks need dciodvfy: apt-get install dicom3tools")
    path = tmp_path / "report.dcm"
    dataset.save_as(path, enforce_file_format=True)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_query_import_grade_write_back_and_read_back(
    orthanc, corpus, db, store, data_dir, tmp_path, monkeypatch
):
    client = PacsClient(orthanc)
    link = PseudonymLink()
    study, pick, report = _import_patient(client, db, store, corpus, PATIENT, link)

    assert study.patient_id == PATIENT and "US" in study.modalities
    assert pick.note == ""
    (result,) = report.results
    assert result.status == "imported", result.problems
    code = result.pseudonym
    assert code.startswith("PX-") and link.patient_id(code) == PATIENT

    # The research database knows only the pseudonym; the link lives in its own file.
    with db.read() as session:
        patient = session.scalar(select(Patient).where(Patient.code == code))
        assert {i.modality for i in patient.images} == {"GSU", "SWE"}
        headers = [i.dicom_header for i in session.scalars(select(Image))]
    assert PATIENT not in repr(headers)
    research_files = [p for p in data_dir.rglob("*") if p.is_file() and p != link.path]
    assert research_files and not any(PATIENT.encode() in p.read_bytes() for p in research_files)
    assert PATIENT.encode() in link.path.read_bytes()

    # Importing the same study again is a no-op.
    again = import_picks(client, db, store, [pick], clinical_csv(PATIENT), link=link)
    assert [r.status for r in again.results] == ["already present"]

    _grade(db, code)
    with db.read() as session:
        run_id = session.scalar(select(TrainingRun.id))
    # The ATL screen's bar carries no kPa labels: its stiffness is relative, which the report
    # leaves out, until a range is entered for the scanner.
    relative = report_content(db, store, code, [run_id], compute_models=False)
    assert relative.stiffness == ()
    save_scale_preset(db, swe_preset_key(db, code), 0, 100, "kPa", None)
    written = send_report(
        client,
        db,
        store,
        code,
        run_ids=[run_id],
        link=link,
        actor_name="boss",
        compute_models=False,
    )
    content = written.content
    assert content.consensus_grade == 2 and content.consensus_box == Box(105, 85, 390, 295)
    assert {(r.reader, r.grade) for r in content.readers} == {("reader_one", 2), ("reader_two", 3)}
    assert content.swe_box == Box(250, 150, 120, 110)
    assert dict(content.stiffness).keys() >= {"median", "fraction_colored"}
    assert [(m.run_id, m.probability, m.task) for m in content.models] == [
        (run_id, 0.7311, "sarcopenia")
    ]
    assert written.study_instance_uid == study.study_uid

    (parsed,) = reports_in_pacs(client, code, link)
    assert parsed.sop_instance_uid == written.sop_instance_uid
    assert parsed.content == content
    assert parsed.research_only
    stored = client.retrieve_dataset(study.study_uid, *_series_and_sop(client, study, parsed))
    assert stored.PatientID == PATIENT
    assert _dciodvfy_errors(stored, tmp_path) == []

    with pytest.raises(Exception, match=r"already sent .* with the same content"):
        send_report(client, db, store, code, run_ids=[run_id], link=link, compute_models=False)
    second = send_report(
        client, db, store, code, run_ids=[run_id], link=link, again=True, compute_models=False
    )
    in_pacs = reports_in_pacs(client, code, link)
    assert [r.sop_instance_uid for r in in_pacs] == [
        written.sop_instance_uid,
        second.sop_instance_uid,
    ]
    assert len(link.sent_reports(code)) == 2

    # The Review page's line, with the PACS set up through the environment.
    monkeypatch.setenv("SARCOPENIA_PACS_URL", orthanc.url)
    monkeypatch.setenv("SARCOPENIA_PACS_USER", orthanc.username)
    monkeypatch.setenv("SARCOPENIA_PACS_PASSWORD", orthanc.secret)
    monkeypatch.setenv("SARCOPENIA_SECRETS_FILE", str(tmp_path / "none.toml"))
    line = pacs_line_for(code)
    assert line.startswith("In PACS: 2 report(s), latest ")
    assert "consensus grade 2, 2 reader grade(s)" in line and "1 model result(s)" in line
    assert pacs_line_for("NOT-FROM-PACS") is None


def _series_and_sop(client, study, parsed) -> tuple[str, str]:
    for ds in client.instances(study.study_uid):
        if ds.SOPInstanceUID == parsed.sop_instance_uid:
            return str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    raise AssertionError("the report is not in the study")
