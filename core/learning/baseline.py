"""The radiomics-style baseline: hand-crafted features per patient, a classical classifier.

Yi et al. (Sci Rep 2022) mention that an MLP on radiomic features did worse than their
DCNNs. This module runs that comparison on the app's own data: the same patients, the same
boxes and the same patient-level split as the DCNNs (``core.dataset``), with echo
intensity and GLCM texture of the GSU crop and shear-wave stiffness statistics of the SWE
colour box (``core.features``), fitted on train + validation and scored on the test set.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.crop import crop
from core.dataset import (
    TASKS,
    ArrayCache,
    Case,
    DatasetSettings,
    collect_cases,
    decoded_swe_crop,
    make_split,
)
from core.features import BaselineResult, feature_vector, fit_baseline
from core.images import load_pixels
from core.store import ImageStore
from core.swe_decode import stiffness_stats
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

    The patients and boxes are exactly those ``core.dataset.load_task_data`` uses. GSU tasks
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
    return _fit_fold(X, y, names, ids, settings, kind, fold)


def _fit_fold(
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


def _split_sizes(text: str) -> tuple[int, int, int]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 3 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected three positive integers train,val,test such as 104,17,20; got {text!r}"
        )
    return sizes  # type: ignore[return-value]


def cmd_features(args: argparse.Namespace) -> int:
    """Print the baseline's test AUC (DeLong 95% CI) per classifier, and per fold if k-fold."""
    from core import config
    from core.cli import CommandError, open_database, progress_bar
    from core.delong import delong_auc_ci
    from core.metrics import format_auc_ci

    kinds = KINDS if args.kind == "both" else (args.kind,)
    try:
        settings = DatasetSettings(
            task=args.task,
            seed=args.seed,
            sizes=args.split_sizes,
            k_folds=args.folds,
            test_positives=args.test_positives,
        )
        X, y, names, ids = task_features(
            open_database(),
            ImageStore(config.images_dir()),
            settings,
            progress=progress_bar("Computing features"),
        )
        print(f"{args.task}: {len(y)} patients ({int(y.sum())} positive), {len(names)} features")
        n_folds = max(1, settings.k_folds)
        for kind in kinds:
            aucs = []
            for fold in range(n_folds):
                result = _fit_fold(X, y, names, ids, settings, kind, fold)
                aucs.append(result.auc_test)
                where = f" fold {fold + 1}/{n_folds}" if n_folds > 1 else ""
                ci = format_auc_ci(delong_auc_ci(result.y_test, result.p_test))
                print(
                    f"{result.model_name}{where}: test AUC {ci} "
                    f"(n = {len(result.y_test)}, {int(result.y_test.sum())} positive)"
                )
            if n_folds > 1:
                print(
                    f"{result.model_name}: mean test AUC {np.mean(aucs):.2f} over {n_folds} folds"
                )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return 0


def add_features_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``features``: the radiomics-style baseline on the DCNNs' split."""
    parser = sub.add_parser(
        "features",
        help="radiomics-style baseline (echo intensity, GLCM, stiffness) with its test AUC",
        description="Fit logistic regression and/or a small MLP on hand-crafted features of "
        "each patient's crops, on the same patient-level split the DCNNs use, and print the "
        "test AUC with a DeLong 95%% CI.",
    )
    parser.add_argument("--task", choices=sorted(TASKS), default="sarcopenia_gsu")
    parser.add_argument("--kind", choices=(*KINDS, "both"), default="both")
    parser.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    parser.add_argument(
        "--split-sizes",
        type=_split_sizes,
        default=(104, 17, 20),
        metavar="TRAIN,VAL,TEST",
        help="patients per subset (default 104,17,20, the study's text)",
    )
    parser.add_argument(
        "--folds", type=int, default=0, help="k-fold cross-validation with k folds (default 0)"
    )
    parser.add_argument(
        "--test-positives",
        type=int,
        default=None,
        help="positive patients in the test set (the study's: 9 of 20); default: stratified",
    )
    parser.set_defaults(handler=cmd_features)
