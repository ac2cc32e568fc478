"""Training runs on Redis Queue: a real redis-server, real workers as separate processes.

Every test starts its own throwaway Redis (``.ci/start-redis``); a machine without
``redis-server`` fails here with what to install, never skips.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job

from core.learning.train import TrainSettings
from core.services import job_backends, rq_jobs
from db.engine import Database
from db.models import Prediction, TrainingRun, utcnow

ROOT = Path(__file__).absolute().parents[1]
STALE_S = 6
TINY = TrainSettings(
    task="sarcopenia_gsu",
    weights="none",
    input_size=32,
    sizes=(11, 5, 5),
    epochs=2,
    augment_copies=0,
    dense_units=8,
    run_eagerly=True,
)
LONG = TrainSettings(**{**TINY.to_dict(), "epochs": 400, "patience": 400, "lr_patience": 400})
"""Trains until stopped: no early stop, so it is surely mid-run when the test acts."""


@pytest.fixture
def redis_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A throwaway redis-server on a free port, configured as the app's job queue."""
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is missing: install Debian's redis-server package "
            "(`apt-get install redis-server`) to run the job queue tests."
        )
    url = subprocess.run(
        [str(ROOT / ".ci" / "start-redis")], check=True, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.setenv(rq_jobs.REDIS_URL_ENV, url)
    monkeypatch.setenv(rq_jobs.STALE_ENV, str(STALE_S))
    yield url
    with contextlib.suppress(Exception):
        rq_jobs.connect(url).shutdown(nosave=True)


def _restart_redis(url: str) -> None:
    """Stop Redis without saving (its queues are lost) and start it again on the same port."""
    with contextlib.suppress(Exception):
        rq_jobs.connect(url).shutdown(nosave=True)
    port = url.rsplit(":", 1)[1].split("/")[0]
    subprocess.run([str(ROOT / ".ci" / "start-redis"), port], check=True, capture_output=True)


@pytest.fixture
def db(demo_env: Path) -> Iterator[Database]:
    database = Database()
    yield database
    database.dispose()


class Workers:
    """``python -m core worker`` processes, stopped (and their work horses killed) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "core", "worker", "--queues", "cpu,gpu", "--name", name, *extra],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self, horses: list[int]) -> None:
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture
def workers(tmp_path: Path, db: Database) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    with db.read() as session:
        horses = [r.pid for r in session.query(TrainingRun) if r.backend == "rq" and r.pid]
    pool.stop(horses)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _runs(db: Database, run_ids: list[int]) -> list[TrainingRun]:
    with db.read() as session:
        return [session.get(TrainingRun, run_id) for run_id in run_ids]


def _run(db: Database, run_id: int) -> TrainingRun:
    return _runs(db, [run_id])[0]


def _finished(db: Database, run_ids: list[int]) -> bool:
    job_backends.reap(db)
    return all(run.status in ("done", "failed", "cancelled") for run in _runs(db, run_ids))


def _predictions(db: Database, run_id: int) -> list[tuple[int, str, float]]:
    with db.read() as session:
        rows = session.query(Prediction).filter(Prediction.run_id == run_id)
        return sorted((p.patient_id, p.subset, round(p.probability, 6)) for p in rows)


def _alive(names: set[str]) -> bool:
    return {w["name"] for w in job_backends.workers() or []} >= names


def test_a_grid_on_two_workers_is_trained_once_per_run_like_the_local_backend(
    db, redis_url, workers, monkeypatch
):
    """Two worker processes share a grid; the rows say who trained what, with live progress."""
    grid = [
        TrainSettings(**{**TINY.to_dict(), "seed": seed, "task": task})
        for task in ("sarcopenia_gsu", "sarcopenia_swe")
        for seed in (1, 2)
    ]
    workers.start("w1")
    workers.start("w2")
    _wait_for(lambda: _alive({"w1", "w2"}), 120, "two live workers")
    run_ids = job_backends.submit_runs(db, grid, group_name="test grid")
    phases: set[tuple[str, str]] = set()

    def done() -> bool:
        for run in _runs(db, run_ids):
            if run.status == "running":
                phases.add(((run.progress or {}).get("phase"), run.worker))
        return _finished(db, run_ids)

    _wait_for(done, 600, f"the grid; logs:\n{workers.log('w1')}\n{workers.log('w2')}")
    runs = _runs(db, run_ids)
    assert [r.status for r in runs] == ["done"] * 4, [r.error for r in runs]
    assert {r.worker for r in runs} == {"w1", "w2"}
    assert {r.backend for r in runs} == {"rq"} and {r.queue for r in runs} == {"cpu"}
    assert len({r.group_id for r in runs}) == 1 and runs[0].group_id is not None
    assert {phase for phase, _ in phases} & {"loading", "features", "training"}
    conn = rq_jobs.connect()
    for run in runs:
        job = Job.fetch(rq_jobs.job_id(run.id, 1), connection=conn)
        assert job.return_value() == "done"
        assert run.attempt == 1 and len(run.history["epochs"]) == 2

    monkeypatch.delenv(rq_jobs.REDIS_URL_ENV)
    monkeypatch.setenv("SARCOPENIA_MAX_CONCURRENT_RUNS", "2")
    local_ids = job_backends.submit_runs(db, grid)
    _wait_for(lambda: _finished(db, local_ids), 600, "the same grid on the local backend")
    local = _runs(db, local_ids)
    assert {r.backend for r in local} == {"local"} and {r.worker for r in local} == {None}
    for on_worker, here in zip(runs, local, strict=True):
        assert here.status == "done", here.error
        assert here.metrics["test"] == on_worker.metrics["test"]
        assert _predictions(db, here.id) == _predictions(db, on_worker.id)


def test_kill_9_of_a_worker_fails_its_run_and_retry_and_cancel_work_on_the_other(
    db, redis_url, workers
):
    """The killed worker's run fails with the reason; the other runs finish; one click
    retries it on the surviving worker, and cancelling stops it there."""
    doomed = workers.start("doomed")
    _wait_for(lambda: _alive({"doomed"}), 120, "the first worker")
    long_id = job_backends.submit_runs(db, [LONG])[0]
    _wait_for(
        lambda: _run(db, long_id).progress.get("phase") == "training",
        300,
        f"the long run to train; log:\n{workers.log('doomed')}",
    )
    horse = _run(db, long_id).pid
    workers.start("survivor")
    _wait_for(lambda: _alive({"survivor"}), 120, "the second worker")
    short_ids = job_backends.submit_runs(db, [TINY, TINY])
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)

    _wait_for(lambda: _run(db, long_id).status == "failed", 60, "the killed run to fail")
    failed = _run(db, long_id)
    assert failed.error == "The worker doomed stopped while training."
    _wait_for(lambda: _finished(db, short_ids), 600, f"the others\n{workers.log('survivor')}")
    assert [r.status for r in _runs(db, short_ids)] == ["done", "done"]
    assert {r.worker for r in _runs(db, short_ids)} == {"survivor"}
    with contextlib.suppress(ProcessLookupError):
        os.kill(horse, 0)
        raise AssertionError(f"the killed worker's work horse {horse} still runs")

    job_backends.retry_run(db, long_id)
    retried = _run(db, long_id)
    assert (retried.status, retried.attempt, retried.error) == ("queued", 2, None)
    assert retried.progress["previous_error"] == failed.error
    _wait_for(
        lambda: _run(db, long_id).progress.get("phase") == "training",
        300,
        f"the retried run on the survivor\n{workers.log('survivor')}",
    )
    assert _run(db, long_id).worker == "survivor"
    job_backends.cancel(db, long_id)
    _wait_for(lambda: _run(db, long_id).status == "cancelled", 60, "the cancel to stop it")
    _wait_for(
        lambda: [w["state"] for w in job_backends.workers() or []] == ["idle"],
        60,
        "the survivor to be free again",
    )


def test_a_dead_machine_is_noticed_by_its_stale_heartbeat(db, redis_url):
    """Power cut: worker and work horse gone at once, nothing left to report; the reaper
    fails the run once its heartbeat is older than the limit, and only then."""
    run_id = job_backends.submit_runs(db, [TINY])[0]

    def lose(age_s: float) -> None:
        def work(session) -> None:
            run = session.get(TrainingRun, run_id)
            run.status, run.worker, run.pid = "running", "gone-host-1", None
            run.progress = {"phase": "training", "host": "gone-host"}
            run.heartbeat_at = utcnow() - dt.timedelta(seconds=age_s)

        db.write(work)

    lose(STALE_S / 2)
    assert job_backends.reap(db) == 0 and _run(db, run_id).status == "running"
    lose(STALE_S * 2)
    assert job_backends.reap(db) == 1
    run = _run(db, run_id)
    assert run.status == "failed"
    assert run.error.startswith("No heartbeat from worker gone-host-1 since ")


def test_a_redis_restart_loses_no_queued_run(db, redis_url, workers):
    """Redis comes back empty; the reaper enqueues the database's waiting runs again."""
    run_ids = job_backends.submit_runs(db, [TINY, TINY])
    conn = rq_jobs.connect()
    assert Queue(rq_jobs.queue_name("cpu"), connection=conn).count == 2
    _restart_redis(redis_url)
    conn = rq_jobs.connect()
    assert Queue(rq_jobs.queue_name("cpu"), connection=conn).count == 0
    job_backends.reap(db)
    assert Queue(rq_jobs.queue_name("cpu"), connection=conn).count == 2
    proc = workers.start("burst", "--burst")
    assert proc.wait(timeout=600) == 0, workers.log("burst")
    assert [r.status for r in _runs(db, run_ids)] == ["done", "done"]


def test_without_redis_the_worker_says_what_to_set(demo_env, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.delenv(rq_jobs.REDIS_URL_ENV, raising=False)
    assert job_backends.backend_name() == "local"
    assert main(["worker"]) == 1
    assert "Set SARCOPENIA_REDIS_URL" in capsys.readouterr().err


def test_a_configured_but_unreachable_redis_creates_no_run(db, monkeypatch):
    monkeypatch.setenv(rq_jobs.REDIS_URL_ENV, "redis://127.0.0.1:1/0")
    with pytest.raises(rq_jobs.QueueUnavailableError, match="cannot be reached"):
        job_backends.submit_runs(db, [TINY])
    with db.read() as session:
        assert session.query(TrainingRun).count() == 0
