"""Case import: every row and file is checked before anything is stored.

By default an import is all or nothing. With ``skip_invalid`` the valid rows go in and
the others are reported. Either way, a refused row leaves nothing behind: files are
written only after every check passed, and removed again if the database transaction
fails. DICOM files are de-identified before they touch the disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from sqlalchemy import select

from core import imageio
from core.archive import Bundle, BundleError
from core.manifest import CaseRecord, Problem, parse_manifest
from core.store import ImageStore, sha256_hex
from db import audit
from db.engine import Database
from db.models import CtMeasurement, Image, Patient, Reader

Progress = Callable[[int, int], None]


@dataclass
class PreparedImage:
    modality: str
    sha256: str
    stored: bytes
    suffix: str
    decoded: imageio.DecodedImage


@dataclass
class PreparedCase:
    record: CaseRecord
    images: list[PreparedImage] = field(default_factory=list)


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    committed: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        text = f"{len(self.imported)} imported, {len(self.already_present)} already present"
        if self.problems:
            text += f", {len(self.problems)} problem(s)"
            if not self.committed:
                text += "; nothing was stored"
        return text


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG of decoded pixels: drops any metadata, keeps every pixel value."""
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("Could not encode the image as PNG.")
    return buffer.tobytes()


def prepare_image(data: bytes, *, name: str, modality: str, pseudonym: str) -> PreparedImage:
    """Decode and de-identify one file into what the store will keep (raises ImageReadError)."""
    decoded = imageio.decode_image(data, name=name, pseudonym=pseudonym)
    if decoded.source_format == "dicom":
        stored, suffix = imageio.deidentified_dicom_bytes(data, pseudonym=pseudonym), ".dcm"
    else:
        stored, suffix = encode_png(decoded.pixels), ".png"
    return PreparedImage(modality, sha256_hex(data), stored, suffix, decoded)


def _existing(db: Database, codes: list[str], hashes: list[str]) -> tuple[dict, dict]:
    with db.read() as session:
        patients = dict(
            session.execute(select(Patient.code, Patient.id).where(Patient.code.in_(codes))).all()
        )
        images = dict(
            session.execute(
                select(Image.sha256, Patient.code).join(Patient).where(Image.sha256.in_(hashes))
            ).all()
        )
    return patients, images


def _prepare_case(
    bundle: Bundle, manifest: str, record: CaseRecord
) -> tuple[PreparedCase, list[Problem]]:
    case = PreparedCase(record)
    problems = []
    for modality, file_name in (("GSU", record.gsu_file), ("SWE", record.swe_file)):
        if file_name is None:
            continue
        member = bundle.resolve(manifest, file_name)
        if member is None:
            problems.append(Problem("The file is not in the bundle.", record.row, file_name))
            continue
        try:
            data = bundle.read(member)
            case.images.append(
                prepare_image(data, name=file_name, modality=modality, pseudonym=record.code)
            )
        except (imageio.ImageReadError, BundleError) as exc:
            problems.append(Problem(str(exc), record.row, file_name))
    return case, problems


def check_bundle(
    bundle: Bundle, db: Database, progress: Progress | None = None
) -> tuple[list[PreparedCase], list[PreparedCase], list[Problem]]:
    """Validate everything; returns (new cases, cases already present, problems)."""
    manifest = bundle.find_manifest()
    records, problems = parse_manifest(bundle.manifest_text())
    prepared: list[PreparedCase] = []
    for index, record in enumerate(records):
        case, case_problems = _prepare_case(bundle, manifest, record)
        if case_problems:
            problems.extend(case_problems)
        else:
            prepared.append(case)
        if progress:
            progress(index + 1, len(records))
    codes = [c.record.code for c in prepared]
    hashes = [i.sha256 for c in prepared for i in c.images]
    known_codes, known_hashes = _existing(db, codes, hashes)
    new, present = [], []
    first_row: dict[str, int] = {}
    for case in prepared:
        for image in case.images:
            row = first_row.setdefault(image.sha256, case.record.row)
            if row != case.record.row:
                problems.append(
                    Problem(f"The same image is also used on row {row}.", case.record.row)
                )
        owners = {known_hashes.get(i.sha256) for i in case.images}
        code = case.record.code
        if any(p.row == case.record.row for p in problems):
            continue
        if code in known_codes and owners == {code}:
            present.append(case)
        elif code in known_codes:
            problems.append(
                Problem(
                    f"patient_code {code!r} already exists with other images; use a new code.",
                    case.record.row,
                )
            )
        elif owners - {None}:
            other = sorted(o for o in owners if o)
            problems.append(
                Problem(
                    f"An image of this row is already stored for patient {other[0]!r}.",
                    case.record.row,
                )
            )
        else:
            new.append(case)
    return new, present, problems


def _add_case(session, case: PreparedCase, relpaths: dict[str, str], actor: Reader | None) -> None:
    r = case.record
    patient = Patient(
        code=r.code,
        sex=r.sex,
        age=r.age,
        height_cm=r.height_cm,
        weight_kg=r.weight_kg,
        us_date=r.us_date,
    )
    if r.ct_date or r.l3_sma_cm2 or r.exclusion_reason:
        patient.ct = CtMeasurement(
            sma_cm2=r.l3_sma_cm2, ct_date=r.ct_date, exclusion_reason=r.exclusion_reason
        )
    for image in case.images:
        d = image.decoded
        patient.images.append(
            Image(
                modality=image.modality,
                sha256=image.sha256,
                path=relpaths[image.sha256],
                width=d.width,
                height=d.height,
                source_format=d.source_format,
                dicom_header=d.dicom_header,
                acquisition_date=d.acquisition_date,
            )
        )
    session.add(patient)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="patient.import",
        entity="patient",
        entity_id=patient.id,
        patient_id=patient.id,
        after={"code": r.code, "images": [i.modality for i in case.images]},
    )


def store_cases(
    db: Database, store: ImageStore, cases: list[PreparedCase], actor_name: str | None = None
) -> None:
    """Write the files, then one transaction for all rows; on failure remove new files."""
    created: list[str] = []
    relpaths: dict[str, str] = {}
    try:
        for case in cases:
            for image in case.images:
                relpath, new = store.put(image.stored, image.sha256, image.suffix)
                relpaths[image.sha256] = relpath
                if new:
                    created.append(relpath)

        def work(session) -> None:
            actor = (
                session.scalar(select(Reader).where(Reader.username == actor_name))
                if actor_name
                else None
            )
            for case in cases:
                _add_case(session, case, relpaths, actor)

        db.write(work)
    except BaseException:
        store.remove(created)
        raise


def import_bundle(
    bundle: Bundle,
    db: Database,
    store: ImageStore,
    *,
    skip_invalid: bool = False,
    actor_name: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Check then import a bundle; see the module docstring for the all-or-nothing rule."""
    report = ImportReport()
    try:
        new, present, problems = check_bundle(bundle, db, progress)
    except BundleError as exc:
        report.problems.append(Problem(str(exc)))
        return report
    report.problems = problems
    report.already_present = [c.record.code for c in present]
    if problems and not skip_invalid:
        return report
    if new:
        store_cases(db, store, new, actor_name)
    report.imported = [c.record.code for c in new]
    report.committed = True
    return report
