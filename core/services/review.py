"""Per-patient review: every selected model's opinion on one patient, beside the truth.

What a radiologist checks after training (Yi et al., Sci Rep 2022, showed Grad-CAM maps to
argue the networks looked at fascia, fibrosis and fat): the GSU and SWE images with their
crop boxes, the decoded stiffness map, the readers' grades and the consensus, CT SMI and the
sarcopenia truth, and for each model its probability, its predicted label, which subset the
patient was in, and its Grad-CAM on the crop and on the whole scan.

- Models load only from ``core.common.config.models_dir()`` and with ``safe_mode=True``: a
  ``.keras`` file can carry code, and a path typed or stored elsewhere is refused.
- Patients are cut exactly as for training (``core.learning.dataset``: consensus box, else the first
  reader's, else the automatic box; the run's normalization and input size).
- Predictions and maps are cached on disk by (run, model file, image sha, box, settings), so a
  new box or a retrained run never shows a stale answer, and a revisit costs a file read.
- A whole cohort is predicted by a background process (``python -m core predict``), which
  writes progress to a small status file the page polls.
- Blinding: a reader who has not graded a patient's GSU image sees neither the other grades,
  nor the consensus, nor the echogenicity model (``db.grading`` enforces the same rule).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from core.common import config
from core.common.boxes import Box
from core.common.labels import dichotomize_grade
from core.common.store import ImageStore
from core.imaging.crop import ChosenBox, choose_box
from core.imaging.images import load_pixels, to_display_rgb
from core.imaging.swe_decode import stiffness_stats
from core.learning.dataset import (
    TASKS,
    ArrayCache,
    CaseImage,
    DatasetSettings,
    auto_box,
    decoded_swe_crop,
    input_arrays,
)
from core.report.table1 import run_label
from db.cases import case_labels
from db.datafiles import data_path
from db.engine import Database
from db.models import (
    ConsensusGrade,
    CropBox,
    Grade,
    Image,
    Patient,
    Prediction,
    Reader,
    Split,
    SplitAssignment,
    TrainingRun,
)

if TYPE_CHECKING:
    import keras

Progress = Callable[[int, int], None]
_MODALITY: Final = {"gsu": "GSU", "swe": "SWE"}
NOT_IN_RUN: Final = "not in run"
ADVICE_NOTE: Final = (
    "Advice only: the echogenicity model's opinion, not a grade. The consensus of the "
    "readers is the ground truth."
)
MIN_READERS_FOR_ADVICE: Final = 2
"""The model's opinion is shown only once two readers have graded (it must not anchor them)."""
PREDICT_BATCH: Final = 16
STIFFNESS_COLORMAP: Final = cv2.COLORMAP_JET


class ModelPathError(ValueError):
    """A model file outside the models folder, of the wrong type, or missing."""


class ReviewError(ValueError):
    """A patient, run or image that cannot be reviewed; the message says why."""


class SecondReaderUnavailable(ReviewError):
    """The model's advice cannot be shown (yet) for this image."""


# ---------------------------------------------------------------------------------------
# Loading models safely


def checked_model_path(path: str | Path) -> Path:
    """The resolved path of a ``.keras`` file inside the models folder, or ModelPathError."""
    root = config.models_dir().resolve()
    full = data_path(path).expanduser().resolve()
    if root not in full.parents:
        raise ModelPathError(
            f"Refusing to load {path}: models are loaded only from the models folder {root}. "
            "A .keras file can carry code; copy a trusted model there (or retrain it)."
        )
    if full.suffix != ".keras":
        raise ModelPathError(f"Refusing to load {full.name}: only .keras model files are read.")
    if not full.is_file():
        raise ModelPathError(
            f"The model file {full} is missing; retrain the run or restore the file."
        )
    return full


def load_keras_model(path: str | Path) -> keras.Model:
    """``keras.models.load_model`` with ``safe_mode=True`` on a checked models-folder path."""
    import keras

    import core.learning.models  # noqa: F401 - registers ArchPreprocess for deserialization

    return keras.models.load_model(checked_model_path(path), safe_mode=True, compile=False)


def model_stamp(path: str | Path | None) -> str:
    """Size and modification time of a model file ("" when missing): part of every cache
    key, so a retrained model (or a reused run id) never meets an old cached answer."""
    try:
        stat = data_path(path).stat() if path else None
    except OSError:
        return ""
    return f"{stat.st_size}-{stat.st_mtime_ns}" if stat else ""


def run_dataset_settings(session: Session, run: TrainingRun) -> DatasetSettings:
    """How the run's inputs were cut: its stored split's settings, else its training settings."""
    if run.split_id is not None:
        split = session.get(Split, run.split_id)
        if split is not None:
            return DatasetSettings.from_payload(split.settings)
    from core.learning.train import TrainSettings

    try:
        train = TrainSettings.from_dict(run.settings)
    except (TypeError, ValueError) as exc:
        raise ReviewError(f"Run {run.id} has unreadable settings: {exc}") from None
    return train.provisional_dataset_settings()


def _saved_fold(run: TrainingRun) -> int:
    return int((run.metrics or {}).get("saved_fold", 0))


@dataclass
class RunPredictor:
    """A finished run's model, ready for single cases: a compiled forward pass and Grad-CAM.

    Calls go through a ``tf.function`` (traced once per input shape), not ``model.predict``,
    whose per-call setup costs more than the forward pass of one 112×112 crop.
    """

    run_id: int
    task: str
    label: str
    threshold: float
    settings: DatasetSettings
    stamp: str
    model: Any
    _forward: Any = field(init=False, repr=False)
    _explainer: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import tensorflow as tf

        from core.learning.gradcam import GradCAM

        model = self.model
        self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        self._explainer = GradCAM(model)

    @property
    def inputs(self) -> tuple[str, ...]:
        return TASKS[self.task].inputs

    @property
    def explained_input(self) -> str:
        """The input the Grad-CAM map belongs to (the GSU branch of a fusion model)."""
        return self.inputs[0]

    def _batch(self, arrays: Mapping[str, np.ndarray]) -> Any:
        missing = [name for name in self.inputs if name not in arrays]
        if missing:
            raise ReviewError(f"Run {self.run_id} needs the input(s) {missing}.")
        if len(self.inputs) == 1:
            return np.asarray(arrays[self.inputs[0]], dtype=np.float32)
        return {name: np.asarray(arrays[name], dtype=np.float32) for name in self.inputs}

    def predict(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities (N,) for a batch given as {input name: (N, H, W, C)}."""
        out = self._forward(self._batch(arrays))
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def explain(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Grad-CAM maps (N, h, w) in [0, 1] on the logit of the positive class."""
        return self._explainer(self._batch(arrays))


def load_predictor(db: Database, run_id: int) -> RunPredictor:
    """Load a finished run's model (safe mode, models folder only) with its input settings."""
    with db.read() as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise ReviewError(f"There is no training run {run_id}.")
        if run.status != "done" or not run.model_path:
            raise ReviewError(f"Run {run_id} is {run.status} and has no model to load yet.")
        settings = run_dataset_settings(session, run)
        label = run_label(run)
        threshold = float((run.settings or {}).get("threshold", 0.5))
        path = checked_model_path(run.model_path)
        task = run.task
    model = load_keras_model(path)
    return RunPredictor(run_id, task, label, threshold, settings, model_stamp(path), model)


MAX_LOADED_MODELS: Final = 6
"""Models kept in memory per process (a VGG19 at 112×112 holds about 80 MB)."""


class ModelCache:
    """Loaded predictors shared by every session of a process, each loaded once.

    Keyed by run id, model path and the file's size and mtime, so a retrained or replaced
    model file is loaded afresh; beyond ``size`` models the least recently used is dropped.
    Loading holds a lock, so two sessions opening the same model at once load it once.
    The app keeps one instance in Streamlit's resource cache (``pages.components``).
    """

    def __init__(self, size: int = MAX_LOADED_MODELS) -> None:
        self.size = size
        self._loaded: OrderedDict[tuple[int, str, str], RunPredictor] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(db: Database, run_id: int) -> tuple[int, str, str]:
        with db.read() as session:
            run = session.get(TrainingRun, run_id)
            path = run.model_path if run is not None else None
        return (run_id, str(path), model_stamp(path))

    def is_loaded(self, db: Database, run_id: int) -> bool:
        """Whether ``get`` would answer without loading (the page shows progress for the
        models it still has to load)."""
        return self._key(db, run_id) in self._loaded

    def get(self, db: Database, run_id: int) -> RunPredictor:
        """The run's predictor, loaded now if this process has not loaded it yet."""
        key = self._key(db, run_id)
        with self._lock:
            predictor = self._loaded.get(key)
            if predictor is None:
                predictor = load_predictor(db, run_id)
                for stale in [k for k in self._loaded if k[0] == run_id]:
                    del self._loaded[stale]
                self._loaded[key] = predictor
                while len(self._loaded) > self.size:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(key)
        return predictor


# ---------------------------------------------------------------------------------------
# Which crop each patient gets


@dataclass(frozen=True)
class _ImageRow:
    id: int
    patient_id: int
    modality: str
    sha256: str
    path: str


def _stored_boxes(session: Session, image_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Per image: consensus box, reader boxes by username, stored automatic box."""
    ids = list(image_ids)
    out: dict[int, dict[str, Any]] = {}
    if not ids:
        return out
    rows = session.execute(
        select(CropBox, Reader.username)
        .outerjoin(Reader, Reader.id == CropBox.reader_id)
        .where(CropBox.image_id.in_(ids))
    ).all()
    for row, username in rows:
        entry = out.setdefault(row.image_id, {"consensus": None, "readers": {}, "auto": None})
        box = Box(row.x, row.y, row.w, row.h)
        if row.owner_key == "consensus":
            entry["consensus"] = box
        elif row.owner_key == "auto":
            entry["auto"] = box
        else:
            entry["readers"][username or row.owner_key] = box
    return out


def _choose(
    store: ImageStore, cache: ArrayCache, name: str, image: _ImageRow, entry: Mapping[str, Any]
) -> ChosenBox | None:
    auto = entry.get("auto")
    if entry.get("consensus") is None and not entry.get("readers") and auto is None:
        auto = auto_box(store, cache, name, image.sha256, image.path)
        if auto is None:
            return None
    return choose_box(
        entry.get("consensus"), entry.get("readers", {}), auto, image_label=f"{image.modality}"
    )


def case_images(
    db: Database,
    store: ImageStore,
    task: str,
    patient_ids: Sequence[int] | None = None,
    *,
    cache: ArrayCache | None = None,
) -> dict[int, dict[str, CaseImage] | str]:
    """Per patient, the images and boxes ``task`` cuts (as ``learning.dataset`` does), or why not.

    Unlike training, no label is needed: this is what predicts new, unlabelled cases.
    """
    spec = TASKS[task]
    cache = cache or ArrayCache(None)
    modalities = [_MODALITY[n] for n in spec.inputs]
    with db.read() as session:
        code_of = dict(
            session.execute(
                select(Patient.id, Patient.code).where(Patient.id.in_(patient_ids))
                if patient_ids is not None
                else select(Patient.id, Patient.code)
            ).all()
        )
        query = select(Image).where(Image.modality.in_(modalities))
        if patient_ids is not None:
            query = query.where(Image.patient_id.in_(list(patient_ids)))
        images = [
            _ImageRow(i.id, i.patient_id, i.modality, i.sha256, i.path)
            for i in session.scalars(query)
        ]
        boxes = _stored_boxes(session, [i.id for i in images])
    by_patient: dict[int, dict[str, _ImageRow]] = {}
    for image in images:
        by_patient.setdefault(image.patient_id, {})[image.modality] = image
    out: dict[int, dict[str, CaseImage] | str] = {}
    for pid, code in code_of.items():
        found = by_patient.get(pid, {})
        missing = [m for m in modalities if m not in found]
        if missing:
            out[pid] = f"no {' or '.join(missing)} image"
            continue
        chosen: dict[str, CaseImage] | str = {}
        for name in spec.inputs:
            image = found[_MODALITY[name]]
            pick = _choose(store, cache, name, image, boxes.get(image.id, {}))
            if pick is None:
                chosen = f"no crop box for the {image.modality} image and none detected"
                break
            chosen[name] = CaseImage(
                image.sha256, image.path, pick, f"{image.modality} image of {code}"
            )
        out[pid] = chosen
    return out


# ---------------------------------------------------------------------------------------
# Predictions, cached by run, model file, image and box


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


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
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
    _write_json(_summary_path(run_id), summary)
    return len(outputs)


def current_inputs(db: Database) -> dict[tuple[int, str], tuple[str, Box | None]]:
    """(patient id, modality) → (image sha, the person-drawn or stored automatic box)."""
    with db.read() as session:
        images = session.execute(
            select(Image.id, Image.patient_id, Image.modality, Image.sha256)
        ).all()
        boxes = _stored_boxes(session, [i.id for i in images])
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
            now_sha, now_box = current.get((pid, _MODALITY[name]), (None, None))
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
        saved = _saved_fold(run)
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


# ---------------------------------------------------------------------------------------
# Background job for a cohort


@dataclass(frozen=True)
class JobStatus:
    """The cohort prediction job of one run, as its status file says (and the pid confirms)."""

    run_id: int
    state: str
    done: int
    total: int
    error: str | None
    pid: int | None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")


def _status_path(run_id: int) -> Path:
    return prediction_root() / f"run-{run_id}" / "job.json"


def _log_path(run_id: int) -> Path:
    return prediction_root() / f"run-{run_id}" / "job.log"


def _write_status(run_id: int, **fields: Any) -> None:
    path = _status_path(run_id)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    state.update(fields)
    _write_json(path, state)


def _process_alive(pid: int, pid_start: int | None) -> bool:
    """True while ``pid`` runs and is the process that was started (not a reused pid)."""
    from core.services.jobs import pid_alive

    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        reaped = 0
    return reaped != pid and pid_alive(pid, pid_start)


def _job_env() -> dict[str, str]:
    """This process's data folder and database, as absolute settings, for the job."""
    env = dict(os.environ)
    env["SARCOPENIA_DATA_DIR"] = str(config.data_dir().resolve())
    env["DATABASE_URL"] = config.database_url()
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def predict_job_status(run_id: int) -> JobStatus | None:
    """The job's state; an active job whose process is gone is reported failed."""
    try:
        state = json.loads(_status_path(run_id).read_text())
    except (OSError, ValueError):
        return None
    status = JobStatus(
        run_id,
        str(state.get("state", "failed")),
        int(state.get("done", 0)),
        int(state.get("total", 0)),
        state.get("error"),
        state.get("pid"),
    )
    if status.active and (
        status.pid is None or not _process_alive(status.pid, state.get("pid_start"))
    ):
        reason = f"The prediction process ended without finishing; see {_log_path(run_id)}."
        _write_status(run_id, state="failed", error=reason)
        return JobStatus(run_id, "failed", status.done, status.total, reason, status.pid)
    return status


def run_predict_job(
    db: Database, store: ImageStore, run_id: int, progress: Progress | None = None
) -> int:
    """``predict_cohort`` with its progress and outcome written to the run's status file."""
    from core.learning.train import process_tag

    tag = process_tag()
    _write_status(
        run_id,
        state="running",
        done=0,
        total=0,
        error=None,
        pid=tag["pid"],
        pid_start=tag["pid_start"],
    )

    def report(done: int, total: int) -> None:
        _write_status(run_id, done=done, total=total)
        if progress:
            progress(done, total)

    try:
        n = predict_cohort(db, store, run_id, report)
    except BaseException as exc:
        _write_status(run_id, state="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    _write_status(run_id, state="done", done=n, total=n)
    return n


def start_predict_job(run_id: int, *, argv: Sequence[str] | None = None) -> JobStatus:
    """Start ``python -m core predict --run-id N`` in the background and return at once.

    Refused while a job for the same run is active. Output goes to ``job.log`` beside the
    status file. ``argv`` replaces the command (tests).
    """
    current = predict_job_status(run_id)
    if current is not None and current.active:
        raise ReviewError(f"A cohort prediction for run {run_id} is already running.")
    command = (
        list(argv) if argv else [sys.executable, "-m", "core", "predict", "--run-id", str(run_id)]
    )
    log = _log_path(run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    from core.learning.train import process_tag

    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[1],
            env=_job_env(),
            start_new_session=True,
        )
    tag = process_tag(process.pid)
    _write_status(
        run_id,
        state="starting",
        done=0,
        total=0,
        error=None,
        pid=process.pid,
        pid_start=tag["pid_start"],
    )
    return JobStatus(run_id, "starting", 0, 0, None, process.pid)


# ---------------------------------------------------------------------------------------
# One patient


@dataclass(frozen=True)
class ImageView:
    image_id: int
    modality: str
    path: str
    width: int
    height: int
    boxes: dict[str, Box]
    """Every stored box by owner: 'consensus', 'auto' or a reader's username."""
    chosen: ChosenBox | None


@dataclass(frozen=True)
class StiffnessView:
    rgb: np.ndarray
    """The decoded stiffness inside the SWE box, colour-mapped (black: nothing decoded)."""
    stats: dict[str, float]
    units: str
    low: float
    high: float
    warning: str


@dataclass(frozen=True)
class GradeView:
    username: str
    display_name: str
    grade: int


@dataclass(frozen=True)
class ModelView:
    run_id: int
    label: str
    task: str
    subset: str
    """Subset of the patient in the run's saved model's split, or 'not in run'."""
    tested: bool
    """The patient was in the run's test set (in any fold)."""
    probability: float | None = None
    predicted_label: int | None = None
    threshold: float = 0.5
    source: str = ""
    truth: int | None = None
    input_name: str = "gsu"
    box: Box | None = None
    overlay_crop: np.ndarray | None = None
    overlay_full: np.ndarray | None = None
    note: str = ""
    cam_note: str | None = None
    """Set when the Grad-CAM map shows no localization (``core.learning.gradcam.flat_map_note``)."""
    error: str | None = None

    @property
    def correct(self) -> bool | None:
        if self.truth is None or self.predicted_label is None:
            return None
        return self.truth == self.predicted_label


@dataclass(frozen=True)
class PatientReview:
    patient_id: int
    code: str
    sex: str
    age: int
    height_cm: float
    weight_kg: float | None
    us_date: dt.date | None
    ct_date: dt.date | None
    interval_days: int | None
    sma_cm2: float | None
    smi: float | None
    sarcopenic: bool | None
    exclusion_reason: str | None
    images: dict[str, ImageView]
    stiffness: StiffnessView | None
    grades: list[GradeView] | None
    """None while the viewer is blinded (has not graded this GSU image)."""
    consensus_grade: int | None
    consensus_method: str | None
    blinded: bool
    models: list[ModelView]


def is_blinded(session: Session, viewer: Reader | None, gsu_image_id: int | None) -> bool:
    """A non-admin reader who has not graded the GSU image sees no grades or echo model."""
    if viewer is None or viewer.role == "admin" or gsu_image_id is None:
        return False
    graded = session.scalar(
        select(Grade.id).where(Grade.image_id == gsu_image_id, Grade.reader_id == viewer.id)
    )
    return graded is None


def _stiffness_view(store: ImageStore, crops: ArrayCache, image: CaseImage) -> StiffnessView:
    decoded = decoded_swe_crop(store, crops, image)
    stiffness = np.asarray(decoded["stiffness"], dtype=np.float32)
    finite = np.isfinite(stiffness)
    low = float(stiffness[finite].min()) if finite.any() else math.nan
    high = float(stiffness[finite].max()) if finite.any() else math.nan
    scaled = np.zeros(stiffness.shape, np.uint8)
    if finite.any():
        span = max(high - low, 1e-6)
        scaled[finite] = np.round(255 * (stiffness[finite] - low) / span).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(scaled, STIFFNESS_COLORMAP), cv2.COLOR_BGR2RGB)
    rgb[~finite] = 0
    return StiffnessView(
        rgb, stiffness_stats(stiffness), decoded["units"], low, high, decoded["warning"]
    )


def _truths(session: Session, patient: Patient, gsu_id: int | None) -> dict[str, int | None]:
    derived = case_labels(patient)
    sarc = int(derived.sarcopenic) if derived.eligible and derived.sarcopenic is not None else None
    grade = (
        session.scalar(select(ConsensusGrade.grade).where(ConsensusGrade.image_id == gsu_id))
        if gsu_id is not None
        else None
    )
    return {
        "sarcopenia": sarc,
        "echogenicity_high": dichotomize_grade(grade) if grade is not None else None,
    }


@dataclass(frozen=True)
class _RunFacts:
    run_id: int
    label: str
    task: str
    subset: str
    tested: bool
    stored: tuple[float, float, str] | None
    """(probability, threshold, source) of a stored val/test prediction."""


def _run_facts(session: Session, run_ids: Sequence[int], patient_id: int) -> list[_RunFacts]:
    facts = []
    for run_id in run_ids:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise ReviewError(f"There is no training run {run_id}.")
        fold = _saved_fold(run)
        subset = None
        if run.split_id is not None:
            subset = session.scalar(
                select(SplitAssignment.subset).where(
                    SplitAssignment.split_id == run.split_id,
                    SplitAssignment.patient_id == patient_id,
                    SplitAssignment.fold == fold,
                )
            )
        preds = session.execute(
            select(Prediction.subset, Prediction.fold, Prediction.probability, Prediction.threshold)
            .where(Prediction.run_id == run_id, Prediction.patient_id == patient_id)
            .order_by(Prediction.fold)
        ).all()
        tests = [p for p in preds if p.subset == "test"]
        vals = [p for p in preds if p.subset == "val" and p.fold == fold]
        stored = None
        if tests:
            p = tests[0]
            where = f" (fold {p.fold + 1})" if p.fold != fold else ""
            stored = (p.probability, p.threshold, f"stored test prediction{where}")
        elif vals:
            stored = (vals[0].probability, vals[0].threshold, "stored validation prediction")
        facts.append(
            _RunFacts(run_id, run_label(run), run.task, subset or NOT_IN_RUN, bool(tests), stored)
        )
    return facts


def _model_view(
    facts: _RunFacts,
    predictor: RunPredictor | None,
    cases: Mapping[str, CaseImage] | str,
    store: ImageStore,
    truth: int | None,
    full_pixels: Callable[[str], np.ndarray],
    results: ArrayCache | None,
    crops: ArrayCache,
) -> ModelView:
    base = {
        "run_id": facts.run_id,
        "label": facts.label,
        "task": facts.task,
        "subset": facts.subset,
        "tested": facts.tested,
        "truth": truth,
        "input_name": TASKS[facts.task].inputs[0],
    }
    stored_view = {}
    if facts.stored is not None:
        prob, threshold, source = facts.stored
        stored_view = {
            "probability": prob,
            "threshold": threshold,
            "predicted_label": int(prob >= threshold),
            "source": source,
        }
    if isinstance(cases, str):
        return ModelView(**base, **stored_view, error=f"Cannot run this model: {cases}.")
    if predictor is None:
        return ModelView(**base, **stored_view)
    errors: dict[int, str] = {}
    outputs = predict_cases(
        predictor, store, {0: cases}, crops=crops, results=results, errors=errors
    )
    if 0 not in outputs:
        return ModelView(**base, **stored_view, error=f"Cannot run this model: {errors[0]}")
    output = outputs[0]
    image = cases[predictor.explained_input]
    box = image.chosen.box
    full = full_pixels(image.path)
    crop01 = full[box.y : box.y2, box.x : box.x2].astype(np.float32) / 255.0
    from core.learning.gradcam import flat_map_note, overlay, overlay_on_full_image

    note = ""
    if stored_view:
        if abs(stored_view["probability"] - output.probability) > 1e-3:
            note = (
                f"Computed now: {output.probability:.3f} (the crop box or model changed since "
                "the stored prediction, or it came from another fold's model)."
            )
    else:
        stored_view = {
            "probability": output.probability,
            "threshold": predictor.threshold,
            "predicted_label": int(output.probability >= predictor.threshold),
            "source": "cached" if output.cached else "computed now",
        }
        if facts.subset == "train":
            note = "A training patient: the model has seen this case, so this is not a test."
    return ModelView(
        **base,
        **stored_view,
        box=box,
        overlay_crop=overlay(crop01, output.cam),
        overlay_full=overlay_on_full_image(full, box, output.cam),
        note=note,
        cam_note=flat_map_note(output.cam),
    )


def _visible_boxes(entry: dict[str, Any], blinded_viewer: Reader | None) -> dict[str, Box]:
    """The boxes to draw by owner; a blinded reader sees only their own and the automatic
    one (others' boxes and the consensus box would give away that others have read)."""
    readers = entry["readers"]
    if blinded_viewer is not None:
        readers = {u: b for u, b in readers.items() if u == blinded_viewer.username}
    owned = {**readers}
    for owner in ("consensus", "auto"):
        if entry[owner] is not None and (owner == "auto" or blinded_viewer is None):
            owned[owner] = entry[owner]
    return owned


def _default_pixels(store: ImageStore) -> Callable[[str], np.ndarray]:
    return lambda path: to_display_rgb(load_pixels(store, path))


def patient_review(
    db: Database,
    store: ImageStore,
    code: str,
    run_ids: Sequence[int] = (),
    *,
    viewer: Reader | None = None,
    predictor_for: Callable[[int], RunPredictor] | None = None,
    full_pixels: Callable[[str], np.ndarray] | None = None,
    results: ArrayCache | None = None,
    gradcam: bool = True,
) -> PatientReview:
    """Everything the Review page shows for one patient.

    ``predictor_for`` loads (and should cache) a run's model; pass ``gradcam=False`` to show
    only the stored predictions without loading any model. ``full_pixels`` gives display RGB
    of a stored image (the page passes its cached loader).
    """
    crops = ArrayCache(None)
    full_pixels = full_pixels or _default_pixels(store)
    with db.read() as session:
        patient = session.scalar(
            select(Patient)
            .where(Patient.code == code)
            .options(selectinload(Patient.ct), selectinload(Patient.images))
        )
        if patient is None:
            raise ReviewError(f"There is no patient {code!r}.")
        by_modality = {img.modality: img for img in patient.images}
        gsu = by_modality.get("GSU")
        gsu_id = gsu.id if gsu else None
        blinded = is_blinded(session, viewer, gsu_id)
        truths = _truths(session, patient, gsu_id)
        derived = case_labels(patient)
        boxes = _stored_boxes(session, [img.id for img in patient.images])
        grades: list[GradeView] | None = None
        consensus = None
        if not blinded and gsu_id is not None:
            grades = [
                GradeView(u, n, g)
                for u, n, g in session.execute(
                    select(Reader.username, Reader.display_name, Grade.grade)
                    .join(Reader, Reader.id == Grade.reader_id)
                    .where(Grade.image_id == gsu_id)
                    .order_by(Reader.username)
                )
            ]
            consensus = session.scalar(
                select(ConsensusGrade).where(ConsensusGrade.image_id == gsu_id)
            )
        facts = _run_facts(session, run_ids, patient.id)
    images: dict[str, ImageView] = {}
    for modality, img in by_modality.items():
        entry = boxes.get(img.id, {"consensus": None, "readers": {}, "auto": None})
        owned = _visible_boxes(entry, viewer if blinded else None)
        chosen = None
        if owned:
            chosen = choose_box(entry["consensus"], entry["readers"], entry["auto"], image_label="")
        images[modality] = ImageView(
            img.id, modality, img.path, img.width, img.height, owned, chosen
        )
    stiffness = None
    swe = by_modality.get("SWE")
    if swe is not None and images["SWE"].chosen is not None:
        case_image = CaseImage(swe.sha256, swe.path, images["SWE"].chosen, f"SWE image of {code}")
        stiffness = _stiffness_view(store, crops, case_image)
    loader = predictor_for or (lambda run_id: load_predictor(db, run_id))
    models = []
    for fact in facts:
        truth = truths[TASKS[fact.task].label]
        if blinded and TASKS[fact.task].label == "echogenicity_high":
            models.append(
                ModelView(
                    fact.run_id,
                    fact.label,
                    fact.task,
                    fact.subset,
                    fact.tested,
                    error="Hidden until you grade this patient's GSU image (blinding).",
                )
            )
            continue
        cases = case_images(db, store, fact.task, [patient.id], cache=crops)[patient.id]
        try:
            predictor = loader(fact.run_id) if gradcam else None
        except (ReviewError, ModelPathError) as exc:
            models.append(
                ModelView(
                    fact.run_id,
                    fact.label,
                    fact.task,
                    fact.subset,
                    fact.tested,
                    truth=truth,
                    error=str(exc),
                )
            )
            continue
        models.append(
            _model_view(fact, predictor, cases, store, truth, full_pixels, results, crops)
        )
    return PatientReview(
        patient_id=patient.id,
        code=patient.code,
        sex=patient.sex,
        age=patient.age,
        height_cm=patient.height_cm,
        weight_kg=patient.weight_kg,
        us_date=patient.us_date,
        ct_date=patient.ct.ct_date if patient.ct else None,
        interval_days=derived.interval_days,
        sma_cm2=patient.ct.sma_cm2 if patient.ct else None,
        smi=derived.smi,
        sarcopenic=derived.sarcopenic if derived.eligible else None,
        exclusion_reason=derived.exclusion_reason,
        images=images,
        stiffness=stiffness,
        grades=grades,
        consensus_grade=consensus.grade if consensus else None,
        consensus_method=consensus.method if consensus else None,
        blinded=blinded,
        models=models,
    )


# ---------------------------------------------------------------------------------------
# The cohort table and its filters


def finished_runs(db: Database) -> list[TrainingRun]:
    """Done runs with a model file, newest first."""
    with db.read() as session:
        return list(
            session.scalars(
                select(TrainingRun)
                .where(TrainingRun.status == "done", TrainingRun.model_path.is_not(None))
                .order_by(TrainingRun.id.desc())
            )
        )


def review_table(
    db: Database, run_ids: Sequence[int], *, viewer: Reader | None = None
) -> pd.DataFrame:
    """One row per patient: truths and, per run, subset, probability, prediction, correct.

    Probabilities as ``run_outputs``. Columns per run ``run N subset|p|pred|ok``; plus
    ``tested in`` (runs whose test set held the patient), ``misclassified`` and
    ``disagreement`` (runs predicting the same thing disagree). A blinded reader gets no
    echogenicity truth or echogenicity predictions for patients they have not graded.
    """
    outputs = run_outputs(db, run_ids)
    with db.read() as session:
        patients = session.scalars(
            select(Patient).options(selectinload(Patient.ct)).order_by(Patient.code)
        ).all()
        gsu_of = dict(
            session.execute(select(Image.patient_id, Image.id).where(Image.modality == "GSU")).all()
        )
        consensus = dict(
            session.execute(select(ConsensusGrade.image_id, ConsensusGrade.grade)).all()
        )
        graded: set[int] | None = None
        if viewer is not None and viewer.role != "admin":
            graded = set(
                session.scalars(select(Grade.image_id).where(Grade.reader_id == viewer.id))
            )
        tasks = dict(
            session.execute(
                select(TrainingRun.id, TrainingRun.task).where(TrainingRun.id.in_(list(run_ids)))
            ).all()
        )
    rows = []
    for patient in patients:
        derived = case_labels(patient)
        gsu_id = gsu_of.get(patient.id)
        blind = graded is not None and (gsu_id is None or gsu_id not in graded)
        grade = consensus.get(gsu_id) if gsu_id is not None else None
        rows.append(
            {
                "patient_id": patient.id,
                "code": patient.code,
                "sarcopenia": (
                    int(derived.sarcopenic)
                    if derived.eligible and derived.sarcopenic is not None
                    else None
                ),
                "echogenicity_high": (
                    dichotomize_grade(grade) if grade is not None and not blind else None
                ),
                "_blind": blind,
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["tested in"] = ""
    for run_id in run_ids:
        kind = TASKS[tasks[run_id]].label
        mine = outputs[outputs["run_id"] == run_id].set_index("patient_id")
        prefix = f"run {run_id}"
        table[f"{prefix} subset"] = table["patient_id"].map(mine["subset"]).fillna(NOT_IN_RUN)
        hidden = table["_blind"] & (kind == "echogenicity_high")
        p = table["patient_id"].map(mine["probability"]).astype(float).where(~hidden)
        pred = table["patient_id"].map(mine["predicted_label"]).astype("Int64").where(p.notna())
        table[f"{prefix} p"] = p
        table[f"{prefix} pred"] = pred
        truth = table[kind].astype("Int64")
        table[f"{prefix} ok"] = (
            (pred == truth).where(pred.notna() & truth.notna()).astype("boolean")
        )
        tested = table["patient_id"].isin(mine.index[mine["tested"]])
        table.loc[tested, "tested in"] += f"{prefix} "
    table["tested in"] = table["tested in"].str.strip()
    ok_cols = [f"run {r} ok" for r in run_ids]
    table["misclassified"] = table[ok_cols].eq(False).any(axis=1) if ok_cols else False
    table["disagreement"] = False
    kinds: dict[str, list[int]] = {}
    for run_id in run_ids:
        kinds.setdefault(TASKS[tasks[run_id]].label, []).append(run_id)
    for ids in kinds.values():
        if len(ids) > 1:
            preds = table[[f"run {r} pred" for r in ids]]
            table["disagreement"] |= preds.nunique(axis=1, dropna=True).gt(1)
    return table.drop(columns="_blind")


def filter_review(
    table: pd.DataFrame,
    *,
    misclassified: bool = False,
    disagreement: bool = False,
    subset: str | None = None,
) -> pd.DataFrame:
    """Rows matching every chosen filter; ``subset`` matches any run's subset column."""
    keep = pd.Series(True, index=table.index)
    if misclassified:
        keep &= table["misclassified"]
    if disagreement:
        keep &= table["disagreement"]
    if subset:
        cols = [c for c in table.columns if c.endswith(" subset")]
        if cols:
            keep &= table[cols].eq(subset).any(axis=1)
    return table[keep]


# ---------------------------------------------------------------------------------------
# The model as a second reader


@dataclass(frozen=True)
class SecondReaderOpinion:
    """The echogenicity model's advice on one GSU image (never a grade)."""

    run_id: int
    run_label: str
    grade_label: str
    """'high' (grades 2–3) or 'low' (grades 0–1), the study's dichotomy."""
    probability: float
    threshold: float
    box: Box
    overlay_crop: np.ndarray
    overlay_full: np.ndarray
    note: str = ADVICE_NOTE
    cam_note: str | None = None
    """Set when the Grad-CAM map shows no localization."""


def echogenicity_runs(db: Database) -> list[int]:
    """Finished echogenicity runs with a model, newest first (the default adviser first)."""
    return [r.id for r in finished_runs(db) if r.task == "echogenicity_gsu"]


def second_reader_opinion(
    db: Database,
    store: ImageStore,
    image_id: int,
    run_id: int | None = None,
    *,
    predictor: RunPredictor | None = None,
    full_pixels: Callable[[str], np.ndarray] | None = None,
) -> SecondReaderOpinion:
    """The echogenicity model's low/high call, probability and Grad-CAM for a GSU image.

    Refused (``SecondReaderUnavailable``) until at least two readers have graded the image,
    so the model never anchors a reader's own grade; also when the image is not GSU or no
    finished echogenicity run exists. ``run_id`` defaults to the newest such run.
    """
    with db.read() as session:
        image = session.get(Image, image_id)
        if image is None or image.modality != "GSU":
            raise SecondReaderUnavailable(
                f"Image {image_id} is not a GSU image; the echogenicity model reads GSU only."
            )
        n_grades = len(session.scalars(select(Grade.id).where(Grade.image_id == image_id)).all())
        code = session.scalar(select(Patient.code).where(Patient.id == image.patient_id))
        patient_id = image.patient_id
    if n_grades < MIN_READERS_FOR_ADVICE:
        raise SecondReaderUnavailable(
            f"The model's advice appears after {MIN_READERS_FOR_ADVICE} readers have graded "
            f"this image ({n_grades} so far)."
        )
    if run_id is None:
        runs = echogenicity_runs(db)
        if not runs:
            raise SecondReaderUnavailable(
                "No finished echogenicity model: train one (task echogenicity_gsu) first."
            )
        run_id = runs[0]
    predictor = predictor or load_predictor(db, run_id)
    if predictor.task != "echogenicity_gsu":
        raise SecondReaderUnavailable(
            f"Run {run_id} predicts {predictor.task}, not echogenicity; pick an "
            "echogenicity_gsu run."
        )
    cases = case_images(db, store, predictor.task, [patient_id])[patient_id]
    if isinstance(cases, str):
        raise SecondReaderUnavailable(f"Cannot read patient {code}: {cases}.")
    errors: dict[int, str] = {}
    outputs = predict_cases(predictor, store, {patient_id: cases}, errors=errors)
    if patient_id not in outputs:
        raise SecondReaderUnavailable(f"Cannot read patient {code}: {errors[patient_id]}")
    output = outputs[patient_id]
    box = cases["gsu"].chosen.box
    full = (full_pixels or _default_pixels(store))(cases["gsu"].path)
    crop01 = full[box.y : box.y2, box.x : box.x2].astype(np.float32) / 255.0
    from core.learning.gradcam import flat_map_note, overlay, overlay_on_full_image

    high = output.probability >= predictor.threshold
    return SecondReaderOpinion(
        run_id=run_id,
        run_label=predictor.label,
        grade_label="high" if high else "low",
        probability=output.probability,
        threshold=predictor.threshold,
        box=box,
        overlay_crop=overlay(crop01, output.cam),
        overlay_full=overlay_on_full_image(full, box, output.cam),
        cam_note=flat_map_note(output.cam),
    )
