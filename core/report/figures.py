"""Static figures of the study report (matplotlib): flow diagram, ROC, calibration, decisions.

The app's pages draw with plotly; a report for a journal needs PNG and SVG files that render
the same without a browser, so these are matplotlib figures on the Agg backend.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from sklearn.metrics import roc_curve

from core.report.snapshot import ReportSnapshot
from core.stats.metrics import calibration_curve_points

_BOX = dict(boxstyle="round,pad=0.02", linewidth=1.0, edgecolor="#333333", facecolor="#f3f6fa")


def _box(ax, x: float, y: float, w: float, h: float, text: str) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, **_BOX))
    ax.text(x, y, text, ha="center", va="center", fontsize=8, wrap=True)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color="#333333"))


def flow_diagram(flow: dict) -> Figure:
    """STARD-style participant flow, drawn from the counts (never typed in)."""
    runs = flow["runs"]
    span = 10 * max(2, len(runs))
    fig, ax = plt.subplots(figsize=(0.45 * span, 7.5))
    ax.set_xlim(0, span)
    ax.set_ylim(0, 10)
    ax.axis("off")
    mid = span / 2
    _box(ax, mid, 9.3, 6.0, 0.8, f"Patients with RF ultrasound\nn = {flow['enrolled']}")
    reasons = "\n".join(f"{r}: {n}" for r, n in flow["excluded_by_reason"].items())
    _box(ax, mid + 5.5, 8.0, 7.5, 1.3, f"Excluded: n = {flow['excluded']}\n{reasons}")
    _arrow(ax, (mid, 8.9), (mid, 7.2))
    _arrow(ax, (mid, 8.0), (mid + 1.75, 8.0))
    _box(ax, mid, 6.8, 6.0, 0.8, f"Eligible for analysis\nn = {flow['eligible']}")
    for i, run in enumerate(runs):
        x = mid + (i - (len(runs) - 1) / 2) * 10
        _arrow(ax, (mid, 6.4), (x, 5.5))
        _box(
            ax,
            x,
            5.0,
            8.5,
            0.9,
            f"{run['label']}\ntraining {run['train']} · validation {run['val']} · "
            f"test {run['test']}",
        )
        _arrow(ax, (x, 4.55), (x, 3.7))
        _box(ax, x, 3.2, 8.5, 0.9, f"Index test on {run['test_scored']} test patients")
        for dx, sign, with_, without in ((-2.2, "+", "tp", "fp"), (2.2, "−", "fn", "tn")):
            _arrow(ax, (x + dx, 2.75), (x + dx, 1.95))
            _box(
                ax,
                x + dx,
                1.4,
                4.1,
                1.0,
                f"index {sign}: {run[with_] + run[without]}\n"
                f"CT sarcopenia {run[with_]} · none {run[without]}",
            )
    fig.tight_layout()
    return fig


def roc_plot(snapshot: ReportSnapshot) -> Figure:
    """Test-set ROC curve of each model."""
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    for run in snapshot.runs:
        if len(set(run.test.y.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(run.test.y, run.test.prob)
        ax.plot(fpr, tpr, label=run.label)
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray")
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC curves (test set)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def calibration_plot(snapshot: ReportSnapshot, n_bins: int = 5) -> Figure:
    """Observed against predicted risk per bin, one line per model, with the ideal diagonal."""
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    for run in snapshot.runs:
        observed, predicted = calibration_curve_points(run.test.y, run.test.prob, n_bins)
        ax.plot(predicted, observed, marker="o", label=run.label)
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray", label="ideal")
    ax.set(xlabel="predicted probability", ylabel="observed fraction", title="Calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def decision_curve_plot(curves: pd.DataFrame) -> Figure:
    """Net benefit against threshold per model, beside treat-all and treat-none."""
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    first = None
    for model, part in curves.groupby("model", sort=False):
        ax.plot(part["threshold"], part["net_benefit_model"], label=model)
        first = part if first is None else first
    if first is not None:
        ax.plot(first["threshold"], first["net_benefit_treat_all"], "--", label="treat all")
        ax.plot(first["threshold"], first["net_benefit_treat_none"], ":", label="treat none")
        top = float(np.nanmax(first["net_benefit_treat_all"].to_numpy()))
        ax.set_ylim(-0.05, max(0.05, top) * 1.2)
    ax.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """PNG or SVG bytes of ``fig``, without a creation date, then the figure is closed."""
    buf = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {}
    fig.savefig(buf, format=fmt, dpi=150, metadata=metadata)
    plt.close(fig)
    return buf.getvalue()
