"""Screenshots of each main page for the README, taken in headless Chromium on the demo.

Run from the repository root (needs Debian's chromium):

    python -m scripts.take_screenshots [--data /tmp/demo] [--out docs/screenshots]

It loads the synthetic demo cohort into the data folder when that folder is empty, starts
``streamlit run app.py`` on a loopback port, signs in as the demo admin and saves one PNG
per page, so the pictures always show the current app.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from tests.serve import CHROMIUM, LAUNCH_ARGS, streamlit_server

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("Cases", "Grading", "Consensus", "Training", "Models", "Comparison", "Review")


def ensure_demo(data: Path) -> None:
    env = {**os.environ, "SARCOPENIA_DATA_DIR": str(data)}
    env.pop("DATABASE_URL", None)
    subprocess.run(
        [sys.executable, "-m", "core", "demo", "--if-empty"], cwd=ROOT, env=env, check=True
    )


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    from core.services.demo import DEMO_PASSWORD

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/tmp/sarcopenia-screenshots"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    chromium = CHROMIUM
    if chromium is None:
        print("error: chromium not found (apt-get install chromium)", file=sys.stderr)
        return 1
    ensure_demo(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    with streamlit_server(args.data) as (base, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(base, wait_until="networkidle")
        page.get_by_role("textbox", name="Username").fill("admin")
        page.get_by_role("textbox", name="Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        nav = page.get_by_test_id("stSidebarNav")
        nav.wait_for(timeout=90_000)
        for name in PAGES:
            link = nav.get_by_role("link", name=name)
            if not link.count():
                continue
            link.click()
            page.wait_for_timeout(1500)
            page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=120_000)
            page.wait_for_timeout(1000)
            target = args.out / f"{name.lower()}.png"
            page.screenshot(path=str(target))
            print(f"{name}: {target}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
