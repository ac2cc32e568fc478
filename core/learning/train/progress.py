"""Progress of a run in its database row: the writing process, throttled updates, cancel checks.

``ProgressReporter`` writes ``progress`` and ``history`` in short transactions and raises
``RunCancelled`` when the run's cancel flag is set; ``keras_progress`` feeds it from ``fit``.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from core.learning.train.settings import RunCancelled, TrainingError
from db.engine import Database
from db.models import TrainingRun

if TYPE_CHECKING:
    import keras

PROGRESS_INTERVAL_S: Final = 0.5
"""Least time between two progress writes: short transactions, a live bar, no write storm."""
Listener = Callable[[dict[str, Any]], None]


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def json_safe(value: Any) -> Any:
    """Floats that JSON (and PostgreSQL) accept: NaN and infinity become None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return _finite(value)


# ---------------------------------------------------------------------------------------
# Which process trains a run


def proc_stat(pid: int) -> list[str] | None:
    """Fields of Linux ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, None where ``/proc`` is missing."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else None


def process_tag(pid: int | None = None) -> dict[str, Any]:
    """Host, pid and start time of a process, kept in the run's progress.

    The host lets a shared database tell local processes from another machine's; the start
    time tells the process from a later one that reused its pid.
    """
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _start_ticks(pid)}


# ---------------------------------------------------------------------------------------
# Progress in the database


class ProgressReporter:
    """Writes ``progress`` (and ``history``) to the run row, at most every ``interval`` s.

    Each write is one short transaction that also reads ``cancel_requested``; when it is set,
    ``RunCancelled`` is raised from wherever training is (a Keras callback), which stops it.
    """

    def __init__(
        self,
        db: Database,
        run_id: int,
        base: Mapping[str, Any],
        *,
        interval: float = PROGRESS_INTERVAL_S,
        listener: Listener | None = None,
    ) -> None:
        self.db = db
        self.run_id = run_id
        self.state: dict[str, Any] = dict(base)
        self.history: list[dict[str, Any]] = []
        self.interval = interval
        self.listener = listener
        self._last = -math.inf
        self._history_dirty = False

    def update(self, force: bool = False, **fields: Any) -> None:
        self.state.update(fields)
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.listener is not None:
            self.listener(dict(self.state))
        self._flush()

    def add_epoch(self, record: Mapping[str, Any]) -> None:
        self.history.append(json_safe(dict(record)))
        self._history_dirty = True
        self.update(force=True)

    def _flush(self) -> None:
        progress = json_safe(dict(self.state))
        history = {"epochs": list(self.history)} if self._history_dirty else None

        def work(session) -> bool:
            run = session.get(TrainingRun, self.run_id)
            if run is None:
                raise TrainingError(f"Run {self.run_id} was deleted while it trained.")
            run.progress = progress
            if history is not None:
                run.history = history
            return bool(run.cancel_requested)

        if self.db.write(work):
            raise RunCancelled(f"Run {self.run_id} was cancelled.")
        self._history_dirty = False


def keras_progress(reporter: ProgressReporter) -> keras.callbacks.Callback:
    """A Keras callback feeding ``reporter`` from ``fit``: batches, epochs and the history."""
    import keras

    class DbProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch_started = time.monotonic()
            reporter.update(
                force=True,
                phase="training",
                epoch=epoch + 1,
                batch=0,
                batches=self.params.get("steps"),
            )

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            reporter.update(batch=batch + 1, loss=(logs or {}).get("loss"))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = dict(logs or {})
            lr = self.model.optimizer.learning_rate
            record = {
                "fold": reporter.state.get("fold", 0),
                "epoch": epoch + 1,
                "loss": logs.get("loss"),
                "auc": logs.get("auc"),
                "val_loss": logs.get("val_loss"),
                "val_auc": logs.get("val_auc"),
                "learning_rate": float(np.asarray(lr)),
                "seconds": time.monotonic() - self.epoch_started,
            }
            reporter.state.update(loss=record["loss"], val_auc=record["val_auc"])
            reporter.add_epoch(record)

    return DbProgress()
