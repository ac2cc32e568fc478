"""AppTest of the Training and Model registry pages.

The training test starts a real background process (``python -m core train --run-id N``)
from the form and re-runs the page while it trains, as a browser's polling would.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common import config
from core.learning.train import TrainSettings
from core.services.jobs import create_run
from core.services.run_liveness import pid_alive
from db.engine import Database
from db.models import Patient, Prediction, TrainingRun
from tests.apptest_helpers import APP, open_page

TRAINING_TIMEOUT_S = 150
PAGES = Path(APP).parent / "pages"


@pytest.fixture
def db(demo_env: Path) -> Iterator[Database]:
    database = Database()
    yield database
    database.dispose()


def _stop(db: Database, run_id: int) -> None:
    """Leave no training process behind, whatever the test's outcome."""
    with db.read() as session:
        pid = session.get(TrainingRun, run_id).pid
    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _widget(items, label: str):
    return next(w for w in items if w.label == label)


def _texts(at) -> str:
    parts = [t.value for t in at.text] + [s.value for s in at.success]
    parts += [m.value for m in at.caption] + [e.value for e in at.error]
    parts += [p.proto.text for p in at.get("progress")]
    return "\n".join(parts)


def test_admin_starts_a_run_watches_it_and_sees_it_done(db):
    at = open_page("pages/training.py", "admin")
    assert not at.exception
    _widget(at.selectbox, "Task").set_value("sarcopenia_gsu")
    _widget(at.selectbox, "Architecture").set_value("vgg19")
    _widget(at.selectbox, "Weights").set_value("none")
    _widget(at.number_input, "Epochs").set_value(1)
    _widget(at.number_input, "Input size (pixels, 0 = study sizes)").set_value(32)
    _widget(at.text_input, "Split sizes TRAIN,VAL,TEST").set_value("11,5,5")
    at.button(key="FormSubmitter:new_run-Start training").click().run()
    assert not at.exception
    assert any("queued" in s.value for s in at.success)
    with db.read() as session:
        run = session.query(TrainingRun).one()
    assert run.settings["input_size"] == [32, 32]
    assert run.status in ("queued", "running")

    seen_progress = False
    deadline = time.monotonic() + TRAINING_TIMEOUT_S
    try:
        while True:
            at.run()
            assert not at.exception
            with db.read() as session:
                status = session.get(TrainingRun, run.id).status
            if status == "running" and at.get("progress"):
                seen_progress = seen_progress or f"Run {run.id}" in _texts(at)
            if status not in ("queued", "running") or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    finally:
        _stop(db, run.id)
    log = config.data_dir() / "logs" / f"run-{run.id}.log"
    assert status == "done", log.read_text() if log.exists() else "no log"
    assert seen_progress

    at = open_page("pages/training.py", "admin")
    assert "No run is queued or training." in _texts(at)
    finished = at.dataframe[0].value
    assert list(finished["status"]) == ["done"]
    assert finished["test_auc"].iloc[0] is not None


def test_an_enriched_test_set_with_k_fold_is_refused_before_queueing(db):
    at = open_page("pages/training.py", "admin")
    _widget(at.selectbox, "Weights").set_value("none")
    _widget(at.number_input, "k-fold (0 = one split)").set_value(5)
    _widget(at.number_input, "Positive patients in the test set (0 = stratified)").set_value(9)
    at.button(key="FormSubmitter:new_run-Start training").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["The run was not started."]
    assert "leave it empty with k_folds" in _texts(at)
    with db.read() as session:
        assert session.query(TrainingRun).count() == 0


def _finished_run(db: Database) -> tuple[int, Path]:
    """A done run as ``run_training`` leaves it: history, metrics, predictions, model file."""
    settings = TrainSettings(task="sarcopenia_gsu", weights="none", epochs=2)
    run_id = create_run(db, settings)
    model = config.models_dir() / f"run-{run_id}.keras"
    model.write_bytes(b"stand-in")
    history = [
        {"fold": 0, "epoch": e, "loss": 0.7 / e, "val_loss": 0.8 / e, "auc": 0.6, "val_auc": 0.7}
        for e in (1, 2)
    ]
    metrics = {s: {"n": 5, "positives": 1, "auc": 0.75} for s in ("val", "test")}

    def work(session) -> None:
        run = session.get(TrainingRun, run_id)
        run.status, run.model_path, run.metrics = "done", str(model), metrics
        run.history = {"epochs": history}
        patient = session.query(Patient).first()
        session.add(
            Prediction(
                run_id=run_id,
                patient_id=patient.id,
                subset="test",
                probability=0.8,
                predicted_label=1,
            )
        )

    db.write(work)
    return run_id, model


def test_registry_shows_runs_and_only_admins_delete(db):
    run_id, model_path = _finished_run(db)

    at = open_page("pages/registry.py", "radiologist1")
    assert not at.exception
    assert list(at.dataframe[0].value["id"]) == [run_id]
    assert set(at.dataframe[1].value["subset"]) == {"val", "test"}
    assert len(at.get("plotly_chart")) == 2
    assert not [b for b in at.button if b.label == "Delete run"]

    at = open_page("pages/registry.py", "admin")
    at.checkbox[0].check().run()
    _widget(at.button, "Delete run").click().run()
    assert not at.exception
    with db.read() as session:
        assert session.get(TrainingRun, run_id) is None
        assert session.query(Prediction).count() == 0
    assert not model_path.exists()
    assert any("No training run yet" in i.value for i in at.info)


def test_the_training_page_itself_refuses_readers(db):
    """Server-side check, whether or not the navigation offers the page to readers."""
    at = AppTest.from_file(str(PAGES / "training.py"), default_timeout=60)
    at.session_state["reader_username"] = "radiologist1"
    at.run()
    assert not at.exception
    assert any("for administrators" in e.value for e in at.error)
    assert not at.button
    with db.read() as session:
        assert session.query(TrainingRun).count() == 0
