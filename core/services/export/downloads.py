"""The files a user downloads: the labeled zip or CSV pair, figures as HTML/PNG, tables as CSV."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from core.common.csv_safety import csv_text
from core.common.store import ImageStore
from core.services.export.dictionary import dictionary_csv
from core.services.export.features import Progress
from core.services.export.labeled import labeled_frame
from db.engine import Database

LABELED_NAME: Final = "labeled.csv"
DICTIONARY_NAME: Final = "data_dictionary.csv"


class FigureExportError(RuntimeError):
    """PNG export failed (kaleido needs a Chromium); HTML export still works."""


def labeled_csv(frame: pd.DataFrame) -> bytes:
    """The labeled CSV; free-text cells a spreadsheet would run as formulas are neutralized
    (``core.common.csv_safety``), and ``import_metadata`` undoes that."""
    return csv_text(frame).encode("utf-8")


def export_zip(
    db: Database,
    store: ImageStore | None = None,
    run_ids: Sequence[int] = (),
    *,
    image_features: bool = True,
    compute_features: bool = True,
    progress: Progress | None = None,
) -> bytes:
    """A zip of ``labeled.csv`` and ``data_dictionary.csv`` (and a short README)."""
    frame = labeled_frame(
        db,
        store,
        run_ids,
        image_features=image_features,
        compute_features=compute_features,
        progress=progress,
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(LABELED_NAME, labeled_csv(frame))
        archive.writestr(DICTIONARY_NAME, dictionary_csv(frame.columns))
        archive.writestr("README.txt", _readme(len(frame), run_ids))
    return buffer.getvalue()


def _readme(n: int, run_ids: Sequence[int]) -> str:
    runs = ", ".join(str(r) for r in run_ids) or "none"
    return (
        f"Labeled export, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {n} patients, "
        f"runs {runs}.\n"
        f"{LABELED_NAME}: one row per patient. {DICTIONARY_NAME}: what each column means.\n"
        "Derived columns (smi, ct_eligible, sarcopenia, echogenicity) follow Yi et al., "
        "Sci Rep 2022: KNHANES cutoffs, CT within 30 days, grades 0-1 low and 2-3 high.\n"
    )


def figure_html(fig: go.Figure) -> bytes:
    """A self-contained HTML file (plotly.js embedded, so it opens offline)."""
    return pio.to_html(fig, include_plotlyjs=True, full_html=True).encode("utf-8")


def figure_png(fig: go.Figure, *, width: int = 900, height: int = 650, scale: float = 2.0) -> bytes:
    """PNG through kaleido, which drives a headless Chromium (``/usr/bin/chromium`` here)."""
    try:
        return pio.to_image(fig, format="png", width=width, height=height, scale=scale)
    except Exception as exc:
        raise FigureExportError(
            f"PNG export failed ({type(exc).__name__}: {exc}). Kaleido needs Chrome or "
            "Chromium; install one, or download the plot as HTML."
        ) from exc


def table_csv(table: pd.DataFrame) -> bytes:
    """A table (e.g. Table 1) as CSV with its row labels; notes appended as comment lines."""
    text = csv_text(table, index=True)
    notes = table.attrs.get("notes") or []
    source = table.attrs.get("source")
    extra = [f"# {line}" for line in ([source] if source else []) + list(notes)]
    return (text + "".join(f"{line}\n" for line in extra)).encode("utf-8")


def write_export(
    out: Path,
    db: Database,
    store: ImageStore,
    run_ids: Sequence[int] = (),
    *,
    image_features: bool = True,
    progress: Progress | None = None,
) -> list[Path]:
    """Write a ``.zip`` (CSV + dictionary), or with a ``.csv`` name the CSV and a
    ``<name>-dictionary.csv`` beside it; returns the files written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        frame = labeled_frame(db, store, run_ids, image_features=image_features, progress=progress)
        dictionary = out.with_name(f"{out.stem}-dictionary.csv")
        out.write_bytes(labeled_csv(frame))
        dictionary.write_text(dictionary_csv(frame.columns))
        return [out, dictionary]
    out.write_bytes(
        export_zip(db, store, run_ids, image_features=image_features, progress=progress)
    )
    return [out]
