"""Header de-identification checked against every attribute of PS3.15 Annex E Table E.1-1.

The table comes from the ``dicom-anonymizer`` package (a dev requirement), which scrapes it
from the standard's Part 15 (release 2026c); the free-text fields the issue found leaking
are added by hand. A file holding all of them goes through the importer's two doors, the
JSON header and the stored file, and only the attributes documented in ``core.imaging.deid.KEPT``
may come out, with their Annex E action overridden as that table says.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as annex_e
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence

from core.imaging.deid import EMPTY, HMAC_UID, KEEP, KEPT, PSEUDONYM
from core.imaging.imageio import decode_image, deidentified_dicom_bytes
from tests.dicom_factory import make_dicom

PSEUDONYM_CODE = "RF-0042"
CRAFTED_FREE_TEXT = (
    "Allergies",
    "MedicalAlerts",
    "PatientState",
    "PersonAddress",
    "OrderCallbackPhoneNumber",
    "ScheduledProcedureStepDescription",
    "RequestedProcedureComments",
    "PlacerOrderNumberImagingServiceRequest",
    "CurrentPatientLocation",
    "TextValue",
    "ContentDescription",
)
_ACTIONS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
_NUMBERS = {"SL": 7, "SS": 7, "UL": 7, "US": 7, "SV": 7, "UV": 7, "FL": 1.5, "FD": 1.5}
_FIXED = {
    "AS": "042Y",
    "DA": "19710910",
    "DT": "19710910112233",
    "TM": "112233",
    "DS": "7.5",
    "IS": "42",
    "AT": 0x00100010,
}
_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_MARKER = re.compile(rb"PHI\d{4}")


def _table() -> dict[int, str]:
    """Tag -> Annex E action for every plain (group, element) entry of Table E.1-1."""
    out: dict[int, str] = {}
    for category, action in _ACTIONS.items():
        for entry in getattr(annex_e, category):
            if len(entry) == 2:
                out[(entry[0] << 16) | entry[1]] = action
    return out


TABLE = _table()
KEPT_BY_KEYWORD = {kept.keyword: kept for kept in KEPT}


def _value(vr: str, marker: str) -> object:
    if vr in _TEXT_VRS:
        return marker if vr != "CS" else marker.upper()
    if vr == "UI":
        return f"1.2.826.0.1.3680043.99.{int(marker[3:]) + 1}"
    if vr == "SQ":
        item = Dataset()
        item.PatientName = marker + "^Nested"
        item.add_new(0x00091010, "LO", marker + "Private")
        return Sequence([item])
    if vr in _NUMBERS:
        return _NUMBERS[vr]
    if vr in _FIXED:
        return _FIXED[vr]
    return marker.encode() + b"\0\0"  # OB, OW, UN and the other binary VRs


def _crafted() -> tuple[bytes, dict[int, str]]:
    """A real ultrasound file plus every table attribute; returns it and tag -> marker."""
    ds = dcmread(io.BytesIO(make_dicom("RGB")))
    markers: dict[int, str] = {}
    keep_factory_value = {k.keyword for k in KEPT if k.action == KEEP}
    tags = list(TABLE) + [tag for tag in (_tag(k) for k in CRAFTED_FREE_TEXT) if tag not in TABLE]
    for index, tag in enumerate(tags):
        if keyword_for_tag(tag) in keep_factory_value or tag >> 16 == 0:
            continue  # group 0000 is the network command set: never in a file
        marker = f"PHI{index:04d}"
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            vr = "LO"  # newer than pydicom's dictionary: an unknown tag to the scrubber
        (ds.file_meta if tag >> 16 == 2 else ds).add_new(tag, vr, _value(vr, marker))
        markers[tag] = marker
    ds.add_new(0x50000010, "US", 3)  # a curve group
    ds.add_new(0x60004000, "LT", "PHI9998")  # overlay comments
    ds.private_block(0x0011, "ACME US 2.0", create=True).add_new(0x01, "LT", "PHI9999")
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue(), markers


def _tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return tag


@pytest.fixture(autouse=True)
def _site_folder(data_dir: Path) -> Iterator[None]:
    yield


@pytest.fixture(scope="module")
def crafted() -> tuple[bytes, dict[int, str]]:
    return _crafted()


def test_the_table_is_the_full_one() -> None:
    """Guards the tests below: a truncated table would prove little."""
    assert len(TABLE) > 600
    for keyword in ("PatientName", "PatientAddress", "InstitutionName", "SOPInstanceUID"):
        assert _tag(keyword) in TABLE, keyword


def test_crafted_file_really_holds_every_marker(crafted: tuple[bytes, dict[int, str]]) -> None:
    data, markers = crafted
    for tag in (_tag(k) for k in CRAFTED_FREE_TEXT):
        assert markers[tag].encode() in data
    text_markers = [m for t, m in markers.items() if m.encode() in data]
    assert len(text_markers) > 400  # the numeric and date VRs carry no marker text


def test_no_table_attribute_survives_unless_documented(
    crafted: tuple[bytes, dict[int, str]],
) -> None:
    data, _ = crafted
    stored = dcmread(io.BytesIO(deidentified_dicom_bytes(data, pseudonym=PSEUDONYM_CODE)))
    found: list[int] = []
    stored.walk(lambda _ds, elem: found.append(elem.tag))
    leaked = sorted(
        keyword_for_tag(tag) or f"{tag:08X}"
        for tag in found
        if tag in TABLE and keyword_for_tag(tag) not in KEPT_BY_KEYWORD
    )
    assert leaked == []
    meta_keywords = {elem.keyword for elem in stored.file_meta}
    assert meta_keywords <= {
        "FileMetaInformationGroupLength",
        "FileMetaInformationVersion",
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "ImplementationVersionName",
    }
    assert stored.file_meta.MediaStorageSOPInstanceUID == stored.SOPInstanceUID


def test_kept_table_attributes_override_the_action_the_docs_name() -> None:
    for kept in KEPT:
        tag = _tag(kept.keyword)
        assert TABLE.get(tag, "-") == kept.annex_e, kept.keyword


def test_kept_table_attributes_are_transformed(crafted: tuple[bytes, dict[int, str]]) -> None:
    data, _ = crafted
    stored = dcmread(io.BytesIO(deidentified_dicom_bytes(data, pseudonym=PSEUDONYM_CODE)))
    for kept in KEPT:
        tag = _tag(kept.keyword)
        if tag not in TABLE or tag not in stored:
            continue
        value = str(stored[tag].value)
        if kept.action == PSEUDONYM:
            assert value == PSEUDONYM_CODE, kept.keyword
        elif kept.action == EMPTY:
            assert value == "", kept.keyword
        elif kept.action == HMAC_UID:
            assert value.startswith("2.25.") and not value.startswith("1.2.826"), kept.keyword


def test_no_marker_in_stored_file_or_header(crafted: tuple[bytes, dict[int, str]]) -> None:
    data, _ = crafted
    stored = deidentified_dicom_bytes(data, pseudonym=PSEUDONYM_CODE)
    header = decode_image(data, name="crafted.dcm", pseudonym=PSEUDONYM_CODE).dicom_header
    text = json.dumps(header, allow_nan=False)
    assert _MARKER.findall(stored) == []
    assert _MARKER.findall(text.encode()) == []
    for keyword in CRAFTED_FREE_TEXT:
        assert keyword not in text, keyword


def test_every_kept_attribute_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "imaging-pipeline.md").read_text()
    assert [k.keyword for k in KEPT if f"`{k.keyword}`" not in doc] == []
