"""Load the synthetic demo cohort (``cases.cohort`` + ``cases.phantom``) into the database.

Everything is labelled synthetic: patient codes start with ``DEMO-`` and the rows carry
``synthetic=True``. Besides the patients, it creates the demo accounts (``reader.demo``):
an admin, two human reader accounts with empty queues (password ``DEMO_PASSWORD``, each
hashed with its own salt), and two simulated readers whose grades and crop boxes are
already in, with the consensus recorded where they agree (so agreement, consensus and the
echogenicity task have data from the start).

Because the demo password is public, the demo refuses a database that holds real
readers or patients (the command line may force it), loads only for an admin or the
command line, and never when ``SARCOPENIA_DEMO=0``. Every account it creates is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.cases import phantom
from core.cases.cohort import SyntheticPatient, synthetic_cohort
from core.cases.staging import encode_png
from core.common import config
from core.common.boxes import Box
from core.common.store import ImageStore, sha256_hex
from core.services.auth import hash_password, require
from db import audit
from db.auth import get_reader, insert_reader
from db.consensus import auto_agree
from db.engine import Database
from db.models import CropBox, CtMeasurement, Grade, Image, Patient, Reader

DEMO_SEED = 2022
DEMO_PATIENTS = 160
"""The study's cohort size (Yi et al. 2022)."""
DEMO_ACCOUNTS = (
    ("admin", "Demo administrator", "admin"),
    ("radiologist1", "Radiologist 1", "reader"),
    ("radiologist2", "Radiologist 2", "reader"),
)
DEMO_PASSWORD = "synthetic-demo"
"""Password of the demo accounts. They exist only with the synthetic cohort; change them
(``python -m core admin set-password``) before anyone real signs in."""
SIMULATED_READERS = (
    ("sim_reader_a", "Simulated reader A"),
    ("sim_reader_b", "Simulated reader B"),
)
"""Generated grades, not people: no experience is claimed for them (migration 0008 renamed
the labels an earlier demo gave them)."""
Progress = Callable[[int, int], None]


class DemoRefused(RuntimeError):
    """The demo cannot load here; the message says why and what to do."""


def demo_blocker(session: Session, *, force: bool = False) -> str | None:
    """Why the demo may not load into this database, or None when it may.

    Real (non-demo) accounts or patients block it unless ``force`` (the command line's
    ``--force``); demo patients already there, or ``SARCOPENIA_DEMO=0``, always do.
    """
    if not config.demo_allowed():
        return "The demo is switched off on this server (SARCOPENIA_DEMO=0)."
    synthetic = session.scalar(select(func.count(Patient.id)).where(Patient.synthetic)) or 0
    if synthetic:
        return f"The database already holds patients ({synthetic} synthetic): the demo is loaded."
    if force:
        return None
    real = session.scalar(select(func.count(Patient.id)).where(~Patient.synthetic)) or 0
    if real:
        return (
            f"The database already holds patients ({real} real): the demo loads only into an "
            "empty database. Use another data folder (SARCOPENIA_DATA_DIR) for the demo."
        )
    accounts = list(session.scalars(select(Reader.username).where(~Reader.demo)))
    if accounts:
        return (
            f"The database holds real accounts ({', '.join(sorted(accounts))}): the demo would "
            "add accounts with a public password. Use another data folder "
            "(SARCOPENIA_DATA_DIR), or `python -m core demo --force` if you mean it."
        )
    return None


def _demo_accounts(session: Session, actor: Reader | None) -> list[Reader]:
    """The demo accounts, each with its own salted hash, and the simulated readers (no
    password); an existing account of the same name is used as it is, never changed."""
    for username, name, role in DEMO_ACCOUNTS:
        if get_reader(session, username) is None:
            insert_reader(
                session,
                actor=actor,
                username=username,
                display_name=name,
                role=role,
                password_hash=hash_password(DEMO_PASSWORD),
                demo=True,
            )
    sims = []
    for username, name in SIMULATED_READERS:
        reader = get_reader(session, username) or insert_reader(
            session,
            actor=actor,
            username=username,
            display_name=name,
            role="reader",
            password_hash=None,
            demo=True,
        )
        sims.append(reader)
    return sims


@dataclass(frozen=True)
class RenderedCase:
    patient: SyntheticPatient
    gsu_png: bytes
    swe_png: bytes
    us_box: Box
    color_box: Box


def render_patient(patient: SyntheticPatient) -> RenderedCase:
    case = phantom.render_case(
        patient.seed,
        patient.true_grade,
        patient.quality,
        patient.swe_median_kpa,
        scan_date=patient.us_date,
    )
    return RenderedCase(
        patient, encode_png(case.gsu), encode_png(case.swe), case.us_box, case.color_box
    )


def _jitter(box: Box, rng: np.random.Generator, px: int) -> Box:
    """A reader's box: the true box with a few pixels of hand-drawn imprecision."""
    dx, dy, dw, dh = (int(v) for v in rng.integers(-px, px + 1, size=4))
    x, y = max(box.x + dx, 0), max(box.y + dy, 0)
    return Box(x, y, max(box.w + dw, 16), max(box.h + dh, 16))


def _add_patient(
    session, rendered: RenderedCase, paths: dict[str, str], sims: list[Reader], rng
) -> None:
    p = rendered.patient
    patient = Patient(
        code=p.code,
        sex=p.sex,
        age=p.age,
        height_cm=p.height_cm,
        weight_kg=p.weight_kg,
        us_date=p.us_date,
        synthetic=True,
    )
    patient.ct = CtMeasurement(
        sma_cm2=p.l3_sma_cm2, ct_date=p.ct_date, exclusion_reason=p.exclusion_reason
    )
    for modality, png in (("GSU", rendered.gsu_png), ("SWE", rendered.swe_png)):
        sha = sha256_hex(png)
        patient.images.append(
            Image(
                modality=modality,
                sha256=sha,
                path=paths[sha],
                width=640,
                height=480,
                source_format="png",
                acquisition_date=p.us_date,
            )
        )
    session.add(patient)
    session.flush()
    gsu, swe = patient.images[0], patient.images[1]
    for reader, grade in zip(sims, p.reader_grades, strict=True):
        session.add(Grade(image_id=gsu.id, reader_id=reader.id, grade=grade))
        for image, truth in ((gsu, rendered.us_box), (swe, rendered.color_box)):
            box = _jitter(truth, rng, 6)
            session.add(
                CropBox(
                    image_id=image.id,
                    owner_key=f"reader:{reader.id}",
                    source="reader",
                    reader_id=reader.id,
                    x=box.x,
                    y=box.y,
                    w=box.w,
                    h=box.h,
                )
            )
        audit.record(
            session,
            actor=reader,
            action="grade.create",
            entity="grade",
            entity_id=None,
            patient_id=patient.id,
            after={"grade": grade, "image_id": gsu.id},
        )


def load_demo(
    db: Database,
    store: ImageStore,
    *,
    seed: int = DEMO_SEED,
    n: int | None = None,
    progress: Progress | None = None,
    actor: Reader | None = None,
    force: bool = False,
) -> int:
    """Render and store the demo cohort; returns the number of patients loaded.

    ``actor`` is the admin loading it in the app (checked); ``None`` is the command line.
    Raises DemoRefused (see ``demo_blocker``) before any work.
    """
    if actor is not None:
        require(actor, "import")
    with db.read() as session:
        blocker = demo_blocker(session, force=force)
    if blocker:
        raise DemoRefused(blocker)
    cohort = synthetic_cohort(seed=seed, n=n or DEMO_PATIENTS)
    rendered: list[RenderedCase] = []
    paths: dict[str, str] = {}
    created: list[str] = []
    try:
        for index, patient in enumerate(cohort):
            case = render_patient(patient)
            for png in (case.gsu_png, case.swe_png):
                sha = sha256_hex(png)
                paths[sha], new = store.put(png, sha, ".png")
                if new:
                    created.append(paths[sha])
            rendered.append(case)
            if progress:
                progress(index + 1, len(cohort))

        def work(session) -> None:
            blocked = demo_blocker(session, force=force)
            if blocked:
                raise DemoRefused(blocked)
            acting = session.get(Reader, actor.id) if actor is not None else None
            sims = _demo_accounts(session, acting)
            rng = np.random.default_rng(seed)
            for case in rendered:
                _add_patient(session, case, paths, sims, rng)
            session.flush()
            auto_agree(session)
            audit.record(
                session,
                actor=acting,
                action="demo.load",
                entity="patient",
                entity_id=None,
                patient_id=None,
                after={"patients": len(rendered), "seed": seed, "forced": force},
            )

        db.write(work)
    except BaseException:
        store.remove(created)
        raise
    return len(rendered)
