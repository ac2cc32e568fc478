"""Image features for the export: echo intensity and SWE stiffness, cached by sha + box.

Computed only for images not seen before (``<data>/cache/features``); ``compute=False``
skips even that, leaving the cells empty.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from core.common import config
from core.common.boxes import Box
from core.common.store import ImageStore
from core.imaging.crop import crop
from core.imaging.images import load_pixels
from core.imaging.swe_decode import PresetRange, stiffness_stats
from core.learning.dataset import ArrayCache, CaseImage, decoded_swe_crop
from core.learning.features import ECHO_PERCENTILES, echo_intensity

Progress = Callable[[int, int], None]
FEATURES_VERSION: Final = 1
"""Part of the feature cache's file name; bump it when a feature's definition changes."""
FEATURE_WORKERS: Final = 4
GSU_FEATURES: Final = ("echo_mean", "echo_sd", *(f"echo_p{p}" for p in ECHO_PERCENTILES))
SWE_FEATURES: Final = ("mean", "median", "q1", "q3", "iqr", "fraction_colored")


class FeatureCache:
    """Echo intensity / stiffness statistics per (image sha, box), in one JSON file.

    One file, read once per export, instead of one file per image: 20,000 small reads would
    cost seconds. Written atomically; two exports racing only lose entries, recomputed later.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else config.data_dir() / "cache" / "features"
        self.path = self.root / f"features-v{FEATURES_VERSION}.json"
        try:
            self.entries: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    @staticmethod
    def key(kind: str, sha: str, box: Box) -> str:
        return f"{kind}:{sha}:{box.x},{box.y},{box.w},{box.h}"

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, values: Mapping[str, Any]) -> None:
        self.entries[key] = dict(values)
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.root)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.entries, handle)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.dirty = False


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _gsu_features(store: ImageStore, path: str, box: Box, what: str) -> dict[str, Any]:
    """Echo intensity of the un-normalized GSU crop (0–255 gray levels)."""
    return echo_intensity(crop(load_pixels(store, path), box, image_label=what))


def _swe_features(
    store: ImageStore,
    crops: ArrayCache,
    sha: str,
    path: str,
    box: Box,
    what: str,
    preset: PresetRange | None,
) -> dict[str, Any]:
    """Stiffness statistics inside the SWE box, decoded as ``learning.dataset`` does (cached)."""
    from core.imaging.crop import ChosenBox

    image = CaseImage(sha, path, ChosenBox(box, "reader"), what, preset)
    decoded = decoded_swe_crop(store, crops, image)
    stats = {k: _finite_or_none(v) for k, v in stiffness_stats(decoded["stiffness"]).items()}
    return {**stats, "units": decoded["units"]}


def _preset_suffix(preset: PresetRange | None) -> str:
    return "" if preset is None else f":{preset.low:g}-{preset.high:g}{preset.units}"


def feature_keys(images: pd.DataFrame) -> pd.Series:
    """``FeatureCache.key`` for each row (columns modality, sha256, x, y, w, h, and ``preset``
    when an SWE scanner preset's range applies), vectorized."""
    kind = np.where(images["modality"] == "GSU", "gsu", "swe")
    coords = [images[c].astype("int64").astype(str) for c in "xywh"]
    box = coords[0] + "," + coords[1] + "," + coords[2] + "," + coords[3]
    keys = pd.Series(kind, index=images.index) + ":" + images["sha256"] + ":" + box
    if "preset" in images.columns:
        keys = keys + images["preset"].map(_preset_suffix)
    return keys


def image_features(
    store: ImageStore,
    images: pd.DataFrame,
    *,
    cache: FeatureCache | None = None,
    compute: bool = True,
    progress: Progress | None = None,
    workers: int = FEATURE_WORKERS,
) -> dict[str, dict[str, Any]]:
    """Features by cache key for ``images`` (columns modality, sha256, path, x, y, w, h, code).

    Missing entries are computed in threads (OpenCV releases the GIL) when ``compute``,
    else left out. A broken image or box gets an entry with ``error`` instead of values.
    """
    cache = cache or FeatureCache()
    keys = feature_keys(images)
    out = {k: v for k in keys.unique() if (v := cache.get(k)) is not None}
    todo = images.assign(key=keys)[~keys.isin(out)].drop_duplicates("key")
    if compute and not todo.empty:
        crops = ArrayCache(None)

        def work(row: Any) -> dict[str, Any]:
            box = Box(int(row.x), int(row.y), int(row.w), int(row.h))
            what = f"{row.modality} image of {row.code}"
            try:
                if row.modality == "GSU":
                    return _gsu_features(store, row.path, box, what)
                preset = getattr(row, "preset", None)
                return _swe_features(store, crops, row.sha256, row.path, box, what, preset)
            except (OSError, ValueError) as exc:
                return {"error": str(exc)}

        rows = list(todo.itertuples(index=False))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, (row, values) in enumerate(
                zip(rows, pool.map(work, rows), strict=True), start=1
            ):
                cache.put(row.key, values)
                out[row.key] = values
                if progress:
                    progress(i, len(rows))
        cache.save()
    return out
