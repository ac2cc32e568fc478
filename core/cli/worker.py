"""``python -m core worker``: train queued runs as a Redis Queue (RQ) worker, on any machine.

A worker needs what the app has: the database (``DATABASE_URL``), the data folder
(``SARCOPENIA_DATA_DIR``, a shared mount) and Redis (``SARCOPENIA_REDIS_URL``). Each job
runs in a forked process of its own, so TensorFlow's memory is given back after every run.
"""

from __future__ import annotations

import argparse
import os
import socket

from core.common import config
from core.common.errors import UserError
from core.services import rq_jobs
from core.services.database import open_database
from db.engine import redact


def _queues(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    try:
        return [rq_jobs.queue_name(name) for name in names or ["?"]]
    except ValueError as exc:
        raise UserError(f"--queues: {exc}") from None


def cmd_worker(args: argparse.Namespace) -> int:
    if rq_jobs.redis_url() is None:
        raise UserError(
            f"Set {rq_jobs.REDIS_URL_ENV} (e.g. redis://queue-host:6379/0) to run a worker; "
            "without Redis the app trains runs itself."
        )
    queues = _queues(args.queues)
    try:
        conn = rq_jobs.connect()
    except rq_jobs.QueueUnavailableError as exc:
        raise UserError(str(exc)) from None
    open_database().dispose()  # the schema is current and the database reachable
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    worker = rq_jobs.SarcopeniaWorker(
        queues, connection=conn, name=name, database_url=config.database_url()
    )
    print(
        f"Worker {name} takes {args.queues} from {redact(rq_jobs.redis_url() or '')}; "
        f"database {redact(config.database_url())}, data folder {config.data_dir().resolve()}.",
        flush=True,
    )
    worker.work(burst=args.burst, logging_level="WARNING" if not args.verbose else "INFO")
    return 0


def add_worker_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``worker``: take training jobs from Redis Queue until stopped."""
    parser = sub.add_parser(
        "worker",
        help="train queued runs as a Redis Queue worker (needs SARCOPENIA_REDIS_URL)",
        description="Take training runs from the Redis Queue and train them here, one at a "
        "time, until stopped (Ctrl-C finishes the current run first). Start one per GPU "
        "machine; every worker needs the same database, data folder and Redis.",
    )
    parser.add_argument(
        "--queues",
        default="gpu,cpu",
        help="queues to take runs from, in order of preference (default gpu,cpu; a machine "
        "without a GPU: cpu)",
    )
    parser.add_argument("--name", default=None, help="worker name (default host-pid)")
    parser.add_argument(
        "--burst", action="store_true", help="stop when the queues are empty (tests, benches)"
    )
    parser.set_defaults(handler=cmd_worker)
