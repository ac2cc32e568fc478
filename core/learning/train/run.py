"""One run, start to finish: claim the queued row, load, split, train each fold, store it all.

The run row in the database is the only state (see ``core.learning.train``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete

from core.common import config
from core.common.store import ImageStore
from core.learning.dataset import collect_cases, load_task_data, make_split, save_split
from core.learning.train.fast import FeatureCache
from core.learning.train.folds import FoldResult, train_fold
from core.learning.train.progress import Listener, ProgressReporter, json_safe, process_tag
from core.learning.train.results import (
    collect_results,
    count_box_sources,
    cv_summary,
    subset_metrics,
)
from core.learning.train.settings import (
    DEFAULT_VAL_TEST,
    RunCancelled,
    TrainingError,
    TrainSettings,
)
from db.datafiles import file_sha256, stored_path
from db.engine import Database
from db.models import Prediction, TrainingRun, utcnow

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


def _resolve_sizes(
    db: Database, store: ImageStore, settings: TrainSettings
) -> tuple[int, int, int]:
    if settings.sizes is not None:
        return settings.sizes
    cases, _ = collect_cases(db, store, settings.provisional_dataset_settings())
    val, test = DEFAULT_VAL_TEST
    train = len(cases) - val - test
    if train < 2:
        raise ValueError(
            f"Only {len(cases)} patients qualify for {settings.task}: too few for the study's "
            f"{val} validation and {test} test patients. Set smaller split sizes."
        )
    return (train, val, test)


def _save_model(model: keras.Model, run_id: int) -> Path:
    """``<models>/run-<id>.keras``, written to a temporary name first so no half file remains.

    The model was never compiled itself (see ``folds._trainer``), so the file holds the network
    without optimizer state, and reloads with ``safe_mode=True``.
    """
    path = config.models_dir() / f"run-{run_id}.keras"
    tmp = path.with_name(f".tmp-{path.name}")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def _claim(db: Database, run_id: int) -> TrainSettings:
    """Mark a queued run as running in this process (or accept one claimed by it)."""
    tag = process_tag()

    def work(session) -> dict[str, Any]:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise TrainingError(f"There is no training run {run_id}.")
        if run.status == "running" and run.pid == tag["pid"]:
            return dict(run.settings)
        if run.status != "queued":
            raise TrainingError(
                f"Run {run_id} is {run.status}"
                + (f" in process {run.pid}" if run.status == "running" else "")
                + "; only a queued run can be trained."
            )
        run.status = "running"
        run.pid = tag["pid"]
        run.started_at = utcnow()
        run.progress = {**tag, "phase": "starting"}
        return dict(run.settings)

    return TrainSettings.from_dict(db.write(work))


def _finish(db: Database, run_id: int, status: str, **fields: Any) -> None:
    def work(session) -> None:
        run = session.get(TrainingRun, run_id)
        if run is None:
            return
        run.status = status
        run.finished_at = utcnow()
        progress = dict(run.progress or {})
        progress["phase"] = status
        run.progress = progress
        for name, value in fields.items():
            setattr(run, name, value)

    db.write(work)


def run_training(
    db: Database,
    store: ImageStore,
    run_id: int,
    *,
    listener: Listener | None = None,
    cache_dir: Path | None = None,
) -> str:
    """Train the queued run ``run_id`` and return its final status.

    Loads the task data, stores the split, trains (one model, or one per fold), writes
    predictions of the validation and test patients, metrics and the model file, and marks
    the run ``done``. A cancel request ends it ``cancelled`` (return value); any error ends
    it ``failed`` with the error text, and is raised again.
    """
    settings = _claim(db, run_id)
    reporter = ProgressReporter(db, run_id, process_tag(), listener=listener)
    timing: dict[str, float] = {}
    started = time.monotonic()
    model_path: Path | None = None
    try:
        reporter.update(force=True, phase="loading", batch=0)
        sizes = _resolve_sizes(db, store, settings)
        ds_settings = settings.dataset_settings(sizes)
        task_data = load_task_data(
            db,
            store,
            ds_settings,
            cache_dir=cache_dir,
            progress=lambda done, total: reporter.update(
                phase="loading", batch=done, batches=total
            ),
        )
        assignments = make_split(task_data, ds_settings)
        split_id = save_split(db, ds_settings, task_data, assignments)
        timing["load_s"] = time.monotonic() - started

        chosen = settings.folds_to_train(len(assignments))
        folds = len(chosen)
        cache = FeatureCache()
        results: list[FoldResult] = []
        fold_aucs: list[float | None] = []
        for position, fold in enumerate(chosen):
            reporter.update(force=True, fold=position, folds=folds, epochs=settings.total_epochs)
            result = train_fold(settings, task_data, assignments[fold], reporter, cache)
            result.fold = fold
            y_test = task_data.y[result.indices["test"]]
            fold_aucs.append(
                subset_metrics(y_test, result.probs["test"], settings.threshold).get("auc")
            )
            results.append(result)
            if position + 1 < folds:
                results[-1].model = None
        timing["train_s"] = time.monotonic() - started - timing["load_s"]
        if settings.cached_features:
            timing["features_s"] = cache.seconds

        reporter.update(force=True, phase="saving")
        metrics, predictions = collect_results(settings, task_data, results, run_id)
        if folds > 1:
            metrics["cv"] = cv_summary(fold_aucs)
        model_path = _save_model(results[-1].model, run_id)
        model_sha256 = file_sha256(model_path)
        timing["total_s"] = time.monotonic() - started
        metrics["timing"] = json_safe(timing)
        metrics["n"] = {s: len(results[0].indices[s]) for s in ("train", "val", "test")}
        metrics["dataset"] = {
            **ds_settings.fingerprint_payload(),
            "excluded": len(task_data.excluded),
            "box_sources": count_box_sources(task_data),
        }
        metrics["saved_fold"] = chosen[-1]
        metrics["distribution"] = results[-1].distribution

        def finish(session) -> None:
            session.execute(delete(Prediction).where(Prediction.run_id == run_id))
            run = session.get(TrainingRun, run_id)
            if run is None:
                raise TrainingError(f"Run {run_id} was deleted while it trained.")
            session.add_all(predictions)
            run.split_id = split_id
            run.fingerprint = task_data.fingerprint
            run.metrics = json_safe(metrics)
            run.model_path = stored_path(model_path)
            run.model_sha256 = model_sha256
            run.history = {"epochs": reporter.history}
            run.status = "done"
            run.finished_at = utcnow()
            run.progress = json_safe({**reporter.state, "phase": "done"})

        db.write(finish)
        return "done"
    except RunCancelled:
        _discard(model_path)
        _finish(db, run_id, "cancelled", error="Cancelled on request.")
        return "cancelled"
    except BaseException as exc:
        _discard(model_path)
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            reason = "The training process was interrupted (signal or Ctrl-C)."
        else:
            log.exception("Training run %s failed", run_id)
        _finish(db, run_id, "failed", error=reason)
        raise


def _discard(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
