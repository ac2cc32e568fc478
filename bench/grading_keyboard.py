"""Save and next by keyboard in a real browser: Enter until the next case is on screen.

Run: ``python -m bench.grading_keyboard [--cases 10] [--width 1600]``. A reader grades
cases with the keys alone (a digit, then Enter) against ``streamlit run`` in headless
Chromium, GSU and SWE side by side. Each Enter is timed until the next patient's heading,
both canvases and an idle app are on screen. The baseline, in the same browser, is a grade
key alone (one rerun of the same case). Exits 1 when the median is 0.8 s or more.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from bench.timing import print_table
from core.common.store import ImageStore
from core.services.demo import DEMO_PASSWORD, load_demo
from db.engine import Database
from db.migrate import upgrade
from tests.serve import CHROMIUM, LAUNCH_ARGS, streamlit_server

TARGET_S = 0.8
SETTLED = """(code) => {
  const heading = [...document.querySelectorAll('h3')].some((h) => h.innerText.includes(code));
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  let canvases = 0;
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el.matches('canvas.upper-canvas')) canvases += 1;
    if (el.shadowRoot) walk(el.shadowRoot);
  });
  walk(document);
  return heading && canvases === 2 && (!status || status.offsetParent === null);
}"""
"""True once the case ``code`` is drawn and the app has stopped running."""
SETTLED_IDLE = """() => {
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  return !status || status.offsetParent === null;
}"""


def _demo(folder: Path, patients: int) -> None:
    url = f"sqlite:///{folder / 'sarcopenia.db'}"
    upgrade(url)
    db = Database(url)
    load_demo(db, ImageStore(folder / "images"), n=patients)
    db.dispose()


def _settle(page, code: str | None, start: float) -> float:
    """Seconds from ``start`` until the page last became idle: a run the first one sets
    off (a canvas reporting its new drawing, say) counts, so idle must hold for 0.4 s."""
    while True:
        if code is None:
            page.wait_for_function(SETTLED_IDLE, polling=20, timeout=60_000)
        else:
            page.wait_for_function(SETTLED, arg=code, polling=20, timeout=60_000)
        end = time.perf_counter()
        try:
            page.wait_for_function(f"() => !({SETTLED_IDLE})()", polling=20, timeout=400)
        except PlaywrightTimeout:
            return end - start


def _grade(page, value: int, lost: list[int]) -> float:
    """Seconds from a grade key until the page shows that grade chosen and is idle.

    A key that shows no effect in 5 s is pressed again and counted in ``lost``.
    """
    chosen = page.locator(f".st-key-gradebtn-{value} [data-testid='stBaseButton-primary']")
    start = time.perf_counter()
    page.keyboard.press(str(value))
    try:
        chosen.wait_for(timeout=5_000)
    except PlaywrightTimeout:
        lost.append(value)
        page.keyboard.press(str(value))
        chosen.wait_for(timeout=30_000)
    return _settle(page, None, start)


def _save_and_next(page, code: str) -> float:
    """Seconds from Enter until the case ``code`` is drawn and the app is idle."""
    start = time.perf_counter()
    page.keyboard.press("Enter")
    return _settle(page, code, start)


def measure(folder: Path, cases: int, width: int) -> tuple[list[float], list[float], list[int]]:
    """(grade-key s, save-and-next s, grade keys pressed twice) over ``cases`` cases."""
    grade_key, save_next, lost = [], [], []
    with streamlit_server(folder) as (base, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 1100})
        page.goto(base, wait_until="networkidle")
        page.get_by_role("textbox", name="Username").fill("radiologist1")
        page.get_by_role("textbox", name="Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Grading").click()
        page.wait_for_function(SETTLED, arg="DEMO-001", polling=50, timeout=120_000)
        page.wait_for_timeout(1000)
        for index in range(1, cases + 1):
            next_code = f"DEMO-{index + 1:03d}"
            grade_key.append(_grade(page, index % 4, lost))
            save_next.append(_save_and_next(page, next_code))
        browser.close()
    return grade_key, save_next, lost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--width", type=int, default=1600)
    args = parser.parse_args(argv)
    if CHROMIUM is None:
        print("Chromium is not installed (apt-get install chromium).", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _demo(folder, args.cases + 2)
        grade_key, save_next, lost = measure(folder, args.cases, args.width)
    key_s, save_s = statistics.median(grade_key), statistics.median(save_next)
    ok = save_s < TARGET_S
    print(f"grading_keyboard: {args.cases} cases by keyboard at {args.width} px (median s)")
    print_table(
        ["step", "median s", "max s", "× grade key", f"< {TARGET_S:g} s"],
        [
            ["grade key (baseline)", key_s, max(grade_key), 1.0, ""],
            [
                "Enter: save and next",
                save_s,
                max(save_next),
                save_s / key_s,
                "ok" if ok else "MISS",
            ],
        ],
    )
    print(f"grade keys that showed no effect and were pressed again: {len(lost)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
