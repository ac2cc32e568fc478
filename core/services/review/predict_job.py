"""The background job that predicts a run's whole cohort, and its status file.

``python -m core predict`` (or, with ``SARCOPENIA_REDIS_URL`` set, a job on a Redis Queue
worker: ``on_worker``) writes progress to a small status file in the data folder that the
Review page polls. A local job whose process is gone is reported failed; a job on a worker
beats every few seconds, and one whose beats stop (its worker died) is reported failed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from core.common import config
from core.common.store import ImageStore
from core.services import rq_jobs
from core.services.review.errors import ReviewError
from core.services.review.predictions import Progress, predict_cohort, prediction_root, write_json
from db.engine import Database

PROJECT_ROOT: Final = Path(__file__).resolve().parents[3]
"""The folder holding ``core/``: the job runs ``python -m core`` from there."""


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
        return self.state in ("queued", "starting", "running")


def _status_path(run_id: int) -> Path:
    return prediction_root() / f"run-{run_id}" / "job.json"


def _log_path(run_id: int) -> Path:
    return prediction_root() / f"run-{run_id}" / "job.log"


_STATUS_LOCK = threading.Lock()
"""The job's progress and its heartbeat thread update the same file."""


def _write_status(run_id: int, **fields: Any) -> None:
    path = _status_path(run_id)
    with _STATUS_LOCK:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            state = {}
        state.update(fields, updated_at=time.time())
        write_json(path, state)


def _process_alive(pid: int, pid_start: int | None) -> bool:
    """True while ``pid`` runs and is the process that was started (not a reused pid)."""
    from core.services.run_liveness import pid_alive

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
    root = str(PROJECT_ROOT)
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
    if state.get("backend") == "rq":
        return _worker_status(status, state)
    if status.active and (
        status.pid is None or not _process_alive(status.pid, state.get("pid_start"))
    ):
        reason = f"The prediction process ended without finishing; see {_log_path(run_id)}."
        _write_status(run_id, state="failed", error=reason)
        return JobStatus(run_id, "failed", status.done, status.total, reason, status.pid)
    return status


def _worker_status(status: JobStatus, state: dict[str, Any]) -> JobStatus:
    """A job on a worker is alive while it beats; queued, it waits for a worker."""
    if status.state != "running":
        return status
    silent = time.time() - float(state.get("updated_at") or 0)
    if silent <= rq_jobs.stale_after_s():
        return status
    reason = (
        f"No heartbeat from worker {state.get('worker')} for {silent:.0f} s: the worker or "
        "its machine stopped. Start the prediction again."
    )
    _write_status(status.run_id, state="failed", error=reason)
    return JobStatus(status.run_id, "failed", status.done, status.total, reason, status.pid)


def on_worker(run_id: int) -> int:
    """The RQ job: predict the cohort in a worker's work horse, beating into the status file."""
    from db.engine import Database

    worker = rq_jobs.worker_name()
    db = Database(config.database_url())
    _write_status(run_id, worker=worker, host=socket.gethostname())
    heartbeat = rq_jobs.Heartbeat(
        f"predict-{run_id}",
        lambda: _write_status(run_id),
        lambda: _write_status(
            run_id, state="failed", error=f"The worker {worker} stopped while predicting."
        ),
    )
    heartbeat.start()
    try:
        return run_predict_job(db, ImageStore(config.images_dir()), run_id, backend="rq")
    finally:
        heartbeat.stop.set()
        db.dispose()


def _enqueue(run_id: int) -> JobStatus:
    """Queue the cohort prediction for the workers (``gpu`` queue: it runs the model)."""
    conn = rq_jobs.connect()
    _write_status(
        run_id, state="queued", done=0, total=0, error=None, pid=None, backend="rq", worker=None
    )
    rq_jobs.enqueue_call(
        conn,
        "core.services.review.predict_job.on_worker",
        [run_id],
        job_id=f"predict-{run_id}-{time.time_ns()}",
        queue="gpu",
    )
    return JobStatus(run_id, "queued", 0, 0, None, None)


def run_predict_job(
    db: Database,
    store: ImageStore,
    run_id: int,
    progress: Progress | None = None,
    *,
    backend: str = "local",
) -> int:
    """``predict_cohort`` with its progress and outcome written to the run's status file.

    ``backend`` says how its liveness is judged: ``local`` by the pid, ``rq`` by the beats.
    """
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
        backend=backend,
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
    if argv is None and rq_jobs.redis_url():
        try:
            return _enqueue(run_id)
        except rq_jobs.QueueUnavailableError as exc:
            raise ReviewError(str(exc)) from None
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
            cwd=PROJECT_ROOT,
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
        backend="local",
    )
    return JobStatus(run_id, "starting", 0, 0, None, process.pid)
