"""The radiomics-style baseline: hand-crafted features per patient, a classical classifier.

Yi et al. (Sci Rep 2022) mention that an MLP on radiomic features did worse than their
DCNNs. This module runs that comparison on the app's own data: the same patients, the same
boxes and the same patient-level split as the DCNNs (``core.learning.dataset``), with echo
intensity and GLCM texture of the GSU crop and shear-wave stiffness statistics of the SWE
colour box (``core.learning.features``), fitted on train + validation and scored on the test set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.common.store import ImageStore
from core.imaging.crop import crop
from core.imaging.images import load_pixels
from core.imaging.swe_decode import stiffness_stats
from core.learning.dataset import (
    ArrayCache,
    Case,
    DatasetSettings,
    collect_cases,
    decoded_swe_crop,
    make_split,
)
from core.learning.features import BaselineResult, feature_vector, fit_baseline
from db.engine import Database

Progress = Callable[[int, int], None]
KINDS = ("logistic", "mlp")


class FeatureError(ValueError):
    """A patient's features cannot be computed (e.g. no decoded colour in the SWE box)."""


@dataclass(frozen=True)
class _Labels:
    patient_ids: np.ndarray
    y: np.ndarray


def _gsu_features(store: ImageStore, cache: ArrayCache, case: Case) -> dict[str, float]:
    """Echo intensity and GLCM on the un-normalized GSU crop at its native resolution.

    Native resolution, because resampling changes texture; un-normalized, because
    normalization removes the absolute echo intensity the feature measures.
    """
    image = case.images["gsu"]

    def compute() -> dict[str, np.ndarray]:
        roi = crop(load_pixels(store, image.path), image.chosen.box, image_label=image.label)
        feats = feature_vector(roi, None)
        return {"names": np.array(list(feats)), "values": np.array(list(feats.values()))}

    parts = {"kind": "gsu_features", "sha": image.sha256, "box": image.chosen.box.as_tuple()}
    stored = cache.get_or_compute(parts, compute)
    return dict(zip(stored["names"].tolist(), stored["values"].tolist(), strict=True))


def _swe_features(store: ImageStore, cache: ArrayCache, case: Case) -> tuple[dict[str, float], str]:
    """Stiffness statistics decoded inside the SWE box, prefixed ``swe_``, and their units."""
    decoded = decoded_swe_crop(store, cache, case.images["swe"])
    stats = stiffness_stats(decoded["stiffness"])
    if not all(math.isfinite(v) for v in stats.values()):
        raise FeatureError(
            f"No stiffness could be decoded inside the SWE box of {case.code} "
            f"(box {case.images['swe'].chosen.box.as_tuple()}); redraw the box over the "
            "colour overlay."
        )
    return {f"swe_{k}": v for k, v in stats.items()}, decoded["units"]


def task_features(
    db: Database,
    store: ImageStore,
    settings: DatasetSettings,
    *,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(X, y, feature names, patient ids) for the task's patients, in patient-id order.

    The patients and boxes are exactly those ``dataset.load_task_data`` uses. GSU tasks
    get echo intensity + GLCM of the GSU crop, ``sarcopenia_swe`` the stiffness statistics
    of the SWE box, fusion both. Stiffness must decode in the same units for every patient.
    """
    spec = settings.spec
    cache = ArrayCache(cache_dir)
    cases, _ = collect_cases(db, store, settings, cache=cache)
    rows: list[dict[str, float]] = []
    units: dict[str, str] = {}
    for i, case in enumerate(cases, start=1):
        row: dict[str, float] = {}
        if "gsu" in spec.inputs:
            row.update(_gsu_features(store, cache, case))
        if "swe" in spec.inputs:
            swe, units[case.code] = _swe_features(store, cache, case)
            row.update(swe)
        rows.append(row)
        if progress:
            progress(i, len(cases))
    if len(set(units.values())) > 1:
        raise FeatureError(
            "Stiffness decoded in different units across patients "
            f"({sorted(set(units.values()))}); the colour scale labels of some SWE images "
            "could not be read. Fix or exclude those images."
        )
    names = list(rows[0])
    X = np.array([[row[n] for n in names] for row in rows], dtype=np.float64)
    y = np.array([c.label for c in cases], dtype=np.int64)
    return X, y, names, np.array([c.patient_id for c in cases], dtype=np.int64)


def run_baseline(
    db: Database,
    store: ImageStore,
    settings: DatasetSettings,
    kind: Literal["logistic", "mlp"] = "logistic",
    *,
    fold: int = 0,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
) -> BaselineResult:
    """Fit on train + validation of ``make_split`` (fold ``fold``) and score the test AUC.

    The validation patients join the training set because these models need no early
    stopping on it (the MLP holds out its own 10%); the test patients are the DCNNs' test
    patients, so the AUCs can be compared directly (e.g. by DeLong).
    """
    X, y, names, ids = task_features(db, store, settings, progress=progress, cache_dir=cache_dir)
    return fit_fold(X, y, names, ids, settings, kind, fold)


def fit_fold(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    ids: np.ndarray,
    settings: DatasetSettings,
    kind: Literal["logistic", "mlp"],
    fold: int,
) -> BaselineResult:
    folds = make_split(_Labels(ids, y), settings)
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold must be between 0 and {len(folds) - 1}; got {fold}.")
    subset = np.array([folds[fold].get(int(pid), "") for pid in ids])
    fit = np.isin(subset, ("train", "val"))
    test = subset == "test"
    return fit_baseline(
        X[fit], y[fit], X[test], y[test], kind=kind, seed=settings.seed, feature_names=names
    )
