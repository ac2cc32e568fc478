"""The labeled table: one row per patient, built with one bulk query per table and pandas.

Derived columns (SMI, eligibility, sarcopenia, dichotomized grade) are computed by the same
functions the app uses (``db.cases.case_labels``), never copied from a stored value.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.common import labels
from core.common.store import ImageStore
from core.imaging.swe_decode import PresetRange
from core.learning.dataset import preset_range
from core.services.export.features import (
    GSU_FEATURES,
    SWE_FEATURES,
    FeatureCache,
    Progress,
    feature_keys,
    image_features,
)
from db.cases import case_labels
from db.engine import Database
from db.models import (
    ConsensusGrade,
    CropBox,
    CtMeasurement,
    Grade,
    Image,
    Patient,
    Reader,
    TrainingRun,
)
from db.swe_presets import PresetLookup

METADATA_COLUMNS: Final = (
    "patient_code",
    "sex",
    "age",
    "height_cm",
    "weight_kg",
    "us_date",
    "ct_date",
    "l3_sma_cm2",
    "exclusion_reason",
    "synthetic",
)
"""Stored patient and CT fields: what ``import_metadata`` reads back (manifest names)."""
DERIVED_COLUMNS: Final = ("ct_interval_days", "smi", "ct_eligible", "ct_exclusion", "sarcopenia")


def _query_frame(session: Session, statement: Any, columns: Sequence[str]) -> pd.DataFrame:
    """A query's rows as a DataFrame, built column-wise (much faster than from Row objects)."""
    rows = session.execute(statement).all()
    data = list(zip(*rows, strict=True)) if rows else [[] for _ in columns]
    return pd.DataFrame({name: list(values) for name, values in zip(columns, data, strict=True)})


@dataclass(frozen=True)
class _PatientFacts:
    """What ``db.cases.case_labels`` reads from a patient, without building ORM objects."""

    sex: str
    height_cm: float
    weight_kg: float | None
    us_date: dt.date | None
    ct: _CtFacts | None


@dataclass(frozen=True)
class _CtFacts:
    sma_cm2: float | None
    ct_date: dt.date | None
    exclusion_reason: str | None


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _patients_frame(db: Database) -> pd.DataFrame:
    with db.read() as session:
        frame = _query_frame(
            session,
            select(
                Patient.id,
                Patient.code,
                Patient.sex,
                Patient.age,
                Patient.height_cm,
                Patient.weight_kg,
                Patient.us_date,
                Patient.synthetic,
                CtMeasurement.id,
                CtMeasurement.ct_date,
                CtMeasurement.sma_cm2,
                CtMeasurement.exclusion_reason,
            )
            .outerjoin(CtMeasurement, CtMeasurement.patient_id == Patient.id)
            .order_by(Patient.code),
            [
                "patient_id",
                "patient_code",
                "sex",
                "age",
                "height_cm",
                "weight_kg",
                "us_date",
                "synthetic",
                "ct_id",
                "ct_date",
                "l3_sma_cm2",
                "exclusion_reason",
            ],
        )
    derived = []
    columns = ("sex", "height_cm", "weight_kg", "us_date", "ct_id", "l3_sma_cm2", "ct_date")
    for sex, height, weight, us_date, ct_id, sma, ct_date, reason in zip(
        *(frame[c].tolist() for c in columns), frame["exclusion_reason"].tolist(), strict=True
    ):
        ct = _CtFacts(_none(sma), _none(ct_date), _none(reason)) if _none(ct_id) else None
        got = case_labels(_PatientFacts(sex, height, _none(weight), _none(us_date), ct))  # type: ignore[arg-type]
        derived.append(
            (
                got.interval_days,
                round(got.smi, 2) if got.smi is not None else None,
                "yes" if got.eligible else "no",
                got.exclusion_reason or "",
                ("yes" if got.sarcopenic else "no")
                if got.eligible and got.sarcopenic is not None
                else "",
            )
        )
    extra = pd.DataFrame(derived, columns=list(DERIVED_COLUMNS), index=frame.index)
    frame = pd.concat([frame.drop(columns="ct_id"), extra], axis=1)
    frame["ct_interval_days"] = frame["ct_interval_days"].astype("Int64")
    frame["synthetic"] = frame["synthetic"].map({True: "yes", False: "no"})
    for name in ("us_date", "ct_date"):
        frame[name] = frame[name].map(lambda d: d.isoformat() if isinstance(d, dt.date) else "")
    frame["exclusion_reason"] = frame["exclusion_reason"].fillna("")
    return frame[["patient_id", *METADATA_COLUMNS, *DERIVED_COLUMNS]]


def _grades_frame(db: Database) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reader grades pivoted to grade_<username>, consensus per patient)."""
    with db.read() as session:
        grades = _query_frame(
            session,
            select(Image.patient_id, Reader.username, Grade.grade)
            .join(Image, Image.id == Grade.image_id)
            .join(Reader, Reader.id == Grade.reader_id)
            .where(Image.modality == "GSU"),
            ["patient_id", "username", "grade"],
        )
        consensus = _query_frame(
            session,
            (
                select(
                    Image.patient_id,
                    ConsensusGrade.grade,
                    ConsensusGrade.method,
                    Reader.username,
                )
                .join(Image, Image.id == ConsensusGrade.image_id)
                .outerjoin(Reader, Reader.id == ConsensusGrade.decided_by_id)
                .where(Image.modality == "GSU")
            ),
            ["patient_id", "consensus_grade", "consensus_method", "consensus_decided_by"],
        )
    if grades.empty:
        pivot = pd.DataFrame(index=pd.Index([], name="patient_id"))
    else:
        pivot = grades.pivot(index="patient_id", columns="username", values="grade")
        pivot.columns = [f"grade_{name}" for name in pivot.columns]
    consensus["echogenicity"] = consensus["consensus_grade"].map(
        lambda g: "high" if labels.dichotomize_grade(int(g)) else "low"
    )
    return pivot.astype("Int64"), consensus.set_index("patient_id")


def _boxes_frame(db: Database) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every stored box as box_<modality>_<owner>_<x|y|w|h>, the images with chosen box)."""
    with db.read() as session:
        boxes = _query_frame(
            session,
            select(
                CropBox.image_id,
                CropBox.owner_key,
                Reader.username,
                CropBox.x,
                CropBox.y,
                CropBox.w,
                CropBox.h,
            ).outerjoin(Reader, Reader.id == CropBox.reader_id),
            ["image_id", "owner_key", "username", "x", "y", "w", "h"],
        )
        images = _query_frame(
            session,
            select(Image.id, Image.patient_id, Image.modality, Image.sha256, Image.path),
            ["image_id", "patient_id", "modality", "sha256", "path"],
        )
        ranges = _preset_ranges(session)
        images["preset"] = pd.Series(
            [ranges.get(i) for i in images["image_id"]], index=images.index, dtype=object
        )
    boxes = boxes.merge(images[["image_id", "patient_id", "modality"]], on="image_id")
    is_reader = ~boxes["owner_key"].isin(["consensus", "auto"])
    boxes["owner"] = boxes["owner_key"].where(
        ~is_reader, boxes["username"].fillna(boxes["owner_key"])
    )
    wide = pd.DataFrame(index=pd.Index([], name="patient_id"))
    if not boxes.empty:
        boxes["stem"] = "box_" + boxes["modality"].str.lower() + "_" + boxes["owner"]
        long = boxes.melt(
            id_vars=["patient_id", "stem"], value_vars=["x", "y", "w", "h"], var_name="coord"
        )
        long["column"] = long["stem"] + "_" + long["coord"]
        wide = long.pivot(index="patient_id", columns="column", values="value").astype("Int64")
        order = sorted({c.rsplit("_", 1)[0] for c in wide.columns}, key=_box_order)
        wide = wide[[f"{stem}_{c}" for stem in order for c in "xywh"]]
    # The box each image is measured in: consensus, else the first reader by name, else the
    # stored automatic box (``core.imaging.crop.choose_box``), vectorized over all images.
    ranked = boxes.assign(
        rank=np.select(
            [boxes["owner_key"] == "consensus", boxes["owner_key"] == "auto"], [0, 2], default=1
        ),
        source=np.select(
            [boxes["owner_key"] == "consensus", boxes["owner_key"] == "auto"],
            ["consensus", "auto"],
            default="reader",
        ),
    )
    first = ranked.sort_values(["image_id", "rank", "owner"]).drop_duplicates("image_id")
    chosen_frame = images.merge(
        first[["image_id", "source", "x", "y", "w", "h"]], on="image_id"
    ).drop(columns="image_id")
    return wide, chosen_frame


def _preset_ranges(session: Session) -> dict[int, PresetRange]:
    """The scanner-preset SWE range of each image that has one (none unless entered)."""
    presets = PresetLookup.load(session)
    if not presets:
        return {}
    swe = session.scalars(select(Image).where(Image.modality == "SWE"))
    found = {image.id: preset_range(presets.for_image(image)) for image in swe}
    return {image_id: preset for image_id, preset in found.items() if preset is not None}


def _box_order(stem: str) -> tuple[int, int, str]:
    _, modality, owner = stem.split("_", 2)
    rank = {"consensus": 0, "auto": 2}.get(owner, 1)
    return (0 if modality == "gsu" else 1, rank, owner)


def _features_frame(
    store: ImageStore,
    chosen: pd.DataFrame,
    codes: Mapping[int, str],
    *,
    compute: bool,
    cache: FeatureCache | None,
    progress: Progress | None,
) -> pd.DataFrame:
    columns = [
        "gsu_feature_box",
        *(f"gsu_{n}" for n in GSU_FEATURES),
        "swe_feature_box",
        *(f"swe_stiffness_{n}" for n in SWE_FEATURES),
        "swe_stiffness_units",
    ]
    if chosen.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="patient_id"))
    chosen = chosen.assign(code=chosen["patient_id"].map(codes))
    values = image_features(store, chosen, cache=cache, compute=compute, progress=progress)
    found = pd.DataFrame.from_dict(
        {k: v for k, v in values.items() if "error" not in v}, orient="index"
    )
    chosen = chosen.assign(key=feature_keys(chosen))
    parts = []
    for modality, prefix, names, units in (
        ("GSU", "gsu_", GSU_FEATURES, None),
        ("SWE", "swe_stiffness_", SWE_FEATURES, "units"),
    ):
        rows = chosen[chosen["modality"] == modality].set_index("patient_id")
        wanted = [*names, *([units] if units else [])]
        stats = found.reindex(index=rows["key"], columns=wanted)
        stats.index = rows.index
        stats.columns = [f"{prefix}{n}" for n in wanted]
        stats.insert(0, f"{modality.lower()}_feature_box", rows["source"])
        parts.append(stats)
    return pd.concat(parts, axis=1).reindex(columns=columns)


def _runs_frame(db: Database, run_ids: Sequence[int]) -> pd.DataFrame:
    from core.services.review import run_outputs

    outputs = run_outputs(db, run_ids)
    wide = pd.DataFrame(index=pd.Index([], name="patient_id"))
    for run_id in run_ids:
        mine = outputs[outputs["run_id"] == run_id].set_index("patient_id")
        part = pd.DataFrame(
            {
                f"run{run_id}_subset": mine["subset"],
                f"run{run_id}_probability": mine["probability"],
                f"run{run_id}_predicted_label": mine["predicted_label"],
                f"run{run_id}_prediction_source": mine["source"],
            }
        )
        wide = wide.join(part, how="outer")
    return wide


def labeled_frame(
    db: Database,
    store: ImageStore | None = None,
    run_ids: Sequence[int] = (),
    *,
    image_features: bool = True,
    compute_features: bool = True,
    feature_cache: FeatureCache | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The labeled table: one row per patient, ordered by code; ``data_dictionary`` explains it.

    ``image_features`` needs ``store``. Runs must exist; a patient outside a run's split gets
    "not in run".
    """
    if image_features and store is None:
        raise ValueError("Image features need the image store; pass store or image_features=False.")
    with db.read() as session:
        known = set(
            session.scalars(select(TrainingRun.id).where(TrainingRun.id.in_(list(run_ids))))
        )
    unknown = [r for r in run_ids if r not in known]
    if unknown:
        raise ValueError(f"There is no training run {unknown[0]}; pick runs that exist.")
    table = _patients_frame(db).set_index("patient_id")
    grades, consensus = _grades_frame(db)
    boxes, chosen = _boxes_frame(db)
    table = table.join(grades).join(consensus).join(boxes)
    if image_features:
        codes = table["patient_code"].to_dict()
        table = table.join(
            _features_frame(
                store,
                chosen,
                codes,
                compute=compute_features,
                cache=feature_cache,
                progress=progress,
            )
        )
    if run_ids:
        table = table.join(_runs_frame(db, run_ids))
        for run_id in run_ids:
            column = f"run{run_id}_subset"
            table[column] = table[column].fillna("not in run")
    table["consensus_grade"] = table["consensus_grade"].astype("Int64")
    for column in table.columns:
        if column.startswith(COMPUTED_PREFIXES) or column.endswith("_probability"):
            table[column] = round_float_noise(table[column])
    return table.reset_index(drop=True)


COMPUTED_PREFIXES: Final = ("gsu_echo_", "swe_stiffness_")
"""Columns measured from pixels (float32 arithmetic), rounded by ``round_float_noise``."""
SIGNIFICANT_DIGITS: Final = 7
"""What float32 carries (about 7.2 decimal digits); further digits are arithmetic noise."""


def round_float_noise(values: pd.Series) -> pd.Series:
    """Computed floats to ``SIGNIFICANT_DIGITS`` significant digits (17.00000088 → 17.0).

    Only for values computed in float32 (image statistics, model probabilities): stored
    metadata is exported exactly as stored, so the metadata round trip stays exact. Other
    dtypes pass through unchanged.
    """
    if not pd.api.types.is_float_dtype(values):
        return values
    return values.map(lambda v: float(f"{v:.{SIGNIFICANT_DIGITS}g}") if pd.notna(v) else v)
