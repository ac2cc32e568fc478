"""Write a patient's results back to the PACS as a DICOM SR, and read them back.

The report is built from what the Review page shows (``core.services.review``), attached
to the original GSU and SWE images found through the pseudonym link, and sent with STOW-RS.
Each sent report is recorded in the link with a hash of its content, so a second send of
the same patient is refused unless the admin asks for it explicitly (``again=True``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.common.errors import UserError
from core.common.store import ImageStore
from core.imaging.swe_decode import KPA_UNITS
from core.learning.dataset import TASKS
from core.services.pacs.capture import gradcam_capture
from core.services.pacs.client import PacsClient
from core.services.pacs.endpoints import configured_endpoints
from core.services.pacs.link import PseudonymLink, SentReport, link_path
from core.services.pacs.sr import (
    MANUFACTURER,
    ModelResult,
    ParsedReport,
    ReaderGrade,
    ReportContent,
    build_report,
    parse_report,
)
from core.services.review import patient_review
from db.engine import Database
from db.models import TrainingRun

DIGITS = 4
"""Decimals kept for stiffness and probabilities: well inside a DICOM DS value."""
STIFFNESS_ORDER = ("mean", "median", "q1", "q3", "iqr", "fraction_colored")
SR_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.34",)
"""Comprehensive 3D SR, the class of the reports this app writes."""


@dataclass(frozen=True)
class WritebackResult:
    pseudonym: str
    sop_instance_uid: str
    study_instance_uid: str
    content: ReportContent


def _rounded(value: float) -> float:
    return round(float(value), DIGITS)


@dataclass(frozen=True)
class Overlay:
    """A model's Grad-CAM on the whole GSU or SWE screen, to send as a Secondary Capture."""

    model: ModelResult
    modality: str
    pixels: np.ndarray


def report_content(
    db: Database,
    store: ImageStore,
    pseudonym: str,
    run_ids: Sequence[int] = (),
    *,
    compute_models: bool = True,
) -> ReportContent:
    """What the report will say, from the stored grades, boxes, stiffness and predictions.

    With ``compute_models`` each run predicts the patient as the Review page does (a
    patient fresh from the PACS has no stored prediction); otherwise only stored
    validation/test predictions count. A run without a probability is left out.
    """
    return _content_and_overlays(db, store, pseudonym, run_ids, compute_models)[0]


def _content_and_overlays(
    db: Database, store: ImageStore, pseudonym: str, run_ids: Sequence[int], compute: bool
) -> tuple[ReportContent, list[Overlay]]:
    review = patient_review(db, store, pseudonym, run_ids, gradcam=compute)
    gsu, swe = review.images.get("GSU"), review.images.get("SWE")
    gsu_boxes = gsu.boxes if gsu else {}
    readers = tuple(
        ReaderGrade(g.username, g.grade, gsu_boxes.get(g.username)) for g in review.grades or []
    )
    stiffness: tuple[tuple[str, float], ...] = ()
    if review.stiffness is not None and review.stiffness.units == KPA_UNITS:
        # Relative (0–1) stiffness has no unit the report could carry: it is left out.
        stats = review.stiffness.stats
        stiffness = tuple(
            (name, _rounded(stats[name]))
            for name in STIFFNESS_ORDER
            if name in stats and math.isfinite(stats[name])
        )
    with db.read() as session:
        runs = {
            run.id: run for run in session.query(TrainingRun).filter(TrainingRun.id.in_(run_ids))
        }
    models: list[ModelResult] = []
    overlays: list[Overlay] = []
    for view in review.models:
        if view.probability is None:
            continue
        run = runs[view.run_id]
        model = ModelResult(
            view.run_id,
            f"{run.arch} {view.task}",
            f"sha256:{run.model_sha256[:16]}" if run.model_sha256 else "unversioned",
            TASKS[view.task].label,
            _rounded(view.probability),
        )
        models.append(model)
        if view.overlay_full is not None:
            overlays.append(Overlay(model, view.input_name.upper(), view.overlay_full))
    content = ReportContent(
        review.consensus_grade,
        gsu_boxes.get("consensus"),
        readers,
        swe.chosen.box if swe is not None and swe.chosen is not None else None,
        stiffness,
        tuple(models),
    )
    return content, overlays


def content_hash(content: ReportContent) -> str:
    return hashlib.sha256(repr(content).encode()).hexdigest()


def _already_sent(last: SentReport, digest: str) -> UserError:
    same = "the same content" if last.content_sha256 == digest else "older content"
    return UserError(
        f"A report for {last.pseudonym} was already sent on {last.sent_at} with {same} "
        f"(SR {last.sop_instance_uid}). Choose 'send again' to send a new version."
    )


def send_report(
    client: PacsClient,
    db: Database,
    store: ImageStore,
    pseudonym: str,
    *,
    run_ids: Sequence[int] = (),
    link: PseudonymLink | None = None,
    actor_name: str = "",
    again: bool = False,
    compute_models: bool = True,
    gradcam_images: bool = False,
) -> WritebackResult:
    """Build the patient's SR and STOW it; it stays recorded in the link only when the PACS
    took it.

    ``gradcam_images`` sends each computed model's Grad-CAM overlay with it as a Secondary
    Capture in the same request.

    UserError when the patient did not come from the PACS, has no consensus yet, or already
    has a report there and ``again`` is False; PacsError when the PACS refuses it.
    """
    link = link or PseudonymLink()
    originals = link.instances(pseudonym)
    if "GSU" not in originals:
        raise UserError(
            f"Patient {pseudonym} was not imported from a PACS (or without its GSU image), "
            "so there is no original study to attach a report to."
        )
    content, overlays = _content_and_overlays(db, store, pseudonym, run_ids, compute_models)
    if content.consensus_grade is None:
        raise UserError(
            f"Patient {pseudonym} has no consensus grade yet; settle it on the Consensus page "
            "before writing a report back."
        )
    digest = content_hash(content)
    earlier = link.sent_reports(pseudonym)
    if earlier and not again:
        raise _already_sent(earlier[-1], digest)
    gsu_link = originals["GSU"]
    gsu = client.metadata(
        gsu_link.study_instance_uid, gsu_link.series_instance_uid, gsu_link.sop_instance_uid
    )
    swe = None
    if "SWE" in originals:
        swe_link = originals["SWE"]
        swe = client.metadata(
            swe_link.study_instance_uid, swe_link.series_instance_uid, swe_link.sop_instance_uid
        )
    report = build_report(content, gsu, swe)
    sources = {"GSU": gsu, "SWE": swe}
    captures = [
        gradcam_capture(
            overlay.pixels,
            sources[overlay.modality],
            run_id=overlay.model.run_id,
            model_name=overlay.model.name,
            instance_number=number,
        )
        for number, overlay in enumerate(overlays, start=1)
        if gradcam_images and sources.get(overlay.modality) is not None
    ]
    last = link.claim_send(
        SentReport(
            str(report.SOPInstanceUID),
            pseudonym,
            str(report.StudyInstanceUID),
            str(report.SeriesInstanceUID),
            digest,
            dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            actor_name,
        ),
        again=again,
    )
    if last is not None:
        raise _already_sent(last, digest)
    try:
        client.store([report, *captures])
    except BaseException:
        link.forget_send(str(report.SOPInstanceUID))
        raise
    return WritebackResult(
        pseudonym, str(report.SOPInstanceUID), str(report.StudyInstanceUID), content
    )


def reports_in_pacs(
    client: PacsClient, pseudonym: str, link: PseudonymLink | None = None
) -> list[ParsedReport]:
    """This app's reports on the patient's original studies, read back and parsed, newest last."""
    link = link or PseudonymLink()
    studies = sorted({i.study_instance_uid for i in link.instances(pseudonym).values()})
    parsed = []
    for study in studies:
        for ds in client.instances(study):
            if str(ds.get("SOPClassUID", "")) not in SR_SOP_CLASSES:
                continue
            full = client.retrieve_dataset(study, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
            if full.get("Manufacturer") == MANUFACTURER:
                parsed.append(parse_report(full))
    return sorted(parsed, key=lambda r: (r.content_date or dt.date.min, r.content_time))


def in_pacs_line(client: PacsClient, pseudonym: str, link: PseudonymLink | None = None) -> str:
    """The Review page's "in PACS" sentence: what the PACS holds from this app right now."""
    link = link or PseudonymLink()
    reports = reports_in_pacs(client, pseudonym, link)
    if not reports:
        return "In PACS: no report from this app yet."
    latest = reports[-1].content
    parts = []
    if latest.consensus_grade is not None:
        parts.append(f"consensus grade {latest.consensus_grade}")
    parts.append(f"{len(latest.readers)} reader grade(s)")
    stiffness = dict(latest.stiffness)
    if "median" in stiffness:
        parts.append(f"median stiffness {stiffness['median']:.1f} kPa")
    parts.append(f"{len(latest.models)} model result(s)")
    when = reports[-1].content_date.isoformat() if reports[-1].content_date else "undated"
    return (
        f"In PACS: {len(reports)} report(s), latest {when}: {', '.join(parts)} "
        "(research use only, not for diagnostic use)."
    )


def pacs_line_for(pseudonym: str) -> str | None:
    """The "in PACS" line for a patient imported from a PACS; None for any other patient
    or when no PACS is set up. A PACS that cannot be reached gives a line saying so."""
    if not link_path().is_file():
        return None
    link = PseudonymLink()
    if "GSU" not in link.instances(pseudonym):
        return None
    try:
        endpoints = configured_endpoints()
        if not endpoints:
            return None
        return in_pacs_line(PacsClient(endpoints[0]), pseudonym, link)
    except (UserError, ValueError) as exc:
        return f"In PACS: could not be checked. {exc}"
