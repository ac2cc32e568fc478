"""A real browser (headless Chromium via Playwright) grades cases against `streamlit run`.

One reader draws a box at 1.5× zoom, zooms to 2× before saving, and the database must hold
the box as drawn in source pixels. Another grades three cases with the keyboard alone on
a 1600 px wide window, where GSU and SWE stand side by side.
"""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from core.common.boxes import Box
from core.services.demo import DEMO_PASSWORD
from db.models import CropBox, Grade, Reader
from tests.serve import CHROMIUM, streamlit_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"
    ),
]


FINISHED = '[data-testid="stApp"][data-test-script-state="notRunning"]'
"""The app once its script run has finished: the state the frontend itself keeps."""
SETTLE_S = 60
"""How long the layout may take to reach what a check waits for: as long as a rerun may."""


def _wait_idle(page) -> None:
    """Let a rerun start, then wait until it has finished.

    The running indicator alone is not enough: it appears only after a delay, so a
    loaded machine can be mid-run with the indicator still hidden.
    """
    page.wait_for_timeout(300)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=60_000)
    page.locator(FINISHED).wait_for(state="attached", timeout=60_000)


def sign_in(page, username: str, password: str = DEMO_PASSWORD) -> None:
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("stSidebar").get_by_role("button", name="Sign out").wait_for(timeout=60_000)


def open_grading(browser, base: str, username: str, width: int = 1600):
    page = browser.new_page(viewport={"width": width, "height": 1100})
    page.goto(base, wait_until="networkidle")
    sign_in(page, username)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Grading").click()
    page.get_by_role("heading", name="Patient DEMO-001").wait_for(timeout=60_000)
    page.locator("canvas.upper-canvas").last.wait_for(timeout=60_000)
    _wait_idle(page)
    return page


CANVAS_RECTS = """(() => {
  const rects = [];
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el.matches('canvas.upper-canvas')) {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.height > 0) {
        rects.push({x: r.x, y: r.y, width: r.width, height: r.height});
      }
    }
    if (el.shadowRoot) walk(el.shadowRoot);
  });
  walk(document);
  return rects;
})()"""
"""Every shown drawing canvas's place, read in one go (the canvases live in shadow roots).

A canvas left from an earlier rerun may linger hidden with no size while a loaded machine
catches up; the reader never sees it, so it is not counted.
"""


def canvases(page, count: int) -> list[dict]:
    """Where the shown drawing canvases are, once ``count`` are shown and stay put."""
    deadline = time.monotonic() + SETTLE_S
    last = None
    while True:
        _wait_idle(page)
        now = page.evaluate(CANVAS_RECTS)
        if len(now) == count and now == last:
            return now
        assert time.monotonic() < deadline, f"the canvases did not settle: {now}"
        last = now
        page.wait_for_timeout(300)


def wait_for_zoom(page, above: float) -> dict:
    """The GSU canvas once zoom has made it wider than ``above`` and than its column.

    At zoom 1 the canvas fits its column; zoomed, it runs under the SWE canvas beside it
    (its column scrolls to pan). That holds whatever size the window reports: the page
    first renders at a default size until the browser reports the real one, and a width
    read then is no baseline (CI once read 444 px for a canvas whose real width was 414).
    """
    deadline = time.monotonic() + SETTLE_S
    while True:
        gsu, swe = canvases(page, count=2)
        if gsu["width"] > above and gsu["x"] + gsu["width"] > swe["x"]:
            return gsu
        assert time.monotonic() < deadline, f"zoom did not enlarge the canvas: {gsu}, {swe}"
        page.wait_for_timeout(200)


def wait_for_side_by_side(page) -> None:
    """GSU and SWE canvases on one row, SWE to the right, once a loaded machine catches up.

    Only the layout the reader works in counts: on a loaded CI machine one settled reading
    caught the SWE canvas 340 px below the GSU one while reruns were still catching up.
    """
    deadline = time.monotonic() + SETTLE_S
    while True:
        gsu, swe = canvases(page, count=2)
        if abs(gsu["y"] - swe["y"]) < 2 and swe["x"] >= gsu["x"] + gsu["width"]:
            return
        assert time.monotonic() < deadline, f"GSU and SWE not side by side: {gsu}, {swe}"
        page.wait_for_timeout(300)


def press(page, key: str) -> None:
    page.keyboard.press(key)
    _wait_idle(page)


def grade(page, value: int) -> None:
    """Press a grade key and wait until the page shows it chosen."""
    page.keyboard.press(str(value))
    page.locator(f".st-key-gradebtn-{value} [data-testid='stBaseButton-primary']").wait_for(
        timeout=60_000
    )
    _wait_idle(page)


def save_and_next(page, next_code: str) -> None:
    page.keyboard.press("Enter")
    page.get_by_role("heading", name=f"Patient {next_code}").wait_for(timeout=60_000)
    _wait_idle(page)


def _rows(demo_env, username: str):
    engine = create_engine(f"sqlite:///{demo_env / 'sarcopenia.db'}")
    with Session(engine) as s:
        reader = s.scalar(select(Reader).filter_by(username=username))
        grades = {
            g.image_id: g.grade for g in s.scalars(select(Grade).filter_by(reader_id=reader.id))
        }
        boxes = {
            b.image_id: (Box(b.x, b.y, b.w, b.h), b.auto_accepted)
            for b in s.scalars(select(CropBox).filter_by(reader_id=reader.id))
        }
    engine.dispose()
    return grades, boxes


def test_zoom_after_drawing_stores_the_box_as_drawn(demo_env, browser):
    with streamlit_server(demo_env) as (base, _):
        page = open_grading(browser, base, "radiologist1")
        native = canvases(page, count=2)[0]["width"]
        zoom = page.get_by_test_id("stSidebar").get_by_test_id("stButtonGroup")
        zoom.get_by_text("1.5×", exact=True).click()
        area = wait_for_zoom(page, native)
        scale = area["width"] / 640
        start, end = (120.0, 80.0), (400.0, 300.0)
        page.mouse.move(area["x"] + start[0], area["y"] + start[1])
        page.mouse.down()
        page.mouse.move(area["x"] + end[0], area["y"] + end[1], steps=12)
        page.mouse.up()
        caption = page.get_by_text("Drawn box:")
        caption.wait_for(timeout=60_000)
        drawn = Box(
            *map(int, re.search(r"\((\d+), (\d+), (\d+), (\d+)\)", caption.inner_text()).groups())
        )
        zoom.get_by_text("2×", exact=True).click()
        wait_for_zoom(page, area["width"] * 1.2)
        page.get_by_text(f"Drawn box: {drawn.as_tuple()}").wait_for(timeout=60_000)
        grade(page, 2)
        save_and_next(page, "DEMO-002")

    grades, boxes = _rows(demo_env, "radiologist1")
    assert list(grades.values()) == [2]
    ((box, auto),) = boxes.values()
    assert box == drawn and not auto
    mouse = (
        start[0] / scale,
        start[1] / scale,
        (end[0] - start[0]) / scale,
        (end[1] - start[1]) / scale,
    )
    for got, want in zip(box.as_tuple(), mouse, strict=True):
        assert abs(got - want) <= 2, (box, mouse)


def test_keyboard_alone_grades_three_cases_side_by_side(demo_env, browser):
    with streamlit_server(demo_env) as (base, _):
        page = open_grading(browser, base, "radiologist2")
        page.get_by_text("Keys:").wait_for()
        wait_for_side_by_side(page)
        assert page.get_by_role("tab").count() == 0

        grade(page, 1)
        save_and_next(page, "DEMO-002")
        press(page, "a")
        page.get_by_text("Proposed box:").first.wait_for(timeout=60_000)
        press(page, "s")
        page.get_by_text("SWE: color box · active").wait_for(timeout=60_000)
        press(page, "a")
        page.get_by_text("Proposed box:").nth(1).wait_for(timeout=60_000)
        grade(page, 3)
        save_and_next(page, "DEMO-003")
        press(page, "ArrowLeft")
        page.get_by_role("heading", name="Patient DEMO-002").wait_for(timeout=60_000)
        page.wait_for_function(
            "() => document.querySelector('[data-testid=stSelectbox] input').value === 'DEMO-002'",
            timeout=10_000,
        )
        grade(page, 2)
        save_and_next(page, "DEMO-003")
        grade(page, 0)
        save_and_next(page, "DEMO-004")

        page.set_viewport_size({"width": 900, "height": 1100})
        page.get_by_role("tab", name="GSU: ultrasound area").wait_for(timeout=60_000)

    grades, boxes = _rows(demo_env, "radiologist2")
    assert sorted(grades.values()) == [0, 1, 2]
    assert len(boxes) == 2 and all(auto for _, auto in boxes.values())
