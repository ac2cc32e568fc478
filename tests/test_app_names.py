"""Names people read, on the pages: readers by display name, tasks by the study's names,
boxes by colour name, missing cells as "—", models loaded once per process with progress.

Pages run directly (``AppTest.from_file`` on the page script), signed in through the
session state, like the other page tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common import config
from core.common.store import ImageStore
from core.learning.train import TrainSettings
from core.learning.weights import WEIGHT_FILES
from core.services.jobs import create_run
from core.services.review import ModelCache
from db.consensus import auto_agree
from db.datafiles import data_path
from db.engine import Database
from db.models import TrainingRun
from tests.tiny_runs import add_tiny_run

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120
USERNAMES = ("sim_reader_a", "sim_reader_b")


def _page(name: str, reader: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    at.session_state["reader_username"] = reader
    return at.run()


def _page_text(at: AppTest) -> str:
    """Everything a person can read on the page: text, tables, options, legends."""
    parts = [
        e.value for kind in ("text", "caption", "markdown", "info", "warning") for e in at.get(kind)
    ]
    parts += [str(h.value) for h in at.subheader]
    parts += [h.proto.body for h in at.get("html")]
    parts += [p.proto.text for p in at.get("progress")]
    for table in at.dataframe:
        frame = table.value
        parts.append(" ".join(map(str, frame.columns)))
        parts.append(frame.astype(str).to_string())
    for box in [*at.selectbox, *at.multiselect]:
        parts += [str(o) for o in box.options]
    return "\n".join(parts)


def _placeholders(at: AppTest) -> set[str]:
    return {table.proto.placeholder for table in at.dataframe}


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def tiny_run(demo_env: Path, tiny_models) -> int:
    db = Database(config.database_url())
    db.write(auto_agree)
    run_id = add_tiny_run(db, ImageStore(config.images_dir()), tiny_models["gsu"])
    db.dispose()
    return run_id


def test_consensus_names_readers_by_display_name(demo_env):
    at = _page("consensus", "admin")
    assert not at.exception
    text = _page_text(at)
    assert "Simulated reader A" in text and "Simulated reader B" in text
    assert not any(name in text for name in USERNAMES)
    assert _placeholders(at) == {"—"}


def test_training_offers_weights_by_choice_and_says_imagenet_is_missing(demo_env, keras_home):
    at = _page("training", "admin")
    assert not at.exception
    weights = next(s for s in at.selectbox if s.label == "Weights")
    assert weights.value == "none"
    assert [o.split(" ")[0] for o in weights.options] == ["ImageNet", "None"]
    assert any("ImageNet weights are not on this machine" in w.value for w in at.warning)
    task = next(s for s in at.selectbox if s.label == "Task")
    assert "Sarcopenia from SWE" in task.options
    assert not any("_" in option for option in task.options)


def test_training_defaults_to_imagenet_when_present_and_lists_found_files(demo_env, keras_home):
    (keras_home / "models").mkdir(parents=True)
    for name in WEIGHT_FILES.values():
        (keras_home / "models" / name).write_bytes(b"stand-in")
    own = config.data_dir() / "weights" / "vgg19_our_ultrasound.h5"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"stand-in")
    at = _page("training", "admin")
    assert not at.exception
    weights = next(s for s in at.selectbox if s.label == "Weights")
    assert weights.value == "imagenet"
    assert any("vgg19_our_ultrasound.h5" in option for option in weights.options)
    assert not at.warning


def test_runs_are_listed_by_the_study_task_names(demo_env):
    db = Database(config.database_url())
    run_id = create_run(db, TrainSettings(task="sarcopenia_swe", weights="none"))
    db.write(lambda s: setattr(s.get(TrainingRun, run_id), "status", "failed"))
    db.dispose()
    at = _page("registry", "admin")
    assert not at.exception
    text = _page_text(at)
    assert "Sarcopenia from SWE" in text
    assert "sarcopenia_swe" not in text
    size = at.dataframe[0].value["input"].iloc[0]
    assert "×" in size and "[" not in size
    assert _placeholders(at) == {"—"}


def test_review_names_box_owners_and_colours_and_loads_the_model_once(tiny_run):
    from pages.components import _model_cache

    db = Database(config.database_url())
    at = _page("review", "admin")
    assert not at.exception
    cache = _model_cache()
    assert cache.is_loaded(db, tiny_run)
    loaded = cache.get(db, tiny_run)
    text = _page_text(at)
    assert "cyan: " in text and "Simulated reader A" in text
    assert "rgb(" not in " ".join(t.value for t in at.text)
    assert not any(name in text for name in USERNAMES)
    assert _placeholders(at) == {"—"}

    second = _page("review", "radiologist1")
    assert not second.exception
    assert _model_cache().get(db, tiny_run) is loaded
    assert not second.get("progress")
    db.dispose()


def test_a_model_loads_once_per_process_and_again_when_its_file_changes(tiny_run):
    import os

    db = Database(config.database_url())
    cache = ModelCache()
    assert not cache.is_loaded(db, tiny_run)
    first = cache.get(db, tiny_run)
    assert cache.is_loaded(db, tiny_run)
    assert cache.get(db, tiny_run) is first
    with db.read() as session:
        path = data_path(session.get(TrainingRun, tiny_run).model_path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert not cache.is_loaded(db, tiny_run)
    assert cache.get(db, tiny_run) is not first
    db.dispose()


@pytest.mark.parametrize("name", ["cases", "admin"])
def test_tables_show_a_dash_for_missing_values(demo_env, name):
    at = _page(name, "admin")
    assert not at.exception
    assert at.dataframe
    assert _placeholders(at) == {"—"}
