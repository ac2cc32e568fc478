"""A real browser checks an import in the preview before anything is stored.

The admin uploads a zip holding a real Acuson screen (``../shared/real-us``) with a
patient banner, sees it as it will be stored (blanked text outlined in red, the proposed
view in green, a table saying why each line went), leaves one blanked line as it was,
and imports: the stored image keeps that line and loses the others.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from core.common.boxes import Box
from core.common.store import ImageStore
from core.imaging.images import load_pixels
from db.models import Image, Patient
from tests.bundles import make_zip, row
from tests.serve import CHROMIUM, streamlit_server
from tests.test_browser_grading import _wait_idle, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"
    ),
]

SCREEN = "dcm4che_YBR_FULL-RLE_Acuson.dcm"


def test_the_admin_previews_corrects_and_imports(demo_env, browser, corpus, tmp_path):
    bundle = tmp_path / "bundle.zip"
    dicom = (corpus / "images" / SCREEN).read_bytes()
    bundle.write_bytes(make_zip([row("NEW-001", "acuson.dcm")], {"acuson.dcm": dicom}))
    shots = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
    with streamlit_server(demo_env) as (base, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(base, wait_until="networkidle")
        sign_in(page, "admin")
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Cases").click()
        page.get_by_text("Import cases (zip with manifest.csv)").click()
        panel = page.get_by_test_id("stExpander").filter(has_text="Import cases")
        panel.locator("input[type=file]").set_input_files(str(bundle))
        picture = panel.get_by_test_id("stImage").last
        picture.wait_for(timeout=120_000)
        _wait_idle(page)
        panel.get_by_text("red: blanked").wait_for(timeout=60_000)
        table = panel.get_by_test_id("stDataFrame").last
        table.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "import-preview.png"), full_page=True)
        keep = panel.get_by_test_id("stMultiSelect").last
        keep.locator("input").click()
        page.keyboard.type("Oct")  # the exam date: the admin decides it may stay
        page.get_by_text(re.compile(r"Oct 16' at \(")).last.click()
        page.keyboard.press("Escape")
        _wait_idle(page)
        confirm = page.get_by_role("button", name="Import as previewed (1 image(s) corrected)")
        confirm.wait_for(timeout=60_000)
        label = keep.inner_text()
        assert label.count(" at (") == 1, label
        confirm.click()
        page.get_by_text("1 imported").wait_for(timeout=120_000)
    engine = create_engine(f"sqlite:///{demo_env / 'sarcopenia.db'}")
    with Session(engine) as s:
        image = s.scalar(select(Image).join(Patient).where(Patient.code == "NEW-001"))
        path, header = image.path, image.dicom_header
    engine.dispose()
    assert header["BurnedInAnnotation"] == "NO"
    stored = load_pixels(ImageStore(demo_env / "images"), path)
    x, y, w, h = (int(v) for v in re.search(r"\((\d+), (\d+), (\d+), (\d+)\)", label).groups())
    assert stored[y : y + h, x : x + w].max() > 150  # the line the admin kept is still there
    hospital = Box(120, 18, 170, 11)  # from the corpus's ground truth
    assert Box(x, y, w, h).iou(hospital) == 0
    blanked = stored[hospital.y : hospital.y2, hospital.x : hospital.x2]
    assert blanked.min() == blanked.max()  # one fill colour where the name was
