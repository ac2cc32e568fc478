"""Evaluation and what a run stores: per-subset metrics, prediction rows, fold summaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.learning.dataset import TaskData
from core.learning.train.folds import FoldResult
from core.learning.train.progress import json_safe
from core.learning.train.settings import TrainSettings
from core.stats.delong import StatisticsInputError
from core.stats.metrics import diagnostic_metrics
from db.models import Prediction


def subset_metrics(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """Table 1's metrics for one subset, flat and JSON-safe; AUC None if a class is missing."""
    y = np.asarray(y).astype(int)
    out: dict[str, Any] = {"n": len(y), "positives": int(y.sum()), "threshold": threshold}
    try:
        m = diagnostic_metrics(y, prob, threshold)
    except StatisticsInputError as exc:
        return {**out, "auc": None, "note": str(exc)}
    out.update(
        auc=m.auc.auc,
        auc_lower=m.auc.lower,
        auc_upper=m.auc.upper,
        tp=m.tp,
        fp=m.fp,
        tn=m.tn,
        fn=m.fn,
        lr_positive=m.lr_positive,
        lr_negative=m.lr_negative,
    )
    for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        p = getattr(m, name)
        out[name] = p.value
        out[f"{name}_ci"] = [p.lower, p.upper]
    return json_safe(out)


def cv_summary(fold_aucs: Sequence[float | None]) -> dict[str, Any]:
    aucs = np.array([a for a in fold_aucs if a is not None], dtype=float)
    return json_safe(
        {
            "test_auc_folds": list(fold_aucs),
            "test_auc_mean": float(aucs.mean()) if aucs.size else None,
            "test_auc_sd": float(aucs.std(ddof=1)) if aucs.size > 1 else None,
        }
    )


def count_box_sources(task_data: TaskData) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sources in task_data.box_sources:
        for name, source in sources.items():
            key = f"{name}:{source}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def collect_results(
    settings: TrainSettings, task_data: TaskData, results: Sequence[FoldResult], run_id: int
) -> tuple[dict[str, Any], list[Prediction]]:
    """Prediction rows for every fold's val and test patients, and metrics.

    With k folds, ``test`` is the pooled out-of-fold test predictions (each patient is
    tested once) and ``val`` pools the folds' validation predictions.
    """
    predictions: list[Prediction] = []
    pooled: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        "val": ([], []),
        "test": ([], []),
    }
    for result in results:
        for subset in ("val", "test"):
            rows = result.indices[subset]
            probs = result.probs[subset]
            pooled[subset][0].append(task_data.y[rows])
            pooled[subset][1].append(probs)
            for row, p in zip(rows, probs, strict=True):
                predictions.append(
                    Prediction(
                        run_id=run_id,
                        patient_id=int(task_data.patient_ids[row]),
                        subset=subset,
                        fold=result.fold,
                        probability=float(p),
                        threshold=settings.threshold,
                        predicted_label=int(p >= settings.threshold),
                    )
                )
    metrics: dict[str, Any] = {"threshold": settings.threshold}
    for subset, (ys, ps) in pooled.items():
        metrics[subset] = subset_metrics(np.concatenate(ys), np.concatenate(ps), settings.threshold)
    return metrics, predictions
