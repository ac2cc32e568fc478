"""Loading a finished run's model safely, and keeping loaded models per process.

Models load only from ``core.common.config.models_dir()`` and with ``safe_mode=True``: a
``.keras`` file can carry code, and a path typed or stored elsewhere is refused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from sqlalchemy.orm import Session

from core.common import config
from core.learning.dataset import TASKS, DatasetSettings
from core.report.table1 import run_label
from core.services.review.errors import ModelPathError, ReviewError
from db.datafiles import data_path
from db.engine import Database
from db.models import Split, TrainingRun

if TYPE_CHECKING:
    import keras


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


def saved_fold(run: TrainingRun) -> int:
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
