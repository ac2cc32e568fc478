"""Where training runs execute: local subprocesses (default) or Redis Queue workers.

The backend is chosen by configuration: with ``SARCOPENIA_REDIS_URL`` set, every new run is
an RQ job (``core.services.rq_jobs``) that any worker on the network may take; without it,
runs are subprocesses of this machine (``core.services.jobs``), exactly as before. Each run
records its backend, so runs queued before a change of configuration still finish the way
they were started. Pages and the CLI submit, cancel, retry and reap through this module only.

Grids fan out: the runs of one request (``train --all``, a k-fold run on workers) share a
``run_group`` row, and on RQ a k-fold run becomes one run per fold, so N workers train a
grid about N times faster. The group's pooled out-of-fold metrics are computed from the
fold runs' stored predictions (``group_cv_metrics``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, select

from core.common.store import ImageStore
from core.learning.dataset import collect_cases
from core.learning.train import TrainSettings, subset_metrics
from core.services import jobs, rq_jobs
from db.engine import Database
from db.models import Prediction, RunGroup, TrainingRun
from db.runs import group_runs

RETRYABLE = ("failed", "cancelled")


def backend_name() -> str:
    """``rq`` when ``SARCOPENIA_REDIS_URL`` is set, else ``local``."""
    return "rq" if rq_jobs.redis_url() else "local"


def default_queue(settings: TrainSettings) -> str:
    """Full mode fine-tunes every layer: a GPU's work. Fast mode trains a head: CPU is fine."""
    return "gpu" if settings.mode == "full" else "cpu"


def fan_out(settings: TrainSettings) -> list[TrainSettings]:
    """One settings per fold of a k-fold run (RQ), or the run itself."""
    if settings.k_folds < 2 or settings.fold is not None:
        return [settings]
    return [dataclasses.replace(settings, fold=fold) for fold in range(settings.k_folds)]


def create_runs(
    db: Database,
    grid: Sequence[TrainSettings],
    *,
    backend: str,
    queues: Sequence[str | None] | None = None,
    group_name: str | None = None,
) -> list[int]:
    """Queued runs for ``grid`` (and their group when there are several), in one transaction."""

    def work(session) -> list[int]:
        group_id = None
        if group_name is not None or len(grid) > 1:
            group = RunGroup(name=group_name or f"{len(grid)} runs")
            session.add(group)
            session.flush()
            group_id = group.id
        runs = [
            jobs.new_run(settings, backend=backend, queue=queue, group_id=group_id)
            for settings, queue in zip(grid, queues or [None] * len(grid), strict=True)
        ]
        session.add_all(runs)
        session.flush()
        return [int(run.id) for run in runs]

    return db.write(work)


def submit_runs(
    db: Database,
    grid: Sequence[TrainSettings],
    *,
    queue: str | None = None,
    group_name: str | None = None,
) -> list[int]:
    """Queue ``grid`` on the configured backend and start what can start; the run ids.

    ``queue`` (``gpu`` or ``cpu``) overrides ``default_queue`` on RQ. Raises
    ``rq_jobs.QueueUnavailableError`` before creating anything when Redis is configured
    but down, so no run waits for a queue that never hears of it.
    """
    if queue is not None:
        rq_jobs.queue_name(queue)
    if backend_name() == "local":
        run_ids = create_runs(db, grid, backend="local", group_name=group_name)
        jobs.dispatch_queue(db)
        return run_ids
    conn = rq_jobs.connect()
    fanned = [one for settings in grid for one in fan_out(settings)]
    queues = [queue or default_queue(settings) for settings in fanned]
    run_ids = create_runs(db, fanned, backend="rq", queues=queues, group_name=group_name)
    for run_id, run_queue in zip(run_ids, queues, strict=True):
        rq_jobs.enqueue(conn, run_id, 1, run_queue)
    return run_ids


def cancel(db: Database, run_id: int) -> str:
    """Cancel a run on whichever backend holds it; its status afterwards.

    A waiting RQ job is also taken off its queue; a running one stops on its worker when
    the trainer next reads ``cancel_requested`` (within about a second).
    """
    status = jobs.cancel_run(db, run_id)
    with db.read() as session:
        run = session.get(TrainingRun, run_id)
        backend, attempt = run.backend, run.attempt
    if backend == "rq" and status == "cancelled" and rq_jobs.redis_url():
        # Redis down: the job, if Redis still holds it, finds the run cancelled and stops.
        with contextlib.suppress(rq_jobs.QueueUnavailableError):
            rq_jobs.drop_job(rq_jobs.connect(), run_id, attempt)
    return status


def retry_run(db: Database, run_id: int) -> None:
    """Queue a failed or cancelled run again, as a new attempt with the same settings.

    The previous attempt's predictions and model file are removed (the row keeps only what
    the new attempt writes); the error moves to ``progress["previous_error"]``. The run goes
    to the backend configured now.
    """
    backend = backend_name()
    conn = rq_jobs.connect() if backend == "rq" else None

    def work(session) -> tuple[int, str | None, str | None]:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise ValueError(f"There is no training run {run_id}.")
        if run.status not in RETRYABLE:
            raise ValueError(
                f"Run {run_id} is {run.status}; only a failed or cancelled run is retried."
            )
        session.execute(delete(Prediction).where(Prediction.run_id == run_id))
        old_model = run.model_path
        previous = run.error
        run.attempt = (run.attempt or 1) + 1
        run.backend = backend
        if backend == "rq" and run.queue is None:
            run.queue = default_queue(TrainSettings.from_dict(run.settings))
        for name in (
            "error",
            "pid",
            "worker",
            "heartbeat_at",
            "started_at",
            "finished_at",
            "metrics",
            "history",
            "model_path",
            "model_sha256",
            "split_id",
            "fingerprint",
        ):
            setattr(run, name, None)
        run.status = "queued"
        run.cancel_requested = False
        run.progress = {"phase": "queued", "previous_error": previous}
        return run.attempt, run.queue, old_model

    attempt, queue, old_model = db.write(work)
    if old_model:
        jobs.remove_model_file(old_model)
    if conn is not None:
        rq_jobs.enqueue(conn, run_id, attempt, queue or "gpu")
    else:
        jobs.dispatch_queue(db)


def reap(db: Database) -> int:
    """Fail runs whose process or worker died (and start or re-enqueue what waits)."""
    failed = jobs.reap_dead_runs(db)
    if rq_jobs.redis_url():
        failed += rq_jobs.reap(db)
    return failed


def workers() -> list[dict[str, Any]] | None:
    """Live RQ workers (name, host, queues, state); None on the local backend."""
    if not rq_jobs.redis_url():
        return None
    return rq_jobs.live_workers(rq_jobs.connect())


def group_cv_metrics(db: Database, store: ImageStore, group_id: int) -> list[dict[str, Any]]:
    """Pooled out-of-fold test metrics of each fanned-out k-fold run in a group.

    One row per (task, architecture) whose folds are all done: every patient is tested
    once, as in a k-fold run trained on one machine (its ``metrics["test"]``).
    """
    with db.read() as session:
        folds: dict[tuple[str, str], list[TrainingRun]] = {}
        for run in group_runs(session, group_id):
            if (run.settings or {}).get("fold") is not None:
                folds.setdefault((run.task, run.arch), []).append(run)
        complete = {
            key: members
            for key, members in folds.items()
            if len(members) == int(members[0].settings["k_folds"])
            and all(r.status == "done" for r in members)
        }
        pooled = {
            key: session.execute(
                select(Prediction.patient_id, Prediction.probability).where(
                    Prediction.run_id.in_([r.id for r in members]), Prediction.subset == "test"
                )
            ).all()
            for key, members in complete.items()
        }
    rows = []
    for (task, arch), members in complete.items():
        settings = TrainSettings.from_dict(members[0].settings)
        cases, _ = collect_cases(db, store, settings.provisional_dataset_settings())
        labels = {case.patient_id: case.label for case in cases}
        y = np.array([labels[pid] for pid, _ in pooled[(task, arch)]])
        p = np.array([prob for _, prob in pooled[(task, arch)]])
        rows.append(
            {"task": task, "arch": arch, "folds": len(members)}
            | subset_metrics(y, p, settings.threshold)
        )
    return rows
