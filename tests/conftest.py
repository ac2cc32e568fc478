"""Shared fixtures: a real database (SQLite by default) and a data folder per test.

``TEST_DATABASE_URL`` points the database tests at another server (CI runs them once more
against PostgreSQL); each test then gets a freshly emptied schema.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from core.common.store import ImageStore
from db.engine import Database
from db.migrate import upgrade
from db.models import Base
from tests.pacs_helpers import orthanc  # noqa: F401  (session fixture: a real Orthanc PACS)
from tests.tiny_runs import tiny_models  # noqa: F401  (session fixture: tiny trained runs)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A test without the data_dir fixture still writes to a data folder (decoding a DICOM
# creates the site's UID secret there): keep that out of the checkout.
os.environ.setdefault("SARCOPENIA_DATA_DIR", tempfile.mkdtemp(prefix="sarcopenia-tests-"))


def _reset_server_db(url: str) -> None:
    """Drop everything in a shared test server database so each test starts empty."""
    db = Database(url)
    with db.engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.dispose()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("SARCOPENIA_DATA_DIR", str(folder))
    server = os.environ.get("TEST_DATABASE_URL")
    if server:
        _reset_server_db(server)
        monkeypatch.setenv("DATABASE_URL", server)
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    return folder


@pytest.fixture
def db(data_dir: Path) -> Iterator[Database]:
    from core.common import config

    url = config.database_url()
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture
def store(data_dir: Path) -> ImageStore:
    from core.common import config

    return ImageStore(config.images_dir())


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-patient demo data folder (SQLite + images), built once and copied per test."""
    from core.services.demo import load_demo

    folder = tmp_path_factory.mktemp("demo") / "data"
    url = f"sqlite:///{folder / 'sarcopenia.db'}"
    folder.mkdir(parents=True)
    upgrade(url)
    database = Database(url)
    load_demo(database, ImageStore(folder / "images"), n=24)
    database.dispose()
    return folder


@pytest.fixture
def demo_env(small_demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the small demo, with the environment pointing the app at it."""
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(small_demo, folder)
    monkeypatch.setenv("SARCOPENIA_DATA_DIR", str(folder))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return folder


@pytest.fixture
def agreed_demo(demo_env: Path) -> Iterator[tuple[Database, ImageStore]]:
    """The private demo copy with auto-agreed consensus grades (echogenicity labels exist)."""
    from core.common import config
    from db.consensus import auto_agree

    db = Database(config.database_url())
    db.write(auto_agree)
    yield db, ImageStore(config.images_dir())
    db.dispose()


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared real-screen corpus (``../shared/real-us``); a clear failure when absent."""
    from bench.real_corpus import DEFAULT_CORPUS

    if not (DEFAULT_CORPUS / "manifest.json").is_file():
        pytest.fail(
            f"The real-screen corpus is missing: expected {DEFAULT_CORPUS}/manifest.json "
            "(the project's shared/real-us folder beside the repository)."
        )
    return DEFAULT_CORPUS


@pytest.fixture(autouse=True)
def _warm_streamlit_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run AppTest as a server on which ``app.py`` has already called ``st.navigation``.

    AppTest resets Streamlit's pages-folder flag before every run, so each run would start
    like a freshly started server: Streamlit would run ``pages/<name>.py`` by itself and
    ``pages.components`` would rerun it through ``app.py``, dropping the click that started
    the run. A real server leaves that mode on its first navigation; the fresh-server path
    is covered by the browser tests (``test_browser_roles``).
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def warm(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", warm)


@pytest.fixture
def browser():
    """A headless Debian Chromium driven by Playwright, closed after the test."""
    from playwright.sync_api import sync_playwright

    from tests.serve import CHROMIUM, LAUNCH_ARGS

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield instance
        instance.close()


_skipped: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Route tests to the backend they need.

    Without ``TEST_DATABASE_URL`` the PostgreSQL-only tests are deselected (said aloud); with
    it, the SQLite-only ones are. ``.ci/run`` runs the suite on SQLite, then the database
    tests again on a real PostgreSQL server, so in CI both halves always run.
    """
    on_postgres = bool(os.environ.get("TEST_DATABASE_URL"))
    unwanted = "sqlite_only" if on_postgres else "postgres"
    keep = [item for item in items if unwanted not in item.keywords]
    dropped = [item for item in items if unwanted in item.keywords]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        where = "PostgreSQL" if on_postgres else "SQLite"
        print(f"\n{len(dropped)} {unwanted} test(s) deselected on {where}.")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: a missing browser or server must not pass quietly."""
    if os.environ.get("CI") and _skipped:
        print(f"\nCI: {len(_skipped)} test(s) were skipped; failing the run:")
        for nodeid in _skipped:
            print(f"  skipped: {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
