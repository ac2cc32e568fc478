"""Training runs on Redis Queue: a real redis-server, real workers as separate processes.

Every test starts its own throwaway Redis (``.ci/start-redis``); a machine without
``redis-server`` fails here with what to install, never skips.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job

from bench.rq_workers import RedisMissingError, Workers, restart_redis, start_redis, stop_redis
from core.common import config
from core.common.store import ImageStore
from core.learning.train import TrainSettings
from core.services import job_backends, rq_jobs
from db.engine import Database
from db.models import Patient, Prediction, TrainingRun, utcnow

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
    try:
        url = start_redis()
    except RedisMissingError as exc:
        pytest.fail(str(exc))
    monkeypatch.setenv(rq_jobs.REDIS_URL_ENV, url)
    monkeypatch.setenv(rq_jobs.STALE_ENV, str(STALE_S))
    yield url
    stop_redis(url)


@pytest.fixture
def db(demo_env: Path) -> Iterator[Database]:
    database = Database()
    yield database
    database.dispose()


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


def _predictions(db: Database, run_id: int) -> list[tuple[int, str, int, float]]:
    with db.read() as session:
        rows = session.query(Prediction).filter(Prediction.run_id == run_id)
        return sorted((p.patient_id, p.subset, p.fold, p.probability) for p in rows)


def _alive(names: set[str]) -> bool:
    return {w["name"] for w in job_backends.workers() or []} >= names


def test_a_k_fold_grid_on_two_workers_is_trained_once_per_fold_like_the_local_backend(
    db, redis_url, workers, monkeypatch
):
    """Two worker processes share a grid fanned out per (task, fold); the rows say who
    trained what, with live progress; pooled results equal one k-fold run per task here."""
    grid = [
        TrainSettings(**{**TINY.to_dict(), "task": task, "k_folds": 2})
        for task in ("sarcopenia_gsu", "sarcopenia_swe")
    ]
    workers.start("w1")
    workers.start("w2")
    _wait_for(lambda: _alive({"w1", "w2"}), 120, "two live workers")
    run_ids = job_backends.submit_runs(db, grid, group_name="test grid")
    phases: set[str] = set()

    def done() -> bool:
        for run in _runs(db, run_ids):
            if run.status == "running" and run.worker in ("w1", "w2"):
                phases.add((run.progress or {}).get("phase"))
        return _finished(db, run_ids)

    _wait_for(done, 600, f"the grid; logs:\n{workers.log('w1')}\n{workers.log('w2')}")
    runs = _runs(db, run_ids)
    assert [r.status for r in runs] == ["done"] * 4, [r.error for r in runs]
    assert [(r.task, r.settings["fold"]) for r in runs] == [
        (task, fold) for task in ("sarcopenia_gsu", "sarcopenia_swe") for fold in (0, 1)
    ]
    assert {r.worker for r in runs} == {"w1", "w2"}
    assert {r.backend for r in runs} == {"rq"} and {r.queue for r in runs} == {"cpu"}
    group = runs[0].group_id
    assert group is not None and {r.group_id for r in runs} == {group}
    assert phases & {"loading", "features", "training"}
    conn = rq_jobs.connect()
    for run in runs:
        job = Job.fetch(rq_jobs.job_id(run.id, 1), connection=conn)
        assert job.return_value() == "done"
        assert run.attempt == 1 and len(run.history["epochs"]) == TINY.total_epochs
    pooled = job_backends.group_cv_metrics(db, ImageStore(config.images_dir()), group)

    monkeypatch.delenv(rq_jobs.REDIS_URL_ENV)
    monkeypatch.setenv("SARCOPENIA_MAX_CONCURRENT_RUNS", "2")
    local_ids = job_backends.submit_runs(db, grid)
    _wait_for(lambda: _finished(db, local_ids), 600, "the same grid on the local backend")
    local = _runs(db, local_ids)
    assert {r.backend for r in local} == {"local"} and {r.worker for r in local} == {None}
    for here, folds, row in zip(local, (runs[:2], runs[2:]), pooled, strict=True):
        assert here.status == "done", here.error
        assert (row["task"], row["folds"]) == (here.task, 2)
        metrics = {key: row[key] for key in here.metrics["test"]}
        assert metrics == here.metrics["test"]
        on_workers = sorted(p for run in folds for p in _predictions(db, run.id))
        assert on_workers == _predictions(db, here.id)


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
    restart_redis(redis_url)
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


def test_training_page_on_workers_shows_them_queues_groups_and_retries(db, redis_url, workers):
    """The admin sees the live workers, picks a queue, and retries a failed run in one click."""
    from tests.apptest_helpers import open_page

    workers.start("page-worker", "--queues", "gpu")  # takes nothing from cpu: the runs wait
    _wait_for(lambda: _alive({"page-worker"}), 120, "the worker")
    at = open_page("pages/training.py", "admin")
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert any(c.startswith("1 worker(s) alive.") for c in captions), captions
    table = at.dataframe[0].value
    assert list(table["name"]) == ["page-worker"] and list(table["queues"]) == ["gpu"]

    next(w for w in at.selectbox if w.label == "Weights").set_value("none")
    next(w for w in at.number_input if w.label == "k-fold (0 = one split)").set_value(2)
    next(w for w in at.radio if w.label == "Workers' queue").set_value("cpu")
    at.button(key="FormSubmitter:new_run-Start training").click().run()
    assert not at.exception
    with db.read() as session:
        runs = session.query(TrainingRun).order_by(TrainingRun.id).all()
    assert [(r.queue, r.settings["fold"], r.status) for r in runs] == [
        ("cpu", 0, "queued"),
        ("cpu", 1, "queued"),
    ]
    progress = [p.proto.text for p in at.get("progress")]
    assert any("0 of 2 runs done · 2 queued" in text for text in progress), progress

    job_backends.cancel(db, runs[0].id)
    at.run()
    assert Queue(rq_jobs.queue_name("cpu"), connection=rq_jobs.connect()).count == 1
    at.button(key=f"retry_{runs[0].id}").click().run()
    assert not at.exception
    retried = _run(db, runs[0].id)
    assert (retried.status, retried.attempt) == ("queued", 2)
    assert Job.exists(rq_jobs.job_id(runs[0].id, 2), connection=rq_jobs.connect())


def test_the_worker_process_forks_before_tensorflow_is_loaded():
    """TensorFlow is loaded in each job's forked horse only: forking a process that already
    runs TensorFlow's threads (or holds a GPU) is unsafe, and the horse's exit frees it all."""
    import subprocess
    import sys

    probe = "import sys, core.cli, core.services.rq_jobs; print('tensorflow' in sys.modules)"
    root = Path(__file__).absolute().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_a_cohort_prediction_runs_on_a_worker_and_reports_through_its_status_file(
    agreed_demo, tiny_models, redis_url, workers, db
):
    """Cohort prediction goes through the queue too; the page's status file says where it
    is, and a job whose worker stopped beating is reported failed."""
    from core.services.review import cohort_predictions, predict_job_status, start_predict_job
    from core.services.review.predict_job import _write_status
    from core.services.review.predictions import prediction_root
    from tests.tiny_runs import add_tiny_run

    _, store = agreed_demo
    run_id = add_tiny_run(db, store, tiny_models["gsu"])
    started = start_predict_job(run_id)
    assert (started.state, started.active) == ("queued", True)
    assert predict_job_status(run_id).state == "queued"  # no worker yet: it waits
    workers.start("predictor", "--queues", "gpu")
    _wait_for(
        lambda: predict_job_status(run_id).state in ("done", "failed"),
        300,
        f"the cohort prediction\n{workers.log('predictor')}",
    )
    status = predict_job_status(run_id)
    assert (status.state, status.done, status.total) == ("done", 24, 24), status.error
    probs = cohort_predictions(db, run_id)
    for code, expected in tiny_models["gsu"].probabilities.items():
        with db.read() as session:
            patient_id = session.query(Patient.id).filter(Patient.code == code).scalar()
        assert probs[patient_id] == pytest.approx(expected, abs=1e-5)

    _write_status(run_id, state="running", worker="gone-host-1")
    assert predict_job_status(run_id).state == "running"
    path = prediction_root() / f"run-{run_id}" / "job.json"
    stale = {**json.loads(path.read_text()), "updated_at": time.time() - 2 * STALE_S}
    path.write_text(json.dumps(stale))
    failed = predict_job_status(run_id)
    assert failed.state == "failed" and "No heartbeat from worker gone-host-1" in failed.error
