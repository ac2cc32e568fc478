"""Background jobs: the queue, the reaper, cancel, delete, and a real process killed with -9."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.cli import train as train_cli
from core.cli.train import add_train_parser, settings_from_args, study_grid
from core.common import config
from core.learning.train import TrainSettings, process_tag
from core.services import jobs
from core.services.jobs import (
    MAX_CONCURRENT_ENV,
    RunActiveError,
    cancel_run,
    claim_run,
    create_run,
    delete_run,
    dispatch_queue,
    reap_dead_runs,
    start_run_process,
    submit_run,
)
from core.services.run_liveness import pid_alive
from db.engine import Database
from db.models import Patient, Prediction, TrainingRun

TINY = TrainSettings(
    task="sarcopenia_gsu",
    weights="none",
    input_size=32,
    sizes=(11, 5, 5),
    epochs=1,
    augment_copies=0,
    dense_units=8,
    run_eagerly=True,
)


@pytest.fixture
def db(demo_env: Path) -> Iterator[Database]:
    database = Database()
    yield database
    database.dispose()


def _run(db: Database, run_id: int) -> TrainingRun:
    with db.read() as session:
        return session.get(TrainingRun, run_id)


def _set(db: Database, run_id: int, **fields) -> None:
    def work(session) -> None:
        run = session.get(TrainingRun, run_id)
        for name, value in fields.items():
            setattr(run, name, value)

    db.write(work)


def _dead_pid() -> int:
    """The pid of a process that has exited and been waited for."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _fake_launch(launched: list[int]):
    """Stands in for start_run_process: records the run as started by this (live) process."""

    def launch(run_id: int, db: Database) -> int:
        launched.append(run_id)
        _set(db, run_id, pid=os.getpid(), progress={**process_tag(), "phase": "starting"})
        return os.getpid()

    return launch


def test_queue_trains_one_run_at_a_time_and_starts_the_next(db, monkeypatch):
    monkeypatch.delenv(MAX_CONCURRENT_ENV, raising=False)
    launched: list[int] = []
    launch = _fake_launch(launched)
    first, second = create_run(db, TINY), create_run(db, TINY)
    assert dispatch_queue(db, launch=launch) == [first]
    assert dispatch_queue(db, launch=launch) == []
    assert claim_run(db, first)
    assert not claim_run(db, second)
    assert _run(db, second).status == "queued"
    assert dispatch_queue(db, launch=launch) == []
    _set(db, first, status="done")
    assert dispatch_queue(db, launch=launch) == [second]
    assert launched == [first, second]


def test_the_limit_comes_from_the_environment(db, monkeypatch):
    monkeypatch.setenv(MAX_CONCURRENT_ENV, "2")
    runs = [create_run(db, TINY) for _ in range(3)]
    assert dispatch_queue(db, launch=_fake_launch([])) == runs[:2]
    monkeypatch.setenv(MAX_CONCURRENT_ENV, "zero")
    with pytest.raises(ValueError, match=MAX_CONCURRENT_ENV):
        dispatch_queue(db)


def test_a_stale_reservation_is_released(db, monkeypatch):
    """A dispatcher that died between reserving and launching does not block the queue."""
    run_id = create_run(db, TINY)
    _set(db, run_id, progress={"phase": "starting", "reserved_at": "2000-01-01T00:00:00"})
    assert dispatch_queue(db, launch=_fake_launch([])) == [run_id]


def test_reaper_fails_dead_local_runs_only(db):
    me = process_tag()
    alive = create_run(db, TINY)
    _set(db, alive, status="running", pid=me["pid"], progress=me)
    remote = create_run(db, TINY)
    _set(db, remote, status="running", pid=_dead_pid(), progress={"host": "gpu-server-7"})
    dead = create_run(db, TINY)
    dead_pid = _dead_pid()
    _set(db, dead, status="running", pid=dead_pid, progress={"host": me["host"]})
    reused = create_run(db, TINY)
    _set(db, reused, status="running", pid=me["pid"], progress={**me, "pid_start": 1})
    never = create_run(db, TINY)
    _set(db, never, pid=_dead_pid(), progress={"host": me["host"], "phase": "starting"})

    assert reap_dead_runs(db) == 3
    assert _run(db, alive).status == "running"
    assert _run(db, remote).status == "running"
    assert _run(db, dead).error == f"the training process ended unexpectedly (pid {dead_pid})"
    assert _run(db, reused).status == "failed"
    assert "before it started" in _run(db, never).error
    assert reap_dead_runs(db) == 0


def test_cancel_queued_running_and_finished_runs(db):
    queued = create_run(db, TINY)
    assert cancel_run(db, queued) == "cancelled"
    me = process_tag()
    running = create_run(db, TINY)
    _set(db, running, status="running", pid=me["pid"], progress=me)
    assert cancel_run(db, running) == "running"
    assert _run(db, running).cancel_requested
    orphan = create_run(db, TINY)
    _set(db, orphan, status="running", pid=_dead_pid(), progress={"host": me["host"]})
    assert cancel_run(db, orphan) == "cancelled"
    done = create_run(db, TINY)
    _set(db, done, status="done")
    assert cancel_run(db, done) == "done"
    assert not claim_run(db, queued)
    with pytest.raises(ValueError, match="no training run"):
        cancel_run(db, 9999)


def test_delete_removes_predictions_model_and_log_only_inside_the_data_folder(db, tmp_path):
    with db.read() as session:
        patient_id = session.query(Patient.id).first()[0]
    run_id = create_run(db, TINY)
    model = config.models_dir() / f"run-{run_id}.keras"
    model.write_bytes(b"model")
    jobs.log_path(run_id).write_text("log")
    _set(db, run_id, status="done", model_path=str(model))
    db.write(
        lambda s: s.add(
            Prediction(
                run_id=run_id,
                patient_id=patient_id,
                subset="test",
                probability=0.3,
                predicted_label=0,
            )
        )
    )
    delete_run(db, run_id)
    assert _run(db, run_id) is None
    assert not model.exists()
    assert not jobs.log_path(run_id).exists()
    with db.read() as session:
        assert session.query(Prediction).count() == 0

    outside = tmp_path / "precious.keras"
    outside.write_bytes(b"keep")
    other = create_run(db, TINY)
    _set(db, other, status="failed", model_path=str(outside))
    delete_run(db, other)
    assert outside.exists()

    running = create_run(db, TINY)
    _set(db, running, status="running")
    with pytest.raises(RunActiveError, match="cancel it first"):
        delete_run(db, running)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_killed_training_process_is_marked_failed(db):
    run_id = create_run(db, TrainSettings(**{**TINY.to_dict(), "epochs": 200}))
    pid = start_run_process(run_id, db)
    try:
        _wait_for(
            lambda: _run(db, run_id).status != "queued",
            90,
            f"the process to claim the run; log: {jobs.log_path(run_id)}",
        )
        run = _run(db, run_id)
        assert run.status == "running", jobs.log_path(run_id).read_text()
        assert run.pid == pid
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not pid_alive(pid), 10, "the process to die")
        assert reap_dead_runs(db) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    run = _run(db, run_id)
    assert run.status == "failed"
    assert run.error == f"the training process ended unexpectedly (pid {pid})"


def test_killing_the_trainer_fails_its_run_and_starts_the_queued_one(db, monkeypatch):
    """Issue 13: a killed trainer cannot start the next run, so the reaper must."""
    monkeypatch.delenv(MAX_CONCURRENT_ENV, raising=False)
    long = TrainSettings(**{**TINY.to_dict(), "epochs": 200})
    first, second = submit_run(db, long), submit_run(db, long)
    pids: list[int] = []
    try:
        _wait_for(
            lambda: _run(db, first).status == "running",
            120,
            f"the first run to train; log: {jobs.log_path(first)}",
        )
        pids.append(_run(db, first).pid)
        assert _run(db, second).status == "queued"
        os.kill(pids[0], signal.SIGKILL)
        _wait_for(lambda: not pid_alive(pids[0]), 10, "the trainer to die")
        assert reap_dead_runs(db) == 1
        dead = _run(db, first)
        assert dead.status == "failed"
        assert dead.error == f"the training process ended unexpectedly (pid {pids[0]})"
        started = _run(db, second)
        assert started.progress["phase"] == "starting" and started.pid is not None
        pids.append(started.pid)
        _wait_for(
            lambda: _run(db, second).status == "running",
            120,
            f"the queued run to train; log: {jobs.log_path(second)}",
        )
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def test_the_reaper_starts_a_queue_left_waiting_with_a_free_slot(db, monkeypatch):
    """A queued run whose dispatcher died (its reservation expired) starts on the next poll."""
    monkeypatch.delenv(MAX_CONCURRENT_ENV, raising=False)
    launched: list[int] = []
    launch = _fake_launch(launched)
    waiting = create_run(db, TINY)
    _set(db, waiting, progress={"phase": "starting", "reserved_at": "2000-01-01T00:00:00"})
    assert reap_dead_runs(db, launch) == 0
    assert launched == [waiting]
    assert reap_dead_runs(db, launch) == 0
    assert launched == [waiting]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core")
    add_train_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_trains_in_the_foreground_and_prints_a_summary(db, capsys, monkeypatch):
    """The command's plumbing (training itself is tested in test_train.py)."""
    trained: list[TrainSettings] = []

    def fake_training(db, store, run_id, listener=None):
        with db.read() as session:
            assert session.get(TrainingRun, run_id).status == "running"
            trained.append(TrainSettings.from_dict(session.get(TrainingRun, run_id).settings))
        listener({"phase": "training", "epoch": 1, "epochs": 1, "loss": 0.5})
        _set(db, run_id, status="done", metrics={"test": {"auc": 0.75}, "val": {"auc": 0.5}})
        return "done"

    monkeypatch.setattr(train_cli, "run_training", fake_training)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    command = "train --task sarcopenia_swe --arch resnet50 --weights none --input-size 32"
    extra = ["--sizes", "11,5,5", "--epochs", "3", "--test-positives", "2"]
    args = _parser().parse_args([*command.split(" "), *extra])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "sarcopenia_swe" in out and "resnet50" in out and "0.75" in out
    assert len(trained) == 1
    assert trained[0].epochs == 3 and trained[0].input_size == (32, 32)
    assert trained[0].arch == "resnet50" and trained[0].sizes == (11, 5, 5)
    assert trained[0].test_positives == 2


def test_cli_study_grid_and_bad_sizes():
    args = _parser().parse_args(["train", "--all", "--weights", "none"])
    grid = study_grid(args)
    assert len(grid) == 12
    assert {(s.task, s.arch) for s in grid} >= {
        ("echogenicity_gsu", "densenet121"),
        ("sarcopenia_fusion", "vgg19"),
    }
    assert all(s.weights == "none" and s.mode == "fast" for s in grid)
    bad = _parser().parse_args(["train", "--task", "sarcopenia_gsu", "--sizes", "1,2"])
    with pytest.raises(ValueError, match="TRAIN,VAL,TEST"):
        settings_from_args(bad, bad.task, bad.arch)
