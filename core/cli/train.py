"""``python -m core train ...``: train now, queue in the background, or drain the queue."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from core.common import config
from core.common.errors import UserError
from core.common.progress import terminal_bar
from core.learning.dataset import TASKS
from core.learning.train import (
    ARCHITECTURES,
    MODES,
    TrainSettings,
    run_training,
)
from core.services import job_backends, rq_jobs
from core.services.database import open_database
from core.services.jobs import (
    MAX_CONCURRENT_ENV,
    STUDY_TASKS,
    WAIT_POLL_S,
    claim_next,
    claim_run,
    create_run,
    dispatch_queue,
    log_path,
    max_concurrent_runs,
)
from db.engine import Database
from db.models import TrainingRun
from db.runs import FINISHED_STATUSES, group_progress


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``python -m core train ...``: train now, queue in the background, or drain the queue."""
    p = sub.add_parser(
        "train",
        help="train a model (or the whole study grid) and store it with its metrics",
        description="Train a DCNN for one task (Yi et al. 2022: Adam 1e-4, LR cut by 0.1 on "
        "plateau). Fast mode trains the head on cached features of a frozen backbone; full "
        "mode fine-tunes every layer. Results go to the database and "
        "<data>/models/run-<id>.keras.",
    )
    p.add_argument("--task", choices=sorted(TASKS), help="what to predict")
    p.add_argument("--arch", choices=ARCHITECTURES, default="vgg19", help="backbone")
    p.add_argument("--mode", choices=MODES, default="fast", help="fast (default) or full")
    p.add_argument("--epochs", type=int, default=None, help="default 15 fast, 30 full")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (default; from the Keras cache), none, or a weights file path",
    )
    p.add_argument("--k-folds", type=int, default=0, help="k-fold cross-validation (0: one split)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--input-size", type=int, default=None, help="side of every input, pixels")
    p.add_argument(
        "--sizes",
        default=None,
        help="TRAIN,VAL,TEST patients (default: 17 val, 20 test, the rest train)",
    )
    p.add_argument(
        "--test-positives",
        type=int,
        default=None,
        help="positive patients in the single split's test set (the study's: 9 of 20); "
        "default: stratified",
    )
    p.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    p.add_argument(
        "--unfreeze-last-block", action="store_true", help="fast mode: train the last block too"
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--all",
        action="store_true",
        help="the study grid: 3 tasks × 3 architectures, plus GSU+SWE fusion per architecture",
    )
    what.add_argument("--run-id", type=int, help=argparse.SUPPRESS)
    what.add_argument("--worker", action="store_true", help="train every queued run, then exit")
    what.add_argument("--background", action="store_true", help="queue the run and return at once")
    p.add_argument(
        "--queue",
        choices=rq_jobs.QUEUES,
        default=None,
        help="with SARCOPENIA_REDIS_URL: the workers' queue (default gpu for full mode, "
        "cpu for fast mode)",
    )
    p.set_defaults(handler=cmd_train)
    return p


def _parse_sizes(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    parts = text.replace("/", ",").split(",")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if len(sizes) != 3:
        raise ValueError(f"--sizes takes three whole numbers TRAIN,VAL,TEST; got {text!r}.")
    return sizes  # type: ignore[return-value]


def settings_from_args(args: argparse.Namespace, task: str, arch: str) -> TrainSettings:
    return TrainSettings(
        task=task,
        arch=arch,
        mode=args.mode,
        epochs=args.epochs,
        batch_size=args.batch_size,
        weights=args.weights,
        input_size=args.input_size,
        seed=args.seed,
        sizes=_parse_sizes(args.sizes),
        k_folds=args.k_folds,
        test_positives=args.test_positives,
        augment=not args.no_augment,
        unfreeze_last_block=args.unfreeze_last_block,
    )


def study_grid(args: argparse.Namespace) -> list[TrainSettings]:
    """Every study task with every architecture, then fusion with each as GSU backbone."""
    grid = [settings_from_args(args, t, a) for t in STUDY_TASKS for a in ARCHITECTURES]
    grid += [settings_from_args(args, "sarcopenia_fusion", a) for a in ARCHITECTURES]
    return grid


def _bar_listener(description: str) -> tuple[Callable[[dict[str, Any]], None], Callable[[], None]]:
    """A bar over the current phase (``db.runs.describe_progress``) fed by the run; silent
    when stderr is not a terminal, so a redirected log gets no bar lines."""
    from db.runs import describe_progress

    bar = terminal_bar(total=1.0, desc=description, bar_format="{l_bar}{bar}| {postfix}")

    def listen(state: dict[str, Any]) -> None:
        fraction, text = describe_progress(state)
        bar.n = round(fraction, 4)
        bar.set_postfix_str(text, refresh=True)

    return listen, bar.close


def _train_here(db: Database, store: Any, run_id: int, description: str) -> str:
    listen, close = _bar_listener(description)
    try:
        return run_training(db, store, run_id, listener=listen)
    finally:
        close()


def _fmt(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def summary_table(db: Database, run_ids: Sequence[int]) -> str:
    """Plain-text table: run, task, arch, status, test AUC (95% CI), val AUC, minutes."""
    header = f"{'run':>4}  {'task':<18} {'arch':<12} {'status':<9} {'test AUC (95% CI)':<20} "
    header += f"{'val AUC':>7} {'min':>5}"
    lines = [header, "-" * len(header)]
    with db.read() as session:
        for run_id in run_ids:
            run = session.get(TrainingRun, run_id)
            if run is None:
                continue
            metrics = run.metrics or {}
            test, val = metrics.get("test") or {}, metrics.get("val") or {}
            ci = ""
            if test.get("auc_lower") is not None:
                ci = f" ({test['auc_lower']:.2f}–{test['auc_upper']:.2f})"
            minutes = (
                (run.finished_at - run.started_at).total_seconds() / 60
                if run.finished_at and run.started_at
                else None
            )
            lines.append(
                f"{run.id:>4}  {run.task:<18} {run.arch:<12} {run.status:<9} "
                f"{_fmt(test.get('auc')) + ci:<20} {_fmt(val.get('auc')):>7} "
                f"{_fmt(minutes, 1):>5}"
            )
            if run.status == "failed" and run.error:
                lines.append(f"      error: {run.error.splitlines()[0][:150]}")
    return "\n".join(lines)


def _foreground(db: Database, store: Any, settings: TrainSettings) -> int:
    """Create a run owned by this process, wait for a free slot, and train it here."""
    run_id = create_run(db, settings, owner_pid=os.getpid())
    waiting = False
    while not claim_run(db, run_id, release_if_busy=False):
        with db.read() as session:
            run = session.get(TrainingRun, run_id)
            if run is None or run.status != "queued":
                return run_id
        if not waiting:
            print(f"Run {run_id} waits for a free training slot ({MAX_CONCURRENT_ENV}).")
            waiting = True
        time.sleep(WAIT_POLL_S)
    with contextlib.suppress(Exception):  # already marked failed, shown in the summary
        _train_here(db, store, run_id, f"run {run_id} {settings.task} {settings.arch}")
    return run_id


def _group_name(args: argparse.Namespace, grid: Sequence[TrainSettings]) -> str | None:
    if args.all:
        return "study grid"
    if grid[0].k_folds >= 2:
        return f"{grid[0].task} {grid[0].arch} {grid[0].k_folds}-fold"
    return None


def _on_workers(db: Database, grid: Sequence[TrainSettings], args: argparse.Namespace) -> int:
    """Queue ``grid`` on the Redis Queue (one job per run and fold) and follow it here.

    Ctrl-C stops the following, not the runs: the workers go on.
    """
    try:
        run_ids = job_backends.submit_runs(
            db, grid, queue=args.queue, group_name=_group_name(args, grid)
        )
    except (rq_jobs.QueueUnavailableError, ValueError) as exc:
        raise UserError(str(exc)) from None
    print(f"Queued {len(run_ids)} run(s) for the workers: {', '.join(map(str, run_ids))}.")
    if args.background:
        return 0
    bar = terminal_bar(total=1.0, desc="runs", bar_format="{l_bar}{bar}| {postfix}")
    try:
        while True:
            job_backends.reap(db)
            with db.read() as session:
                runs = [session.get(TrainingRun, r) for r in run_ids]
                fraction, text = group_progress(runs)
                finished = all(run.status in FINISHED_STATUSES for run in runs)
            bar.n = round(fraction, 4)
            bar.set_postfix_str(text, refresh=True)
            if finished:
                break
            time.sleep(1.0)
    finally:
        bar.close()
    print(summary_table(db, run_ids))
    with db.read() as session:
        return 0 if all(session.get(TrainingRun, r).status == "done" for r in run_ids) else 1


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def planned_settings(args: argparse.Namespace) -> list[TrainSettings]:
    """The runs a ``train`` command asks for, every argument and weights file checked.

    Called before the database is opened or any image is read, so a command that cannot
    run fails at once with the reason and leaves no run behind.

    Raises:
        UserError: a missing or invalid argument, or weights not on this machine.
    """
    from core.learning.weights import WeightsUnavailableError

    if not args.all and not args.task:
        raise UserError("Give --task (or --all for the study grid).")
    try:
        grid = study_grid(args) if args.all else [settings_from_args(args, args.task, args.arch)]
        for settings in grid:
            settings.check_weights()
        max_concurrent_runs()
    except (ValueError, FileNotFoundError, WeightsUnavailableError) as exc:
        raise UserError(str(exc)) from None
    return grid


def _require_patients(db: Database) -> None:
    """An empty database would only give a failed run: refuse before creating it."""
    from db.cases import count_patients

    with db.read() as session:
        if not count_patients(session):
            raise UserError(
                "The database holds no patients; load the demo cohort "
                "(`python -m core demo`) or import cases first."
            )


def cmd_train(args: argparse.Namespace) -> int:
    from core.common.store import ImageStore

    fresh = args.run_id is None and not args.worker
    grid = planned_settings(args) if fresh else []
    db = open_database()
    if fresh:
        _require_patients(db)
    reaped = job_backends.reap(db)
    if reaped:
        print(f"Marked {reaped} run(s) failed whose training process had ended.")
    store = ImageStore(config.images_dir())
    signal.signal(signal.SIGTERM, _on_sigterm)

    if args.run_id is not None:
        try:
            if not claim_run(db, args.run_id):
                print(f"Run {args.run_id} is not waiting to start here; nothing to do.")
                return 0
            status = run_training(db, store, args.run_id)
        finally:
            dispatch_queue(db)
        print(f"Run {args.run_id}: {status}.")
        return 0
    if args.worker:
        run_ids = []
        while (run_id := claim_next(db)) is not None:
            run_ids.append(run_id)
            try:
                _train_here(db, store, run_id, f"run {run_id}")
            except Exception:
                continue
        print(summary_table(db, run_ids) if run_ids else "No queued run to train.")
        return 0

    if job_backends.backend_name() == "rq":
        return _on_workers(db, grid, args)
    if args.background:
        run_id = job_backends.submit_runs(db, grid)[0]
        print(f"Queued run {run_id}; progress in the app or in {log_path(run_id)}.")
        return 0
    run_ids = [_foreground(db, store, settings) for settings in grid]
    print(summary_table(db, run_ids))
    with db.read() as session:
        statuses = [session.get(TrainingRun, r).status for r in run_ids]
    dispatch_queue(db)
    return 0 if all(s == "done" for s in statuses) else 1
