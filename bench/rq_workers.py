"""A throwaway Redis and ``python -m core worker`` processes, for the RQ bench and tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).absolute().parents[1]
START_REDIS = ROOT / ".ci" / "start-redis"


class RedisMissingError(RuntimeError):
    """redis-server is not installed; the message says what to install."""


def start_redis(port: str | None = None) -> str:
    """Start a redis-server on loopback without persistence (``.ci/start-redis``); its URL."""
    if shutil.which("redis-server") is None:
        raise RedisMissingError(
            "redis-server is missing: install Debian's redis-server package "
            "(`apt-get install redis-server`) for the job queue tests and bench."
        )
    command = [str(START_REDIS), *([port] if port else [])]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def stop_redis(url: str) -> None:
    """Shut the server down without saving: whatever its queues held is gone."""
    import redis

    with contextlib.suppress(redis.exceptions.RedisError):
        redis.Redis.from_url(url).shutdown(nosave=True)


def restart_redis(url: str) -> None:
    """Stop Redis without saving and start an empty one on the same port."""
    stop_redis(url)
    start_redis(url.rsplit(":", 1)[1].split("/")[0])


class Workers:
    """Worker processes with this process's environment, each logging to ``<logs>/<name>.log``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
        command = [sys.executable, "-m", "core", "worker", "--queues", "cpu,gpu", "--name", name]
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [*command, *extra],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self, horses: list[int]) -> None:
        """Kill every worker and the given work horses (each runs in a process group of its own)."""
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        self.procs.clear()
