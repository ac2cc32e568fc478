"""The radiomics-style baseline on the demo cohort: features, the shared split, the command."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from core.cli.features import add_features_parser
from core.common.store import ImageStore
from core.learning.baseline import FeatureError, run_baseline, task_features
from core.learning.dataset import DatasetSettings, load_task_data, make_split
from core.learning.features import ECHO_PERCENTILES, GLCM_PROPS
from db.engine import Database
from db.models import CropBox, Image, Patient

SIZES = (11, 4, 6)
SWE_STATS = ("mean", "median", "q1", "q3", "iqr", "fraction_colored")


@dataclass
class Demo:
    db: Database
    store: ImageStore
    cache: Path


@pytest.fixture(scope="module")
def demo(small_demo: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("baseline") / "data"
    shutil.copytree(small_demo, folder)
    db = Database(f"sqlite:///{folder / 'sarcopenia.db'}")
    yield Demo(db, ImageStore(folder / "images"), small_demo.parent / "shared-cache")
    db.dispose()


def settings(task: str, **kwargs) -> DatasetSettings:
    return DatasetSettings(task, sizes=SIZES, input_size=(32, 32), **kwargs)


def test_fusion_features_have_names_shape_and_finite_values(demo: Demo) -> None:
    X, y, names, ids = task_features(
        demo.db, demo.store, settings("sarcopenia_fusion"), cache_dir=demo.cache
    )
    echo = ["echo_mean", "echo_sd", *(f"echo_p{p}" for p in ECHO_PERCENTILES)]
    glcm = [f"glcm_{p.lower()}_d{d}" for p in GLCM_PROPS for d in (1, 2, 4)]
    assert names == echo + glcm + [f"swe_{s}" for s in SWE_STATS]
    assert X.shape == (len(y), len(names)) == (len(ids), 31)
    assert np.all(np.isfinite(X))
    assert np.all(X.std(axis=0)[: len(echo)] > 0)  # patients differ
    col = {n: X[:, i] for i, n in enumerate(names)}
    assert np.all((col["echo_mean"] > 0) & (col["echo_mean"] < 255))
    assert np.all(col["swe_q1"] <= col["swe_median"]) and np.all(col["swe_median"] <= col["swe_q3"])
    assert np.all((col["swe_fraction_colored"] > 0.5) & (col["swe_fraction_colored"] <= 1))


def test_features_follow_the_task_inputs(demo: Demo) -> None:
    fused = task_features(demo.db, demo.store, settings("sarcopenia_fusion"), cache_dir=demo.cache)
    X_swe, _, swe_names, _ = task_features(
        demo.db, demo.store, settings("sarcopenia_swe"), cache_dir=demo.cache
    )
    X_gsu, _, gsu_names, _ = task_features(
        demo.db, demo.store, settings("sarcopenia_gsu"), cache_dir=demo.cache
    )
    assert swe_names == [f"swe_{s}" for s in SWE_STATS]
    assert gsu_names + swe_names == fused[2]
    np.testing.assert_allclose(np.hstack([X_gsu, X_swe]), fused[0])


def test_features_use_the_same_patients_and_split_as_the_dcnns(demo: Demo) -> None:
    s = settings("sarcopenia_gsu")
    _, y, _, ids = task_features(demo.db, demo.store, s, cache_dir=demo.cache)
    td = load_task_data(demo.db, demo.store, s, cache_dir=demo.cache)
    np.testing.assert_array_equal(ids, td.patient_ids)
    np.testing.assert_array_equal(y, td.y)

    @dataclass
    class Labels:
        patient_ids: np.ndarray
        y: np.ndarray

    assert make_split(Labels(ids, y), s) == make_split(td, s)


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_baseline_scores_the_test_patients(demo: Demo, kind: str) -> None:
    s = settings("sarcopenia_swe")
    result = run_baseline(demo.db, demo.store, s, kind, cache_dir=demo.cache)
    td = load_task_data(demo.db, demo.store, s, cache_dir=demo.cache)
    [split] = make_split(td, s)
    test_y = [int(y) for pid, y in zip(td.patient_ids, td.y, strict=True) if split[pid] == "test"]
    assert result.y_test.tolist() == test_y
    assert result.p_test.shape == (SIZES[2],)
    assert np.all((result.p_test >= 0) & (result.p_test <= 1))
    assert 0.0 <= result.auc_test <= 1.0
    n_fit = result.model.named_steps["scale"].n_samples_seen_
    assert n_fit == SIZES[0] + SIZES[1]  # fitted on train + validation


def test_baseline_refuses_a_fold_that_does_not_exist(demo: Demo) -> None:
    with pytest.raises(ValueError, match="fold must be between 0 and 0"):
        run_baseline(demo.db, demo.store, settings("sarcopenia_gsu"), fold=1, cache_dir=demo.cache)


def test_an_swe_box_without_colour_is_a_clear_error(demo_env: Path) -> None:
    from core.common import config

    db = Database(config.database_url())
    with db.read() as session:
        image = session.scalars(
            select(Image).join(Patient).where(Image.modality == "SWE").order_by(Patient.id)
        ).first()
        code = session.get(Patient, image.patient_id).code

    def gray_corner(session) -> None:
        for row in session.scalars(select(CropBox).where(CropBox.image_id == image.id)):
            row.x, row.y, row.w, row.h = 160, 380, 40, 30  # B-mode near the bottom, no overlay

    db.write(gray_corner)
    with pytest.raises(FeatureError, match=f"No stiffness could be decoded .* {code}"):
        task_features(db, ImageStore(config.images_dir()), settings("sarcopenia_swe"))


def _features_command(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_features_parser(parser.add_subparsers())
    return parser.parse_args(["features", *argv])


def test_features_command_prints_the_test_auc(demo_env: Path, capsys) -> None:
    args = _features_command(["--task", "sarcopenia_gsu", "--split-sizes", "11,4,6"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "sarcopenia_gsu: 21 patients" in out
    lines = [line for line in out.splitlines() if "test AUC" in line]
    assert [line.split(":")[0] for line in lines] == ["Logistic regression (balanced)", "MLP (16,)"]
    for line in lines:
        auc = float(line.split("test AUC ")[1].split()[0])
        assert 0.0 <= auc <= 1.0


def test_features_command_takes_an_enriched_test_set(demo_env: Path, capsys) -> None:
    argv = ["--kind", "logistic", "--split-sizes", "11,4,6", "--test-positives", "2"]
    args = _features_command(argv)
    assert args.handler(args) == 0
    assert "(n = 6, 2 positive)" in capsys.readouterr().out


def test_features_command_reports_bad_sizes_in_one_line(demo_env: Path) -> None:
    from core.common.errors import UserError

    args = _features_command(["--kind", "logistic", "--split-sizes", "30,4,6"])
    with pytest.raises(UserError, match="need 40 patients but only 21"):
        args.handler(args)
    with pytest.raises(SystemExit):
        _features_command(["--split-sizes", "30,4"])
