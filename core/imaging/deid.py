"""De-identify DICOM headers before anything is stored or shown: keep a list, drop the rest.

An allow-list take on the DICOM PS3.15 Annex E Basic Application Confidentiality Profile:
only the attributes in :data:`KEPT` survive, at the top level and, for the ultrasound
regions, inside the sequence items (:data:`REGION_ATTRIBUTES`). Every other attribute goes,
whatever it is: PS3.15 Table E.1-1 entries, free text the profile's table forgets, retired,
unknown and private tags, curves, overlays and every other sequence, at every depth. A
scanner that invents a new field for a patient's address cannot leak it.

Two standard options decide what the pipeline keeps beyond pixels and calibration:

* **Retain Longitudinal Temporal Information with Full Dates** (code 113106): study,
  series, acquisition and content dates stay, because the study's cohort rule needs the
  ultrasound-to-CT interval (CT within 1 month, Yi et al., Sci Rep 2022). Birth date goes.
* **Retain Patient Characteristics** (code 113108): sex, age, size and weight stay; the
  study's outcome (SMI = L3 muscle area / height²) and its covariates depend on them.

Instance UIDs are replaced by an HMAC-SHA256 of the original under a site secret
(:func:`site_uid_key`), so importing the same file twice yields the same UIDs while a
hospital that holds the original UIDs cannot relink them by hashing. docs/imaging-pipeline.md
lists every kept attribute, why it is kept and which Table E.1-1 action it overrides.

Text burned into the pixels is handled by :mod:`core.imaging.pixel_deid`, which then calls
:func:`mark_pixels_cleaned`.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import math
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

KEEP = "keep"
EMPTY = "empty"
PSEUDONYM = "pseudonym"
HMAC_UID = "hmac-uid"
REGIONS = "regions"
WRITTEN = "written"

DEIDENTIFICATION_METHOD = (
    "DICOM PS3.15 Annex E Basic Profile",
    "Retain Longitudinal Full Dates Option",
    "Retain Patient Characteristics Option",
)
"""Values of DeidentificationMethod (LO, so one short value per profile or option)."""
_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)
CLEAN_PIXEL_METHOD = "Clean Pixel Data Option"
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
"""CID 7050 code recorded once burned-in text has been blanked from the pixels."""

UID_KEY_PATH = Path("secrets") / "uid-key"
"""The site secret for replacement UIDs, relative to the data folder (mode 600)."""
_UID_KEY_BYTES = 32


@dataclass(frozen=True)
class Kept:
    """One attribute that survives de-identification, with the reason and the override."""

    keyword: str
    action: str
    why: str
    annex_e: str
    """The PS3.15 Table E.1-1 action this overrides ("-" when the table does not list it)."""


_PIXEL_WHY = "describes the stored pixels; without it the image cannot be decoded"
_PIXEL_KEYWORDS = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "FrameIncrementPointer",
    "FrameTime",
    "FrameTimeVector",
    "PixelAspectRatio",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "PixelData",
)
_DATE_WHY = "Retain Longitudinal Full Dates option: the ultrasound-to-CT interval of the cohort"
_PATIENT_WHY = "Retain Patient Characteristics option: covariates and SMI = area / height²"
_TYPE2_WHY = "Type 2 in the General Study module: kept present but empty"
_UID_WHY = "identifies the instance/study/series; replaced by an HMAC under the site secret"

KEPT: tuple[Kept, ...] = (
    Kept("SpecificCharacterSet", KEEP, "needed to decode the kept text values", "-"),
    Kept("SOPClassUID", KEEP, "a standard class UID (ultrasound image), not an instance", "-"),
    Kept("SOPInstanceUID", HMAC_UID, _UID_WHY, "U"),
    Kept("StudyInstanceUID", HMAC_UID, _UID_WHY, "U"),
    Kept("SeriesInstanceUID", HMAC_UID, _UID_WHY, "U"),
    Kept("PatientName", PSEUDONYM, "holds the study pseudonym, never the name", "Z"),
    Kept("PatientID", PSEUDONYM, "holds the study pseudonym, never the ID", "Z/D"),
    Kept("PatientBirthDate", EMPTY, _TYPE2_WHY.replace("General Study", "Patient"), "Z"),
    Kept("PatientSex", KEEP, _PATIENT_WHY, "Z"),
    Kept("PatientAge", KEEP, _PATIENT_WHY, "X"),
    Kept("PatientSize", KEEP, _PATIENT_WHY, "X"),
    Kept("PatientWeight", KEEP, _PATIENT_WHY, "X"),
    Kept("StudyDate", KEEP, _DATE_WHY, "Z"),
    Kept("StudyTime", KEEP, _DATE_WHY, "Z"),
    Kept("SeriesDate", KEEP, _DATE_WHY, "X/D"),
    Kept("SeriesTime", KEEP, _DATE_WHY, "X/D"),
    Kept("AcquisitionDate", KEEP, _DATE_WHY, "X/Z"),
    Kept("AcquisitionTime", KEEP, _DATE_WHY, "X/Z"),
    Kept("AcquisitionDateTime", KEEP, _DATE_WHY, "X/Z/D"),
    Kept("ContentDate", KEEP, _DATE_WHY, "Z/D"),
    Kept("ContentTime", KEEP, _DATE_WHY, "Z/D"),
    Kept("ReferringPhysicianName", EMPTY, _TYPE2_WHY, "Z"),
    Kept("AccessionNumber", EMPTY, _TYPE2_WHY, "Z"),
    Kept("StudyID", EMPTY, _TYPE2_WHY, "Z"),
    Kept("Modality", KEEP, "an enumerated code (US) naming the kind of image", "-"),
    Kept("Manufacturer", KEEP, "vendor: screen layouts and SWE presets differ by vendor", "-"),
    Kept("ManufacturerModelName", KEEP, "model: SWE scale presets are stored per model", "-"),
    Kept("BurnedInAnnotation", KEEP, "says whether the pixels still carry text", "-"),
    Kept(
        "SequenceOfUltrasoundRegions",
        REGIONS,
        "ultrasound views, colour region and mm per pixel; only the region attributes of "
        "PS3.3 C.8.5.5 stay inside its items",
        "-",
    ),
    *(Kept(keyword, KEEP, _PIXEL_WHY, "-") for keyword in _PIXEL_KEYWORDS),
    Kept("PatientIdentityRemoved", WRITTEN, "written by this module: YES", "-"),
    Kept("DeidentificationMethod", WRITTEN, "written by this module: profile and options", "-"),
    Kept("DeidentificationMethodCodeSequence", WRITTEN, "written by this module: CID 7050", "-"),
    Kept(
        "LongitudinalTemporalInformationModified",
        WRITTEN,
        "written by this module: UNMODIFIED",
        "-",
    ),
)
"""Every attribute that may survive at the top level; everything else is removed."""

REGION_ATTRIBUTES = frozenset(
    {
        "RegionSpatialFormat",
        "RegionDataType",
        "RegionFlags",
        "RegionLocationMinX0",
        "RegionLocationMinY0",
        "RegionLocationMaxX1",
        "RegionLocationMaxY1",
        "ReferencePixelX0",
        "ReferencePixelY0",
        "PhysicalUnitsXDirection",
        "PhysicalUnitsYDirection",
        "ReferencePixelPhysicalValueX",
        "ReferencePixelPhysicalValueY",
        "PhysicalDeltaX",
        "PhysicalDeltaY",
        "TransducerFrequency",
        "TransducerType",
        "PulseRepetitionFrequency",
        "DopplerCorrectionAngle",
        "SteeringAngle",
        "DopplerSampleVolumeXPosition",
        "DopplerSampleVolumeYPosition",
        "TMLinePositionX0",
        "TMLinePositionY0",
        "TMLinePositionX1",
        "TMLinePositionY1",
        "PixelComponentOrganization",
        "PixelComponentMask",
        "PixelComponentRangeStart",
        "PixelComponentRangeStop",
        "PixelComponentPhysicalUnits",
        "PixelComponentDataType",
        "NumberOfTableBreakPoints",
        "TableOfXBreakPoints",
        "TableOfYBreakPoints",
        "NumberOfTableEntries",
        "TableOfPixelValues",
        "TableOfParameterValues",
    }
)
"""Numeric and enumerated attributes of a SequenceOfUltrasoundRegions item (PS3.3 C.8.5.5)."""

_KEPT_BY_KEYWORD = {kept.keyword: kept for kept in KEPT}
_DICOM_ROOT = "1.2.840.10008."
_PSEUDONYM_RE = re.compile(r"[\x20-\x7e]{0,64}")
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def site_uid_key(data_dir: Path | None = None) -> bytes:
    """The site secret for replacement UIDs, created (mode 600) the first time it is asked for.

    It lives in the data folder, outside the database and the exports, and goes into
    backups: a restored site must map the same original UID to the same replacement.
    """
    if data_dir is None:
        from core.common import config

        data_dir = config.data_dir()
    path = Path(data_dir) / UID_KEY_PATH
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(_UID_KEY_BYTES) + "\n")
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise RuntimeError(
            f"{path} does not hold a usable UID key; restore it from a backup, or delete it "
            "to start a new one (new imports would then get different UIDs)"
        )
    return key


def deidentify(ds: Dataset, *, pseudonym: str, uid_key: bytes | None = None) -> Dataset:
    """Return a de-identified deep copy of ``ds``; the original is left as it was.

    ``pseudonym`` becomes PatientName and PatientID (at most 64 printable ASCII characters,
    no ``\\``, ``^`` or ``=``). An empty pseudonym blanks both, for files whose patient is
    not assigned yet. ``uid_key`` defaults to the site secret (:func:`site_uid_key`).
    """
    out = copy.deepcopy(ds)
    deidentify_in_place(out, pseudonym=pseudonym, uid_key=uid_key)
    return out


def deidentify_in_place(ds: Dataset, *, pseudonym: str, uid_key: bytes | None = None) -> None:
    """De-identify ``ds`` itself: cheaper than :func:`deidentify` for a freshly read file."""
    _check_pseudonym(pseudonym)
    key = site_uid_key() if uid_key is None else uid_key
    for tag in list(ds.keys()):
        elem = ds[tag]
        kept = None if tag.is_private else _KEPT_BY_KEYWORD.get(elem.keyword)
        if kept is None or kept.action == WRITTEN:
            del ds[tag]
        elif kept.action == EMPTY:
            elem.value = ""
        elif kept.action == PSEUDONYM:
            elem.value = pseudonym
        elif kept.action == HMAC_UID:
            elem.value = remap_uid(str(elem.value or ""), key)
        elif kept.action == REGIONS:
            for item in elem.value:
                _keep_only(item, REGION_ATTRIBUTES)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = list(DEIDENTIFICATION_METHOD)
    ds.DeidentificationMethodCodeSequence = Sequence(
        [_code_item(value, meaning) for value, meaning in _METHOD_CODES]
    )
    ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    ds.preamble = b"\0" * 128
    old_meta = getattr(ds, "file_meta", None)
    meta = FileMetaDataset()
    if old_meta is not None and "TransferSyntaxUID" in old_meta:
        meta.TransferSyntaxUID = old_meta.TransferSyntaxUID
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta


def mark_pixels_cleaned(ds: Dataset) -> None:
    """Record on a de-identified header that burned-in text was blanked from its pixels."""
    ds.BurnedInAnnotation = "NO"
    methods = [str(v) for v in ds.get("DeidentificationMethod") or []]
    if CLEAN_PIXEL_METHOD not in methods:
        ds.DeidentificationMethod = [*methods, CLEAN_PIXEL_METHOD]
    codes = ds.get("DeidentificationMethodCodeSequence") or Sequence()
    if all(item.get("CodeValue") != CLEAN_PIXEL_CODE[0] for item in codes):
        codes.append(_code_item(*CLEAN_PIXEL_CODE))
    ds.DeidentificationMethodCodeSequence = codes


def remap_uid(uid: str, key: bytes) -> str:
    """Map an instance UID to ``2.25.<128-bit HMAC-SHA256>``; standard DICOM UIDs stay.

    Keyed, so nobody without the site secret can recompute the mapping from original UIDs.
    """
    if not uid or uid.startswith(_DICOM_ROOT):
        return uid
    digest = hmac.new(key, uid.encode("ascii", "replace"), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def header_to_json(ds: Dataset) -> dict[str, Any]:
    """JSON-safe dict of a de-identified header, for the ``image.dicom_header`` column.

    Keys are DICOM keywords (``(GGGG,EEEE)`` for tags without one); values are str, int,
    float, None, lists of them, or lists of dicts for sequences. Pixel data is left out and
    other binary values become ``"<N bytes>"``. A header that was not de-identified is
    refused, so PHI cannot reach the database through this door.
    """
    if ds.get("PatientIdentityRemoved") != "YES":
        raise ValueError(
            "header_to_json got a header that is not de-identified; "
            "run core.imaging.deid.deidentify() on it first"
        )
    out: dict[str, Any] = {}
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.update(_dataset_to_json(meta))
    out.update(_dataset_to_json(ds))
    return out


def _keep_only(ds: Dataset, keywords: frozenset[str]) -> None:
    for tag in list(ds.keys()):
        if tag.is_private or ds[tag].keyword not in keywords:
            del ds[tag]


def _dataset_to_json(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.tag in _PIXEL_TAGS:
            continue
        key = elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
        if elem.VR == "SQ":
            out[key] = [_dataset_to_json(item) for item in elem.value]
        elif elem.VR in _BINARY_VRS:
            out[key] = f"<{len(elem.value or b'')} bytes>"
        elif isinstance(elem.value, MultiValue | list | tuple):
            out[key] = [_json_scalar(v) for v in elem.value]
        else:
            out[key] = _json_scalar(elem.value)
    return out


def _json_scalar(value: object) -> str | int | float | None:
    if value is None:
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def _check_pseudonym(pseudonym: str) -> None:
    if not isinstance(pseudonym, str) or not _PSEUDONYM_RE.fullmatch(pseudonym):
        raise ValueError(
            "the pseudonym cannot be written to DICOM: use at most 64 printable ASCII characters"
        )
    if any(ch in pseudonym for ch in "\\^="):
        raise ValueError(
            "the pseudonym contains \\, ^ or =, which DICOM reads as separators; "
            "use letters, digits, '-' or '_'"
        )


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item
