"""A real browser (headless Chromium via Playwright) grades a case against `streamlit run`.

The reader signs in, draws a rectangle on the GSU canvas with the mouse at 1.5× zoom,
grades, saves and moves on. The database must then hold the grade and the box in source
pixels within 2 px of the drawn rectangle divided by the display scale.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from core.boxes import Box
from core.demo import DEMO_PASSWORD
from db.models import CropBox, Grade, Reader
from tests.serve import CHROMIUM, LAUNCH_ARGS, streamlit_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"
    ),
]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield instance
        instance.close()


def _wait_idle(page) -> None:
    """Let a rerun start, then wait until Streamlit's running indicator is gone."""
    page.wait_for_timeout(300)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=60_000)


def sign_in(page, username: str, password: str = DEMO_PASSWORD) -> None:
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("stSidebar").get_by_role("button", name="Sign out").wait_for(timeout=60_000)


def click_grade(page, grade: int) -> None:
    page.get_by_test_id("stButtonGroup").last.get_by_text(str(grade), exact=True).click()
    _wait_idle(page)


def test_reader_draws_grades_saves_and_moves_on(demo_env, browser, capsys):
    with streamlit_server(demo_env) as (base, _):
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.goto(base, wait_until="networkidle")
        sign_in(page, "radiologist1")
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Grading").click()
        _wait_idle(page)
        heading = page.get_by_role("heading", name="Patient DEMO-001")
        heading.wait_for()

        zoom = page.get_by_test_id("stSidebar").get_by_role("slider")
        zoom.last.focus()
        page.keyboard.press("ArrowRight")
        _wait_idle(page)
        deadline = time.monotonic() + 30
        while (page.locator("canvas.upper-canvas").first.bounding_box() or {"width": 0})[
            "width"
        ] < 900:
            assert time.monotonic() < deadline, "zoom did not enlarge the canvas"
            page.wait_for_timeout(200)

        canvas = page.locator("canvas.upper-canvas").first
        canvas.wait_for()
        area = canvas.bounding_box()
        assert area is not None
        scale = area["width"] / 640
        assert scale == pytest.approx(1.5, abs=0.01)
        start = (120.0, 105.0)
        end = (570.0, 405.0)
        page.mouse.move(area["x"] + start[0], area["y"] + start[1])
        page.mouse.down()
        page.mouse.move(area["x"] + end[0], area["y"] + end[1], steps=12)
        page.mouse.up()
        page.get_by_text("Drawn box:").wait_for(timeout=60_000)
        page.screenshot(path="/tmp/drawn.png")

        click_grade(page, 2)
        t0 = time.perf_counter()
        page.get_by_role("button", name="Save and next").click()
        page.get_by_role("heading", name="Patient DEMO-002").wait_for(timeout=60_000)
        _wait_idle(page)
        save_and_next = time.perf_counter() - t0

        t0 = time.perf_counter()
        click_grade(page, 1)
        grade_click = time.perf_counter() - t0
        with capsys.disabled():
            print(
                f"\n[timing] browser save-and-next {save_and_next:.2f} s, "
                f"grade click {grade_click:.2f} s"
            )

    engine = create_engine(f"sqlite:///{demo_env / 'sarcopenia.db'}")
    with Session(engine) as s:
        reader = s.scalar(select(Reader).filter_by(username="radiologist1"))
        grade = s.scalar(select(Grade).filter_by(reader_id=reader.id))
        box = s.scalar(select(CropBox).filter_by(reader_id=reader.id))
    engine.dispose()
    assert grade.grade == 2
    expected = Box(
        round(start[0] / scale),
        round(start[1] / scale),
        round((end[0] - start[0]) / scale),
        round((end[1] - start[1]) / scale),
    )
    for got, want in zip((box.x, box.y, box.w, box.h), expected.as_tuple(), strict=True):
        assert abs(got - want) <= 2, (box.x, box.y, box.w, box.h, expected)
