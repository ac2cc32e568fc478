"""Database queries and the labeled export at 160 and at 10,000 patients (issue 8).

Run: ``python -m bench.db_scale [--large 10000]``. Prints the median time of each query and
of the export at both sizes and their ratio, measured in this process, and exits 1 if a
target is missed: each query within 3×, the export linear and under 5 s at 10,000.

The export is the real one, ``core.services.export.write_export`` to a ``.zip`` (what
``python -m core export`` writes; the Comparison page builds the same zip): once without
image features, once with every image's features already in the feature cache (the cost
of every export after the first). Every image row points at one rendered phantom, and
both simulated readers have a crop box on every image, so box columns and the feature
lookup see realistic data.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd
from sqlalchemy import select

from bench.synthetic_rows import build_database, store_one_phantom
from bench.timing import median_seconds, print_table
from core.common.boxes import Box
from core.common.store import ImageStore
from core.services.export import FeatureCache, feature_keys, image_features, write_export
from db.cases import CaseFilter, list_cases
from db.engine import Database
from db.grading import next_ungraded, progress, save_grade
from db.models import Image, Reader

MAX_RATIO = 3.0
EXPORT_SECONDS_AT_10K = 5.0
EXPORT_ROWS = ("export, no image features", "export, cached image features")


@contextlib.contextmanager
def _data_dir(folder: Path) -> Iterator[None]:
    """Point ``config`` (and so the export's feature cache) at ``folder`` for a while."""
    before = os.environ.get("SARCOPENIA_DATA_DIR")
    os.environ["SARCOPENIA_DATA_DIR"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SARCOPENIA_DATA_DIR", None)
        else:
            os.environ["SARCOPENIA_DATA_DIR"] = before


def _warm_feature_cache(db: Database, store: ImageStore, boxes: Mapping[str, Box]) -> Path:
    """Measure the one real GSU and SWE file, then file the values under every image's key,
    as a first export would have; returns the cache file."""
    with db.read() as session:
        images = pd.DataFrame(
            session.execute(select(Image.modality, Image.sha256, Image.path)).all(),
            columns=["modality", "sha256", "path"],
        )
    for c in "xywh":
        images[c] = images["modality"].map(lambda m, c=c: getattr(boxes[m], c))
    images["code"] = "bench"
    cache = FeatureCache()
    first = images.drop_duplicates("modality")
    measured = image_features(store, first, cache=FeatureCache(cache.root / "probe"))
    by_modality = dict(zip(first["modality"], measured.values(), strict=True))
    if any("error" in values for values in by_modality.values()):
        raise RuntimeError(f"the phantom's features could not be measured: {by_modality}")
    for key, modality in zip(feature_keys(images), images["modality"], strict=True):
        cache.put(key, by_modality[modality])
    cache.save()
    return cache.path


def measure(folder: Path, n: int) -> dict[str, float]:
    paths, boxes = store_one_phantom(folder)
    db = build_database(folder, n, image_paths=paths, reader_boxes=boxes)
    store = ImageStore(folder / "images")
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

    def export(features: bool) -> None:
        write_export(folder / "export.zip", db, store, image_features=features)

    results = {
        "next ungraded + progress": median_seconds(next_case),
        "save grade (+ audit)": median_seconds(save_one),
        "cases list, page 1": median_seconds(case_page),
        "cases list, sarcopenic filter": median_seconds(filtered_page),
    }
    with _data_dir(folder):
        results[EXPORT_ROWS[0]] = median_seconds(lambda: export(False), repeat=3)
        cache_file = _warm_feature_cache(db, store, boxes)
        stamp = cache_file.stat().st_mtime_ns
        results[EXPORT_ROWS[1]] = median_seconds(lambda: export(True), repeat=3)
        if cache_file.stat().st_mtime_ns != stamp:
            raise RuntimeError("the export computed image features: the cache was not warm")
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
        if name in EXPORT_ROWS:
            target = f"≤ {scale:.0f}× (linear), < {EXPORT_SECONDS_AT_10K:g} s @10,000"
            ok = ratio <= scale * 1.2 and (
                args.large < 10_000 or large[name] < EXPORT_SECONDS_AT_10K
            )
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
