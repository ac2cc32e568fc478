"""Case import: each image kind, de-identification on disk, duplicates, all-or-nothing."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless
from sqlalchemy import func, select

from core.archive import ZipBundle
from core.cli import main as cli_main
from core.importer import import_bundle
from db.models import AuditEvent, CtMeasurement, Image, Patient
from tests.bundles import jpeg_bytes, make_zip, png_bytes, row
from tests.dicom_factory import make_dicom

PHI = (b"Doe", b"123456", b"Real Hospital")


def _counts(db) -> tuple[int, int, int]:
    with db.read() as s:
        return (
            s.scalar(select(func.count(Patient.id))),
            s.scalar(select(func.count(Image.id))),
            s.scalar(select(func.count(CtMeasurement.id))),
        )


def _stored_files(store) -> list:
    return [p for p in store.root.rglob("*") if p.is_file()]


def test_png_and_jpeg_case_is_imported(db, store):
    data = make_zip(
        [row("P001", "g.png", "s.jpg")], {"g.png": png_bytes(1), "s.jpg": jpeg_bytes(2)}
    )
    report = import_bundle(ZipBundle(data), db, store)
    assert report.ok and report.committed and report.imported == ["P001"]
    assert _counts(db) == (1, 2, 1)
    with db.read() as s:
        modalities = sorted(s.scalars(select(Image.modality)))
        events = s.scalars(select(AuditEvent.action)).all()
    assert modalities == ["GSU", "SWE"]
    assert events == ["patient.import"]
    assert len(_stored_files(store)) == 2


@pytest.mark.parametrize(
    ("photometric", "bits", "syntax"),
    [
        ("RGB", 8, ExplicitVRLittleEndian),
        ("YBR_FULL", 8, ExplicitVRLittleEndian),
        ("YBR_FULL_422", 8, JPEGBaseline8Bit),
        ("MONOCHROME1", 8, ExplicitVRLittleEndian),
        ("MONOCHROME2", 16, ExplicitVRLittleEndian),
        ("PALETTE COLOR", 8, ExplicitVRLittleEndian),
        ("YBR_RCT", 8, JPEG2000Lossless),
        ("MONOCHROME2", 8, RLELossless),
    ],
)
def test_dicom_kinds_import_deidentified(db, store, photometric, bits, syntax):
    dicom = make_dicom(photometric, bits=bits, transfer_syntax=syntax)
    data = make_zip([row("P-DCM", "scan.dcm")], {"scan.dcm": dicom})
    report = import_bundle(ZipBundle(data), db, store)
    assert report.ok, [str(p) for p in report.problems]
    (stored,) = _stored_files(store)
    raw = stored.read_bytes()
    for phi in PHI:
        assert phi not in raw
    header = pydicom.dcmread(stored)
    assert header.PatientID == "P-DCM"
    assert "SequenceOfUltrasoundRegions" in header
    with db.read() as s:
        image = s.scalar(select(Image))
    assert image.source_format == "dicom"
    assert "Doe" not in str(image.dicom_header)
    assert image.dicom_header["PatientID"] == "P-DCM"


def test_reimporting_the_same_bundle_is_a_no_op(db, store):
    data = make_zip([row("P001", "g.png")], {"g.png": png_bytes(1)})
    assert import_bundle(ZipBundle(data), db, store).imported == ["P001"]
    again = import_bundle(ZipBundle(data), db, store)
    assert again.ok and again.imported == [] and again.already_present == ["P001"]
    assert _counts(db) == (1, 1, 1)


def test_one_bad_row_stores_nothing(db, store):
    rows = [
        row("P001", "g1.png"),
        row("P002", "bad.png"),
        row("P003", "g3.png", height_cm="-170"),
    ]
    files = {"g1.png": png_bytes(1), "bad.png": b"not an image", "g3.png": png_bytes(3)}
    report = import_bundle(ZipBundle(make_zip(rows, files)), db, store)
    assert not report.ok and not report.committed
    reasons = {(p.row, p.file) for p in report.problems}
    assert (3, "bad.png") in reasons
    assert any(p.row == 4 and "height_cm" in p.reason for p in report.problems)
    assert _counts(db) == (0, 0, 0)
    assert _stored_files(store) == []


def test_skip_invalid_keeps_only_the_valid_rows(db, store):
    rows = [row("P001", "g1.png"), row("P002", "bad.png"), row("P003", "g3.png", sex="X")]
    files = {
        "g1.png": png_bytes(1),
        "bad.png": b"\x89PNG\r\n\x1a\ntruncated",
        "g3.png": png_bytes(3),
    }
    report = import_bundle(ZipBundle(make_zip(rows, files)), db, store, skip_invalid=True)
    assert report.committed and report.imported == ["P001"]
    assert {p.row for p in report.problems} == {3, 4}
    assert _counts(db) == (1, 1, 1)
    assert len(_stored_files(store)) == 1


def test_missing_columns_and_duplicate_codes_are_reported(db, store):
    data = make_zip([row("P1", "a.png")], {"a.png": png_bytes(1)}, columns=("patient_code", "sex"))
    report = import_bundle(ZipBundle(data), db, store)
    assert "lacks the column(s)" in report.problems[0].reason
    rows = [row("P1", "a.png"), row("P1", "b.png")]
    dup = import_bundle(
        ZipBundle(make_zip(rows, {"a.png": png_bytes(1), "b.png": png_bytes(2)})), db, store
    )
    assert any("also on row 2" in p.reason for p in dup.problems)
    assert _counts(db) == (0, 0, 0)


def test_cli_import_exits_non_zero_and_reports(db, store, tmp_path, capsys):
    bad = tmp_path / "cases.zip"
    bad.write_bytes(make_zip([row("P1", "a.png", us_date="2020-13-45")], {"a.png": png_bytes(1)}))
    assert cli_main(["import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "row 2" in err and "us_date" in err
    good = tmp_path / "good.zip"
    good.write_bytes(make_zip([row("P1", "a.png")], {"a.png": png_bytes(1)}))
    assert cli_main(["import", str(good)]) == 0
    assert _counts(db) == (1, 1, 1)
