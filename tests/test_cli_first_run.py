"""The command line as a newcomer meets it: arguments and weights checked before any work,
one-line failures without a run left behind, no TensorFlow chatter, no bars in a log."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.train import _bar_listener
from core.common.progress import progress_bar
from db.engine import Database
from db.models import TrainingRun

ROOT = Path(__file__).absolute().parents[1]


def _core(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("SARCOPENIA_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run_count(data: Path) -> int:
    db = Database(f"sqlite:///{data / 'sarcopenia.db'}")
    try:
        with db.read() as session:
            return session.query(TrainingRun).count()
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("extra", "env", "expected"),
    [
        ([], {}, "ImageNet weights for vgg19 are not on this machine"),
        (["--weights", "none", "--epochs", "0"], {}, "epochs must be at least 1"),
        (["--weights", "/no/such/file.h5"], {}, "does not exist"),
        (["--weights", "none"], {"SARCOPENIA_MAX_CONCURRENT_RUNS": "two"}, "whole number"),
    ],
)
def test_train_refuses_in_one_line_before_any_work(demo_env, tmp_path, extra, env, expected):
    """Out of the box (no ImageNet files) `train` fails at once: one line with the remedy,
    no traceback, and no failed run left in the database."""
    keras_home = tmp_path / "keras"
    result = _core(
        ["train", "--task", "sarcopenia_swe", "--arch", "vgg19", *extra],
        {"SARCOPENIA_DATA_DIR": str(demo_env), "KERAS_HOME": str(keras_home), **env},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    if not extra:
        assert "python -m core weights fetch" in lines[0] and "'none'" in lines[0]
    assert _run_count(demo_env) == 0


def test_tensorflow_import_is_silent_unless_verbose():
    """TensorFlow prints CUDA/oneDNN notes while loading, before its log level applies."""
    code = "from core.cli import quiet_tensorflow; quiet_tensorflow({}); import tensorflow"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(
        [sys.executable, "-c", code.format("False")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert quiet.returncode == 0
    assert quiet.stderr == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_write_nothing_when_output_is_not_a_terminal(monkeypatch):
    redirected = io.StringIO()
    monkeypatch.setattr(sys, "stderr", redirected)
    update = progress_bar("Checking cases")
    for done in range(1, 6):
        update(done, 5)
    listen, close = _bar_listener("run 1")
    listen({"phase": "training", "epoch": 1, "epochs": 3, "batch": 2, "batches": 4})
    close()
    assert redirected.getvalue() == ""

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    listen, close = _bar_listener("run 1")
    listen({"phase": "training", "epoch": 1, "epochs": 3, "batch": 2, "batches": 4})
    close()
    assert "run 1" in terminal.getvalue()
