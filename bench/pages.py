"""AppTest run time of each page at 160 and at 10,000 patients: pages paginate (issue 8).

Run: ``python -m bench.pages [--large 10000]``. Every image row points at one rendered
phantom pair, so the pages show real pixels. Exits 1 if a page is more than 3× slower
at the large size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from streamlit.testing.v1 import AppTest

from bench.synthetic_rows import build_database
from bench.timing import median_seconds, print_table
from core.cohort import synthetic_cohort
from core.demo import render_patient
from core.store import ImageStore, sha256_hex

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = ("pages/cases.py", "pages/grading.py", "pages/consensus.py")
MAX_RATIO = 3.0


def _prepare(folder: Path, n: int) -> None:
    store = ImageStore(folder / "images")
    case = render_patient(synthetic_cohort(n=160)[0])
    paths = {}
    for modality, png in (("GSU", case.gsu_png), ("SWE", case.swe_png)):
        paths[modality], _ = store.put(png, sha256_hex(png), ".png")
    build_database(folder, n, image_paths=paths, filename="sarcopenia.db").dispose()


def page_seconds(folder: Path, page: str, reader: str) -> float:
    os.environ["SARCOPENIA_DATA_DIR"] = str(folder)
    os.environ.pop("DATABASE_URL", None)

    def run() -> None:
        at = AppTest.from_file(APP, default_timeout=300)
        at.session_state["reader_username"] = reader
        at.run()
        at.switch_page(page).run()
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception[0].stack_trace}")

    return median_seconds(run, repeat=3, warmup=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=160)
    parser.add_argument("--large", type=int, default=10_000)
    args = parser.parse_args(argv)
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for n in (args.small, args.large):
            folders[n] = Path(tmp) / str(n)
            _prepare(folders[n], n)
        for page in PAGES:
            reader = "human"
            small = page_seconds(folders[args.small], page, reader)
            large = page_seconds(folders[args.large], page, reader)
            ratio = large / small
            ok = ratio <= MAX_RATIO
            rows.append([page, small, large, ratio, "ok" if ok else "MISS"])
            if not ok:
                failed.append(page)
    print(f"pages: AppTest run time, {args.small} vs {args.large} patients (median s)")
    print_table(
        ["page", f"s @{args.small}", f"s @{args.large}", "ratio", f"≤ {MAX_RATIO:g}×"], rows
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
