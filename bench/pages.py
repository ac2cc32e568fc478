"""AppTest run time of each page at 160 and at 10,000 patients: pages paginate (issue 8).

Run: ``python -m bench.pages [--large 10000]``. Every image row points at one rendered
phantom pair, so the pages show real pixels. Each page is opened by the role that does the
work there: the case list by an admin (edit and import forms included), grading by a
reader halfway through the cohort (so the queue, the progress count and the unblinded
grades of the case before all have rows behind them), and consensus by an admin, who sees
every disagreement (about 28% of the images: thousands at 10,000) and the agreement
statistics over all images. Each is timed cold (Streamlit's data and resource caches
cleared before every run, as in a fresh server process; the database is opened and
checked again) and warm (a new session on a server that has served the page before).
Exits 1 if a page is more than 3× slower at the large size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

import streamlit as st
from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from bench.synthetic_rows import build_database, store_one_phantom
from bench.timing import median_seconds, print_table
from db.models import Grade, Reader

APP = str(Path(__file__).resolve().parents[1] / "app.py")
ROLES = {
    "pages/cases.py": "admin",
    "pages/grading.py": "halfway",
    "pages/consensus.py": "admin",
}
"""Page → who opens it (a username in the bench's database)."""
CACHES = ("cold", "warm")
MAX_RATIO = 3.0


def _prepare(folder: Path, n: int) -> None:
    """The synthetic rows, plus an admin and a reader who graded the first half of the GSU
    images (both simulated readers graded them all)."""
    paths, _ = store_one_phantom(folder)
    db = build_database(folder, n, image_paths=paths, filename="sarcopenia.db")
    now = dt.datetime(2020, 1, 2)
    with db.engine.begin() as conn:
        conn.execute(
            insert(Reader).values(active=True, created_at=now),
            [
                {"id": 4, "username": "admin", "display_name": "Admin", "role": "admin"},
                {"id": 5, "username": "halfway", "display_name": "Half", "role": "reader"},
            ],
        )
        conn.execute(
            insert(Grade).values(reader_id=5, grade=1, created_at=now, updated_at=now),
            [{"image_id": 2 * i + 1} for i in range(n // 2)],
        )
    db.dispose()


def page_seconds(folder: Path, page: str, reader: str, cache: str, repeat: int = 3) -> float:
    os.environ["SARCOPENIA_DATA_DIR"] = str(folder)
    os.environ.pop("DATABASE_URL", None)

    def run() -> None:
        if cache == "cold":
            st.cache_data.clear()
            st.cache_resource.clear()
        at = AppTest.from_file(APP, default_timeout=300)
        at.session_state["reader_username"] = reader
        at.run()
        at.switch_page(page).run()
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception[0].stack_trace}")

    return median_seconds(run, repeat=repeat, warmup=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=160)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per page (median)")
    args = parser.parse_args(argv)
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for n in (args.small, args.large):
            folders[n] = Path(tmp) / str(n)
            _prepare(folders[n], n)
        for page, reader in ROLES.items():
            for cache in CACHES:
                name = f"{page} as {reader}, {cache}"
                small = page_seconds(folders[args.small], page, reader, cache, args.repeat)
                large = page_seconds(folders[args.large], page, reader, cache, args.repeat)
                ratio = large / small
                ok = ratio <= MAX_RATIO
                rows.append([name, small, large, ratio, "ok" if ok else "MISS"])
                if not ok:
                    failed.append(name)
    print(f"pages: AppTest run time, {args.small} vs {args.large} patients (median s)")
    print_table(
        ["page", f"s @{args.small}", f"s @{args.large}", "ratio", f"≤ {MAX_RATIO:g}×"], rows
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
