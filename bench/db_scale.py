"""Database queries at 160 and at 10,000 patients: each must stay within 3× (issue 8).

Run: ``python -m bench.db_scale [--large 10000]``. Prints the median time of each query at
both sizes and their ratio, measured in this process, and exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.synthetic_rows import build_database
from bench.timing import median_seconds, print_table
from db.cases import CaseFilter, list_cases
from db.grading import next_ungraded, progress, save_grade
from db.models import Reader

MAX_RATIO = 3.0
EXPORT_SECONDS_AT_10K = 5.0


def measure(folder: Path, n: int) -> dict[str, float]:
    db = build_database(folder, n)
    with db.read() as session:
        human = session.get(Reader, 3)
    image_ids = iter(range(1, 2 * n, 2))

    def save_one() -> None:
        image_id = next(image_ids)
        db.write(lambda s: save_grade(s, image_id, s.merge(human), 2))

    def next_case() -> None:
        with db.read() as s:
            next_ungraded(s, human.id, after_code="DEMO-0005")
            progress(s, human.id)

    def case_page() -> None:
        with db.read() as s:
            list_cases(s, CaseFilter(), limit=50, offset=0)

    def filtered_page() -> None:
        with db.read() as s:
            list_cases(s, CaseFilter(sarcopenia="sarcopenic"), limit=50, offset=0)

    results = {
        "next ungraded + progress": median_seconds(next_case),
        "save grade (+ audit)": median_seconds(save_one),
        "cases list, page 1": median_seconds(case_page),
        "cases list, sarcopenic filter": median_seconds(filtered_page),
    }
    try:
        from core.export import export_patients_csv
    except ImportError:
        export_patients_csv = None
    if export_patients_csv is not None:
        out = folder / "export.csv"
        results["CSV export (no image features)"] = median_seconds(
            lambda: export_patients_csv(db, out, image_features=False), repeat=3
        )
    db.dispose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=160)
    parser.add_argument("--large", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        small = measure(Path(tmp) / "small", args.small)
        large = measure(Path(tmp) / "large", args.large)
    rows, failed = [], []
    scale = args.large / args.small
    for name, base in small.items():
        ratio = large[name] / base
        if name.startswith("CSV export"):
            target = f"≤ {scale:.0f}× (linear), < {EXPORT_SECONDS_AT_10K:g} s"
            ok = ratio <= scale * 1.2 and (args.large < 10_000 or large[name] < 5.0)
        else:
            target = f"≤ {MAX_RATIO:g}×"
            ok = ratio <= MAX_RATIO
        rows.append([name, base * 1000, large[name] * 1000, ratio, target, "ok" if ok else "MISS"])
        if not ok:
            failed.append(name)
    print(f"db_scale: {args.small} vs {args.large} patients (SQLite, median ms)")
    print_table(["query", f"ms @{args.small}", f"ms @{args.large}", "ratio", "target", ""], rows)
    if failed:
        print(f"missed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
