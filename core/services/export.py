"""The labeled CSV (one row per patient), its data dictionary, and figure/table downloads.

What a research group takes away from the app: everything the study's analysis needs
(Yi et al., Sci Rep 2022: demographics, CT SMA/SMI with the KNHANES sarcopenia cutoffs and
the one-month CT window, the two readers' echogenicity grades and their consensus, the crop
boxes) plus what this project adds (echo intensity and SWE stiffness statistics, each run's
split and predictions). Derived columns (SMI, eligibility, sarcopenia, dichotomized grade)
are computed by the same functions the app uses, never copied from a stored value.

Speed (10,000 patients in a few seconds): one bulk query per table, then pandas; image
features come from an on-disk cache keyed by image sha256 + box (``<data>/cache/features``)
and are computed only for images not seen before (``compute_features=False`` skips even
that, leaving the cells empty).

``import_metadata`` reads the metadata columns back into a database without those patients,
so a labeled CSV is also a portable metadata backup (images travel separately).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.cases import manifest
from core.common import config, labels
from core.common.boxes import Box
from core.common.csv_safety import csv_text, restore_cell
from core.common.store import ImageStore
from core.imaging.crop import crop
from core.imaging.images import load_pixels
from core.imaging.swe_decode import stiffness_stats
from core.learning.dataset import ArrayCache, CaseImage, decoded_swe_crop
from core.learning.features import ECHO_PERCENTILES, echo_intensity
from db import audit
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

Progress = Callable[[int, int], None]
FEATURES_VERSION: Final = 1
"""Part of the feature cache's file name; bump it when a feature's definition changes."""
FEATURE_WORKERS: Final = 4
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
GSU_FEATURES: Final = ("echo_mean", "echo_sd", *(f"echo_p{p}" for p in ECHO_PERCENTILES))
SWE_FEATURES: Final = ("mean", "median", "q1", "q3", "iqr", "fraction_colored")
LABELED_NAME: Final = "labeled.csv"
DICTIONARY_NAME: Final = "data_dictionary.csv"


class MetadataImportError(ValueError):
    """A labeled CSV whose metadata cannot be imported; lists every problem found."""


class FigureExportError(RuntimeError):
    """PNG export failed (kaleido needs a Chromium); HTML export still works."""


# ---------------------------------------------------------------------------------------
# Image features, cached by sha + box


class FeatureCache:
    """Echo intensity / stiffness statistics per (image sha, box), in one JSON file.

    One file, read once per export, instead of one file per image: 20,000 small reads would
    cost seconds. Written atomically; two exports racing only lose entries, recomputed later.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else config.data_dir() / "cache" / "features"
        self.path = self.root / f"features-v{FEATURES_VERSION}.json"
        try:
            self.entries: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    @staticmethod
    def key(kind: str, sha: str, box: Box) -> str:
        return f"{kind}:{sha}:{box.x},{box.y},{box.w},{box.h}"

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, values: Mapping[str, Any]) -> None:
        self.entries[key] = dict(values)
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.root)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.entries, handle)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.dirty = False


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _gsu_features(store: ImageStore, path: str, box: Box, what: str) -> dict[str, Any]:
    """Echo intensity of the un-normalized GSU crop (0–255 gray levels)."""
    return echo_intensity(crop(load_pixels(store, path), box, image_label=what))


def _swe_features(
    store: ImageStore, crops: ArrayCache, sha: str, path: str, box: Box, what: str
) -> dict[str, Any]:
    """Stiffness statistics inside the SWE box, decoded as ``learning.dataset`` does (cached)."""
    from core.imaging.crop import ChosenBox

    decoded = decoded_swe_crop(store, crops, CaseImage(sha, path, ChosenBox(box, "reader"), what))
    stats = {k: _finite_or_none(v) for k, v in stiffness_stats(decoded["stiffness"]).items()}
    return {**stats, "units": decoded["units"]}


def feature_keys(images: pd.DataFrame) -> pd.Series:
    """``FeatureCache.key`` for each row (columns modality, sha256, x, y, w, h), vectorized."""
    kind = np.where(images["modality"] == "GSU", "gsu", "swe")
    coords = [images[c].astype("int64").astype(str) for c in "xywh"]
    box = coords[0] + "," + coords[1] + "," + coords[2] + "," + coords[3]
    return pd.Series(kind, index=images.index) + ":" + images["sha256"] + ":" + box


def image_features(
    store: ImageStore,
    images: pd.DataFrame,
    *,
    cache: FeatureCache | None = None,
    compute: bool = True,
    progress: Progress | None = None,
    workers: int = FEATURE_WORKERS,
) -> dict[str, dict[str, Any]]:
    """Features by cache key for ``images`` (columns modality, sha256, path, x, y, w, h, code).

    Missing entries are computed in threads (OpenCV releases the GIL) when ``compute``,
    else left out. A broken image or box gets an entry with ``error`` instead of values.
    """
    cache = cache or FeatureCache()
    keys = feature_keys(images)
    out = {k: v for k in keys.unique() if (v := cache.get(k)) is not None}
    todo = images.assign(key=keys)[~keys.isin(out)].drop_duplicates("key")
    if compute and not todo.empty:
        crops = ArrayCache(None)

        def work(row: Any) -> dict[str, Any]:
            box = Box(int(row.x), int(row.y), int(row.w), int(row.h))
            what = f"{row.modality} image of {row.code}"
            try:
                if row.modality == "GSU":
                    return _gsu_features(store, row.path, box, what)
                return _swe_features(store, crops, row.sha256, row.path, box, what)
            except (OSError, ValueError) as exc:
                return {"error": str(exc)}

        rows = list(todo.itertuples(index=False))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, (row, values) in enumerate(
                zip(rows, pool.map(work, rows), strict=True), start=1
            ):
                cache.put(row.key, values)
                out[row.key] = values
                if progress:
                    progress(i, len(rows))
        cache.save()
    return out


def _query_frame(session: Session, statement: Any, columns: Sequence[str]) -> pd.DataFrame:
    """A query's rows as a DataFrame, built column-wise (much faster than from Row objects)."""
    rows = session.execute(statement).all()
    data = list(zip(*rows, strict=True)) if rows else [[] for _ in columns]
    return pd.DataFrame({name: list(values) for name, values in zip(columns, data, strict=True)})


# ---------------------------------------------------------------------------------------
# The labeled table


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


# ---------------------------------------------------------------------------------------
# Data dictionary

_FIXED: Final[dict[str, tuple[str, str]]] = {
    "patient_code": ("Pseudonymous patient code (unique).", "text"),
    "sex": ("Sex; the sarcopenia cutoff is sex-specific.", "M | F"),
    "age": ("Age at ultrasound.", "years"),
    "height_cm": ("Body height.", "cm"),
    "weight_kg": ("Body weight; empty when unknown (such a patient is excluded).", "kg"),
    "us_date": ("Date of the ultrasound examination.", "YYYY-MM-DD"),
    "ct_date": ("Date of the abdominal CT used for L3 muscle area.", "YYYY-MM-DD"),
    "l3_sma_cm2": ("Skeletal muscle area on the CT slice at the inferior end plate of L3.", "cm²"),
    "exclusion_reason": (
        "Exclusion reason recorded by a person (e.g. surgical hardware at L3).",
        "text",
    ),
    "synthetic": ("yes for the synthetic demo cohort (computer-generated images).", "yes | no"),
    "ct_interval_days": ("Days between ultrasound and CT (derived).", "days"),
    "smi": ("Skeletal muscle index = L3 SMA / height² (derived).", "cm²/m²"),
    "ct_eligible": (
        "CT usable as ground truth: within 30 days of the ultrasound, SMA and weight known, "
        "no recorded exclusion (Yi et al. 2022; derived).",
        "yes | no",
    ),
    "ct_exclusion": (
        "Why the CT is not usable (recorded or derived); empty when eligible.",
        "text",
    ),
    "sarcopenia": (
        "Sarcopenia by the KNHANES cutoffs, SMI ≤ 49 (men) or ≤ 31 (women) cm²/m²; empty when "
        "the CT is not eligible (derived).",
        "yes | no",
    ),
    "consensus_grade": ("Consensus echogenicity grade of the GSU image (after Heckmatt).", "0–3"),
    "consensus_method": ("How the consensus was reached.", "agreement | adjudication"),
    "consensus_decided_by": ("Admin who adjudicated; empty for automatic agreement.", "username"),
    "echogenicity": (
        "Dichotomized consensus grade: 0–1 low, 2–3 high (the study's task).",
        "low | high",
    ),
    "gsu_feature_box": ("Box the GSU features were measured in.", "consensus | reader | auto"),
    "swe_feature_box": ("Box the SWE statistics were measured in.", "consensus | reader | auto"),
    "swe_stiffness_units": (
        "Units of the decoded stiffness (kPa when the colour scale was read).",
        "text",
    ),
}


def _describe(column: str) -> tuple[str, str]:
    if column in _FIXED:
        return _FIXED[column]
    if column.startswith("grade_"):
        return (f"Echogenicity grade given by reader {column[6:]} (blinded, own grade).", "0–3")
    if column.startswith("box_"):
        stem, coord = column.rsplit("_", 1)
        _, modality, owner = stem.split("_", 2)
        who = {"consensus": "the consensus box", "auto": "the automatic (detected) box"}.get(
            owner, f"reader {owner}'s box"
        )
        meaning = {"x": "left edge", "y": "top edge", "w": "width", "h": "height"}[coord]
        return (f"{modality.upper()} crop box, {who}: {meaning}.", "pixels of the source image")
    if column.startswith("gsu_echo_"):
        stat = column[len("gsu_echo_") :]
        name = {"mean": "mean", "sd": "standard deviation"}.get(stat, f"{stat[1:]}th percentile")
        return (
            f"Echo intensity inside the GSU box, {name} of the un-normalized gray level.",
            "gray level 0–255",
        )
    if column.startswith("swe_stiffness_"):
        stat = column[len("swe_stiffness_") :]
        if stat == "fraction_colored":
            return ("Fraction of the SWE box with a decoded stiffness value.", "0–1")
        return (f"Decoded shear-wave stiffness inside the SWE box, {stat}.", "swe_stiffness_units")
    if column.startswith("run"):
        run, what = column.split("_", 1)
        run_id = run[3:]
        texts = {
            "subset": (
                f"Subset of the patient in run {run_id}'s split (its saved model's fold).",
                "train | val | test | not in run",
            ),
            "probability": (
                f"Run {run_id}'s predicted probability of the positive class (sarcopenia or "
                "high echogenicity). On training patients it is in-sample, not a test.",
                "0–1",
            ),
            "predicted_label": (
                f"Run {run_id}'s prediction at its threshold (1 = positive).",
                "0 | 1",
            ),
            "prediction_source": (
                f"Where run {run_id}'s probability comes from: stored test or validation "
                "prediction, or the cohort prediction job.",
                "test | val | cohort",
            ),
        }
        if what in texts:
            return texts[what]
    return ("", "")


def data_dictionary(columns: Iterable[str]) -> pd.DataFrame:
    """One row per column of the labeled CSV: meaning and unit or allowed values."""
    rows = [(c, *_describe(c)) for c in columns]
    missing = [c for c, text, _ in rows if not text]
    if missing:
        raise ValueError(
            f"No description for column(s) {missing}; extend core.services.export._describe."
        )
    return pd.DataFrame(rows, columns=["column", "description", "unit_or_values"])


# ---------------------------------------------------------------------------------------
# Files


def labeled_csv(frame: pd.DataFrame) -> bytes:
    """The labeled CSV; free-text cells a spreadsheet would run as formulas are neutralized
    (``core.common.csv_safety``), and ``import_metadata`` undoes that."""
    return csv_text(frame).encode("utf-8")


def dictionary_csv(columns: Iterable[str]) -> str:
    return csv_text(data_dictionary(columns))


def export_zip(
    db: Database,
    store: ImageStore | None = None,
    run_ids: Sequence[int] = (),
    *,
    image_features: bool = True,
    compute_features: bool = True,
    progress: Progress | None = None,
) -> bytes:
    """A zip of ``labeled.csv`` and ``data_dictionary.csv`` (and a short README)."""
    frame = labeled_frame(
        db,
        store,
        run_ids,
        image_features=image_features,
        compute_features=compute_features,
        progress=progress,
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(LABELED_NAME, labeled_csv(frame))
        archive.writestr(DICTIONARY_NAME, dictionary_csv(frame.columns))
        archive.writestr("README.txt", _readme(len(frame), run_ids))
    return buffer.getvalue()


def _readme(n: int, run_ids: Sequence[int]) -> str:
    runs = ", ".join(str(r) for r in run_ids) or "none"
    return (
        f"Labeled export, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {n} patients, "
        f"runs {runs}.\n"
        f"{LABELED_NAME}: one row per patient. {DICTIONARY_NAME}: what each column means.\n"
        "Derived columns (smi, ct_eligible, sarcopenia, echogenicity) follow Yi et al., "
        "Sci Rep 2022: KNHANES cutoffs, CT within 30 days, grades 0-1 low and 2-3 high.\n"
    )


def figure_html(fig: go.Figure) -> bytes:
    """A self-contained HTML file (plotly.js embedded, so it opens offline)."""
    return pio.to_html(fig, include_plotlyjs=True, full_html=True).encode("utf-8")


def figure_png(fig: go.Figure, *, width: int = 900, height: int = 650, scale: float = 2.0) -> bytes:
    """PNG through kaleido, which drives a headless Chromium (``/usr/bin/chromium`` here)."""
    try:
        return pio.to_image(fig, format="png", width=width, height=height, scale=scale)
    except Exception as exc:
        raise FigureExportError(
            f"PNG export failed ({type(exc).__name__}: {exc}). Kaleido needs Chrome or "
            "Chromium; install one, or download the plot as HTML."
        ) from exc


def table_csv(table: pd.DataFrame) -> bytes:
    """A table (e.g. Table 1) as CSV with its row labels; notes appended as comment lines."""
    text = csv_text(table, index=True)
    notes = table.attrs.get("notes") or []
    source = table.attrs.get("source")
    extra = [f"# {line}" for line in ([source] if source else []) + list(notes)]
    return (text + "".join(f"{line}\n" for line in extra)).encode("utf-8")


# ---------------------------------------------------------------------------------------
# Importing metadata back


def import_metadata(db: Database, csv: str | bytes | Path, *, actor: Reader | None = None) -> int:
    """Create the patients (and CT measurements) of a labeled CSV; returns how many.

    Every metadata value goes through the manifest checks (``core.cases.manifest``); all problems
    are reported at once and nothing is written unless every row is valid. Codes that already
    exist are refused, never overwritten. One audit row per patient.
    """
    if isinstance(csv, Path):
        text = csv.read_text(encoding="utf-8")
    elif isinstance(csv, bytes):
        text = csv.decode("utf-8")
    else:
        text = csv
    frame = pd.read_csv(io.StringIO(text.lstrip("\ufeff")), dtype=str, keep_default_na=False)
    frame = frame.map(restore_cell).rename(columns=restore_cell)
    required = [c for c in METADATA_COLUMNS if c != "synthetic"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MetadataImportError(
            f"The CSV lacks the column(s) {', '.join(missing)}; it needs {', '.join(required)}."
        )
    problems: list[str] = []
    records = []
    seen: set[str] = set()
    for row_number, row in enumerate(frame.to_dict("records"), start=2):
        try:
            code = manifest.check_code(row["patient_code"])
            if code in seen:
                raise manifest.FieldError(f"patient_code {code!r} appears twice.")
            seen.add(code)
            synthetic = str(row.get("synthetic", "no")).strip().lower()
            if synthetic not in ("yes", "no", ""):
                raise manifest.FieldError(f"synthetic must be yes or no, got {synthetic!r}.")
            records.append(
                {
                    "code": code,
                    "sex": manifest.check_sex(row["sex"]),
                    "age": manifest.check_age(row["age"]),
                    "height_cm": manifest.check_height(row["height_cm"]),
                    "weight_kg": manifest.check_weight(row["weight_kg"]),
                    "us_date": manifest.check_date("us_date", row["us_date"]),
                    "synthetic": synthetic == "yes",
                    "ct": {
                        "ct_date": manifest.check_date("ct_date", row["ct_date"]),
                        "sma_cm2": manifest.check_sma(row["l3_sma_cm2"]),
                        "exclusion_reason": manifest.check_reason(row["exclusion_reason"]),
                    },
                }
            )
        except manifest.FieldError as exc:
            problems.append(f"row {row_number}: {exc}")
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise MetadataImportError(f"{len(problems)} problem(s): {shown}{more}. Nothing imported.")

    def work(session) -> int:
        existing = set(
            session.scalars(
                select(Patient.code).where(Patient.code.in_([r["code"] for r in records]))
            )
        )
        if existing:
            raise MetadataImportError(
                f"{len(existing)} patient code(s) already exist "
                f"({', '.join(sorted(existing)[:5])}); import into a database without them. "
                "Nothing imported."
            )
        patients = []
        for record in records:
            ct = record.pop("ct")
            patient = Patient(**record)
            if any(v is not None for v in ct.values()):
                patient.ct = CtMeasurement(**ct)
            patients.append(patient)
        session.add_all(patients)
        session.flush()
        for patient in patients:
            audit.record(
                session,
                actor=actor,
                action="patient.import_metadata",
                entity="patient",
                entity_id=patient.id,
                patient_id=patient.id,
                after={"code": patient.code, "source": "labeled CSV"},
            )
        return len(patients)

    return db.write(work)


# ---------------------------------------------------------------------------------------
# CLI


def write_export(
    out: Path,
    db: Database,
    store: ImageStore,
    run_ids: Sequence[int] = (),
    *,
    image_features: bool = True,
    progress: Progress | None = None,
) -> list[Path]:
    """Write a ``.zip`` (CSV + dictionary), or with a ``.csv`` name the CSV and a
    ``<name>-dictionary.csv`` beside it; returns the files written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        frame = labeled_frame(db, store, run_ids, image_features=image_features, progress=progress)
        dictionary = out.with_name(f"{out.stem}-dictionary.csv")
        out.write_bytes(labeled_csv(frame))
        dictionary.write_text(dictionary_csv(frame.columns))
        return [out, dictionary]
    out.write_bytes(
        export_zip(db, store, run_ids, image_features=image_features, progress=progress)
    )
    return [out]
