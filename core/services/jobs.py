"""Training runs as local background jobs: create, queue, start, cancel, reap, delete.

This is the ``local`` backend (``core.services.job_backends`` chooses it when no Redis is
configured; runs on Redis Queue workers are ``core.services.rq_jobs``). The dispatcher and
its limit only ever start runs whose ``backend`` is ``local``.

Design (one workstation, or several machines on one shared database):

- A run is a ``training_run`` row. ``submit_run`` creates it ``queued`` and calls
  ``dispatch_queue``, which starts ``python -m core train --run-id N`` as a detached process
  (its own session, output in ``<data>/logs/run-N.log``) for the oldest queued runs while
  fewer than ``SARCOPENIA_MAX_CONCURRENT_RUNS`` (default 1: a workstation GPU or two CPU
  cores train one model at a time) are running.
- Starting is two-step so that two app sessions dispatching at once cannot start a run
  twice: one write transaction *reserves* the run (progress phase ``starting``), then the
  process is launched and its pid recorded. The child *claims* the run (``running``, its
  pid) in another transaction that re-checks the limit.
- When a run ends (done, failed or cancelled), its process calls ``dispatch_queue`` before
  it exits, so the next queued run starts without anyone watching. ``python -m core train
  --worker`` drains the queue in the foreground instead.
- A process that dies without a word (kill -9, power cut) leaves a ``running`` row behind,
  and cannot start the next run. ``reap_dead_runs`` marks it ``failed`` when its pid is
  gone and then starts queued runs in the freed slots; the app calls it on start, on every
  page load of the training pages and once a second in the Training page's live panel.
  Each row's progress records the host and the process start time, so a run on another
  machine is never reaped here and a reused pid is not mistaken for the trainer.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from sqlalchemy import delete, func, select

from core.common import config
from core.learning.train import (
    TrainSettings,
    process_tag,
)
from core.services.run_liveness import (
    is_dead,
    is_local,
    is_reserved,
    owner_alive,
)
from db.datafiles import data_path
from db.engine import Database
from db.models import Prediction, TrainingRun, utcnow

MAX_CONCURRENT_ENV: Final = "SARCOPENIA_MAX_CONCURRENT_RUNS"
WAIT_POLL_S: Final = 5.0
STUDY_TASKS: Final = ("sarcopenia_gsu", "sarcopenia_swe", "echogenicity_gsu")
"""The study's three tasks (Yi et al. 2022), each trained with every architecture."""
PROJECT_ROOT: Final = Path(__file__).absolute().parents[2]


class RunActiveError(RuntimeError):
    """The run is still training; cancel it first."""


def max_concurrent_runs() -> int:
    """``SARCOPENIA_MAX_CONCURRENT_RUNS`` (default 1)."""
    raw = os.environ.get(MAX_CONCURRENT_ENV, "1").strip()
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_CONCURRENT_ENV} must be a whole number ≥ 1; got {raw!r}.") from None
    if value < 1:
        raise ValueError(f"{MAX_CONCURRENT_ENV} must be at least 1; got {value}.")
    return value


def log_path(run_id: int) -> Path:
    folder = config.data_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"run-{run_id}.log"


# ---------------------------------------------------------------------------------------
# Is the trainer alive?


_UNFINISHED = select(TrainingRun).where(TrainingRun.status.in_(("running", "queued")))
_LOCAL = TrainingRun.backend == "local"
_LOCAL_QUEUED = select(TrainingRun).where(TrainingRun.status == "queued", _LOCAL)


def _fail_dead_runs(db: Database) -> int:
    """Mark ``failed`` every local run whose training process is gone; returns how many."""
    with db.read() as session:
        if not any(is_dead(run) for run in session.scalars(_UNFINISHED)):
            return 0

    def work(session) -> int:
        count = 0
        for run in session.scalars(_UNFINISHED).all():
            if not is_dead(run):
                continue
            if run.status == "running":
                run.error = f"the training process ended unexpectedly (pid {run.pid})"
            else:
                run.error = (
                    f"the training process ended before it started (pid {run.pid}); "
                    f"see {log_path(run.id)}"
                )
            run.status = "failed"
            run.finished_at = utcnow()
            run.progress = {**(run.progress or {}), "phase": "failed"}
            count += 1
        return count

    return db.write(work)


def _queue_waits(runs: Sequence[TrainingRun], now: dt.datetime, limit: int) -> bool:
    """A queued run nobody is starting, while fewer than ``limit`` runs train or start."""
    queued = [run for run in runs if run.status == "queued"]
    busy = sum(run.status == "running" for run in runs) + sum(is_reserved(r, now) for r in queued)
    return busy < limit and any(not r.cancel_requested and not is_reserved(r, now) for r in queued)


def reap_dead_runs(db: Database, launch: Callable[[int, Database], int] | None = None) -> int:
    """Fail every local run whose training process is gone, then start queued runs in the
    free slots; returns how many runs were failed.

    A killed trainer cannot start the next run itself, so without the second step the queue
    would wait for the next submission. Cheap enough to poll: two reads unless a run needs
    reaping or a queued run can start.
    """
    failed = _fail_dead_runs(db)
    with db.read() as session:
        local = session.scalars(_UNFINISHED.where(_LOCAL)).all()
        waits = _queue_waits(local, utcnow(), max_concurrent_runs())
    if waits:
        dispatch_queue(db, launch or start_run_process)
    return failed


# ---------------------------------------------------------------------------------------
# Creating and starting runs


def new_run(settings: TrainSettings, **fields: Any) -> TrainingRun:
    """An unsaved ``queued`` run row for ``settings`` (``fields``: backend, queue, group)."""
    return TrainingRun(
        task=settings.task,
        arch=settings.arch,
        modality=settings.modality,
        input_size=[list(size) for size in settings.input_sizes().values()],
        settings=settings.to_dict(),
        weights_source=settings.weights,
        status="queued",
        cancel_requested=False,
        progress={"phase": "queued"},
        **fields,
    )


def create_run(db: Database, settings: TrainSettings, *, owner_pid: int | None = None) -> int:
    """A new local ``queued`` run for ``settings``; returns its id.

    With ``owner_pid`` the run is reserved for that (running) process, which will train it
    itself: the dispatcher leaves it alone.
    """

    def work(session) -> int:
        run = new_run(settings, backend="local")
        if owner_pid is not None:
            run.pid = owner_pid
            run.progress = {**process_tag(owner_pid), "phase": "starting"}
        session.add(run)
        session.flush()
        return int(run.id)

    return db.write(work)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["SARCOPENIA_DATA_DIR"] = str(config.data_dir().resolve())
    env["DATABASE_URL"] = config.database_url()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def start_run_process(run_id: int, db: Database | None = None) -> int:
    """Launch ``python -m core train --run-id N`` detached and return its pid at once.

    The process gets this process's data folder and database (as absolute settings) and
    writes its output to ``log_path(run_id)``. With ``db`` the pid is recorded on the run
    right away, so a crash before the child claims the run is still noticed by the reaper.
    """
    with open(log_path(run_id), "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "core", "train", "--run-id", str(run_id)],
            cwd=PROJECT_ROOT,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if db is not None:
        tag = process_tag(child.pid)

        def work(session) -> None:
            run = session.get(TrainingRun, run_id)
            if run is not None and run.status == "queued" and run.pid is None:
                run.pid = child.pid
                run.progress = {**(run.progress or {}), **tag, "phase": "starting"}

        db.write(work)
    return child.pid


def _running_count(session, exclude: int | None = None) -> int:
    query = (
        select(func.count()).select_from(TrainingRun).where(TrainingRun.status == "running", _LOCAL)
    )
    if exclude is not None:
        query = query.where(TrainingRun.id != exclude)
    return int(session.scalar(query) or 0)


def dispatch_queue(
    db: Database, launch: Callable[[int, Database], int] = start_run_process
) -> list[int]:
    """Start processes for the oldest queued runs while slots are free; returns their ids."""
    _fail_dead_runs(db)
    limit = max_concurrent_runs()
    host = socket.gethostname()

    def reserve(session) -> list[int]:
        now = utcnow()
        queued = session.scalars(_LOCAL_QUEUED.order_by(TrainingRun.id)).all()
        busy = _running_count(session) + sum(is_reserved(run, now) for run in queued)
        chosen: list[int] = []
        for run in queued:
            if busy + len(chosen) >= limit:
                break
            if run.cancel_requested or is_reserved(run, now):
                continue
            run.pid = None
            run.progress = {"phase": "starting", "host": host, "reserved_at": now.isoformat()}
            chosen.append(int(run.id))
        return chosen

    chosen = db.write(reserve)
    for run_id in chosen:
        launch(run_id, db)
    return chosen


def submit_run(db: Database, settings: TrainSettings) -> int:
    """Queue a run and start it in the background if a slot is free; returns at once."""
    run_id = create_run(db, settings)
    dispatch_queue(db)
    return run_id


def claim_run(db: Database, run_id: int, *, release_if_busy: bool = True) -> bool:
    """Mark the queued run ``running`` in this process, unless the limit is reached.

    False when the run is no longer queued (cancelled, or claimed by another process), or
    when all slots are taken; then, with ``release_if_busy``, the reservation is dropped so
    that the next dispatch starts it again.
    """
    tag = process_tag()
    limit = max_concurrent_runs()

    def work(session) -> bool:
        run = session.get(TrainingRun, run_id)
        if run is None or run.status != "queued" or run.cancel_requested:
            return False
        if run.backend != "local":
            return False
        if run.pid is not None and run.pid != tag["pid"] and owner_alive(run):
            return False
        if _running_count(session, exclude=run_id) >= limit:
            if release_if_busy:
                run.pid = None
                run.progress = {"phase": "queued"}
            return False
        run.status = "running"
        run.pid = tag["pid"]
        run.started_at = utcnow()
        run.progress = {**tag, "phase": "starting"}
        return True

    return db.write(work)


def claim_next(db: Database) -> int | None:
    """Claim the oldest queued run nobody is starting (``--worker``); None when none is free."""
    _fail_dead_runs(db)
    now = utcnow()
    with db.read() as session:
        candidates = [
            run.id
            for run in session.scalars(_LOCAL_QUEUED.order_by(TrainingRun.id))
            if not run.cancel_requested and not is_reserved(run, now)
        ]
    for run_id in candidates:
        if claim_run(db, run_id, release_if_busy=False):
            return run_id
        with db.read() as session:
            if _running_count(session) >= max_concurrent_runs():
                return None
    return None


# ---------------------------------------------------------------------------------------
# Cancel and delete


def cancel_run(db: Database, run_id: int) -> str:
    """Ask a run to stop; returns its status afterwards.

    A queued run is cancelled at once. A running one gets ``cancel_requested``: the trainer
    sees it within about half a second and ends the run ``cancelled``; if the trainer is
    already gone, the run is marked cancelled here. Finished runs are left as they are.
    """

    def work(session) -> str:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise ValueError(f"There is no training run {run_id}.")
        if run.status not in ("queued", "running"):
            return run.status
        run.cancel_requested = True
        gone = run.status == "running" and is_local(run.progress) and not owner_alive(run)
        if run.status == "queued" or gone:
            run.status = "cancelled"
            run.error = "Cancelled on request."
            run.finished_at = utcnow()
            run.progress = {**(run.progress or {}), "phase": "cancelled"}
        return run.status

    return db.write(work)


def delete_run(db: Database, run_id: int) -> None:
    """Remove a finished or queued run, its predictions, model file and log.

    Only files inside the models folder are deleted, whatever path the row holds.
    """

    def work(session) -> str | None:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise ValueError(f"There is no training run {run_id}.")
        if run.status == "running":
            raise RunActiveError(f"Run {run_id} is still training; cancel it first.")
        session.execute(delete(Prediction).where(Prediction.run_id == run_id))
        path = run.model_path
        session.delete(run)
        return path

    remove_model_file(db.write(work))
    log_path(run_id).unlink(missing_ok=True)


def remove_model_file(model_path: str | None) -> None:
    """Delete a run's model file, but only inside the models folder, whatever the row says."""
    models = config.models_dir().resolve()
    if model_path:
        path = data_path(model_path).resolve()
        if path.is_relative_to(models) and path != models:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# Command line
