"""ROC and calibration points, and the Plotly figures: ROC curves, calibration, DeLong p-values."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from sklearn.metrics import roc_curve

from core.report.table1.scores import RunScores, run_scores
from core.stats.delong import StatisticsInputError
from core.stats.metrics import calibration_curve_points, diagnostic_metrics, format_auc_ci
from db.engine import Database


def roc_frame(scores: RunScores) -> pd.DataFrame:
    """Every ROC point (fpr, tpr, threshold), for plotting."""
    fpr, tpr, thresholds = roc_curve(scores.y, scores.prob, pos_label=1, drop_intermediate=False)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


def roc_points(db: Database, run_id: int, subset: str = "test") -> pd.DataFrame:
    return roc_frame(run_scores(db, run_id, subset))


def calibration_frame(scores: RunScores, n_bins: int = 5) -> pd.DataFrame:
    """Mean predicted probability and observed fraction positive per non-empty bin."""
    frac, mean = calibration_curve_points(scores.y, scores.prob, n_bins=n_bins)
    return pd.DataFrame({"mean_predicted": mean, "fraction_positive": frac})


def calibration_points(
    db: Database, run_id: int, subset: str = "test", n_bins: int = 5
) -> pd.DataFrame:
    return calibration_frame(run_scores(db, run_id, subset), n_bins)


def roc_figure(columns: Sequence[RunScores], title: str = "ROC curves (test set)") -> go.Figure:
    """Overlaid ROC curves, one per model, with the AUC and its DeLong CI in the legend."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "gray"}
        )
    )
    for scores in columns:
        try:
            auc = format_auc_ci(diagnostic_metrics(scores.y, scores.prob).auc)
        except StatisticsInputError:
            continue
        points = roc_frame(scores)
        fig.add_trace(
            go.Scatter(
                x=points["fpr"],
                y=points["tpr"],
                mode="lines",
                line_shape="hv",
                name=f"{scores.label}: AUC {auc}",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="1 − specificity",
        yaxis_title="sensitivity",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1.02],
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def calibration_figure(
    columns: Sequence[RunScores], n_bins: int = 5, title: str = "Calibration (test set)"
) -> go.Figure:
    """Observed fraction positive against mean predicted probability per bin."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot", "color": "gray"}
        )
    )
    for scores in columns:
        try:
            points = calibration_frame(scores, n_bins)
        except StatisticsInputError:
            continue
        fig.add_trace(
            go.Scatter(
                x=points["mean_predicted"],
                y=points["fraction_positive"],
                mode="lines+markers",
                name=scores.label,
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="mean predicted probability",
        yaxis_title="observed fraction positive",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1.02],
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def delong_figure(matrix: pd.DataFrame) -> go.Figure:
    """The p-value matrix as an annotated heat map (darker = smaller p)."""
    text = matrix.map(lambda p: "" if pd.isna(p) else f"{p:.3f}")
    fig = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(),
            x=list(matrix.columns),
            y=list(matrix.index),
            text=text.to_numpy(),
            texttemplate="%{text}",
            colorscale="Blues_r",
            zmin=0,
            zmax=1,
            colorbar={"title": "p"},
        )
    )
    fig.update_layout(title="Paired DeLong test p-values (AUC differences)")
    return fig
