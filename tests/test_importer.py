"""Case import: each image kind, de-identification on disk, duplicates, all-or-nothing,
one decoded image at a time, folders and links, codes ignoring case, strict dates."""

from __future__ import annotations

import datetime as dt
import os
import time
import weakref
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from alembic import command
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from core.cases import importer
from core.cases.archive import ZipBundle, open_bundle
from core.cases.importer import import_bundle
from core.cases.manifest import FieldError, check_date
from core.cli import main as cli_main
from core.common.store import STAGING_DIR
from core.imaging import imageio
from core.services.maintenance import ORPHAN_GRACE, sweep_orphans
from db.migrate import alembic_config
from db.models import AuditEvent, CtMeasurement, Image, Patient
from tests.bundles import jpeg_bytes, make_zip, manifest_text, png_bytes, row
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
    assert header.BurnedInAnnotation == "NO"  # the pixels went through the text cleaner
    with db.read() as s:
        image = s.scalar(select(Image))
    assert image.source_format == "dicom"
    assert "Doe" not in str(image.dicom_header)
    assert image.dicom_header["PatientID"] == "P-DCM"
    assert image.dicom_header["BurnedInAnnotation"] == "NO"


def test_burned_in_name_is_blanked_before_the_png_is_stored(db, store):
    screen = np.zeros((240, 320, 3), np.uint8)
    screen[60:220, 60:260] = np.random.default_rng(1).integers(20, 120, (160, 200, 3))
    cv2.putText(
        screen, "DOE, JANE 12/03/2024", (8, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255,) * 3, 2
    )
    data = make_zip([row("P-TXT", "g.png")], {"g.png": cv2.imencode(".png", screen)[1].tobytes()})
    assert import_bundle(ZipBundle(data), db, store).ok
    (stored,) = _stored_files(store)
    kept = cv2.imread(str(stored))
    assert (kept[:45] > 200).sum() == 0
    np.testing.assert_array_equal(kept[100:180, 100:220], screen[100:180, 100:220])


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


def _bundle_of(n: int) -> tuple[list[dict[str, str]], dict[str, bytes]]:
    rows = [row(f"P{i:03d}", f"g{i}.png", f"s{i}.png") for i in range(n)]
    files = {f"g{i}.png": png_bytes(2 * i) for i in range(n)}
    files |= {f"s{i}.png": png_bytes(2 * i + 1) for i in range(n)}
    return rows, files


def test_import_holds_one_decoded_image_at_a_time(db, store, monkeypatch):
    """Each decoded image is gone before the next is decoded; files wait in staging."""
    live: list[weakref.ref] = []
    most_alive = 0
    decode = imageio.decode_image

    def tracked(*args, **kwargs):
        nonlocal most_alive
        most_alive = max(most_alive, sum(ref() is not None for ref in live))
        decoded = decode(*args, **kwargs)
        live.append(weakref.ref(decoded))
        return decoded

    outside_staging: list[list[str]] = []

    def progress(done: int, total: int) -> None:
        files = [p for p in _stored_files(store) if STAGING_DIR not in p.parts]
        outside_staging.append([p.name for p in files])

    monkeypatch.setattr(imageio, "decode_image", tracked)
    rows, files = _bundle_of(6)
    report = import_bundle(ZipBundle(make_zip(rows, files)), db, store, progress=progress)
    assert report.imported == [f"P{i:03d}" for i in range(6)]
    assert len(live) == 12 and most_alive == 0
    assert outside_staging == [[]] * 6, "files reached the store before every check passed"
    assert len(_stored_files(store)) == 12
    assert not (store.root / STAGING_DIR).exists()


def test_total_decoded_pixels_of_a_bundle_are_capped(db, store, monkeypatch):
    monkeypatch.setattr(importer, "MAX_BUNDLE_PIXELS", 3 * 96 * 128)
    rows, files = _bundle_of(2)
    report = import_bundle(ZipBundle(make_zip(rows, files)), db, store, skip_invalid=True)
    assert not report.committed
    (problem,) = report.problems
    assert "more than 36,864 pixels in all" in problem.reason
    assert "passed at row 3" in problem.reason and "smaller bundles" in problem.reason
    assert _counts(db) == (0, 0, 0)
    assert list(store.root.iterdir()) == []


def test_a_failed_transaction_leaves_no_file_and_no_staging(db, store, monkeypatch):
    built = importer._patient_row
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first patient is already flushed, with its audit row
            raise RuntimeError("database went away")
        return built(*args, **kwargs)

    monkeypatch.setattr(importer, "FLUSH_BATCH", 1)
    monkeypatch.setattr(importer, "_patient_row", broken)
    rows, files = _bundle_of(3)
    with pytest.raises(RuntimeError):
        import_bundle(ZipBundle(make_zip(rows, files)), db, store)
    assert _counts(db) == (0, 0, 0)
    assert _stored_files(store) == []
    assert not (store.root / STAGING_DIR).exists()


def test_codes_are_unique_ignoring_case(db, store):
    first = make_zip([row("BAD-DUP", "a.png")], {"a.png": png_bytes(1)})
    assert import_bundle(ZipBundle(first), db, store).imported == ["BAD-DUP"]
    second = make_zip([row("bad-dup", "b.png")], {"b.png": png_bytes(2)})
    report = import_bundle(ZipBundle(second), db, store)
    assert not report.committed
    assert "differs only in upper/lower case from the stored patient 'BAD-DUP'" in str(
        report.problems[0]
    )
    same = make_zip([row("bad-dup", "a.png")], {"a.png": png_bytes(1)})
    assert "'BAD-DUP'" in import_bundle(ZipBundle(same), db, store).problems[0].reason
    assert _counts(db) == (1, 1, 1)


def test_database_refuses_codes_differing_only_in_case(db):
    def add(code: str):
        return lambda session: session.add(Patient(code=code, sex="F", age=60, height_cm=160))

    db.write(add("Case-1"))
    with pytest.raises(IntegrityError):
        db.write(add("CASE-1"))


def test_a_code_stored_by_another_import_meanwhile_is_refused_cleanly(db, store, monkeypatch):
    """Another import commits 'p000' after this one checked 'P000': the index refuses it."""
    store_cases = importer.store_cases

    def after_a_concurrent_import(*args, **kwargs):
        db.write(lambda s: s.add(Patient(code="p000", sex="M", age=50, height_cm=170)))
        return store_cases(*args, **kwargs)

    monkeypatch.setattr(importer, "store_cases", after_a_concurrent_import)
    rows, files = _bundle_of(2)
    report = import_bundle(ZipBundle(make_zip(rows, files)), db, store)
    assert not report.committed
    assert "Another import stored one of these patients" in report.problems[0].reason
    assert _counts(db) == (1, 0, 0)
    assert _stored_files(store) == []


def test_migration_names_codes_that_differ_only_in_case(db):
    cfg = alembic_config(db.url)
    command.downgrade(cfg, "0003")
    with db.engine.begin() as conn:
        for code in ("Knee-7", "KNEE-7"):
            conn.execute(
                text(
                    "INSERT INTO patient (code, sex, age, height_cm, synthetic, created_at) "
                    "VALUES (:code, 'F', 50, 160, :no, :at)"
                ),
                {"code": code, "no": False, "at": dt.datetime(2020, 1, 1)},
            )
    with pytest.raises(RuntimeError, match="differ only in case: knee-7"):
        command.upgrade(cfg, "0004")
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM patient WHERE code = 'KNEE-7'"))
    command.upgrade(cfg, "head")


@pytest.mark.parametrize(
    "value", ["20200301", "2020-W10-1", "2020-061", "2020-3-1", "２０２０-03-01"]
)
def test_dates_must_be_written_yyyy_mm_dd(value):
    with pytest.raises(FieldError, match="YYYY-MM-DD"):
        check_date("us_date", value)
    assert check_date("us_date", " 2020-03-01 ") == dt.date(2020, 3, 1)


def _folder(root: Path, rows: list[dict[str, str]], files: dict[str, bytes]) -> Path:
    root.mkdir()
    (root / "manifest.csv").write_text(manifest_text(rows))
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_folder_is_listed_once(db, store, tmp_path, monkeypatch):
    """A folder bundle is listed once, not once per file looked up (quadratic before)."""
    rows, files = _bundle_of(8)
    root = _folder(tmp_path / "bundle", rows, {f"img/{k}": v for k, v in files.items()})
    for r in rows:
        r["gsu_file"], r["swe_file"] = f"img/{r['gsu_file']}", f"img/{r['swe_file']}"
    (root / "manifest.csv").write_text(manifest_text(rows))
    listed: list[str] = []
    scandir = os.scandir

    def counting(path=".", *args):
        if str(path).startswith(str(tmp_path)):
            listed.append(str(path))
        return scandir(path, *args)

    monkeypatch.setattr(os, "scandir", counting)
    report = import_bundle(open_bundle(root), db, store)
    assert report.imported == [r["patient_code"] for r in rows]
    assert sorted(listed) == [str(root), str(root / "img")]


def test_symbolic_links_in_a_folder_are_refused_by_name(db, store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.png").write_bytes(png_bytes(9))
    (elsewhere / "manifest.csv").write_text(manifest_text([row("P1", "a.png")]))
    rows = [row("P1", "a.png"), row("P2", "linked.png"), row("P3", "dir/b.png")]
    root = _folder(tmp_path / "bundle", rows, {"a.png": png_bytes(1)})
    (root / "linked.png").symlink_to(elsewhere / "secret.png")
    (root / "dir").symlink_to(elsewhere)
    (elsewhere / "b.png").write_bytes(png_bytes(2))
    report = import_bundle(open_bundle(root), db, store)
    assert not report.committed
    assert {(p.row, p.file) for p in report.problems} == {(3, "linked.png"), (4, "dir/b.png")}
    assert all("symbolic links are not accepted" in p.reason for p in report.problems)
    (root / "manifest.csv").unlink()
    (root / "manifest.csv").symlink_to(elsewhere / "manifest.csv")
    report = import_bundle(open_bundle(root), db, store)
    assert "manifest.csv is a link: symbolic links are not accepted" in report.problems[0].reason
    assert _counts(db) == (0, 0, 0)


def test_stale_staging_is_swept_and_a_live_one_kept(db, store):
    stale, live = store.staging(), store.staging()
    old = stale.write(b"left by a killed import", ".png")
    live.write(b"still checking", ".png")
    past = time.time() - 2 * ORPHAN_GRACE.total_seconds()
    os.utime(old, (past, past))
    os.utime(stale.folder, (past, past))
    swept = sweep_orphans(db, store)
    assert swept == [old.relative_to(store.root).as_posix()]
    assert not stale.folder.exists() and live.folder.exists()
