"""One-click study report: tables, figures, checklists and model card as one reproducible zip.

The bundle (issue 17) holds ``report.html`` (self-contained), ``report.pdf``, every table as
CSV under ``tables/``, every figure as PNG and SVG under ``figures/`` and
``run_records.json`` with what is needed to rerun each model. Tables come from one frozen
snapshot (``core.report.snapshot``) and are written with fixed rounding, so the same runs on
the same database give byte-identical tables.
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from fpdf import FPDF

from core.common.labels import CT_WINDOW_DAYS, SMI_CUTOFF_MEN, SMI_CUTOFF_WOMEN
from core.learning.dataset import task_title
from core.report import figures, tables
from core.report.checklists import SECTIONS, checklist_table
from core.report.snapshot import ReportSnapshot, take_snapshot
from core.stats.agreement import AgreementInputError, pair_agreement
from db.consensus import reader_pairs
from db.engine import Database
from db.readers import list_readers

PACKAGES = (
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "statsmodels",
    "pydicom",
    "opencv-python-headless",
    "streamlit",
)
INTENDED_USE = (
    "Research use only, not for diagnostic use: estimating the probability of CT-defined "
    "sarcopenia from a rectus femoris ultrasound (gray-scale or shear-wave elastography) "
    "in adults, to study whether ultrasound can stand in for CT (after Yi et al., Sci Rep "
    "2022). Readers are musculoskeletal radiologists; the output is advice beside their own "
    "reading, never a replacement for CT."
)


def _agreement(db: Database) -> pd.DataFrame:
    """Inter-reader agreement per reader pair (kappas with CIs), repeated from Consensus."""
    with db.read() as session:
        pairs = reader_pairs(session)
        names = {r.username: r.display_name or r.username for r in list_readers(session)}
    rows = []
    for pair in pairs:
        a, b = names.get(pair.reader_a, pair.reader_a), names.get(pair.reader_b, pair.reader_b)
        try:
            found = pair_agreement(a, b, pair.grades_a, pair.grades_b)
        except AgreementInputError as exc:
            rows.append({"readers": f"{a} / {b}", "note": str(exc)})
            continue
        row = {"readers": f"{found.reader_a} / {found.reader_b}", "images": found.n}
        for name, kappa in (
            ("kappa", found.kappa),
            ("linear weighted kappa", found.kappa_linear),
            ("quadratic weighted kappa", found.kappa_quadratic),
            ("low/high kappa", found.kappa_dichotomized),
        ):
            row[name] = kappa.cell()
        row["percent agreement"] = f"{found.percent_agreement:.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def model_card(snapshot: ReportSnapshot) -> dict:
    """Intended use, data, labels, each model's settings and provenance, and limitations."""
    cohort = snapshot.cohort
    dates = sorted(d for d in cohort["us_date"].dropna())
    synthetic = bool(cohort["synthetic"].astype(bool).all()) if len(cohort) else False
    limitations = [
        "Single-centre retrospective design as in the study; no external test set.",
        "Small test sets: every proportion and AUC carries a wide confidence interval.",
    ]
    if synthetic:
        limitations.insert(
            0,
            "Every patient is from the app's synthetic demo cohort: the phantom paints the "
            "label-driving score into thickness and echo, so these figures show only that "
            "the pipeline can learn a planted signal, not clinical performance.",
        )
    for run in snapshot.runs:
        note = tables.enrichment_note(run)
        if note:
            limitations.append(note)
    return {
        "intended_use": INTENDED_USE,
        "data": {
            "patients": len(cohort),
            "synthetic_demo_cohort": synthetic,
            "ultrasound_dates": [dates[0], dates[-1]] if dates else None,
            "de_identification": (
                "DICOM headers kept by an allow-list after PS3.15 Annex E, UIDs replaced by "
                "a keyed hash; see docs/imaging-pipeline.md"
            ),
        },
        "labels": {
            "reference_standard": "CT L3 skeletal muscle index (SMA / height²)",
            "sarcopenia_cutoffs_cm2_per_m2": {"men": SMI_CUTOFF_MEN, "women": SMI_CUTOFF_WOMEN},
            "cutoff_source": "KNHANES-derived cut-offs used by Yi et al. (Sci Rep 2022)",
            "ct_window_days": CT_WINDOW_DAYS,
            "echogenicity": "consensus grade 0–3; 0–1 low, 2–3 high",
        },
        "models": [
            {
                "run_id": run.run_id,
                "label": run.label,
                "task": task_title(run.task),
                "architecture": run.arch,
                "input": run.modality,
                "input_size": list(run.input_size),
                "weights_origin": run.weights_source,
                "seed": run.settings.get("seed"),
                "training_settings": run.settings,
                "data_fingerprint": run.fingerprint,
                "created_at": run.created_at,
            }
            for run in snapshot.runs
        ],
        "packages": _versions(),
        "limitations": limitations,
    }


def run_records(snapshot: ReportSnapshot) -> dict:
    """What rerunning each model needs: settings, split by patient code, fingerprint."""
    codes = dict(zip(snapshot.cohort["patient_id"], snapshot.cohort["code"], strict=True))
    return {
        "runs": [
            {
                "run_id": run.run_id,
                "task": run.task,
                "arch": run.arch,
                "settings": run.settings,
                "weights_source": run.weights_source,
                "data_fingerprint": run.fingerprint,
                "split": {codes[p]: s for p, s in sorted(run.subsets.items())},
                "rerun": (
                    f"python -m core train --task {run.task} --arch {run.arch} "
                    f"--seed {run.settings.get('seed')}"
                ),
            }
            for run in snapshot.runs
        ],
        "packages": _versions(),
    }


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, na_rep="—", border=0, classes="table")


def build_report(db: Database, run_ids: Sequence[int]) -> bytes:
    """The report bundle of ``run_ids`` (finished runs) as zip bytes."""
    snapshot = take_snapshot(db, run_ids)
    flow = tables.participant_flow(snapshot)
    sections: dict[str, pd.DataFrame] = {"flow": tables.flow_table(flow)}
    for run in snapshot.runs:
        sections[f"characteristics_run-{run.run_id}"] = tables.characteristics(snapshot, run)
    sections["accuracy"] = tables.accuracy(snapshot)
    curves = tables.decision_curves(snapshot)
    sections["decision_curves"] = curves
    sections["readers_vs_models"] = tables.readers_versus_models(snapshot)
    sections["agreement"] = _agreement(db)
    sections["subgroups"] = tables.subgroups(snapshot)
    present = {"flow", "characteristics", "accuracy", "calibration", "decision", "subgroups"}
    present |= {"model-card", "data-sheet"}
    if not sections["readers_vs_models"].empty:
        present.add("readers")
    sections["checklists"] = checklist_table(present)
    drawn = {
        "flow": figures.flow_diagram(flow),
        "roc": figures.roc_plot(snapshot),
        "calibration": figures.calibration_plot(snapshot),
        "decision_curves": figures.decision_curve_plot(curves),
    }
    pictures = {
        name: {fmt: figures.figure_bytes(fig, fmt) for fmt in ("png", "svg")}
        for name, fig in drawn.items()
    }
    card = model_card(snapshot)
    records = run_records(snapshot)
    report_html = _report_html(snapshot, sections, pictures, card)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, frame in sections.items():
            bundle.writestr(f"tables/{name}.csv", _csv(frame))
        for name, formats in pictures.items():
            for fmt, data in formats.items():
                bundle.writestr(f"figures/{name}.{fmt}", data)
        bundle.writestr("model_card.json", json.dumps(card, indent=2, default=str))
        bundle.writestr("run_records.json", json.dumps(records, indent=2, default=str))
        bundle.writestr("report.html", report_html)
        bundle.writestr("report.pdf", _report_pdf(snapshot, sections, pictures, card))
    return buf.getvalue()


def _report_html(
    snapshot: ReportSnapshot,
    sections: dict[str, pd.DataFrame],
    pictures: dict[str, dict[str, bytes]],
    card: dict,
) -> str:
    def img(name: str) -> str:
        data = base64.b64encode(pictures[name]["png"]).decode("ascii")
        return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'

    characteristics = "".join(
        f"<h3>{html.escape(run.label)}</h3>"
        + _html_table(sections[f"characteristics_run-{run.run_id}"])
        + (f"<p>{html.escape(note)}</p>" if (note := tables.enrichment_note(run)) else "")
        for run in snapshot.runs
    )
    checklist = sections["checklists"].copy()
    missing = int((checklist["anchor"] == "").sum())
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Study report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:3px 6px}img{max-width:720px;width:100%}</style></head><body>",
        "<h1>Study report: sarcopenia from rectus femoris ultrasound</h1>",
        f"<p>Snapshot taken {html.escape(snapshot.taken_at)} · runs "
        f"{', '.join(str(r.run_id) for r in snapshot.runs)}.</p>",
        f"<h2 id='flow'>{SECTIONS['flow']}</h2>",
        img("flow"),
        _html_table(sections["flow"]),
        f"<h2 id='characteristics'>{SECTIONS['characteristics']}</h2>",
        characteristics,
        f"<h2 id='accuracy'>{SECTIONS['accuracy']}</h2>",
        _html_table(sections["accuracy"]),
        img("roc"),
        f"<h3 id='calibration'>Calibration</h3>{img('calibration')}",
        f"<h3 id='decision'>Decision curves</h3>{img('decision_curves')}",
        f"<h2 id='readers'>{SECTIONS['readers']}</h2>",
        _html_table(sections["readers_vs_models"]),
        "<h3>Inter-reader agreement</h3>",
        _html_table(sections["agreement"]),
        f"<h2 id='subgroups'>{SECTIONS['subgroups']}</h2>",
        _html_table(sections["subgroups"]),
        f"<h2 id='model-card'>{SECTIONS['model-card']}</h2>",
        f"<pre>{html.escape(json.dumps(card, indent=2, default=str))}</pre>",
        f"<h2 id='data-sheet'>{SECTIONS['data-sheet']}</h2>",
        f"<pre>{html.escape(json.dumps(card['data'] | card['labels'], indent=2))}</pre>",
        f"<h2 id='checklists'>7. Checklists</h2><p>{missing} items are left to the author.</p>",
        _checklist_html(checklist),
        "</body></html>",
    ]
    return "".join(parts)


def _checklist_html(checklist: pd.DataFrame) -> str:
    rows = []
    for item in checklist.to_dict("records"):
        answer = html.escape(item["answered by"])
        if item["anchor"]:
            answer = f"<a href='#{item['anchor']}'>{answer}</a>"
        rows.append(
            f"<tr><td>{html.escape(item['checklist'])}</td><td>{html.escape(item['item'])}</td>"
            f"<td>{html.escape(item['topic'])}</td><td>{answer}</td></tr>"
        )
    head = "<tr><th>checklist</th><th>item</th><th>topic</th><th>answered by</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _report_pdf(
    snapshot: ReportSnapshot,
    sections: dict[str, pd.DataFrame],
    pictures: dict[str, dict[str, bytes]],
    card: dict,
) -> bytes:
    """A PDF with the same sections: figures, and the key tables as text."""
    pdf = FPDF(orientation="landscape")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_font("DejaVu", "", str(_font()))
    pdf.add_page()
    pdf.set_font("DejaVu", size=14)
    _line(pdf, 8, "Study report: sarcopenia from rectus femoris ultrasound")
    pdf.set_font("DejaVu", size=9)
    _line(pdf, 5, f"Snapshot {snapshot.taken_at}. {card['intended_use']}")
    for title, name in (
        (SECTIONS["flow"], "flow"),
        ("ROC curves", "roc"),
        ("Calibration", "calibration"),
        ("Decision curves", "decision_curves"),
    ):
        pdf.add_page()
        pdf.set_font("DejaVu", size=12)
        _line(pdf, 7, title)
        pdf.image(io.BytesIO(pictures[name]["png"]), x=pdf.l_margin, h=160)
    for title, key in (
        (SECTIONS["accuracy"], "accuracy"),
        (SECTIONS["readers"], "readers_vs_models"),
        (SECTIONS["subgroups"], "subgroups"),
        ("7. Checklists", "checklists"),
    ):
        pdf.add_page()
        pdf.set_font("DejaVu", size=12)
        _line(pdf, 7, title)
        pdf.set_font("DejaVu", size=7)
        frame = sections[key]
        text = frame.to_string(index=False) if not frame.empty else "(none)"
        _line(pdf, 3.5, text)
    return bytes(pdf.output())


def _line(pdf: FPDF, height: float, text: str) -> None:
    """A paragraph from the left margin, wrapped anywhere (tables hold long tokens)."""
    pdf.multi_cell(0, height, text, new_x="LMARGIN", new_y="NEXT", wrapmode="CHAR")


def _font() -> Path:
    """A Unicode TrueType font for the PDF (±, ≥, –): matplotlib ships DejaVu Sans."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def write_report(db: Database, run_ids: Sequence[int], out: Path) -> Path:
    """Build the bundle and write it to ``out`` whole (temp file + rename), or not at all."""
    data = build_report(db, run_ids)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(data)
    partial.replace(out)
    return out
