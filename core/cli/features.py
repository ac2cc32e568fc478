"""``python -m core features``: the radiomics-style baseline from the command line."""

from __future__ import annotations

import argparse

import numpy as np

from core.common.errors import UserError
from core.common.progress import progress_bar
from core.common.store import ImageStore
from core.learning.baseline import KINDS, fit_fold, task_features
from core.learning.dataset import (
    TASKS,
    DatasetSettings,
)
from core.services.database import open_database


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
    from core.common import config
    from core.stats.delong import delong_auc_ci
    from core.stats.metrics import format_auc_ci

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
                result = fit_fold(X, y, names, ids, settings, kind, fold)
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
        raise UserError(str(exc)) from None
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
