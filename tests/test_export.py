"""The labeled CSV, its data dictionary, the metadata round trip and figure downloads."""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from sqlalchemy import select

from core.cli.export import add_export_parser
from core.common import config
from core.common.boxes import Box
from core.imaging.crop import crop
from core.imaging.images import load_pixels
from core.imaging.roi_detect import to_rgb_u8
from core.imaging.swe_decode import decode_swe, stiffness_stats
from core.learning.features import echo_intensity
from core.services.export import (
    DERIVED_COLUMNS,
    METADATA_COLUMNS,
    FigureExportError,
    MetadataImportError,
    data_dictionary,
    export_zip,
    figure_html,
    figure_png,
    import_metadata,
    labeled_csv,
    labeled_frame,
    table_csv,
)
from core.services.export import downloads as export_downloads
from core.services.export import features as export_features
from db.engine import Database
from db.migrate import upgrade
from db.models import AuditEvent, ConsensusGrade, CropBox, Grade, Image, Patient, Reader
from tests.tiny_runs import add_tiny_run, split_of

META = [*METADATA_COLUMNS, *DERIVED_COLUMNS]


def _empty_db(tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    return Database(url)


def test_round_trip_through_an_empty_database_keeps_the_metadata(agreed_demo, tmp_path):
    db, _ = agreed_demo
    first = labeled_csv(labeled_frame(db, image_features=False))
    target = _empty_db(tmp_path)
    assert import_metadata(target, first) == 24
    second = labeled_csv(labeled_frame(target, image_features=False))

    def metadata(csv: bytes) -> pd.DataFrame:
        return pd.read_csv(io.BytesIO(csv), dtype=str, keep_default_na=False)[META]

    pd.testing.assert_frame_equal(metadata(first), metadata(second))
    again = metadata(first)
    assert set(again["sarcopenia"]) == {"yes", "no", ""}
    assert (again["ct_eligible"] == "no").sum() == 3
    with target.read() as session:
        assert session.query(AuditEvent).filter_by(action="patient.import_metadata").count() == 24
    target.dispose()


def test_import_reports_every_bad_row_and_writes_nothing(agreed_demo, tmp_path):
    db, _ = agreed_demo
    frame = labeled_frame(db, image_features=False).astype(str)
    frame.loc[0, "sex"] = "X"
    frame.loc[3, "height_cm"] = "12"
    frame.loc[5, "ct_date"] = "31/02/2020"
    target = _empty_db(tmp_path)
    with pytest.raises(MetadataImportError) as caught:
        import_metadata(target, labeled_csv(frame))
    text = str(caught.value)
    assert "3 problem(s)" in text and "row 2" in text and "row 5" in text and "row 7" in text
    with target.read() as session:
        assert session.query(Patient).count() == 0
    with pytest.raises(MetadataImportError, match="already exist"):
        import_metadata(db, labeled_csv(labeled_frame(db, image_features=False)))
    with pytest.raises(MetadataImportError, match="lacks the column"):
        import_metadata(target, "patient_code,sex\nA,M\n")
    target.dispose()


def test_grades_consensus_and_boxes_match_the_database(agreed_demo):
    db, _ = agreed_demo
    table = labeled_frame(db, image_features=False).set_index("patient_code")
    with db.read() as session:
        grades = session.execute(
            select(Patient.code, Reader.username, Grade.grade)
            .join(Image, Image.patient_id == Patient.id)
            .join(Grade, Grade.image_id == Image.id)
            .join(Reader, Reader.id == Grade.reader_id)
        ).all()
        consensus = dict(
            session.execute(
                select(Patient.code, ConsensusGrade.grade)
                .join(Image, Image.patient_id == Patient.id)
                .join(ConsensusGrade, ConsensusGrade.image_id == Image.id)
            ).all()
        )
        boxes = session.execute(
            select(
                Patient.code,
                Image.modality,
                CropBox.owner_key,
                Reader.username,
                CropBox.x,
                CropBox.y,
                CropBox.w,
                CropBox.h,
            )
            .join(Image, Image.patient_id == Patient.id)
            .join(CropBox, CropBox.image_id == Image.id)
            .outerjoin(Reader, Reader.id == CropBox.reader_id)
        ).all()
    assert len(grades) == 48
    for code, username, grade in grades:
        assert table.loc[code, f"grade_{username}"] == grade
    assert table["consensus_grade"].notna().sum() == len(consensus) == 18
    for code, grade in consensus.items():
        assert table.loc[code, "consensus_grade"] == grade
        assert table.loc[code, "consensus_method"] == "agreement"
        assert table.loc[code, "echogenicity"] == ("high" if grade >= 2 else "low")
    checked = {"consensus": 0, "reader": 0}
    for code, modality, owner_key, username, *xywh in boxes:
        owner = username if owner_key.startswith("reader:") else owner_key
        stem = f"box_{modality.lower()}_{owner}"
        assert [table.loc[code, f"{stem}_{c}"] for c in "xywh"] == xywh, (code, stem)
        checked["reader" if username else owner_key] += 1
    # 24 patients × (GSU + SWE) × 2 simulated readers, and a consensus box on the 18 GSU
    # images where the readers agree: every stored box is in the table, none missed.
    assert checked == {"consensus": 18, "reader": 96}


def test_image_features_are_measured_once_then_read_from_the_cache(agreed_demo, monkeypatch):
    db, store = agreed_demo
    table = labeled_frame(db, store).set_index("patient_code")
    code = "DEMO-001"
    with db.read() as session:
        patient = session.scalar(select(Patient).where(Patient.code == code))
        images = {i.modality: i for i in patient.images}
        first_reader = session.scalar(select(Reader.id).where(Reader.username == "sim_reader_a"))
        box_of = {
            modality: session.scalar(
                select(CropBox).where(
                    CropBox.image_id == images[modality].id, CropBox.owner_key == owner
                )
            )
            for modality, owner in (("GSU", "consensus"), ("SWE", f"reader:{first_reader}"))
        }
    gsu_box = Box(box_of["GSU"].x, box_of["GSU"].y, box_of["GSU"].w, box_of["GSU"].h)
    expected = echo_intensity(crop(load_pixels(store, images["GSU"].path), gsu_box))
    assert table.loc[code, "gsu_feature_box"] == "consensus"
    assert table.loc[code, "gsu_echo_mean"] == pytest.approx(expected["echo_mean"])
    assert table.loc[code, "gsu_echo_p90"] == pytest.approx(expected["echo_p90"])
    swe_box = Box(box_of["SWE"].x, box_of["SWE"].y, box_of["SWE"].w, box_of["SWE"].h)
    decoded = decode_swe(to_rgb_u8(load_pixels(store, images["SWE"].path)), color_box=swe_box)
    stats = stiffness_stats(decoded.stiffness, swe_box)
    assert table.loc[code, "swe_stiffness_median"] == pytest.approx(stats["median"], rel=1e-5)
    assert table.loc[code, "swe_stiffness_units"] == "kPa"
    assert table.loc[code, "swe_feature_box"] == "reader"
    assert (config.data_dir() / "cache" / "features").is_dir()

    def boom(*args, **kwargs):
        raise AssertionError("features must come from the cache")

    monkeypatch.setattr(export_features, "_gsu_features", boom)
    monkeypatch.setattr(export_features, "_swe_features", boom)
    again = labeled_frame(db, store).set_index("patient_code")
    pd.testing.assert_frame_equal(table, again)


def test_without_computing_features_uncached_cells_stay_empty(agreed_demo):
    db, store = agreed_demo
    table = labeled_frame(db, store, compute_features=False)
    assert table["gsu_echo_mean"].isna().all()
    assert table["gsu_feature_box"].notna().all()


def test_run_columns_hold_split_and_predictions(agreed_demo, tiny_models):
    db, store = agreed_demo
    split = split_of(db, store, "sarcopenia_gsu")
    probabilities = {c: 0.8 for c, s in split.items() if s == "test"}
    run_id = add_tiny_run(db, store, tiny_models["gsu"], probabilities=probabilities)
    table = labeled_frame(db, store, [run_id], image_features=False).set_index("patient_code")
    for code, subset in split.items():
        assert table.loc[code, f"run{run_id}_subset"] == subset
    test_code = next(c for c, s in split.items() if s == "test")
    assert table.loc[test_code, f"run{run_id}_probability"] == pytest.approx(0.8)
    assert table.loc[test_code, f"run{run_id}_predicted_label"] == 1
    assert table.loc[test_code, f"run{run_id}_prediction_source"] == "test"
    outside = sorted(set(table.index) - set(split))
    assert len(outside) == 3
    assert (table.loc[outside, f"run{run_id}_subset"] == "not in run").all()
    assert table.loc[outside, f"run{run_id}_probability"].isna().all()
    with pytest.raises(ValueError, match="no training run 999"):
        labeled_frame(db, store, [999])


def test_the_dictionary_explains_every_column_and_the_zip_holds_both(agreed_demo):
    db, store = agreed_demo
    archive = zipfile.ZipFile(io.BytesIO(export_zip(db, store, compute_features=False)))
    assert {"labeled.csv", "data_dictionary.csv", "README.txt"} <= set(archive.namelist())
    labeled = pd.read_csv(archive.open("labeled.csv"))
    dictionary = pd.read_csv(archive.open("data_dictionary.csv"))
    assert list(dictionary["column"]) == list(labeled.columns)
    assert dictionary["description"].str.len().min() > 10
    explained = data_dictionary(["box_swe_consensus_w", "run3_probability", "gsu_echo_p25"])
    assert "width" in explained.loc[0, "description"]
    assert "in-sample" in explained.loc[1, "description"]
    assert "25th percentile" in explained.loc[2, "description"]
    with pytest.raises(ValueError, match="No description"):
        data_dictionary(["mystery"])


def test_cli_writes_the_csv_and_its_dictionary(agreed_demo, tmp_path):
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers())
    out = tmp_path / "out" / "labeled.csv"
    args = parser.parse_args(["export", "--out", str(out), "--no-image-features"])
    assert args.handler(args) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 24 and "gsu_echo_mean" not in frame.columns
    assert (tmp_path / "out" / "labeled-dictionary.csv").exists()
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--runs", "one,two"])

    from core.common.errors import UserError

    bad = parser.parse_args(["export", "--runs", "42", "--out", str(tmp_path / "x.zip")])
    with pytest.raises(UserError, match="no training run 42"):
        bad.handler(bad)


def test_tables_and_figures_download(monkeypatch):
    table = pd.DataFrame({"GSU VGG19 (run 1)": ["0.80 (0.60–1.00)"]}, index=["AUC"])
    table.attrs["notes"] = ["Run 1: 2 patients left out."]
    text = table_csv(table).decode()
    assert text.splitlines()[1].startswith("AUC,") and "# Run 1: 2 patients left out." in text
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], name="curve"))
    html = figure_html(fig).decode()
    assert "<html>" in html and "Plotly.newPlot" in html
    assert "<script src=" not in html and len(html) > 1_000_000

    def broken(*args, **kwargs):
        raise RuntimeError("no browser")

    monkeypatch.setattr(export_downloads.pio, "to_image", broken)
    with pytest.raises(FigureExportError, match="download the plot as HTML"):
        figure_png(fig)


@pytest.mark.slow
def test_png_export_renders_through_kaleido():
    png = figure_png(go.Figure(go.Scatter(x=[0, 1], y=[1, 0])), width=300, height=200, scale=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2

    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (200, 300, 3)
