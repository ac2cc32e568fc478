"""The DICOM Structured Report written back to the PACS (TID 1500), and its parser.

One report per patient holds what the app knows about the two images: the consensus
echogenicity grade with its GSU box, each reader's grade with their own box, the SWE
colour box with the decoded stiffness statistics (UCUM kPa), and each model's probability
with the model as the algorithm identification. Everything is marked as research output,
not for diagnostic use. Codes: SNOMED CT, DCM and UCUM where a standard concept exists;
the others use the private coding scheme ``99SARCO`` (declared in the report's Coding
Scheme Identification Sequence and listed in docs/deployment.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from core.common.boxes import Box

SCHEME = "99SARCO"
SCHEME_NAME = "Sarcopenia ultrasound research app, private codes"
MANUFACTURER = "Sarcopenia ultrasound research app"
SERIES_DESCRIPTION = "Research result - not for diagnostic use"
NOT_FOR_DIAGNOSIS = "Research use only, not for diagnostic use"
DEVICE_UID = UID("2.25.208418837396380329787196420416358926233")
"""Fixed UID of this app as the observing device (random, generated once for the app)."""


def _private(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, SCHEME, meaning)


GRADE_NAME = _private("ECHO-GRADE", "Rectus femoris echogenicity grade (Heckmatt, 0-3)")
GRADE_VALUES = {
    0: _private("ECHO-0", "Grade 0: low echo, speckled perimysium"),
    1: _private("ECHO-1", "Grade 1: increased echo relative to background muscle"),
    2: _private("ECHO-2", "Grade 2: nearly as echogenic as perimysial fat"),
    3: _private("ECHO-3", "Grade 3: isoechoic to fat"),
}
SARCOPENIA_PROBABILITY = _private("P-SARCOPENIA", "Model probability of sarcopenia")
ECHO_HIGH_PROBABILITY = _private("P-ECHO-HIGH", "Model probability of high echogenicity")
TASK_CONCEPTS = {"sarcopenia": SARCOPENIA_PROBABILITY, "echogenicity_high": ECHO_HIGH_PROBABILITY}
INTENDED_USE = _private("USE", "Intended use")
RESEARCH_ONLY = _private("RESEARCH-ONLY", NOT_FOR_DIAGNOSIS)
STIFFNESS_NAMES = {
    "mean": _private("SWE-MEAN", "Mean shear-wave stiffness (Young's modulus)"),
    "median": _private("SWE-MEDIAN", "Median shear-wave stiffness (Young's modulus)"),
    "q1": _private("SWE-Q1", "First quartile of shear-wave stiffness"),
    "q3": _private("SWE-Q3", "Third quartile of shear-wave stiffness"),
    "iqr": _private("SWE-IQR", "Interquartile range of shear-wave stiffness"),
}
COLORED_FRACTION = _private("SWE-COLORED", "Fraction of the colour box with a stiffness value")
KPA = hd.sr.CodedConcept("kPa", "UCUM", "kPa")
NO_UNIT = hd.sr.CodedConcept("1", "UCUM", "no units")
ECHO_FINDING = _private("RF-ECHO", "Rectus femoris echogenicity")
STIFFNESS_FINDING = _private("RF-SWE", "Rectus femoris shear-wave elastography")
MODEL_FINDING = _private("MODEL", "Deep learning model output")
PROCEDURE = hd.sr.CodedConcept("16310003", "SCT", "Ultrasonography")
CONSENSUS_ID = "consensus"
STIFFNESS_ID = "swe color box"
READER_PREFIX = "reader "
MODEL_PREFIX = "model run "


@dataclass(frozen=True)
class ReaderGrade:
    reader: str
    grade: int
    box: Box | None


@dataclass(frozen=True)
class ModelResult:
    run_id: int
    name: str
    version: str
    task: str
    """``sarcopenia`` or ``echogenicity_high``: what the probability is of."""
    probability: float


@dataclass(frozen=True)
class ReportContent:
    """What one report says; building then parsing a report gives the same content back."""

    consensus_grade: int | None
    consensus_box: Box | None
    readers: tuple[ReaderGrade, ...]
    swe_box: Box | None
    stiffness: tuple[tuple[str, float], ...]
    """(statistic, value) pairs: ``mean``/``median``/``q1``/``q3``/``iqr`` in kPa and
    ``fraction_colored`` as a fraction; NaN statistics are left out."""
    models: tuple[ModelResult, ...]


@dataclass(frozen=True)
class ParsedReport:
    sop_instance_uid: str
    content_date: dt.date | None
    content_time: str
    """``HHMMSS.ffffff`` as written; with the date it orders a patient's reports."""
    content: ReportContent
    research_only: bool


def _region(box: Box, source: Dataset) -> hd.sr.ImageRegion:
    """The box as a closed polyline in the source image's pixel coordinates (SCOORD)."""
    corners = [(box.x, box.y), (box.x2, box.y), (box.x2, box.y2), (box.x, box.y2), (box.x, box.y)]
    frames = [1] if int(source.get("NumberOfFrames", 1) or 1) > 1 else None
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array(corners, dtype=float),
        source_image=hd.sr.SourceImageForRegion.from_source_image(
            source, referenced_frame_numbers=frames
        ),
    )


def _grade_group(
    identifier: str, grade: int, box: Box | None, gsu: Dataset
) -> (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
):
    evaluation = hd.sr.QualitativeEvaluation(GRADE_NAME, GRADE_VALUES[grade])
    tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=identifier)
    if box is None:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            finding_type=ECHO_FINDING,
            qualitative_evaluations=[evaluation],
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(gsu)],
        )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_region=_region(box, gsu),
        finding_type=ECHO_FINDING,
        qualitative_evaluations=[evaluation],
    )


def _stiffness_group(
    content: ReportContent, swe: Dataset
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    measurements = [
        hd.sr.Measurement(
            name=COLORED_FRACTION if stat == "fraction_colored" else STIFFNESS_NAMES[stat],
            value=value,
            unit=NO_UNIT if stat == "fraction_colored" else KPA,
        )
        for stat, value in content.stiffness
    ]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=STIFFNESS_ID),
        referenced_region=_region(content.swe_box, swe),
        finding_type=STIFFNESS_FINDING,
        measurements=measurements,
    )


def _model_group(
    model: ModelResult, sources: Sequence[Dataset]
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version, parameters=[f"run_id={model.run_id}"]
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"{MODEL_PREFIX}{model.run_id}"
        ),
        finding_type=MODEL_FINDING,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(
                name=TASK_CONCEPTS[model.task],
                value=model.probability,
                unit=NO_UNIT,
                algorithm_id=algorithm,
            )
        ],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(INTENDED_USE, RESEARCH_ONLY)],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources
        ],
    )


def build_report(
    content: ReportContent,
    gsu: Dataset,
    swe: Dataset | None,
    *,
    series_number: int = 9901,
) -> hd.sr.Comprehensive3DSR:
    """The SR for one patient; ``gsu``/``swe`` are the original instances' headers.

    The report joins the GSU image's study, so the radiologists' viewer shows it beside
    the images it describes.
    """
    groups: list = []
    if content.consensus_grade is not None:
        groups.append(
            _grade_group(CONSENSUS_ID, content.consensus_grade, content.consensus_box, gsu)
        )
    for reader in content.readers:
        groups.append(_grade_group(READER_PREFIX + reader.reader, reader.grade, reader.box, gsu))
    if swe is not None and content.swe_box is not None and content.stiffness:
        groups.append(_stiffness_group(content, swe))
    sources = [gsu] + ([swe] if swe is not None else [])
    groups.extend(_model_group(model, sources) for model in content.models)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_UID, name="sarcopenia-app", manufacturer_name=MANUFACTURER
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=sources,
        content=report,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.SeriesDescription = SERIES_DESCRIPTION
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def _box_of(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> Box | None:
    region = group.roi
    if region is None:
        return None
    points = np.asarray(region.value)
    x0, y0, x1, y1 = (int(v) for v in np.rint([*points.min(axis=0), *points.max(axis=0)]))
    return Box(x0, y0, x1 - x0, y1 - y0)


def _grade_of(group) -> int | None:
    for evaluation in group.get_qualitative_evaluations(name=GRADE_NAME):
        for grade, code in GRADE_VALUES.items():
            if evaluation.value == code:
                return grade
    return None


def _stiffness_of(group) -> tuple[tuple[str, float], ...]:
    names = {concept: stat for stat, concept in STIFFNESS_NAMES.items()}
    names[COLORED_FRACTION] = "fraction_colored"
    pairs = []
    for measurement in group.get_measurements():
        stat = names.get(measurement.name)
        if stat is not None:
            pairs.append((stat, float(measurement.value)))
    return tuple(pairs)


ALGORITHM_NAME, ALGORITHM_VERSION, ALGORITHM_PARAMETERS = "111001", "111003", "111002"


def _algorithm_texts(measurement) -> dict[str, str]:
    """Algorithm name, version and parameters (TID 4019) of a measurement, by DCM code."""
    texts: dict[str, str] = {}
    for item in measurement[0].get("ContentSequence", []):
        concept = item.ConceptNameCodeSequence[0]
        if concept.CodingSchemeDesignator == "DCM" and item.ValueType == "TEXT":
            texts[concept.CodeValue] = str(item.TextValue)
    return texts


def _model_of(group) -> ModelResult | None:
    tasks = {concept: task for task, concept in TASK_CONCEPTS.items()}
    for measurement in group.get_measurements():
        task = tasks.get(measurement.name)
        texts = _algorithm_texts(measurement)
        if task is None or ALGORITHM_NAME not in texts:
            continue
        run_id = int(group.tracking_identifier.removeprefix(MODEL_PREFIX))
        return ModelResult(
            run_id,
            texts[ALGORITHM_NAME],
            texts.get(ALGORITHM_VERSION, ""),
            task,
            float(measurement.value),
        )
    return None


def _research_only(groups) -> bool:
    return any(
        evaluation.value == RESEARCH_ONLY
        for group in groups
        for evaluation in group.get_qualitative_evaluations(name=INTENDED_USE)
    )


def parse_report(dataset: Dataset) -> ParsedReport:
    """Read back a report this app wrote; ValueError when it is not one or is damaged."""
    if dataset.get("Manufacturer") != MANUFACTURER:
        raise ValueError("This structured report was not written by this app.")
    try:
        return _parsed(dataset)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(
            f"The structured report {dataset.get('SOPInstanceUID', '?')} cannot be read "
            f"({type(exc).__name__}: {exc})."
        ) from None


def _parsed(dataset: Dataset) -> ParsedReport:
    report = hd.sr.Comprehensive3DSR.from_dataset(dataset, copy=False).content
    planar = report.get_planar_roi_measurement_groups()
    other = report.get_image_measurement_groups()
    consensus_grade = consensus_box = swe_box = None
    readers: list[ReaderGrade] = []
    stiffness: tuple[tuple[str, float], ...] = ()
    models: list[ModelResult] = []
    for group in [*planar, *other]:
        identifier = group.tracking_identifier or ""
        box = _box_of(group) if group in planar else None
        if identifier == CONSENSUS_ID:
            consensus_grade, consensus_box = _grade_of(group), box
        elif identifier.startswith(READER_PREFIX):
            grade = _grade_of(group)
            if grade is not None:
                readers.append(ReaderGrade(identifier.removeprefix(READER_PREFIX), grade, box))
        elif identifier == STIFFNESS_ID:
            swe_box, stiffness = box, _stiffness_of(group)
        elif identifier.startswith(MODEL_PREFIX):
            model = _model_of(group)
            if model is not None:
                models.append(model)
    date = dataset.get("ContentDate")
    return ParsedReport(
        str(dataset.SOPInstanceUID),
        dt.datetime.strptime(date, "%Y%m%d").date() if date else None,
        str(dataset.get("ContentTime", "")),
        ReportContent(
            consensus_grade, consensus_box, tuple(readers), swe_box, stiffness, tuple(models)
        ),
        _research_only(other),
    )
