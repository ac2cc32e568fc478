"""The Training page's live panel notices a killed trainer within seconds, without a reload.

Issue 13: after ``kill -9`` of the trainer the panel kept showing "running · epoch 1/200"
until the next page load, and the queued run waited for someone to submit another. Here a
real trainer is killed while the page stays open; the panel must show the run failed and
the queued run starting, by its own polling alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from core.learning.train import TrainSettings
from core.services.jobs import MAX_CONCURRENT_ENV, submit_run
from core.services.run_liveness import pid_alive
from db.engine import Database
from db.models import TrainingRun
from tests.serve import CHROMIUM, LAUNCH_ARGS, streamlit_server
from tests.test_browser_grading import _wait_idle, sign_in

LONG = TrainSettings(
    task="sarcopenia_gsu",
    weights="none",
    input_size=32,
    sizes=(11, 5, 5),
    epochs=200,
    augment_copies=0,
    dense_units=8,
)
NOTICE_S = 10
"""The panel polls every second; a few more for a busy machine."""


def _run(db: Database, run_id: int) -> TrainingRun:
    with db.read() as session:
        return session.get(TrainingRun, run_id)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed")
def test_live_panel_fails_a_killed_run_and_starts_the_queued_one(demo_env: Path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.delenv(MAX_CONCURRENT_ENV, raising=False)
    db = Database()
    pids: list[int] = []
    try:
        with (
            streamlit_server(demo_env) as (base, _started),
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(base, wait_until="networkidle")
            page.get_by_role("textbox", name="Username").wait_for(timeout=120_000)
            sign_in(page, "admin")
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Training").click()
            page.get_by_text("No run is queued or training.").wait_for(timeout=120_000)
            _wait_idle(page)

            first, second = submit_run(db, LONG), submit_run(db, LONG)
            _wait_for(lambda: _run(db, first).status == "running", 180, "the first run")
            pids.append(_run(db, first).pid)
            expect(page.get_by_text("training, epoch").first).to_be_visible(timeout=60_000)

            expect(page.get_by_text(" mode · running")).to_have_count(1)
            expect(page.get_by_text(" mode · queued")).to_have_count(1)
            os.kill(pids[0], signal.SIGKILL)
            _wait_for(lambda: not pid_alive(pids[0]), 10, "the trainer to die")
            # Only the queued run is left in the panel: the dead one is gone from it.
            expect(page.get_by_text(" mode · ")).to_have_count(1, timeout=NOTICE_S * 1000)
            _wait_for(lambda: _run(db, second).pid is not None, NOTICE_S, "the queued run")
            pids.append(_run(db, second).pid)
            assert _run(db, first).status == "failed"
            browser.close()
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        db.dispose()
