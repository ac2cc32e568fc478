"""Training runs as jobs on Redis Queue (RQ) workers: enqueue, the job, the worker, the reaper.

Cohort predictions use the same queue, heartbeat and worker (``enqueue_call``,
``Heartbeat``; the job itself is ``core.services.review.predict_job.on_worker``).

Used when ``SARCOPENIA_REDIS_URL`` is set (``core.services.job_backends`` chooses). The
database stays the record of every run: Redis only carries "run N, attempt A" to a worker,
so losing Redis loses no run.

- **Enqueue**: one RQ job per run, id ``run-<id>-a<attempt>``, on the queue the run names
  (``gpu`` or ``cpu``). Enqueueing the same run twice is harmless: the job claims the run
  in one transaction and does nothing when the run is no longer queued for that attempt.
- **Job** (in the worker's forked work horse): claims the run (``running``, worker name,
  pid), starts a heartbeat thread that stamps ``heartbeat_at`` every ``HEARTBEAT_S`` and
  trains with ``run_training``, which writes progress, results and the final status.
  Cancelling sets ``cancel_requested``; the trainer reads it with every progress write and
  stops within about a second, on whatever machine it runs.
- **Faults**: a worker killed with ``kill -9`` orphans its work horse; the heartbeat thread
  notices the lost parent, marks the run failed and ends the horse at once. A machine that
  dies whole (power cut) stops the heartbeat: ``reap`` fails every ``running`` rq run
  whose heartbeat is older than ``stale_after_s()``. A queued run whose job is missing
  from Redis (Redis restarted without its data) is enqueued again by ``reap``. The app
  calls ``reap`` on every poll of the Training page, and every worker calls it between
  heartbeats, so faults are handled with no page open.
- **Worker**: ``SarcopeniaWorker`` is RQ's forking worker with a short TTL (so dead workers
  drop off the list within ``WORKER_TTL_S``) that survives Redis restarts while a job runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import select

from db.engine import Database
from db.models import TrainingRun, utcnow

log = logging.getLogger(__name__)

REDIS_URL_ENV: Final = "SARCOPENIA_REDIS_URL"
STALE_ENV: Final = "SARCOPENIA_RUN_STALE_S"
QUEUES: Final = ("gpu", "cpu")
"""Queue names a run may choose; RQ's own names get the ``QUEUE_PREFIX``."""
QUEUE_PREFIX: Final = "sarcopenia-"
HEARTBEAT_S: Final = 2.0
"""How often a training job stamps ``heartbeat_at`` (one tiny write)."""
DEFAULT_STALE_S: Final = 60.0
"""A running rq run with no heartbeat for this long is failed (override: ``STALE_ENV``)."""
WORKER_TTL_S: Final = 30
"""RQ forgets a worker that has not sent a heartbeat for this long."""
MONITOR_S: Final = 5
"""How often the worker checks its work horse (and sends its own heartbeat)."""
REAP_EVERY_S: Final = 10.0


class QueueUnavailableError(RuntimeError):
    """Redis cannot be reached; the message says where it was looked for."""


def redis_url() -> str | None:
    """``SARCOPENIA_REDIS_URL``, or None: without it every run is a local subprocess."""
    return os.environ.get(REDIS_URL_ENV, "").strip() or None


def stale_after_s() -> float:
    """Seconds without a heartbeat after which a running rq run counts as dead."""
    raw = os.environ.get(STALE_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_STALE_S
    except ValueError:
        raise ValueError(f"{STALE_ENV} must be a number of seconds; got {raw!r}.") from None
    if value < 3 * HEARTBEAT_S:
        raise ValueError(f"{STALE_ENV} must be at least {3 * HEARTBEAT_S:g} seconds.")
    return value


def connect(url: str | None = None) -> redis.Redis:
    """A Redis connection for ``url`` (default ``redis_url()``), checked with a ping."""
    url = url or redis_url()
    if url is None:
        raise QueueUnavailableError(f"{REDIS_URL_ENV} is not set.")
    conn = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    try:
        conn.ping()
    except redis.exceptions.RedisError as exc:
        raise QueueUnavailableError(
            f"Redis at {url} cannot be reached ({exc}); start it or fix {REDIS_URL_ENV}."
        ) from None
    return conn


def queue_name(name: str) -> str:
    if name not in QUEUES:
        raise ValueError(f"Unknown queue {name!r}; choose one of {', '.join(QUEUES)}.")
    return QUEUE_PREFIX + name


def job_id(run_id: int, attempt: int) -> str:
    return f"run-{run_id}-a{attempt}"


# ---------------------------------------------------------------------------------------
# Enqueue, cancel


def enqueue(conn: redis.Redis, run_id: int, attempt: int, queue: str) -> str:
    """Put one run's attempt on its queue; returns the job id. No timeout: the heartbeat
    decides whether a long run is alive, not a guess at how long training takes."""
    job = Queue(queue_name(queue), connection=conn).enqueue(
        "core.services.rq_jobs.train_job",
        run_id,
        attempt,
        job_id=job_id(run_id, attempt),
        job_timeout=-1,
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
        description=f"training run {run_id} (attempt {attempt})",
    )
    return str(job.id)


def enqueue_call(
    conn: redis.Redis, function: str, args: Sequence[Any], *, job_id: str, queue: str
) -> str:
    """Put any job (``module.function`` and its arguments) on a queue, without timeout."""
    job = Queue(queue_name(queue), connection=conn).enqueue(
        function, *args, job_id=job_id, job_timeout=-1, result_ttl=3600, failure_ttl=7 * 24 * 3600
    )
    return str(job.id)


def drop_job(conn: redis.Redis, run_id: int, attempt: int) -> None:
    """Take a cancelled run's waiting job off its queue (gone already is fine)."""
    try:
        Job.fetch(job_id(run_id, attempt), connection=conn).cancel()
    except (NoSuchJobError, redis.exceptions.RedisError) as exc:
        log.info("No waiting job to cancel for run %s: %s", run_id, exc)
    except Exception as exc:  # rq refuses to cancel a job that already ended
        log.info("Job of run %s not cancelled in Redis: %s", run_id, exc)


# ---------------------------------------------------------------------------------------
# The job, in the worker's work horse


def _claim(db: Database, run_id: int, attempt: int, worker: str) -> bool:
    from core.learning.train import process_tag

    tag = process_tag()

    def work(session) -> bool:
        run = session.get(TrainingRun, run_id)
        if run is None or run.status != "queued" or run.cancel_requested:
            return False
        if run.attempt != attempt or run.backend != "rq":
            return False
        now = utcnow()
        run.status = "running"
        run.pid = tag["pid"]
        run.worker = worker
        run.heartbeat_at = now
        run.started_at = now
        run.progress = {**tag, "phase": "starting", "worker": worker}
        return True

    return db.write(work)


def _fail(db: Database, run_id: int, reason: str, statuses: Sequence[str] = ("running",)) -> bool:
    def work(session) -> bool:
        run = session.get(TrainingRun, run_id)
        if run is None or run.status not in statuses:
            return False
        cancelled = bool(run.cancel_requested)
        run.status = "cancelled" if cancelled else "failed"
        run.error = "Cancelled on request." if cancelled else reason
        run.finished_at = utcnow()
        run.progress = {**(run.progress or {}), "phase": run.status}
        return True

    return db.write(work)


def worker_name() -> str:
    """The RQ worker running this job (its work horse knows it), else the host."""
    return os.environ.get("RQ_WORKER_ID") or socket.gethostname()


class Heartbeat(threading.Thread):
    """Calls ``beat`` every ``HEARTBEAT_S`` and watches the worker that forked this horse.

    A worker killed outright leaves its horse running with nobody to report it; the horse
    then records that (``orphaned``) and exits at once, so a job is not half-finished by an
    orphan the worker list no longer shows.
    """

    def __init__(self, name: str, beat: Callable[[], None], orphaned: Callable[[], None]) -> None:
        super().__init__(name=f"heartbeat-{name}", daemon=True)
        self.beat, self.orphaned = beat, orphaned
        self.parent = os.getppid()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            if os.getppid() != self.parent:
                self.orphaned()
                os._exit(1)
            try:
                self.beat()
            except Exception:  # a busy or briefly unreachable database: beat again later
                log.warning("%s not written", self.name, exc_info=True)


def _beat(db: Database, run_id: int) -> None:
    def work(session) -> None:
        run = session.get(TrainingRun, run_id)
        if run is not None and run.status == "running":
            run.heartbeat_at = utcnow()

    db.write(work)


def train_job(run_id: int, attempt: int) -> str:
    """The RQ job: train run ``run_id`` if it still waits for this attempt; its status."""
    from core.common import config
    from core.common.store import ImageStore
    from core.learning.train import run_training

    worker = worker_name()
    db = Database(config.database_url())
    try:
        if not _claim(db, run_id, attempt, worker):
            return "skipped"
        heartbeat = Heartbeat(
            f"run-{run_id}",
            lambda: _beat(db, run_id),
            lambda: _fail(db, run_id, f"The worker {worker} stopped while training."),
        )
        heartbeat.start()
        try:
            return run_training(db, ImageStore(config.images_dir()), run_id)
        finally:
            heartbeat.stop.set()
    finally:
        db.dispose()


# ---------------------------------------------------------------------------------------
# The reaper: dead workers, lost jobs


def fail_stale_runs(db: Database, now: dt.datetime | None = None) -> int:
    """Fail (or, when asked, cancel) every running rq run whose heartbeat stopped."""
    limit = (now or utcnow()) - dt.timedelta(seconds=stale_after_s())
    query = select(TrainingRun.id, TrainingRun.worker, TrainingRun.heartbeat_at).where(
        TrainingRun.backend == "rq",
        TrainingRun.status == "running",
        TrainingRun.heartbeat_at < limit,
    )
    with db.read() as session:
        stale = session.execute(query).all()
    count = 0
    for run_id, worker, beat in stale:
        reason = (
            f"No heartbeat from worker {worker} since {beat:%Y-%m-%d %H:%M:%S} UTC: the worker "
            "or its machine stopped (power cut, kill -9, lost network). Retry the run."
        )
        count += _fail(db, run_id, reason)
    return count


def requeue_lost_jobs(db: Database, conn: redis.Redis) -> list[int]:
    """Enqueue again every queued rq run whose job Redis no longer holds; their ids."""
    with db.read() as session:
        waiting = session.execute(
            select(TrainingRun.id, TrainingRun.attempt, TrainingRun.queue).where(
                TrainingRun.backend == "rq",
                TrainingRun.status == "queued",
                TrainingRun.cancel_requested.is_(False),
            )
        ).all()
    lost = [row for row in waiting if not conn.exists(Job.key_for(job_id(row[0], row[1])))]
    for run_id, attempt, queue in lost:
        enqueue(conn, run_id, attempt, queue or "gpu")
    return [row[0] for row in lost]


def reap(db: Database, conn: redis.Redis | None = None) -> int:
    """Fail runs of dead workers and re-enqueue lost jobs; returns how many runs failed.

    Redis being down does not stop the first part: the heartbeats are in the database.
    """
    failed = fail_stale_runs(db)
    try:
        requeue_lost_jobs(db, conn or connect())
    except (QueueUnavailableError, redis.exceptions.RedisError) as exc:
        log.warning("Lost jobs not checked: %s", exc)
    return failed


# ---------------------------------------------------------------------------------------
# Workers


def live_workers(conn: redis.Redis) -> list[dict[str, Any]]:
    """Workers that sent a heartbeat within ``WORKER_TTL_S``: name, host, queues, state."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=WORKER_TTL_S)
    out = []
    for worker in Worker.all(connection=conn):
        beat = worker.last_heartbeat
        if beat is None or beat.replace(tzinfo=beat.tzinfo or dt.UTC) < cutoff:
            continue
        queues = [q.removeprefix(QUEUE_PREFIX) for q in worker.queue_names()]
        out.append(
            {
                "name": worker.name,
                "host": worker.hostname,
                "queues": ",".join(queues),
                "state": str(worker.get_state()),
            }
        )
    return sorted(out, key=lambda w: w["name"])


class SarcopeniaWorker(Worker):
    """RQ's forking worker, kept alive through a Redis restart, reaping as it beats.

    While a work horse trains, RQ's heartbeats to Redis fail if Redis restarts; stock RQ then
    gives up the worker and orphans the horse. Here a failed heartbeat is logged and retried
    at the next one, so the run goes on and its result lands in the database.
    """

    def __init__(self, *args: Any, database_url: str, **kwargs: Any) -> None:
        kwargs.setdefault("worker_ttl", WORKER_TTL_S)
        kwargs.setdefault("job_monitoring_interval", MONITOR_S)
        super().__init__(*args, **kwargs)
        self.database_url = database_url
        self._last_reap = 0.0

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        try:
            if pipeline is None and not self.connection.exists(self.key):
                self.register_birth()  # Redis restarted without its data: be listed again
            super().heartbeat(timeout, pipeline)
        except redis.exceptions.RedisError as exc:
            self.log.warning("Worker %s: heartbeat to Redis failed (%s)", self.name, exc)
        self._reap()

    def maintain_heartbeats(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().maintain_heartbeats(*args, **kwargs)
        except redis.exceptions.RedisError as exc:
            self.log.warning("Worker %s: job heartbeat to Redis failed (%s)", self.name, exc)
        self._reap()

    def _reap(self) -> None:
        """Fail the runs of dead workers every ``REAP_EVERY_S``, with no page open."""
        if time.monotonic() - self._last_reap < REAP_EVERY_S:
            return
        self._last_reap = time.monotonic()
        db = Database(self.database_url)
        try:
            reap(db, self.connection)
        except Exception:
            self.log.warning("Worker %s: reaping failed", self.name, exc_info=True)
        finally:
            db.dispose()
