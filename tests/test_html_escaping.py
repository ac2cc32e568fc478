"""User-supplied text is shown as text, never run as HTML; uploads never name stored files.

A patient code ``<script>alert(1)</script>`` (the importer refuses it, so it is inserted
straight into the database, as a hand-edited or migrated database could hold it) and a
reader display name carrying an ``onerror`` handler must reach the page only through
elements that escape markup: checked in AppTest, in the source (no ``unsafe_allow_html``,
``st.html`` or HTML components anywhere in the app), and in a real browser, where the text
must be visible literally and no script or handler may exist or run.

Markdown is the other way in: an exclusion reason holding a Markdown image makes every
viewer's browser fetch its URL (a tracking pixel). The browser test points one at a local
HTTP server and checks that the text shows literally and the server hears nothing.
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from core.cases.archive import ZipBundle
from core.cases.importer import import_bundle
from core.services.auth import create_reader
from core.services.demo import DEMO_PASSWORD
from db.engine import Database
from db.models import CtMeasurement, Image, Patient
from pages.components import plain
from tests.bundles import jpeg_bytes, make_zip, png_bytes, row
from tests.serve import CHROMIUM, streamlit_server
from tests.test_browser_grading import _wait_idle, sign_in

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
SCRIPT_CODE = "<script>alert(1)</script>"
MARKUP_NAME = "<img src=x onerror=alert(2)>"
MARKUP_USER = "markup"
TRACKER = "http://127.0.0.1:9/track.png"
"""Where the exclusion reason's Markdown points (AppTest: nothing listens there)."""


def markdown_reason(url: str) -> str:
    """An exclusion reason that, rendered as Markdown, fetches ``url`` and shows a link."""
    return f"![t]({url}) see [the protocol]({url}?link) :red[urgent] **bold**"


HTML_ELEMENTS = {"Html", "IFrame"}
"""Element protos whose content the browser renders as HTML."""
STORED_NAME = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{64})\.(png|dcm)$")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"
)


def _add_markup(data: Path, tracker: str = TRACKER) -> None:
    """The script patient (bypassing the importer) with a Markdown exclusion reason, and a
    reader with a markup name."""
    db = Database(f"sqlite:///{data / 'sarcopenia.db'}")
    patient = Patient(code=SCRIPT_CODE, sex="F", age=60, height_cm=160.0)
    patient.ct = CtMeasurement(exclusion_reason=markdown_reason(tracker))
    db.write(lambda s: s.add(patient))
    create_reader(db, MARKUP_USER, MARKUP_NAME, "reader", DEMO_PASSWORD)
    db.dispose()


def _elements(node) -> Iterator:
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _elements(child)


def test_importer_refuses_a_patient_code_with_markup(db, store):
    data = make_zip([row(SCRIPT_CODE, "g.png")], {"g.png": png_bytes(1)})
    report = import_bundle(ZipBundle(data), db, store)
    assert not report.committed
    assert any("not a pseudonymous code" in p.reason and p.row == 2 for p in report.problems)
    with db.read() as session:
        assert session.scalar(select(func.count(Patient.id))) == 0
    assert not any(store.root.rglob("*"))


def _markup_carriers(nodes: Iterator) -> list[str]:
    """Kinds of the elements showing the markup; fails on any that would render it as HTML."""
    kinds = []
    for element in nodes:
        proto = getattr(element, "proto", None)
        text = str(proto)
        if proto is None or (SCRIPT_CODE not in text and MARKUP_NAME not in text):
            continue
        kinds.append(type(proto).__name__)
        assert kinds[-1] not in HTML_ELEMENTS, text
        if "allow_html" in proto.DESCRIPTOR.fields_by_name:
            assert not proto.allow_html, text
    return kinds


def test_cases_page_shows_markup_only_in_escaping_elements(demo_env):
    _add_markup(demo_env)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["reader_username"] = MARKUP_USER
    at.run()
    assert not at.exception
    carriers = _markup_carriers(_elements(at.sidebar))
    codes = list(at.dataframe[0].value["code"])
    at.session_state["case_table"] = {"selection": {"rows": [codes.index(SCRIPT_CODE)]}}
    at.run()
    assert not at.exception
    assert [h.value for h in at.subheader] == [f"Patient {plain(SCRIPT_CODE)}"]
    carriers += _markup_carriers(_elements(at.main))
    assert sorted(carriers) == ["Dataframe", "Text"]  # the heading holds it escaped
    reason = markdown_reason(TRACKER)
    assert f"Excluded from CT labels: {reason}" in [t.value for t in at.text]
    assert not [m.value for m in at.markdown if "](http" in m.value]
    assert not [c.value for c in at.caption if "](http" in c.value]


def _app_sources() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "pages").rglob("*.py"))]


REVIEWED_HTML = {"app.py": "set_cookie", "pages/components.py": "show_box_legend"}
"""``st.html`` calls checked by hand: ``app.py``'s ``set_cookie`` writes a fixed script
holding only a token the server generated (Streamlit cannot set a cookie otherwise);
``show_box_legend`` is fixed markup around names that ``box_legend_html`` escapes (its
own test feeds it markup)."""


def _reviewed_lines(path: Path, tree: ast.AST) -> set[int]:
    name = REVIEWED_HTML.get(str(path.relative_to(ROOT)))
    return {
        line
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == name
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }


def test_box_legend_escapes_reader_names():
    from core.imaging.display import box_legend_html

    legend = box_legend_html(['<img src="http://x/t.png">', "Dr <b>A</b>"])
    assert "<img" not in legend and "<b>" not in legend
    assert "&lt;img src=&quot;http://x/t.png&quot;&gt;" in legend and "&lt;b&gt;A" in legend


def test_no_page_renders_raw_html():
    sources = _app_sources()
    assert len(sources) > 3 and (ROOT / "pages" / "cases.py") in sources
    offences = []
    for path in sources:
        tree = ast.parse(path.read_text(), str(path))
        reviewed = _reviewed_lines(path, tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in reviewed:
                continue
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.keyword) and node.arg == "unsafe_allow_html":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    offences.append(f"{where} unsafe_allow_html")
            elif isinstance(node, ast.Attribute) and node.attr == "html":
                offences.append(f"{where} .html(...)")
            elif isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [alias.name for alias in node.names]
                if any(n.startswith("streamlit.components") or n == "components" for n in names):
                    offences.append(f"{where} streamlit.components")
    assert offences == []


def test_uploads_are_stored_under_their_hash_never_their_name(db, store, tmp_path):
    odd = ["evil name.png", "<b>bold</b>.png", "..hidden.png", "ünï cødé;rm -rf ~.jpg"]
    files = {name: png_bytes(i) for i, name in enumerate(odd[:3])}
    files[odd[3]] = jpeg_bytes(9)
    rows = [row(f"P{i}", name) for i, name in enumerate(odd)]
    rows.append(row("P-ESCAPE", "../evil name.png"))
    data = make_zip(rows, files)
    report = import_bundle(ZipBundle(data), db, store, skip_invalid=True)
    assert report.imported == ["P0", "P1", "P2", "P3"]
    assert [(p.row, p.file) for p in report.problems] == [(6, "../evil name.png")]
    with db.read() as session:
        images = {i.path: i.sha256 for i in session.scalars(select(Image))}
    stored = sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*.*"))
    assert stored == sorted(images)
    for path in stored:
        match = STORED_NAME.match(path)
        assert match, path
        assert match[2] == images[path] and match[1] == match[2][:2]
    names = {p.name for p in tmp_path.rglob("*")}
    assert not names & {"evil name.png", "<b>bold</b>.png", "..hidden.png", odd[3]}


@contextmanager
def tracking_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server recording every path requested of it; yields (url, paths)."""
    heard: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            heard.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/track.png", heard
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
@needs_chromium
def test_browser_shows_markup_literally_and_runs_none_of_it(demo_env, browser):
    with tracking_server() as (tracker, heard), streamlit_server(demo_env) as (base, _started):
        _add_markup(demo_env, tracker)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(base, wait_until="networkidle")
        page.get_by_role("textbox", name="Username").wait_for(timeout=120_000)  # a busy CI
        sign_in(page, MARKUP_USER)
        _wait_idle(page)
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_text(f"{MARKUP_NAME} (reader)", exact=True).wait_for()

        page.get_by_role("textbox", name="Patient code contains").fill("script")
        page.keyboard.press("Enter")
        page.get_by_text("1 patient(s) match.").wait_for(timeout=60_000)
        table = page.get_by_test_id("stDataFrame")
        table.wait_for()
        grid = table.bounding_box()
        assert grid is not None
        page.mouse.click(grid["x"] + 16, grid["y"] + 52)  # the first row's select box
        heading = page.get_by_role("heading", name=f"Patient {SCRIPT_CODE}")
        heading.wait_for(timeout=60_000)
        _wait_idle(page)

        assert heading.inner_text().startswith(f"Patient {SCRIPT_CODE}")
        scripts = page.evaluate("[...document.scripts].map(s => s.textContent)")
        assert not any("alert(" in s for s in scripts), scripts
        assert page.locator("img[onerror]").count() == 0
        assert page.evaluate("document.body.innerHTML.includes('<script>alert(1)')") is False
        reason = markdown_reason(tracker)
        page.get_by_text(f"Excluded from CT labels: {reason}", exact=True).wait_for()
        page.wait_for_timeout(1000)
        assert dialogs == []
        assert heard == [], "the browser fetched the Markdown image or link"
        port = tracker.split("/")[2]
        assert page.locator(f'img[src*="{port}"], a[href*="{port}"]').count() == 0
