"""Whether a local run's process still lives: pid and start time, host, and the start grace.

A pid alone can be reused by another process after a crash, so a run records its process's
start time too (``/proc/<pid>/stat``); a run started on another host is never judged here.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any, Final

from core.learning.train import proc_stat
from db.models import TrainingRun

START_GRACE_S: Final = 60.0
"""A reservation whose process never recorded its pid is given up after this long."""


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead) and, when known, started at that time."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = proc_stat(pid)
    if fields is None:
        return True
    if fields[0] in ("Z", "X"):
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


def is_local(progress: dict[str, Any] | None) -> bool:
    host = (progress or {}).get("host")
    return host is None or host == socket.gethostname()


def owner_alive(run: TrainingRun) -> bool:
    """For a run on this host: does the process recorded on it still run?"""
    progress = run.progress or {}
    if run.pid is None:
        return False
    return pid_alive(run.pid, progress.get("pid_start") if progress.get("pid") == run.pid else None)


def is_reserved(run: TrainingRun, now: dt.datetime) -> bool:
    """A queued run that some process is starting (or waits to train in the foreground)."""
    progress = run.progress or {}
    if progress.get("phase") != "starting":
        return False
    if not is_local(progress):
        return True
    if run.pid is not None:
        return owner_alive(run)
    reserved_at = progress.get("reserved_at")
    if reserved_at is None:
        return False
    age = (now - dt.datetime.fromisoformat(reserved_at)).total_seconds()
    return age < START_GRACE_S


def is_dead(run: TrainingRun) -> bool:
    """A local run whose recorded training (or starting) process is gone."""
    progress = run.progress or {}
    if run.pid is None or not is_local(progress):
        return False
    if run.status == "queued" and progress.get("phase") != "starting":
        return False
    return run.status in ("queued", "running") and not owner_alive(run)
