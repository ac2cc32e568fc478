"""The department set-up in deploy/systemd runs commands that exist, with settings the app reads."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from core.cli import build_parser
from core.services import job_backends, rq_jobs

DEPLOY = Path(__file__).absolute().parents[1] / "deploy" / "systemd"


def _exec_start(unit: str) -> list[str]:
    lines = (DEPLOY / unit).read_text().splitlines()
    (line,) = [line for line in lines if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def _env() -> dict[str, str]:
    lines = (DEPLOY / "sarcopenia.env").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_the_worker_unit_starts_a_worker_on_the_gpu_queue_first():
    argv = _exec_start("sarcopenia-worker.service")
    assert argv[1:3] == ["-m", "core"]
    args = build_parser().parse_args(argv[3:])
    assert args.command == "worker" and args.queues.split(",") == ["gpu", "cpu"]
    for queue in args.queues.split(","):
        rq_jobs.queue_name(queue)  # raises for a queue no run is ever put on


def test_the_app_unit_serves_app_py_to_the_proxy_only():
    argv = _exec_start("sarcopenia-app.service")
    assert argv[1:3] == ["run", "app.py"]
    assert (DEPLOY.parents[1] / "app.py").is_file()
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"


def test_the_shared_settings_put_runs_on_the_workers(monkeypatch: pytest.MonkeyPatch):
    env = _env()
    assert set(env) >= {"DATABASE_URL", "SARCOPENIA_DATA_DIR", rq_jobs.REDIS_URL_ENV}
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
    for unit in ("sarcopenia-app.service", "sarcopenia-worker.service"):
        text = (DEPLOY / unit).read_text()
        assert "EnvironmentFile=/etc/sarcopenia/sarcopenia.env" in text
        assert f"RequiresMountsFor={Path(env['SARCOPENIA_DATA_DIR']).parent}" in text
    monkeypatch.setenv(rq_jobs.REDIS_URL_ENV, env[rq_jobs.REDIS_URL_ENV])
    assert job_backends.backend_name() == "rq"
