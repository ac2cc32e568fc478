"""De-identification: no PHI in stored bytes or in the JSON header, calibration kept."""

from __future__ import annotations

import io
import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundImageStorage,
)

from core.common.store import ImageStore
from core.imaging.deid import (
    KEPT,
    REGION_ATTRIBUTES,
    UID_KEY_PATH,
    deidentify,
    header_to_json,
    remap_uid,
    site_uid_key,
)
from core.imaging.imageio import ImageReadError, decode_image, deidentified_dicom_bytes
from core.services.maintenance import startup_checks
from db.engine import Database
from tests.dicom_factory import (
    ORIGINAL_SOP_INSTANCE_UID,
    PHI_STRINGS,
    UID_ROOT,
    US_REGION,
    make_dicom,
)

PSEUDONYM = "RF-0042"
KINDS = [
    ("RGB", ExplicitVRLittleEndian, 1),
    ("YBR_FULL_422", JPEGBaseline8Bit, 1),
    ("RGB", JPEG2000Lossless, 1),
    ("MONOCHROME2", RLELossless, 3),
    ("PALETTE COLOR", ExplicitVRLittleEndian, 1),
]
# The factory's file meta names the sending station; that is PHI too.
LEAKS = (*PHI_STRINGS, "REALHOSP")


@pytest.fixture(autouse=True)
def _site_folder(data_dir: Path) -> Iterator[None]:
    """The UID secret is created in the data folder: keep it in a throwaway one."""
    yield


def _read(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


def _all_tags(ds: Dataset) -> list[int]:
    tags: list[int] = []
    ds.walk(lambda _ds, elem: tags.append(elem.tag))
    return tags


def test_factory_really_writes_the_phi() -> None:
    """Guards the tests below: they prove nothing if the PHI was never there."""
    original = make_dicom("RGB")
    for text in LEAKS:
        assert text.encode() in original, text


@pytest.mark.parametrize(("photometric", "syntax", "frames"), KINDS)
def test_no_phi_in_stored_bytes(photometric: str, syntax: str, frames: int) -> None:
    stored = deidentified_dicom_bytes(
        make_dicom(photometric, transfer_syntax=syntax, frames=frames), pseudonym=PSEUDONYM
    )
    for text in LEAKS:
        assert text.encode() not in stored, text


@pytest.mark.parametrize(("photometric", "syntax", "frames"), KINDS)
def test_no_phi_in_header_json(photometric: str, syntax: str, frames: int) -> None:
    data = make_dicom(photometric, transfer_syntax=syntax, frames=frames)
    header = decode_image(data, name="scan.dcm", pseudonym=PSEUDONYM).dicom_header
    text = json.dumps(header, allow_nan=False)
    for phi in LEAKS:
        assert phi not in text, phi


def test_preamble_contents_are_not_stored() -> None:
    original = make_dicom("RGB")
    with_preamble = b"Doe Jane 123456".ljust(128, b"\0") + original[128:]
    stored = deidentified_dicom_bytes(with_preamble, pseudonym=PSEUDONYM)
    assert stored[:128] == b"\0" * 128


def test_pseudonym_replaces_name_and_id() -> None:
    ds = _read(deidentified_dicom_bytes(make_dicom("RGB"), pseudonym=PSEUDONYM))
    assert str(ds.PatientName) == PSEUDONYM
    assert ds.PatientID == PSEUDONYM
    assert ds.PatientBirthDate == ""
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113106", "113108"]


def test_kept_attributes() -> None:
    ds = _read(deidentified_dicom_bytes(make_dicom("RGB"), pseudonym=PSEUDONYM))
    assert (ds.StudyDate, ds.AcquisitionDate) == ("20240315", "20240316")
    assert (ds.PatientSex, ds.PatientAge) == ("F", "067Y")
    assert (ds.Modality, ds.Manufacturer, ds.ManufacturerModelName) == (
        "US",
        "GE Healthcare",
        "LOGIQ E9",
    )
    assert ds.SOPClassUID == UltrasoundImageStorage


def test_ultrasound_regions_are_kept_with_their_values() -> None:
    ds = _read(deidentified_dicom_bytes(make_dicom("RGB"), pseudonym=PSEUDONYM))
    (region,) = ds.SequenceOfUltrasoundRegions
    for keyword, value in US_REGION.items():
        assert getattr(region, keyword) == value, keyword
    header = decode_image(make_dicom("RGB"), name="s.dcm").dicom_header
    assert header is not None
    assert header["SequenceOfUltrasoundRegions"] == [US_REGION]


def test_private_tags_overlays_and_unlisted_sequences_are_gone() -> None:
    ds = _read(deidentified_dicom_bytes(make_dicom("RGB"), pseudonym=PSEUDONYM))
    tags = _all_tags(ds)
    assert not [tag for tag in tags if tag >> 16 & 1]  # odd group = private
    assert not [tag for tag in tags if 0x6000 <= tag >> 16 <= 0x60FF]
    for keyword in (
        "ReferencedImageSequence",
        "FrameOfReferenceUID",
        "ContentCreatorName",
        "InstitutionName",
        "OtherPatientIDs",
        "StationName",
        "DeviceSerialNumber",
    ):
        assert keyword not in ds, keyword
    assert "SourceApplicationEntityTitle" not in ds.file_meta


def test_only_listed_attributes_survive() -> None:
    ds = _read(deidentified_dicom_bytes(make_dicom("PALETTE COLOR", frames=2), pseudonym=PSEUDONYM))
    listed = {kept.keyword for kept in KEPT}
    assert {elem.keyword for elem in ds} <= listed
    for region in ds.SequenceOfUltrasoundRegions:
        assert {elem.keyword for elem in region} <= REGION_ATTRIBUTES


def test_uids_are_replaced_deterministically() -> None:
    original = make_dicom("RGB")
    first = _read(deidentified_dicom_bytes(original, pseudonym=PSEUDONYM))
    again = _read(deidentified_dicom_bytes(original, pseudonym="RF-0099"))
    assert first.SOPInstanceUID != ORIGINAL_SOP_INSTANCE_UID
    assert not first.StudyInstanceUID.startswith(UID_ROOT)
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert first[keyword].value == again[keyword].value, keyword
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert len({first.SOPInstanceUID, first.StudyInstanceUID, first.SeriesInstanceUID}) == 3


def test_replacement_uids_need_the_site_secret(data_dir: Path) -> None:
    """Hashing the original UID without the key (or with another key) does not relink."""
    ds = _read(deidentified_dicom_bytes(make_dicom("RGB"), pseudonym=PSEUDONYM))
    key = site_uid_key()
    assert ds.SOPInstanceUID == remap_uid(ORIGINAL_SOP_INSTANCE_UID, key)
    assert ds.SOPInstanceUID != remap_uid(ORIGINAL_SOP_INSTANCE_UID, b"another-site-secret!")
    assert (
        ds.SOPInstanceUID != f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, ORIGINAL_SOP_INSTANCE_UID).int}"
    )
    assert len(ds.SOPInstanceUID) <= 64


def test_site_secret_is_created_once_and_private(data_dir: Path) -> None:
    key = site_uid_key()
    path = data_dir / UID_KEY_PATH
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 32
    assert site_uid_key() == key
    assert site_uid_key(data_dir) == key


def test_site_secret_is_created_on_first_start(db: Database, store: ImageStore) -> None:
    path = store.root.parent / UID_KEY_PATH
    assert not path.exists()
    startup_checks(db, store)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_damaged_site_secret_is_refused(data_dir: Path) -> None:
    site_uid_key()
    (data_dir / UID_KEY_PATH).write_text("not hex\n")
    with pytest.raises(RuntimeError, match="restore it from a backup"):
        site_uid_key()


def test_stored_file_decodes_to_the_same_pixels() -> None:
    original = make_dicom("YBR_FULL_422", transfer_syntax=JPEGBaseline8Bit)
    stored = deidentified_dicom_bytes(original, pseudonym=PSEUDONYM)
    assert _read(stored).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    np.testing.assert_array_equal(
        decode_image(stored, name="s.dcm").pixels, decode_image(original, name="o.dcm").pixels
    )


def test_deidentify_returns_a_copy() -> None:
    ds = _read(make_dicom("RGB"))
    clean = deidentify(ds, pseudonym=PSEUDONYM)
    assert str(ds.PatientName) == "Doe^Jane"
    assert str(clean.PatientName) == PSEUDONYM


def test_header_to_json_refuses_an_identified_header() -> None:
    with pytest.raises(ValueError, match="not de-identified"):
        header_to_json(_read(make_dicom("RGB")))


def test_header_to_json_is_json_safe() -> None:
    clean = deidentify(_read(make_dicom("PALETTE COLOR")), pseudonym=PSEUDONYM)
    header = header_to_json(clean)
    assert json.loads(json.dumps(header, allow_nan=False)) == header
    assert "PixelData" not in header
    assert header["RedPaletteColorLookupTableData"] == "<512 bytes>"
    assert header["Rows"] == 64 and isinstance(header["Rows"], int)
    assert header["TransferSyntaxUID"] == ExplicitVRLittleEndian


@pytest.mark.parametrize("bad", ["Doe^Jane", "a\\b", "x" * 65, "tab\there"])
def test_unsafe_pseudonyms_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="pseudonym"):
        deidentify(_read(make_dicom("RGB")), pseudonym=bad)


def test_stored_dicom_needs_a_pseudonym() -> None:
    with pytest.raises(ValueError, match="pseudonym"):
        deidentified_dicom_bytes(make_dicom("RGB"), pseudonym="")


def test_stored_dicom_refuses_other_formats() -> None:
    buf = io.BytesIO()
    Image.new("L", (64, 64)).save(buf, format="PNG")
    with pytest.raises(ImageReadError, match="not a DICOM"):
        deidentified_dicom_bytes(buf.getvalue(), pseudonym=PSEUDONYM, name="a.png")
