"""De-identify DICOM headers before anything is stored or shown.

A table-driven take on the DICOM PS3.15 Annex E Basic Application Confidentiality Profile,
with two of its standard options:

* **Retain Longitudinal Temporal Information with Full Dates** (code 113106): study,
  series, acquisition and content dates stay, because the study's cohort rule needs the
  ultrasound-to-CT interval (CT within 1 month, Yi et al., Sci Rep 2022). Birth date goes.
* **Retain Patient Characteristics** (code 113108): sex, age, size and weight stay; the
  study's outcome (SMI = L3 muscle area / height²) and its covariates depend on them.

Besides the table, blanket rules make the profile hard to leak through: every private tag,
every curve (50xx) and overlay (60xx) group and every tag unknown to the DICOM dictionary
goes, and every person name (PN) other than the patient's is emptied. Instance UIDs are
replaced by hashes of the originals, so importing the same file twice yields the same UIDs.
Manufacturer, model, modality and the ``SequenceOfUltrasoundRegions`` (the physical pixel
spacing) stay untouched.

Text burned into the pixels is not touched here: ultrasound screens carry it, and the crop
box step keeps it out of what the models see.
"""

from __future__ import annotations

import copy
import math
import re
import uuid
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

REMOVE = "X"
EMPTY = "Z"
PSEUDONYM = "D"

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

ACTIONS: tuple[tuple[str, str], ...] = (
    # Patient identity: the pseudonym replaces name and ID; Type 2 elements are emptied.
    ("PatientName", PSEUDONYM),
    ("PatientID", PSEUDONYM),
    ("PatientBirthDate", EMPTY),
    ("PatientBirthTime", REMOVE),
    ("PatientBirthName", REMOVE),
    ("PatientMotherBirthName", REMOVE),
    ("PatientAddress", REMOVE),
    ("PatientTelephoneNumbers", REMOVE),
    ("PatientComments", REMOVE),
    ("PatientInsurancePlanCodeSequence", REMOVE),
    ("PatientReligiousPreference", REMOVE),
    ("OtherPatientIDs", REMOVE),
    ("OtherPatientIDsSequence", REMOVE),
    ("OtherPatientNames", REMOVE),
    ("IssuerOfPatientID", REMOVE),
    ("MedicalRecordLocator", REMOVE),
    ("EthnicGroup", REMOVE),
    ("Occupation", REMOVE),
    ("MilitaryRank", REMOVE),
    ("BranchOfService", REMOVE),
    ("CountryOfResidence", REMOVE),
    ("RegionOfResidence", REMOVE),
    ("ResponsiblePerson", REMOVE),
    ("ResponsibleOrganization", REMOVE),
    ("AdditionalPatientHistory", REMOVE),
    ("AdmissionID", REMOVE),
    ("AdmittingDiagnosesDescription", REMOVE),
    ("ReferencedPatientSequence", REMOVE),
    # Staff and site.
    ("InstitutionName", REMOVE),
    ("InstitutionAddress", REMOVE),
    ("InstitutionalDepartmentName", REMOVE),
    ("InstitutionCodeSequence", REMOVE),
    ("ReferringPhysicianName", EMPTY),
    ("ReferringPhysicianAddress", REMOVE),
    ("ReferringPhysicianTelephoneNumbers", REMOVE),
    ("ReferringPhysicianIdentificationSequence", REMOVE),
    ("PerformingPhysicianName", REMOVE),
    ("PerformingPhysicianIdentificationSequence", REMOVE),
    ("PhysiciansOfRecord", REMOVE),
    ("PhysiciansOfRecordIdentificationSequence", REMOVE),
    ("NameOfPhysiciansReadingStudy", REMOVE),
    ("PhysiciansReadingStudyIdentificationSequence", REMOVE),
    ("RequestingPhysician", REMOVE),
    ("OperatorsName", REMOVE),
    ("OperatorIdentificationSequence", REMOVE),
    # Device and workflow identifiers.
    ("StationName", REMOVE),
    ("DeviceSerialNumber", REMOVE),
    ("SoftwareVersions", REMOVE),
    ("AccessionNumber", EMPTY),
    ("StudyID", EMPTY),
    ("RequestedProcedureID", REMOVE),
    ("ScheduledProcedureStepID", REMOVE),
    ("PerformedProcedureStepID", REMOVE),
    ("RequestAttributesSequence", REMOVE),
    ("ReferencedStudySequence", REMOVE),
    ("OriginalAttributesSequence", REMOVE),
    ("ContentSequence", REMOVE),
    ("IconImageSequence", REMOVE),
    # Free text that readers and technologists type.
    ("StudyDescription", REMOVE),
    ("SeriesDescription", REMOVE),
    ("ProtocolName", REMOVE),
    ("ImageComments", REMOVE),
    ("StudyComments", REMOVE),
    ("RequestedProcedureDescription", REMOVE),
    ("PerformedProcedureStepDescription", REMOVE),
    ("CommentsOnThePerformedProcedureStep", REMOVE),
    ("ReasonForStudy", REMOVE),
    ("ReasonForTheRequestedProcedure", REMOVE),
    ("DerivationDescription", REMOVE),
    ("TextString", REMOVE),
    # Signatures and encrypted copies of the original attributes.
    ("DigitalSignaturesSequence", REMOVE),
    ("MACParametersSequence", REMOVE),
    ("EncryptedAttributesSequence", REMOVE),
    ("DataSetTrailingPadding", REMOVE),
)
"""(keyword, action): X removes, Z empties, D writes the pseudonym. Applied at every depth."""

_ACTION_BY_KEYWORD = dict(ACTIONS)
_DICOM_ROOT = "1.2.840.10008."
_CURVE_GROUPS = range(0x5000, 0x5100)
_OVERLAY_GROUPS = range(0x6000, 0x6100)
_PSEUDONYM_RE = re.compile(r"[\x20-\x7e]{0,64}")
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def deidentify(ds: Dataset, *, pseudonym: str) -> Dataset:
    """Return a de-identified deep copy of ``ds``; the original is left as it was.

    ``pseudonym`` becomes PatientName and PatientID (at most 64 printable ASCII characters,
    no ``\\``, ``^`` or ``=``). An empty pseudonym blanks both, for files whose patient is
    not assigned yet.
    """
    out = copy.deepcopy(ds)
    deidentify_in_place(out, pseudonym=pseudonym)
    return out


def deidentify_in_place(ds: Dataset, *, pseudonym: str) -> None:
    """De-identify ``ds`` itself: cheaper than :func:`deidentify` for a freshly read file."""
    _check_pseudonym(pseudonym)
    _scrub(ds, pseudonym)
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
            "run core.deid.deidentify() on it first"
        )
    out: dict[str, Any] = {}
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.update(_dataset_to_json(meta))
    out.update(_dataset_to_json(ds))
    return out


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


def _scrub(ds: Dataset, pseudonym: str) -> None:
    """Apply the table and the blanket rules to ``ds`` and to every nested item."""
    for tag in list(ds.keys()):
        elem = ds[tag]
        if _drop_whole(tag) or not elem.keyword:
            del ds[tag]
            continue
        action = _ACTION_BY_KEYWORD.get(elem.keyword)
        if action == REMOVE:
            del ds[tag]
        elif action == EMPTY:
            elem.value = Sequence() if elem.VR == "SQ" else ""
        elif action == PSEUDONYM:
            elem.value = pseudonym
        elif elem.VR == "PN":
            elem.value = ""
        elif elem.VR == "UI":
            elem.value = _remap_uids(elem.value)
        elif elem.VR == "SQ":
            for item in elem.value:
                _scrub(item, pseudonym)


def _drop_whole(tag: BaseTag) -> bool:
    return tag.is_private or tag.group in _CURVE_GROUPS or tag.group in _OVERLAY_GROUPS


def _remap_uids(value: object) -> object:
    if isinstance(value, MultiValue | list):
        return [_remap_uid(str(v)) for v in value]
    return _remap_uid(str(value)) if value else value


def _remap_uid(uid: str) -> str:
    """Hash an instance UID into a new ``2.25.<UUID>`` UID; standard class/syntax UIDs stay.

    A name-based UUID (v5) of the original, so the mapping is the same on every machine.
    pydicom's ``generate_uid(prefix=None, entropy_srcs=...)`` ignores the entropy and
    returns a random UUID, which would break that.
    """
    if not uid or uid.startswith(_DICOM_ROOT):
        return uid
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, uid).int}"


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item
