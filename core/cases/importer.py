"""Case import: every row and file is checked before anything is stored.

By default an import is all or nothing. With ``skip_invalid`` the valid rows go in and
the others are reported. Either way, a refused row leaves nothing behind.

Memory stays flat whatever the size of the bundle: files are read, decoded and checked one
at a time, and each checked file (a PNG re-encoded from its pixels, or the de-identified
DICOM) goes straight to the import's staging folder (``core.common.store.Staging``); only a few
facts about it stay in memory. Once every check has passed, the staged files are renamed
into place and every row is written in one transaction; on failure the files moved so far
and the staging folder are removed. DICOM files are de-identified before they touch the
disk. The decoded pixels of one bundle are capped (``MAX_BUNDLE_PIXELS``) so that one
upload cannot keep the shared server decoding for hours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core.cases.archive import Bundle, BundleError, ZipBundle
from core.cases.manifest import CaseRecord, Problem, parse_manifest
from core.cases.staging import Cleaning, StagedImage, stage_image
from core.common.store import ImageStore, Staging
from core.imaging import imageio
from db import audit
from db.engine import Database
from db.models import CtMeasurement, Image, Patient, Reader

Progress = Callable[[int, int], None]
MAX_BUNDLE_PIXELS = 10_000_000_000
"""Decoded pixels one import may hold in all (10 gigapixels): about 2,400 patients with a
full-HD GSU and SWE screen each, or 16,000 with the scanner's 640×480 screens."""
LOOKUP_CHUNK = 500
"""Codes or hashes per ``IN (…)`` query: far below any backend's limit on parameters."""
FLUSH_BATCH = 500
"""Patients inserted per flush of the one import transaction."""
CONCURRENT_IMPORT = (
    "Another import stored one of these patients or images while this bundle was being "
    "checked, so nothing from this bundle was stored. Import it again: patients already "
    "present are skipped."
)


@dataclass
class PreparedCase:
    record: CaseRecord
    images: list[StagedImage] = field(default_factory=list)


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


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), LOOKUP_CHUNK):
        yield values[start : start + LOOKUP_CHUNK]


def _existing(db: Database, codes: list[str], hashes: list[str]) -> tuple[dict, dict]:
    """(lower-cased code → stored code, sha256 → owner's code) of what is already stored."""
    lowered = sorted({c.lower() for c in codes})
    known_codes: dict[str, str] = {}
    known_hashes: dict[str, str] = {}
    with db.read() as session:
        for chunk in _chunks(lowered):
            key = func.lower(Patient.code)
            known_codes.update(
                session.execute(select(key, Patient.code).where(key.in_(chunk))).all()
            )
        for chunk in _chunks(sorted(set(hashes))):
            known_hashes.update(
                session.execute(
                    select(Image.sha256, Patient.code).join(Patient).where(Image.sha256.in_(chunk))
                ).all()
            )
    return known_codes, known_hashes


def _prepare_case(
    bundle: Bundle, manifest: str, record: CaseRecord, staging: Staging, cleaning: Cleaning
) -> tuple[PreparedCase, list[Problem]]:
    case = PreparedCase(record)
    problems = []
    for modality, file_name in (("GSU", record.gsu_file), ("SWE", record.swe_file)):
        if file_name is None:
            continue
        try:
            member = bundle.resolve(manifest, file_name)
            if member is None:
                problems.append(Problem("The file is not in the bundle.", record.row, file_name))
                continue
            case.images.append(
                stage_image(
                    bundle.read(member),
                    name=file_name,
                    modality=modality,
                    pseudonym=record.code,
                    staging=staging,
                    cleaning=cleaning,
                )
            )
        except (imageio.ImageReadError, BundleError) as exc:
            problems.append(Problem(str(exc), record.row, file_name))
    return case, problems


def _too_many_pixels(row: int) -> BundleError:
    return BundleError(
        f"The images of this bundle hold more than {MAX_BUNDLE_PIXELS:,} pixels in all (the "
        f"limit was passed at row {row}): too many to decode in one import. Split the "
        "manifest and its images into smaller bundles and import them one after another."
    )


def _classify(
    db: Database, prepared: list[PreparedCase], problems: list[Problem]
) -> tuple[list[PreparedCase], list[PreparedCase]]:
    """Split checked cases into new and already present; refuse clashes with stored data."""
    codes = [c.record.code for c in prepared]
    hashes = [i.sha256 for c in prepared for i in c.images]
    known_codes, known_hashes = _existing(db, codes, hashes)
    new, present = [], []
    first_row: dict[str, int] = {}
    for case in prepared:
        code, row = case.record.code, case.record.row
        clash = False
        for image in case.images:
            other = first_row.setdefault(image.sha256, row)
            if other != row:
                problems.append(Problem(f"The same image is also used on row {other}.", row))
                clash = True
        if clash:
            continue
        stored_code = known_codes.get(code.lower())
        owners = {known_hashes.get(i.sha256) for i in case.images}
        if stored_code is not None and stored_code != code:
            problems.append(
                Problem(
                    f"patient_code {code!r} differs only in upper/lower case from the stored "
                    f"patient {stored_code!r}; codes are compared ignoring case. Write "
                    f"{stored_code!r} for that patient, or use a new code.",
                    row,
                )
            )
        elif stored_code is not None and owners == {code}:
            present.append(case)
        elif stored_code is not None:
            problems.append(
                Problem(
                    f"patient_code {code!r} already exists with other images; use a new code.", row
                )
            )
        elif owners - {None}:
            other_code = sorted(o for o in owners if o)[0]
            problems.append(
                Problem(f"An image of this row is already stored for patient {other_code!r}.", row)
            )
        else:
            new.append(case)
    return new, present


def check_bundle(
    bundle: Bundle,
    db: Database,
    staging: Staging,
    progress: Progress | None = None,
    cleaning: Cleaning | None = None,
) -> tuple[list[PreparedCase], list[PreparedCase], list[Problem]]:
    """Validate and stage everything; returns (new cases, cases already present, problems).

    Raises BundleError when the bundle as a whole is refused.
    """
    manifest = bundle.find_manifest()
    records, problems = parse_manifest(bundle.manifest_text())
    prepared: list[PreparedCase] = []
    pixels = 0
    for index, record in enumerate(records):
        case, case_problems = _prepare_case(
            bundle, manifest, record, staging, cleaning or Cleaning()
        )
        pixels += sum(image.pixels for image in case.images)
        if pixels > MAX_BUNDLE_PIXELS:
            raise _too_many_pixels(record.row)
        if case_problems:
            problems.extend(case_problems)
        else:
            prepared.append(case)
        if progress:
            progress(index + 1, len(records))
    new, present = _classify(db, prepared, problems)
    return new, present, problems


def _patient_row(case: PreparedCase, relpaths: dict[str, str]) -> Patient:
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
        patient.images.append(
            Image(
                modality=image.modality,
                sha256=image.sha256,
                path=relpaths[image.sha256],
                width=image.width,
                height=image.height,
                source_format=image.source_format,
                dicom_header=image.dicom_header,
                acquisition_date=image.acquisition_date,
            )
        )
    return patient


def _add_cases(
    session, cases: list[PreparedCase], relpaths: dict[str, str], actor: Reader | None
) -> None:
    """Insert the rows ``FLUSH_BATCH`` patients per flush (one flush per patient made a
    4,000-patient import twice as slow per patient as a 1,000-patient one)."""
    for start in range(0, len(cases), FLUSH_BATCH):
        chunk = cases[start : start + FLUSH_BATCH]
        patients = [_patient_row(case, relpaths) for case in chunk]
        session.add_all(patients)
        session.flush()
        for case, patient in zip(chunk, patients, strict=True):
            audit.record(
                session,
                actor=actor,
                action="patient.import",
                entity="patient",
                entity_id=patient.id,
                patient_id=patient.id,
                after={"code": case.record.code, "images": [i.modality for i in case.images]},
            )


def store_cases(
    db: Database,
    staging: Staging,
    cases: list[PreparedCase],
    actor_name: str | None = None,
) -> None:
    """Move the staged files into place, then one transaction for all rows.

    On failure the files this call created are removed again.
    """
    created: list[str] = []
    relpaths: dict[str, str] = {}
    try:
        for case in cases:
            for image in case.images:
                relpath, new = staging.move_into_store(image.staged, image.sha256, image.suffix)
                relpaths[image.sha256] = relpath
                if new:
                    created.append(relpath)
        staging.make_durable()

        def work(session) -> None:
            actor = (
                session.scalar(select(Reader).where(Reader.username == actor_name))
                if actor_name
                else None
            )
            _add_cases(session, cases, relpaths, actor)

        db.write(work)
    except BaseException:
        staging.store.remove(created)
        raise


def import_bundle(
    bundle: Bundle,
    db: Database,
    store: ImageStore,
    *,
    skip_invalid: bool = False,
    actor_name: str | None = None,
    progress: Progress | None = None,
    cleaning: Cleaning | None = None,
) -> ImportReport:
    """Check then import a bundle; see the module docstring for the all-or-nothing rule."""
    report = ImportReport()
    staging = store.staging()
    try:
        try:
            new, present, problems = check_bundle(bundle, db, staging, progress, cleaning)
        except BundleError as exc:
            report.problems.append(Problem(str(exc)))
            return report
        except OSError as exc:
            report.problems.append(Problem(_storage_problem(exc)))
            return report
        report.problems = problems
        report.already_present = [c.record.code for c in present]
        if problems and not skip_invalid:
            return report
        if new:
            try:
                store_cases(db, staging, new, actor_name)
            except IntegrityError:
                report.problems.append(Problem(CONCURRENT_IMPORT))
                return report
            except OSError as exc:
                report.problems.append(Problem(_storage_problem(exc)))
                return report
        report.imported = [c.record.code for c in new]
        report.committed = True
        return report
    finally:
        staging.discard()


def _storage_problem(exc: OSError) -> str:
    return (
        f"The server could not write the images ({exc.strerror or exc}), so nothing from "
        "this bundle was stored. Ask the administrator to check the free space and "
        "permissions of the data folder, then import again."
    )


def import_upload(
    data: bytes,
    db: Database,
    store: ImageStore,
    *,
    skip_invalid: bool = False,
    actor_name: str | None = None,
    progress: Progress | None = None,
    cleaning: Cleaning | None = None,
) -> ImportReport:
    """``import_bundle`` on an uploaded zip; an unreadable zip becomes the report's problem.

    The page shows the report, never an exception: every refusal is a sentence in it.
    """
    try:
        bundle = ZipBundle(data)
    except BundleError as exc:
        return ImportReport(problems=[Problem(str(exc))])
    with bundle:
        return import_bundle(
            bundle,
            db,
            store,
            skip_invalid=skip_invalid,
            actor_name=actor_name,
            progress=progress,
            cleaning=cleaning,
        )
