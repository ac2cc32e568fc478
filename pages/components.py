"""Shared UI pieces: the database handle, the signed-in reader, cached image pixels.

Pages stay thin: widgets in, ``core``/``db`` calls, results out. Anything a test would
want without a browser lives in ``core`` or ``db``, not here.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import streamlit as st

from core.common import config
from core.common.store import ImageStore
from core.imaging.imageio import ImageReadError
from core.imaging.images import load_pixels, to_display_rgb
from core.services.maintenance import startup_checks
from db.engine import Database
from db.migrate import upgrade
from db.models import Reader, TrainingRun
from db.readers import get_reader, list_readers

if TYPE_CHECKING:
    from core.services.review import ModelCache, RunPredictor

READER_KEY = "reader_username"


@st.cache_resource(show_spinner=False)
def _database(url: str) -> Database:
    """Once per process: upgrade the schema and clean up after any killed process."""
    upgrade(url)
    db = Database(url)
    startup_checks(db, ImageStore(config.images_dir()))
    return db


def get_db() -> Database:
    """The app's database, upgraded to the newest schema once per process."""
    return _database(config.database_url())


@st.cache_resource(show_spinner=False)
def _store(root: str) -> ImageStore:
    return ImageStore(root)


def get_store() -> ImageStore:
    return _store(str(config.images_dir()))


@st.cache_data(max_entries=64, show_spinner=False)
def _pixels(root: str, relpath: str) -> np.ndarray:
    return to_display_rgb(load_pixels(ImageStore(root), relpath))


def display_pixels(relpath: str) -> np.ndarray:
    """8-bit RGB pixels of a stored image, cached by its (content-addressed) path.

    A file missing from the store (a restore without images, a wrong data folder) stops
    the page with a message instead of a traceback.
    """
    try:
        return _pixels(str(config.images_dir()), relpath)
    except (FileNotFoundError, ImageReadError):
        st.error(
            f"The stored image file {plain(relpath)} is missing or unreadable in "
            f"{plain(str(config.images_dir()))}. Check SARCOPENIA_DATA_DIR, or restore the "
            "images from a backup."
        )
        st.stop()


def current_reader() -> Reader | None:
    username = st.session_state.get(READER_KEY)
    if not username:
        return None
    with get_db().read() as session:
        reader = get_reader(session, username)
    return reader if reader is not None and reader.active else None


def _enter_through_app() -> None:
    """Rerun through ``app.py`` when Streamlit ran this page straight from its URL.

    Until some script calls ``st.navigation``, a freshly started server runs
    ``pages/<name>.py`` by itself (its old ``pages/`` folder mode) and lists the raw files.
    Leaving that mode and rerunning lets ``app.py`` restore the session and show the
    page the URL names (page identity is the URL path), or the sign-in form.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def require_reader() -> Reader:
    """The signed-in reader, or stop the page with a prompt to sign in."""
    _enter_through_app()
    reader = current_reader()
    if reader is None:
        st.info("Sign in to use this page.")
        st.stop()
    return reader


def require_admin() -> Reader:
    """Server-side role check: the page stops here for anyone but an admin."""
    reader = require_reader()
    if reader.role != "admin":
        st.error("This page is for administrators.")
        st.stop()
    return reader


def show_box_legend(owners: list[str]) -> None:
    """Colour swatches naming whose box is whose; ``box_legend_html`` escapes the names."""
    from core.imaging.display import box_legend_html

    st.html(box_legend_html(owners))


def show_image(pixels: np.ndarray, caption: str | None = None) -> None:
    """Native resolution where it fits, lossless PNG to the browser, no smoothing."""
    st.image(pixels, caption=caption, output_format="PNG", width="content")


@st.cache_resource(show_spinner=False)
def _model_cache() -> ModelCache:
    """One per server process. Streamlit's resource cache keeps it when Streamlit reloads
    the app's modules (it does after any source file changes), which a module-level cache
    would not survive."""
    from core.services.review import ModelCache

    return ModelCache()


def get_predictor(run: TrainingRun) -> RunPredictor:
    """The run's model, loaded once per process (safe mode, models folder only) and shared
    by every session.

    TensorFlow is imported here, on first use, so pages without models start fast.
    """
    return _model_cache().get(get_db(), run.id)


def load_models(runs: list[TrainingRun]) -> None:
    """Load the runs' models that this server has not loaded yet, with a progress bar.

    The first reader to open a model pays its load (seconds, TensorFlow included); every
    later page and session reuses it. A model that cannot load is left for the page to
    report with the rest of that run's view.
    """
    from core.report.table1 import run_label
    from core.services.review import ModelPathError, ReviewError

    db = get_db()
    cache = _model_cache()
    missing = [run for run in runs if not cache.is_loaded(db, run.id)]
    if not missing:
        return
    bar = st.progress(0.0, text="Loading the models (once per server)…")
    for index, run in enumerate(missing):
        text = f"Loading model {index + 1} of {len(missing)}: {run_label(run)} (once per server)…"
        bar.progress(index / len(missing), text=text)
        with contextlib.suppress(ReviewError, ModelPathError):
            get_predictor(run)
    bar.empty()


def demo_offer(reader: Reader | None) -> bool:
    """On a database without patients, offer the synthetic demo cohort in one click.

    Only to an admin, or on the first-run page (``reader`` None, no account exists yet),
    and only where ``core.services.demo`` would load it: never beside real accounts or patients,
    never with ``SARCOPENIA_DEMO=0``. Returns True when the database has no patients.
    """
    from core.services.demo import DEMO_PASSWORD, DemoRefused, demo_blocker, load_demo
    from db.cases import count_patients

    with get_db().read() as session:
        if count_patients(session):
            return False
        blocker = demo_blocker(session)
    if reader is not None and reader.role != "admin":
        st.info("No cases yet: an administrator imports them.")
        return True
    if blocker:
        st.info(f"No cases yet. {blocker}")
        return True
    st.markdown(
        "Load the **synthetic demo cohort**: 160 invented patients whose figures match the "
        "study (sex, age, echogenicity grades, CT eligibility, sarcopenia). Every image is "
        "a computer-generated phantom, not a patient scan. It creates the demo accounts "
        f"`admin`, `radiologist1` and `radiologist2` with the public password "
        f"`{DEMO_PASSWORD}`: use it only for trying the app, never for real patients."
    )
    if st.button("Load the synthetic demo cohort", type="primary"):
        bar = st.progress(0.0, text="Rendering synthetic scans…")

        def progress(done: int, total: int) -> None:
            bar.progress(done / total, text=f"Rendering synthetic scans… {done}/{total}")

        try:
            n = load_demo(get_db(), get_store(), progress=progress, actor=reader)
        except DemoRefused as exc:
            st.error(str(exc))
            return True
        st.success(f"Loaded {n} synthetic patients.")
        st.rerun()
    return True


EMPTY_CELL = "—"
"""What a table shows for a missing value (Streamlit's default is the word "None")."""


def show_table(data: Any, **options: Any) -> Any:
    """``st.dataframe`` with missing values shown as "—"; returns what it returns."""
    return st.dataframe(data, placeholder=EMPTY_CELL, **options)


def reader_names() -> dict[str, str]:
    """Display name by username, so pages name readers as people read them."""
    with get_db().read() as session:
        return {r.username: r.display_name or r.username for r in list_readers(session)}


def runs_table(runs: list[TrainingRun]) -> pd.DataFrame:
    """``run_summary`` rows with the study's task names and architecture spellings."""
    from core.learning.dataset import task_title
    from core.report.table1 import ARCH_NAMES
    from db.runs import run_summary

    table = pd.DataFrame([run_summary(r) for r in runs])
    if not table.empty:
        table["task"] = table["task"].map(task_title)
        table["arch"] = table["arch"].map(lambda a: ARCH_NAMES.get(a, a))
        table["input"] = [", ".join(_size_text(s) for s in r.input_size) for r in runs]
    return table


def _size_text(size: Any) -> str:
    """One input's (height, width) as "112×112"."""
    return "×".join(str(v) for v in size) if isinstance(size, list | tuple) else str(size)


def plain(text: str) -> str:
    """Escape Markdown so user-supplied text (codes, file names) shows literally."""
    specials = "\\`*_{}[]()#+-.!|<>~$"
    return "".join("\\" + c if c in specials else c for c in text)
