"""Model outputs for many patients: cached probabilities and Grad-CAM, cohort summaries.

Predictions and maps are cached on disk by (run, model file, image sha, box, settings), so a
new box or a retrained run never shows a stale answer, and a revisit costs a file read.
``run_outputs`` merges a run's stored test/validation predictions with its cohort job's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import select

from core.common import config
from core.common.boxes import Box
from core.common.store import ImageStore
from core.learning.dataset import ArrayCache, CaseImage, input_arrays
from core.services.review.cases import MODALITY, case_images, stored_boxes
from core.services.review.errors import ReviewError
from core.services.review.predictor import RunPredictor, load_predictor, model_stamp, saved_fold
from db.engine import Database
from db.models import Image, Prediction, SplitAssignment, TrainingRun

Progress = Callable[[int, int], None]
NOT_IN_RUN: Final = "not in run"
PREDICT_BATCH: Final = 16


def prediction_root() -> Path:
    return config.data_dir() / "cache" / "predictions"


@dataclass(frozen=True)
class ModelOutput:
    probability: float
    cam: np.ndarray
    cached: bool


def _cache_parts(predictor: RunPredictor, images: Mapping[str, CaseImage]) -> dict[str, Any]:
    return {
        "kind": "prediction",
        "run": predictor.run_id,
        "model": predictor.stamp,
        "settings": predictor.settings.fingerprint_payload(),
        "inputs": {n: [img.sha256, list(img.chosen.box.as_tuple())] for n, img in images.items()},
    }


def predict_cases(
    predictor: RunPredictor,
    store: ImageStore,
    cases: Mapping[int, Mapping[str, CaseImage]],
    *,
    crops: ArrayCache | None = None,
    results: ArrayCache | None = None,
    batch_size: int = PREDICT_BATCH,
    progress: Progress | None = None,
    errors: dict[int, str] | None = None,
) -> dict[int, ModelOutput]:
    """Probability and Grad-CAM for each case, from the cache or computed in batches.

    A case whose image cannot be cut (unreadable file, box outside the image) is left out;
    pass ``errors`` to receive why, by patient id.
    """
    crops = crops or ArrayCache(None)
    results = results or ArrayCache(prediction_root())
    out: dict[int, ModelOutput] = {}
    misses: list[int] = []
    for pid, images in cases.items():
        path = results.path(_cache_parts(predictor, images))
        try:
            with np.load(path, allow_pickle=False) as stored:
                out[pid] = ModelOutput(float(stored["prob"]), stored["cam"], cached=True)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            misses.append(pid)
    done = len(out)
    if progress:
        progress(done, len(cases))
    for start in range(0, len(misses), batch_size):
        chunk: list[int] = []
        rows: dict[str, list[np.ndarray]] = {name: [] for name in predictor.inputs}
        for pid in misses[start : start + batch_size]:
            try:
                arrays = {
                    name: input_arrays(store, crops, predictor.settings, name, cases[pid][name])
                    for name in predictor.inputs
                }
            except (OSError, ValueError) as exc:
                if errors is not None:
                    errors[pid] = str(exc)
                continue
            chunk.append(pid)
            for name in predictor.inputs:
                rows[name].append(arrays[name]["x"])
        if chunk:
            batch = {name: np.stack(rows[name]) for name in predictor.inputs}
            probs = predictor.predict(batch)
            cams = predictor.explain(batch)
            for pid, prob, cam in zip(chunk, probs, cams, strict=True):
                stored = results.get_or_compute(
                    _cache_parts(predictor, cases[pid]),
                    lambda p=prob, c=cam: {"prob": np.array(p), "cam": c.astype(np.float32)},
                )
                out[pid] = ModelOutput(float(stored["prob"]), stored["cam"], cached=False)
        done += len(misses[start : start + batch_size])
        if progress:
            progress(done, len(cases))
    return out


def _summary_path(run_id: int) -> Path:
    return prediction_root() / f"run-{run_id}" / "cohort.json"


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def predict_cohort(
    db: Database,
    store: ImageStore,
    run_id: int,
    progress: Progress | None = None,
    *,
    predictor: RunPredictor | None = None,
) -> int:
    """Predict (and explain) every patient that has the run's images; returns how many.

    Results go to the prediction cache, and a per-run summary file feeds the review table
    and the export. Patients without the images or a box are skipped.
    """
    predictor = predictor or load_predictor(db, run_id)
    cases = {
        pid: images
        for pid, images in case_images(db, store, predictor.task).items()
        if not isinstance(images, str)
    }
    errors: dict[int, str] = {}
    outputs = predict_cases(predictor, store, cases, progress=progress, errors=errors)
    summary = {
        "run_id": run_id,
        "model": predictor.stamp,
        "threshold": predictor.threshold,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "patients": {
            str(pid): {
                "probability": out.probability,
                "inputs": {
                    n: [img.sha256, list(img.chosen.box.as_tuple())]
                    for n, img in cases[pid].items()
                },
            }
            for pid, out in outputs.items()
        },
        "skipped": {str(pid): reason for pid, reason in errors.items()},
    }
    write_json(_summary_path(run_id), summary)
    return len(outputs)


def current_inputs(db: Database) -> dict[tuple[int, str], tuple[str, Box | None]]:
    """(patient id, modality) → (image sha, the person-drawn or stored automatic box)."""
    with db.read() as session:
        images = session.execute(
            select(Image.id, Image.patient_id, Image.modality, Image.sha256)
        ).all()
        boxes = stored_boxes(session, [i.id for i in images])
    current: dict[tuple[int, str], tuple[str, Box | None]] = {}
    for image_id, pid, modality, sha in images:
        entry = boxes.get(image_id, {})
        readers = entry.get("readers", {})
        person = entry.get("consensus") or (readers[sorted(readers)[0]] if readers else None)
        current[(pid, modality)] = (sha, person or entry.get("auto"))
    return current


def cohort_predictions(
    db: Database,
    run_id: int,
    current: Mapping[tuple[int, str], tuple[str, Box | None]] | None = None,
) -> dict[int, float]:
    """The cohort job's probabilities that still match each patient's images and stored box.

    A patient whose image or stored box changed since the job ran is left out (stale).
    ``current`` is ``current_inputs(db)``, passed in when several runs are read at once.
    """
    try:
        summary = json.loads(_summary_path(run_id).read_text())
    except (OSError, ValueError):
        return {}
    entries = summary.get("patients", {})
    with db.read() as session:
        model_path = session.scalar(select(TrainingRun.model_path).where(TrainingRun.id == run_id))
    if not entries or summary.get("model") != model_stamp(model_path):
        return {}
    current = current if current is not None else current_inputs(db)
    out: dict[int, float] = {}
    for key, entry in entries.items():
        pid = int(key)
        fresh = True
        for name, (sha, box) in entry["inputs"].items():
            now_sha, now_box = current.get((pid, MODALITY[name]), (None, None))
            if now_sha != sha or (now_box is not None and list(now_box.as_tuple()) != box):
                fresh = False
        if fresh:
            out[pid] = float(entry["probability"])
    return out


OUTPUT_COLUMNS: Final = (
    "run_id",
    "patient_id",
    "subset",
    "tested",
    "probability",
    "threshold",
    "predicted_label",
    "source",
)


def run_outputs(db: Database, run_ids: Sequence[int]) -> pd.DataFrame:
    """Per run and patient: split subset and the best available probability, in bulk.

    ``subset`` is the patient's subset in the split of the run's saved model (NOT_IN_RUN
    when absent); ``tested`` is True when the patient was in the run's test set in any fold.
    The probability is the stored test prediction, else the saved fold's validation
    prediction, else the cohort job's (``source`` says which: test, val, cohort).
    """
    frames = []
    current = None
    with db.read() as session:
        runs = {
            r.id: r
            for r in session.scalars(select(TrainingRun).where(TrainingRun.id.in_(list(run_ids))))
        }
        missing = [r for r in run_ids if r not in runs]
        if missing:
            raise ReviewError(f"There is no training run {missing[0]}.")
        split = pd.DataFrame(
            session.execute(
                select(
                    SplitAssignment.split_id,
                    SplitAssignment.fold,
                    SplitAssignment.patient_id,
                    SplitAssignment.subset,
                ).where(
                    SplitAssignment.split_id.in_(
                        [r.split_id for r in runs.values() if r.split_id is not None]
                    )
                )
            ).all(),
            columns=["split_id", "fold", "patient_id", "subset"],
        )
        predictions = pd.DataFrame(
            session.execute(
                select(
                    Prediction.run_id,
                    Prediction.patient_id,
                    Prediction.subset,
                    Prediction.fold,
                    Prediction.probability,
                ).where(Prediction.run_id.in_(list(run_ids)))
            ).all(),
            columns=["run_id", "patient_id", "subset", "fold", "probability"],
        )
    for run_id in run_ids:
        run = runs[run_id]
        saved = saved_fold(run)
        threshold = float((run.settings or {}).get("threshold", 0.5))
        mine = split[(split["split_id"] == run.split_id) & (split["fold"] == saved)]
        subsets = dict(zip(mine["patient_id"], mine["subset"], strict=True))
        if _summary_path(run_id).exists() and current is None:
            current = current_inputs(db)
        probs = {pid: (p, "cohort") for pid, p in cohort_predictions(db, run_id, current).items()}
        preds = predictions[predictions["run_id"] == run_id]
        val = preds[(preds["subset"] == "val") & (preds["fold"] == saved)]
        probs.update(
            {pid: (p, "val") for pid, p in zip(val["patient_id"], val["probability"], strict=True)}
        )
        test = preds[preds["subset"] == "test"].drop_duplicates("patient_id")
        probs.update(
            {
                pid: (p, "test")
                for pid, p in zip(test["patient_id"], test["probability"], strict=True)
            }
        )
        tested = set(test["patient_id"].tolist())
        ids = sorted(set(subsets) | set(probs))
        frame = pd.DataFrame(
            {
                "run_id": run_id,
                "patient_id": ids,
                "subset": [subsets.get(pid, NOT_IN_RUN) for pid in ids],
                "tested": [pid in tested for pid in ids],
                "probability": [probs[pid][0] if pid in probs else np.nan for pid in ids],
                "threshold": threshold,
                "source": [probs[pid][1] if pid in probs else None for pid in ids],
            }
        )
        frame["predicted_label"] = (
            (frame["probability"] >= threshold).astype("Int64").where(frame["probability"].notna())
        )
        frames.append(frame[list(OUTPUT_COLUMNS)])
    if not frames:
        return pd.DataFrame(columns=list(OUTPUT_COLUMNS))
    return pd.concat(frames, ignore_index=True)
