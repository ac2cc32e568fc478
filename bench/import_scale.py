"""Import time per 1,000 patients, folder against zip, at two sizes (issue 13, item 8).

Run: ``python -m bench.import_scale [--small 1000] [--patients 4000]`` (``--patients 10000``
for the issue's size). Every patient has one tiny 32×32 PNG, so decoding costs little and
what grows is finding the files: a folder that is relisted per lookup, or a zip member list
rebuilt per lookup, shows as time per 1,000 patients rising with the count. Each import
goes into a fresh SQLite data folder; the smaller size, the more sensitive to a busy
machine, counts the better of two runs. Targets: the time per 1,000 patients at the larger
size within 1.5× of the smaller (linear), and folder and zip within 1.5× of each other.
The images carry no text, so they are imported as a known-clean import is (``--known-clean``:
no OCR of the pixels, which would add about a second per image and hide the lookups);
``--pixel-ocr`` imports them with the OCR on. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

from bench.timing import print_table
from core.cases.archive import open_bundle
from core.cases.importer import Cleaning, import_bundle
from core.cases.manifest import COLUMNS
from core.common.store import ImageStore
from db.engine import Database
from db.migrate import upgrade

MAX_RATIO = 1.5
SIDE = 32
"""The smallest image the importer accepts (``core.imaging.decoded.MIN_SIDE``)."""


def tiny_png(index: int) -> bytes:
    """A 32×32 gray PNG unique to ``index`` (its bytes spell the number)."""
    pixels = np.zeros((SIDE, SIDE), np.uint8)
    pixels.flat[:8] = np.frombuffer(index.to_bytes(8, "little"), np.uint8)
    ok, buffer = cv2.imencode(".png", pixels)
    assert ok
    return buffer.tobytes()


def manifest(n: int, swe: bool = False) -> str:
    """``n`` valid rows naming ``images/<i>.png`` (and ``images/<i>-swe.png`` with ``swe``)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS))
    writer.writeheader()
    for i in range(n):
        writer.writerow(
            {
                "patient_code": f"SCALE-{i:05d}",
                "sex": "MF"[i % 2],
                "age": 60 + i % 30,
                "height_cm": 150 + i % 40,
                "weight_kg": 50 + i % 40,
                "gsu_file": f"images/{i:05d}.png",
                "swe_file": f"images/{i:05d}-swe.png" if swe else "",
                "us_date": "2021-05-04",
                "ct_date": "",
                "l3_sma_cm2": "",
                "exclusion_reason": "",
            }
        )
    return out.getvalue()


def write_bundles(folder: Path, n: int) -> tuple[Path, Path]:
    """The same bundle as a folder and as a zip."""
    root = folder / f"folder-{n}"
    (root / "images").mkdir(parents=True)
    (root / "manifest.csv").write_text(manifest(n))
    archive = folder / f"bundle-{n}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.csv", manifest(n))
        for i in range(n):
            data = tiny_png(i)
            (root / "images" / f"{i:05d}.png").write_bytes(data)
            zf.writestr(f"images/{i:05d}.png", data)
    return root, archive


def timed_import(bundle_path: Path, data_dir: Path, n: int, pixel_ocr: bool = False) -> float:
    """Seconds to import the bundle into a fresh data folder (opening it included)."""
    data_dir.mkdir(parents=True)
    url = f"sqlite:///{data_dir / 'sarcopenia.db'}"
    upgrade(url)
    db = Database(url)
    start = time.perf_counter()
    with open_bundle(bundle_path) as bundle:
        report = import_bundle(
            bundle, db, ImageStore(data_dir / "images"), cleaning=Cleaning(pixel_ocr=pixel_ocr)
        )
    seconds = time.perf_counter() - start
    db.dispose()
    if len(report.imported) != n:
        raise RuntimeError(f"{bundle_path.name}: {report.summary()}: {report.problems[:3]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=1000, help="patients (default 1000)")
    parser.add_argument("--patients", type=int, default=4000, help="larger size (default 4000)")
    parser.add_argument(
        "--pixel-ocr", action="store_true", help="search every image for burned-in text too"
    )
    args = parser.parse_args(argv)
    per_k: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, repeat in ((args.small, 2), (args.patients, 1)):
            folder, archive = write_bundles(Path(tmp), n)
            os.sync()  # the import's own sync must not pay for writing the bundles
            for attempt in range(repeat):
                for kind, path in (("folder", folder), ("zip", archive)):
                    data_dir = Path(tmp) / f"data-{kind}-{n}-{attempt}"
                    seconds = timed_import(path, data_dir, n, args.pixel_ocr) / n * 1000
                    per_k[kind, n] = min(seconds, per_k.get((kind, n), seconds))
    print(f"import_scale: seconds per 1,000 patients, {args.small} vs {args.patients} patients")
    rows, failed = [], []
    for kind in ("folder", "zip"):
        growth = per_k[kind, args.patients] / per_k[kind, args.small]
        ok = growth <= MAX_RATIO
        failed += [] if ok else [f"{kind} growth"]
        rows.append(
            [
                kind,
                per_k[kind, args.small],
                per_k[kind, args.patients],
                f"{growth:.2f}×",
                f"≤ {MAX_RATIO}×",
                "ok" if ok else "MISS",
            ]
        )
    for n in (args.small, args.patients):
        ratio = per_k["folder", n] / per_k["zip", n]
        ok = 1 / MAX_RATIO <= ratio <= MAX_RATIO
        failed += [] if ok else [f"folder/zip at {n}"]
        rows.append(
            [
                f"folder / zip at {n}",
                "",
                "",
                f"{ratio:.2f}×",
                f"within {MAX_RATIO}×",
                "ok" if ok else "MISS",
            ]
        )
    print_table(
        ["", f"s/1k at {args.small}", f"s/1k at {args.patients}", "ratio", "target", ""], rows
    )
    if failed:
        print(f"missed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
