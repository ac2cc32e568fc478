"""Query a PACS for ultrasound studies, propose each patient's GSU and SWE image, import.

Each patient is imported as a one-patient bundle through the zip importer
(``core.cases.importer``), so a PACS study passes exactly the checks a zip does: header and
burned-in text de-identification, image checks, all-or-nothing per patient, and a patient
already imported with the same images is a no-op. The patient's pseudonym comes from the
pseudonym link (``link.py``), so the research database never sees the hospital's patient ID,
and a retrieval cut off half-way is simply run again: finished patients are skipped.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from core.cases.archive import MANIFEST_NAME, Bundle
from core.cases.importer import import_bundle
from core.cases.manifest import COLUMNS, Problem
from core.common.errors import UserError
from core.common.store import ImageStore
from core.imaging import imageio
from core.imaging.color_box import detect_color_box
from core.imaging.dicom_read import parse_dicom_date
from core.imaging.roi_detect import to_rgb_u8
from core.services.pacs.client import PacsClient, PacsError
from core.services.pacs.link import LinkedInstance, PseudonymLink
from db.engine import Database

Progress = Callable[[int, int, str], None]
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (retired)",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (retired)",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}
"""Instances that may hold an ultrasound screen (a scanner's export or a screenshot)."""
SEARCH_LIMIT = 200
"""Studies one search returns at most; the page asks for a narrower search at the limit."""
CLINICAL_KEYS = ("patient_id", "accession_number")
CLINICAL_COLUMNS = tuple(c for c in COLUMNS if c not in ("patient_code", "gsu_file", "swe_file"))


def _iso_date(value: str) -> str:
    """``20000329`` as ``2000-03-29`` for people; anything unparsable is shown as sent."""
    parsed = parse_dicom_date(value)
    return parsed.isoformat() if parsed else value


@dataclass(frozen=True)
class StudyHit:
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    accession_number: str
    description: str
    modalities: str
    instances: int


@dataclass(frozen=True)
class Candidate:
    """One ultrasound image of a study that could be the patient's GSU or SWE."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    series_description: str
    accession_number: str = ""


@dataclass(frozen=True)
class PatientPick:
    """The two images chosen (or proposed) for one patient; either may be None."""

    patient_id: str
    gsu: Candidate | None
    swe: Candidate | None
    note: str = ""


@dataclass
class PatientResult:
    patient_id: str
    pseudonym: str | None = None
    status: str = "not done"
    """``imported``, ``already present``, ``refused`` or ``not done``."""
    problems: list[str] = field(default_factory=list)


@dataclass
class PacsImportReport:
    results: list[PatientResult] = field(default_factory=list)
    stopped: str | None = None
    """Why the run stopped early (the PACS went away); patients done so far are kept."""

    def summary(self) -> str:
        """Patients per outcome, e.g. "2 imported, 1 already present, 0 refused"."""
        outcomes = ["imported", "already present", "refused"] + (
            ["not done"] if self.stopped else []
        )
        return ", ".join(f"{sum(r.status == s for r in self.results)} {s}" for s in outcomes)


class MemoryBundle(Bundle):
    """A bundle held in memory: the one-patient manifest and its two retrieved files."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self._data = files

    def read(self, name: str) -> bytes:
        return self._data[name]


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value or "")


def search_studies(
    client: PacsClient,
    *,
    patient_id: str = "",
    accession_number: str = "",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    modality: str = "US",
) -> list[StudyHit]:
    """QIDO-RS study search by patient ID, accession, study date range and modality."""
    filters: dict[str, str] = {}
    if modality:
        filters["ModalitiesInStudy"] = modality
    if patient_id.strip():
        filters["PatientID"] = patient_id.strip()
    if accession_number.strip():
        filters["AccessionNumber"] = accession_number.strip()
    if date_from or date_to:
        low = date_from.strftime("%Y%m%d") if date_from else ""
        high = date_to.strftime("%Y%m%d") if date_to else ""
        filters["StudyDate"] = f"{low}-{high}"
    return [
        StudyHit(
            study_uid=_text(ds, "StudyInstanceUID"),
            patient_id=_text(ds, "PatientID"),
            patient_name=_text(ds, "PatientName"),
            study_date=_iso_date(_text(ds, "StudyDate")),
            accession_number=_text(ds, "AccessionNumber"),
            description=_text(ds, "StudyDescription"),
            modalities=_text(ds, "ModalitiesInStudy"),
            instances=int(ds.get("NumberOfStudyRelatedInstances", 0) or 0),
        )
        for ds in client.search_studies(filters, limit=SEARCH_LIMIT)
    ]


def ultrasound_images(client: PacsClient, study: StudyHit) -> list[Candidate]:
    """The study's ultrasound images; PacsError when it holds none (nothing to import)."""
    found = client.instances(study.study_uid)
    images = [
        Candidate(
            study.study_uid,
            _text(ds, "SeriesInstanceUID"),
            _text(ds, "SOPInstanceUID"),
            _text(ds, "SOPClassUID"),
            _text(ds, "SeriesDescription"),
            study.accession_number,
        )
        for ds in found
        if _text(ds, "SOPClassUID") in IMAGE_SOP_CLASSES
        and _text(ds, "Modality") in ("US", "OT", "")
    ]
    if not images:
        kinds = sorted({_text(ds, "Modality") or "?" for ds in found}) or ["none"]
        raise PacsError(
            f"Study {study.study_uid} of patient {study.patient_id} holds no ultrasound "
            f"images (modalities: {', '.join(kinds)}); pick another study."
        )
    return images


THUMBNAIL_SIDE = 240
"""Longest side of the thumbnails the page shows beside each proposed image."""


def _thumbnail(pixels: np.ndarray) -> np.ndarray:
    rgb = to_rgb_u8(pixels)
    scale = THUMBNAIL_SIDE / max(rgb.shape[:2])
    if scale >= 1:
        return rgb
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def propose_pick(
    client: PacsClient,
    patient_id: str,
    images: Sequence[Candidate],
    thumbnails: dict[str, np.ndarray] | None = None,
) -> PatientPick:
    """GSU and SWE proposal: the SWE image is the first with a colour region, the GSU
    image the first without one. The admin confirms or changes the pick on the page;
    ``thumbnails`` (by SOP instance UID) is filled for it when given."""
    gsu = swe = None
    unreadable = 0
    for image in images:
        data = client.retrieve(image.study_uid, image.series_uid, image.sop_uid)
        try:
            decoded = imageio.decode_image(data, name="PACS image", pseudonym="PROPOSAL")
        except imageio.ImageReadError:
            unreadable += 1
            continue
        if thumbnails is not None:
            thumbnails[image.sop_uid] = _thumbnail(decoded.pixels)
        colored = detect_color_box(to_rgb_u8(decoded.pixels)) is not None
        if colored and swe is None:
            swe = image
        elif not colored and gsu is None:
            gsu = image
    notes = []
    if swe is None:
        notes.append("no image with a colour (elastography) region")
    if gsu is None:
        notes.append("no gray-scale image without a colour region")
    if unreadable:
        notes.append(f"{unreadable} image(s) could not be decoded")
    return PatientPick(patient_id, gsu, swe, "; ".join(notes))


def parse_clinical(text: str) -> tuple[dict[str, tuple[int, dict[str, str]]], list[str]]:
    """Clinical rows keyed by patient ID and by accession number, with their CSV row.

    The values are checked later by the importer's manifest checks, row by row.
    """
    try:
        return _clinical_rows(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    except csv.Error as exc:
        return {}, [f"The clinical CSV cannot be read ({exc}); save it again as CSV (UTF-8)."]


def _clinical_rows(
    reader: csv.DictReader,
) -> tuple[dict[str, tuple[int, dict[str, str]]], list[str]]:
    header = [h.strip() for h in reader.fieldnames or []]
    if not any(key in header for key in CLINICAL_KEYS):
        return {}, [
            "The clinical CSV needs a patient_id or accession_number column (and sex, age, "
            "height_cm, ...: the import manifest's columns without the file names)."
        ]
    unknown = sorted(set(header) - set(CLINICAL_KEYS) - set(CLINICAL_COLUMNS))
    if unknown:
        return {}, [f"The clinical CSV has unknown columns: {', '.join(unknown)}."]
    rows: dict[str, tuple[int, dict[str, str]]] = {}
    problems = []
    for raw in reader:
        number = reader.line_num
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
        for key in CLINICAL_KEYS:
            value = row.get(key, "")
            if value and value in rows:
                problems.append(f"row {number}: {key} {value!r} is also on row {rows[value][0]}.")
            elif value:
                rows[value] = (number, row)
    return rows, problems


def _manifest(pseudonym: str, clinical: dict[str, str], pick: PatientPick) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    values = {c: clinical.get(c, "") for c in CLINICAL_COLUMNS}
    values |= {
        "patient_code": pseudonym,
        "gsu_file": "gsu.dcm" if pick.gsu else "",
        "swe_file": "swe.dcm" if pick.swe else "",
    }
    writer.writerow(values)
    return buffer.getvalue()


def _import_one(
    client: PacsClient,
    db: Database,
    store: ImageStore,
    link: PseudonymLink,
    pick: PatientPick,
    clinical: tuple[int, dict[str, str]],
    actor_name: str | None,
) -> PatientResult:
    result = PatientResult(pick.patient_id)
    row, values = clinical
    result.pseudonym = link.pseudonym_for(pick.patient_id)
    files = {}
    for name, image in (("gsu.dcm", pick.gsu), ("swe.dcm", pick.swe)):
        if image is not None:
            files[name] = client.retrieve(image.study_uid, image.series_uid, image.sop_uid)
    files[MANIFEST_NAME] = _manifest(result.pseudonym, values, pick).encode()
    report = import_bundle(MemoryBundle(files), db, store, actor_name=actor_name)
    if report.problems:
        result.status = "refused"
        result.problems = [_clinical_problem(p, row) for p in report.problems]
        return result
    link.record_instances(
        [
            LinkedInstance(
                image.sop_uid,
                result.pseudonym,
                modality,
                image.study_uid,
                image.series_uid,
                image.accession_number,
            )
            for modality, image in (("GSU", pick.gsu), ("SWE", pick.swe))
            if image is not None
        ]
    )
    result.status = "imported" if report.imported else "already present"
    return result


def _clinical_problem(problem: Problem, row: int) -> str:
    where = f"clinical CSV row {row}" if problem.row is not None else "the retrieved images"
    what = {"gsu.dcm": " (GSU image)", "swe.dcm": " (SWE image)"}.get(problem.file or "", "")
    return f"{where}{what}: {problem.reason}"


def import_picks(
    client: PacsClient,
    db: Database,
    store: ImageStore,
    picks: Sequence[PatientPick],
    clinical_csv: str,
    *,
    link: PseudonymLink | None = None,
    actor_name: str | None = None,
    progress: Progress | None = None,
) -> PacsImportReport:
    """Retrieve and import each picked patient, all or nothing per patient.

    A lost connection stops the run with ``stopped`` set; every patient finished before
    stays imported and the one in flight left nothing, so running it again resumes.
    """
    link = link or PseudonymLink()
    rows, problems = parse_clinical(clinical_csv)
    if problems:
        raise UserError("The clinical CSV was refused: " + " ".join(problems))
    report = PacsImportReport()
    for index, pick in enumerate(picks):
        if progress:
            progress(index, len(picks), f"patient {index + 1} of {len(picks)}")
        clinical = rows.get(pick.patient_id) or next(
            (
                rows[i.accession_number]
                for i in (pick.gsu, pick.swe)
                if i and i.accession_number in rows
            ),
            None,
        )
        if pick.gsu is None and pick.swe is None:
            report.results.append(
                PatientResult(pick.patient_id, status="refused", problems=["No image was picked."])
            )
        elif clinical is None:
            report.results.append(
                PatientResult(
                    pick.patient_id,
                    status="refused",
                    problems=[
                        f"The clinical CSV has no row for patient ID {pick.patient_id!r} or its "
                        "accession number; add one (sex, age, height_cm, ...) and import again."
                    ],
                )
            )
        else:
            try:
                report.results.append(
                    _import_one(client, db, store, link, pick, clinical, actor_name)
                )
            except PacsError as exc:
                report.stopped = str(exc)
                report.results.extend(PatientResult(p.patient_id) for p in picks[index:])
                break
    if progress:
        progress(len(picks), len(picks), "done")
    return report
