"""Peak memory of an import: a 300-patient bundle, and a bundle of 40-megapixel images.

Run: ``python -m bench.import_memory [--patients 300] [--large 8]``. Each import runs in a
fresh child process (``python -m core import``'s way: the zip is read from disk), whose
peak resident memory (``VmHWM``) is reported next to the baseline: a child that imports
the same modules and opens the same database without importing anything. Two sizes of
each kind show whether memory grows with the bundle: a third of the patients, and a
quarter of the large images. The upload path (the zip held in memory as bytes, as the
Cases page gets it) is reported for the 300-patient bundle too.

The screens are imported as known clean (``--known-clean``), as in ``bench.import_scale``:
the burned-in text search runs Tesseract in its own process, whose memory is not the
import's, at about 2 s per screen. ``--pixel-ocr`` imports them with the search on.

Targets (issue 13, item 7): the 300-patient import peaks under 400 MB, and the larger
bundle of each kind peaks within 1.2× of the smaller one. Exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from bench.import_scale import manifest
from bench.timing import print_table

LIMIT_MB = 400
MAX_GROWTH = 1.2
LARGE_MP = 40
"""Megapixels of each large image: 6324 × 6324, just under ``decoded.MAX_PIXELS``."""
ROOT = Path(__file__).resolve().parents[1]


def phantom_pngs(n: int) -> list[tuple[bytes, bytes]]:
    """(GSU, SWE) PNG pairs of the demo's 640×480 phantom screens, unique per patient.

    Ten rendered cases are reused with each patient's number burned into the screen, so
    the files have the size and content of real screenshots at a fraction of the cost.
    """
    from core.cases.cohort import synthetic_cohort
    from core.cases.phantom import render_case

    bases = [
        render_case(p.seed, p.true_grade, p.quality, p.swe_median_kpa, scan_date=p.us_date)
        for p in synthetic_cohort(7, 10)
    ]
    pairs = []
    for i in range(n):
        case = bases[i % len(bases)]
        pair = []
        for frame in (case.gsu, case.swe):
            marked = cv2.putText(
                frame.copy(), f"ID {i:05d}", (8, 470), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255
            )
            ok, buffer = cv2.imencode(".png", marked)
            assert ok
            pair.append(buffer.tobytes())
        pairs.append((pair[0], pair[1]))
    return pairs


def large_png(index: int, megapixels: float = LARGE_MP) -> bytes:
    """A square RGB gradient (it compresses to little, like the issue's 0.5 MB zip of four
    40-MP images)."""
    side = int((megapixels * 1e6) ** 0.5)
    row = np.linspace(0, 255, side, dtype=np.uint8)
    pixels = np.broadcast_to(row[None, :, None], (side, side, 3)).copy()
    pixels[:8, :8] = index % 256
    ok, buffer = cv2.imencode(".png", pixels)
    assert ok
    return buffer.tobytes()


def write_zip(path: Path, images: list[tuple[bytes, ...]]) -> Path:
    """A bundle with one manifest row per entry of ``images``: (GSU,) or (GSU, SWE)."""
    swe = len(images[0]) > 1
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("manifest.csv", manifest(len(images), swe=swe))
        for i, files in enumerate(images):
            zf.writestr(f"images/{i:05d}.png", files[0])
            if swe:
                zf.writestr(f"images/{i:05d}-swe.png", files[1])
    return path


def child(zip_path: str, data_dir: str, mode: str, ocr: str) -> None:
    """Run one import (or none, for the baseline) and print its peak RSS as JSON."""
    from core.cases.archive import ZipBundle
    from core.cases.importer import Cleaning, import_bundle
    from core.common.store import ImageStore
    from db.engine import Database
    from db.migrate import upgrade

    url = f"sqlite:///{Path(data_dir) / 'sarcopenia.db'}"
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    upgrade(url)
    db = Database(url)
    imported = 0
    if mode != "baseline":
        path = Path(zip_path)
        bundle = ZipBundle(path.read_bytes() if mode == "upload" else path)
        report = import_bundle(
            bundle,
            db,
            ImageStore(Path(data_dir) / "images"),
            cleaning=Cleaning(pixel_ocr=ocr == "ocr"),
        )
        if not report.committed:
            raise SystemExit(f"import failed: {[str(p) for p in report.problems[:3]]}")
        imported = len(report.imported)
    print(json.dumps({"peak_mb": peak_rss_mb(), "imported": imported}))


def peak_rss_mb() -> float:
    """This process's peak RSS: ``VmHWM``, which, unlike ``ru_maxrss``, does not carry over
    the parent's size from before ``exec``."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(zip_path: Path, data_dir: Path, mode: str = "disk", ocr: bool = False) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.import_memory",
            "--child",
            str(zip_path),
            str(data_dir),
            mode,
            "ocr" if ocr else "clean",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--large", type=int, default=8, help="number of large images")
    parser.add_argument("--large-mp", type=float, default=LARGE_MP, help="their megapixels")
    parser.add_argument(
        "--pixel-ocr", action="store_true", help="search every image for burned-in text too"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    few_patients, few_large = max(1, args.patients // 3), max(1, args.large // 4)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pairs = phantom_pngs(args.patients)
        bundles = {
            f"{few_patients} patients": write_zip(tmp_path / "few.zip", pairs[:few_patients]),
            f"{args.patients} patients": write_zip(tmp_path / "many.zip", pairs),
        }
        del pairs
        large = [(large_png(i, args.large_mp),) for i in range(args.large)]
        mp = f"{args.large_mp:g} MP"
        bundles[f"{few_large} × {mp}"] = write_zip(tmp_path / "few-large.zip", large[:few_large])
        bundles[f"{args.large} × {mp}"] = write_zip(tmp_path / "large.zip", large)
        del large
        baseline = measure(tmp_path / "none.zip", tmp_path / "data-baseline", "baseline")
        results = {
            name: measure(path, tmp_path / f"data-{index}", ocr=args.pixel_ocr)
            for index, (name, path) in enumerate(bundles.items())
        }
        many = bundles[f"{args.patients} patients"]
        upload = measure(many, tmp_path / "data-upload", "upload", args.pixel_ocr)
        sizes = {name: path.stat().st_size / 2**20 for name, path in bundles.items()}
    base = baseline["peak_mb"]
    search = "burned-in text searched" if args.pixel_ocr else "known clean"
    print(
        f"import_memory: peak RSS of one import in a child process ({search}); "
        f"baseline {base:.0f} MB"
    )
    rows = [
        [
            name,
            f"{sizes[name]:.1f}",
            r["imported"],
            f"{r['peak_mb']:.0f}",
            f"{r['peak_mb'] / base:.2f}×",
        ]
        for name, r in results.items()
    ]
    rows.append(
        [
            f"{args.patients} patients, zip in memory (upload)",
            f"{sizes[f'{args.patients} patients']:.1f}",
            upload["imported"],
            f"{upload['peak_mb']:.0f}",
            f"{upload['peak_mb'] / base:.2f}×",
        ]
    )
    print_table(["bundle", "zip MB", "patients", "peak MB", "vs baseline"], rows)
    peaks = [r["peak_mb"] for r in results.values()]
    checks = [
        (f"{args.patients} patients < {LIMIT_MB} MB", peaks[1] < LIMIT_MB),
        (
            f"patients {few_patients} → {args.patients} ≤ {MAX_GROWTH}×",
            peaks[1] / peaks[0] <= MAX_GROWTH,
        ),
        (
            f"{mp} images {few_large} → {args.large} ≤ {MAX_GROWTH}×",
            peaks[3] / peaks[2] <= MAX_GROWTH,
        ),
    ]
    for name, ok in checks:
        print(f"{name}: {'ok' if ok else 'MISS'}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
