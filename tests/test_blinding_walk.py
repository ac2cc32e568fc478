"""Blinding everywhere: a reader with no grades walks every page and download they can
reach, and nothing shows another reader's grade, box or comment, or any consensus.

The database holds what a leak would show: the simulated readers' grades and boxes, the
automatic consensus (with its boxes), a colleague's grade with a comment, an adjudicated
consensus, and finished sarcopenia and echogenicity runs with predictions. The file
bytes of every download are recorded where Streamlit stores them.
"""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import select
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from core.common import config
from core.common.store import ImageStore
from db.consensus import adjudicate, auto_agree, disagreements
from db.engine import Database
from db.grading import save_grade
from db.models import Image, Patient, Reader
from db.readers import get_reader
from tests.apptest_helpers import open_page
from tests.test_app_review import _page
from tests.tiny_runs import add_tiny_run

READER = "radiologist1"
COLLEAGUE_NOTE = "colleague-note-7f3a"
READER_PAGES = (
    "pages/cases.py",
    "pages/grading.py",
    "pages/consensus.py",
    "pages/comparison.py",
    "pages/review.py",
    "pages/registry.py",
)


@pytest.fixture
def leaky_demo(demo_env, tiny_models) -> dict:
    """The demo with every kind of grade and consensus a leak could show."""
    db = Database(config.database_url())
    store = ImageStore(config.images_dir())
    db.write(auto_agree)
    with db.read() as s:
        first = disagreements(s)[0]
        codes = list(s.scalars(select(Patient.code).order_by(Patient.code)))
        gsu = s.scalar(select(Image.id).join(Patient).where(Patient.code == codes[0]))

    def colleague_and_admin(s) -> None:
        save_grade(s, gsu, get_reader(s, "radiologist2"), 3, comment=COLLEAGUE_NOTE)
        adjudicate(s, first.image_id, get_reader(s, "admin"), 1, None)

    db.write(colleague_and_admin)
    add_tiny_run(db, store, tiny_models["gsu"])
    add_tiny_run(db, store, tiny_models["swe"])
    echo_run = add_tiny_run(db, store, tiny_models["gsu"], task="echogenicity_gsu")
    with db.read() as s:
        others = [
            name
            for r in s.scalars(select(Reader).where(Reader.username != READER))
            if r.role != "admin"
            for name in (r.username, r.display_name)
        ]
    db.dispose()
    return {"others": others, "codes": codes, "echo_run": echo_run}


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """Every file a page hands to a download button (or any media), by file name."""
    files: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        if isinstance(path_or_data, bytes) and filename:
            files[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return files


def _walk(node, out: list[str]) -> None:
    """Everything an element tree shows: table cells as text, every other proto as text."""
    value = None
    if getattr(node, "type", None) == "arrow_data_frame":
        value = node.value
    if isinstance(value, pd.DataFrame):
        out.append(value.to_csv())
    elif getattr(node, "proto", None) is not None:
        out.append(str(node.proto))
    for child in (getattr(node, "children", None) or {}).values():
        _walk(child, out)


def shown(at) -> str:
    out: list[str] = []
    _walk(at._tree, out)
    return "\n".join(out)


def _assert_blind(text: str, others: list[str], where: str) -> None:
    for name in others:
        assert name not in text, f"{where} names {name!r}"
    assert COLLEAGUE_NOTE not in text, f"{where} shows a colleague's comment"
    assert "agreement)" not in text and "adjudication)" not in text, f"{where}: a consensus"


def test_a_reader_with_no_grades_sees_no_grade_or_consensus_anywhere(leaky_demo, downloads):
    others = leaky_demo["others"]
    pages = {}
    for page in READER_PAGES:
        at = open_page(page, READER)
        assert not at.exception, page
        pages[page] = at
        _assert_blind(shown(at), others, page)

    cases = pages["pages/cases.py"]
    table = cases.dataframe[0].value
    assert table["consensus"].isna().all()
    consensus_filter = next(b for b in cases.selectbox if b.label == "Consensus")
    consensus_filter.set_value("done").run()
    assert cases.dataframe[0].value.empty or cases.dataframe[0].value["consensus"].isna().all()
    assert any(c.value.startswith("0 patient(s)") for c in cases.caption)
    next(b for b in cases.selectbox if b.label == "Consensus").set_value("any").run()
    for row in range(3):
        cases.session_state["case_table"] = {"selection": {"rows": [row], "columns": []}}
        cases.run()
        assert not cases.exception
        _assert_blind(shown(cases), others, f"Cases, patient row {row}")

    consensus = pages["pages/consensus.py"]
    assert any("Disagreements to settle (0)" in h.value for h in consensus.subheader)
    assert not consensus.get("plotly_chart")

    review = pages["pages/review.py"]
    table = review.dataframe[0].value
    assert table["echogenicity_high"].isna().all()
    assert table[f"run {leaky_demo['echo_run']} p"].isna().all()
    for code in leaky_demo["codes"][:3]:
        review.selectbox(key="review_patient").set_value(code).run()
        assert not review.exception
        _assert_blind(shown(review), others, f"Review of {code}")
        assert "consensus" not in [
            v for df in review.dataframe for v in df.value.get("reader", pd.Series()).tolist()
        ]

    registry = pages["pages/registry.py"]
    for run_id in registry.selectbox(key="registry_run").options:
        registry.selectbox(key="registry_run").set_value(int(run_id.split()[1])).run()
        assert not registry.exception
        _assert_blind(shown(registry), others, f"Models, {run_id}")
        if "Echogenicity" in run_id:
            assert not any(e.label.startswith("Predictions") for e in registry.expander)

    comparison = _page("comparison", READER)  # the page alone, as in test_app_review
    assert not any(b.label.startswith("Prepare export") for b in comparison.button)
    for key in ("png_roc", "html_roc", "png_calibration", "html_calibration"):
        comparison.button(key=f"prepare_{key}").click().run()
        assert not comparison.exception
    names = set(downloads)
    assert {"table1.csv", "table1_paper.csv", "roc.html", "calibration.png"} <= names
    for name, data in downloads.items():
        text = data.decode("utf-8", errors="ignore")
        _assert_blind(text, others, f"download {name}")
        assert not any(code in text for code in leaky_demo["codes"]), f"{name} names a patient"
