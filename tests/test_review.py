"""Per-patient review, predictions on demand and cohort jobs, and the model as second reader.

The "tiny trained runs" here stand in for ``learning.train`` output: an untrained VGG19 at 32×32
(``weights="none"``) saved as ``.keras`` in the models folder, a stored split, and
``TrainingRun`` + ``Prediction`` rows, the shapes ``core.learning.train.run_training`` writes. The
other evaluation tests (table1, export, pages) import ``tiny_models`` and ``add_tiny_run``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time

import numpy as np
import pytest
from sqlalchemy import select

from core.common import config
from core.common.boxes import Box
from db.engine import Database
from db.grading import save_box, save_grade
from db.models import (
    CropBox,
    Grade,
    Image,
    Patient,
    Prediction,
    Reader,
    SplitAssignment,
    TrainingRun,
)
from tests.tiny_runs import TINY, TinyModel, add_tiny_run, split_of  # noqa: F401


def _patient(db: Database, code: str) -> Patient:
    with db.read() as session:
        return session.scalar(select(Patient).where(Patient.code == code))


def _subset_codes(db: Database, run_id: int, subset: str) -> list[str]:
    with db.read() as session:
        run = session.get(TrainingRun, run_id)
        return list(
            session.scalars(
                select(Patient.code)
                .join(SplitAssignment, SplitAssignment.patient_id == Patient.id)
                .where(SplitAssignment.split_id == run.split_id, SplitAssignment.subset == subset)
                .order_by(Patient.code)
            )
        )


def _not_in_run(db: Database, run_id: int) -> str:
    with db.read() as session:
        run = session.get(TrainingRun, run_id)
        assigned = select(SplitAssignment.patient_id).where(
            SplitAssignment.split_id == run.split_id
        )
        return session.scalar(
            select(Patient.code).where(Patient.id.not_in(assigned)).order_by(Patient.code)
        )


def _reader(db: Database, username: str) -> Reader:
    with db.read() as session:
        return session.scalar(select(Reader).where(Reader.username == username))


# ---------------------------------------------------------------------------------------
# Loading models


def test_models_load_only_from_the_models_folder(agreed_demo, tmp_path, tiny_models):
    from core.services.review import ModelPathError, checked_model_path, load_keras_model

    outside = tmp_path / "elsewhere.keras"
    shutil.copy(tiny_models["gsu"].path, outside)
    with pytest.raises(ModelPathError, match="only from the models folder"):
        load_keras_model(outside)
    sneaky = config.models_dir() / ".." / "elsewhere.keras"
    with pytest.raises(ModelPathError, match="only from the models folder"):
        checked_model_path(sneaky)
    text = config.models_dir() / "notes.h5"
    text.write_text("not a model")
    with pytest.raises(ModelPathError, match=r"only \.keras"):
        checked_model_path(text)
    with pytest.raises(ModelPathError, match="missing"):
        checked_model_path(config.models_dir() / "run-999.keras")
    inside = config.models_dir() / "copy.keras"
    shutil.copy(tiny_models["gsu"].path, inside)
    assert load_keras_model(inside).input_shape == (None, *TINY, 1)


def test_predictor_matches_the_raw_forward_pass_and_stored_predictions(agreed_demo, tiny_models):
    import keras

    from core.learning.dataset import load_task_data
    from core.services.review import load_predictor

    db, store = agreed_demo
    run_id = add_tiny_run(db, store, tiny_models["gsu"])
    predictor = load_predictor(db, run_id)
    data = load_task_data(db, store, predictor.settings)
    raw = keras.models.load_model(tiny_models["gsu"].path)
    expected = np.asarray(raw(data.inputs["gsu"][:5], training=False)).reshape(-1)
    got = predictor.predict({"gsu": data.inputs["gsu"][:5]})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    cams = predictor.explain({"gsu": data.inputs["gsu"][:2]})
    assert cams.shape[0] == 2 and cams.min() >= 0.0 and cams.max() <= 1.0
    with db.read() as session:
        stored = dict(
            session.execute(
                select(Prediction.patient_id, Prediction.probability).where(
                    Prediction.run_id == run_id
                )
            ).all()
        )
    index = {int(pid): i for i, pid in enumerate(data.patient_ids)}
    some = sorted(stored)[:3]
    x = data.inputs["gsu"][[index[p] for p in some]]
    np.testing.assert_allclose(
        predictor.predict({"gsu": x}), [stored[p] for p in some], rtol=1e-5, atol=1e-6
    )


def test_a_run_that_is_not_done_cannot_be_loaded(agreed_demo, tiny_models):
    from core.services.review import ReviewError, load_predictor

    db, store = agreed_demo
    run_id = add_tiny_run(db, store, tiny_models["gsu"])

    def fail(session) -> None:
        session.get(TrainingRun, run_id).status = "running"

    db.write(fail)
    with pytest.raises(ReviewError, match="running"):
        load_predictor(db, run_id)


# ---------------------------------------------------------------------------------------
# One patient


def test_review_of_a_test_patient_shows_everything(agreed_demo, tiny_models):
    from core.services.review import patient_review

    db, store = agreed_demo
    gsu_run = add_tiny_run(db, store, tiny_models["gsu"])
    swe_run = add_tiny_run(db, store, tiny_models["swe"])
    code = _subset_codes(db, gsu_run, "test")[0]
    review = patient_review(db, store, code, [gsu_run, swe_run], viewer=_reader(db, "admin"))

    assert review.code == code and not review.blinded
    assert set(review.images) == {"GSU", "SWE"}
    assert {"sim_reader_a", "sim_reader_b"} <= set(review.images["GSU"].boxes)
    assert [g.username for g in review.grades] == ["sim_reader_a", "sim_reader_b"]
    assert review.smi is not None and review.sarcopenic is not None
    assert review.stiffness is not None and review.stiffness.units == "kPa"
    assert review.stiffness.stats["fraction_colored"] > 0.5
    assert review.stiffness.rgb.dtype == np.uint8 and review.stiffness.rgb.ndim == 3

    gsu_view = review.models[0]
    assert gsu_view.subset == "test" and gsu_view.tested
    assert gsu_view.source == "stored test prediction"
    assert gsu_view.probability == pytest.approx(tiny_models["gsu"].probabilities[code])
    assert gsu_view.predicted_label == int(gsu_view.probability >= 0.5)
    assert gsu_view.truth == int(review.sarcopenic)
    assert gsu_view.note == ""
    box = gsu_view.box
    assert gsu_view.overlay_crop.shape == (box.h, box.w, 3)
    image = review.images["GSU"]
    assert gsu_view.overlay_full.shape == (image.height, image.width, 3)
    assert review.models[1].input_name == "swe"
    assert review.models[1].overlay_full.shape == (480, 640, 3)


def test_a_new_patient_is_predicted_on_demand_and_cached_by_box(agreed_demo, tiny_models):
    from core.services.review import NOT_IN_RUN, load_predictor, patient_review, prediction_root

    db, store = agreed_demo
    run_id = add_tiny_run(db, store, tiny_models["gsu"])
    code = _not_in_run(db, run_id)
    predictor = load_predictor(db, run_id)
    first = patient_review(db, store, code, [run_id], predictor_for=lambda _: predictor)
    view = first.models[0]
    assert view.subset == NOT_IN_RUN and not view.tested
    assert view.source == "computed now"
    assert view.probability == pytest.approx(tiny_models["gsu"].probabilities[code], abs=1e-5)
    entries = list(prediction_root().rglob("*.npz"))
    assert len(entries) == 1

    again = patient_review(db, store, code, [run_id], predictor_for=lambda _: predictor)
    assert again.models[0].source == "cached"
    assert again.models[0].probability == view.probability

    gsu = first.images["GSU"]
    old = gsu.chosen.box
    admin = _reader(db, "admin")
    db.write(
        lambda s: save_box(
            s,
            gsu.image_id,
            s.get(Reader, admin.id),
            Box(old.x + 20, old.y + 10, old.w - 40, old.h - 30),
            owner="consensus",
        )
    )
    moved = patient_review(db, store, code, [run_id], predictor_for=lambda _: predictor)
    assert moved.models[0].source == "computed now"
    assert moved.models[0].box == Box(old.x + 20, old.y + 10, old.w - 40, old.h - 30)
    assert len(list(prediction_root().rglob("*.npz"))) == 2


def test_a_box_outside_its_image_gives_a_message_not_a_crash(agreed_demo, tiny_models):
    from core.services.review import load_predictor, patient_review, predict_cohort

    db, store = agreed_demo
    run_id = add_tiny_run(db, store, tiny_models["gsu"])
    code = _not_in_run(db, run_id)
    patient = _patient(db, code)
    with db.read() as session:
        gsu_id = session.scalar(
            select(Image.id).where(Image.patient_id == patient.id, Image.modality == "GSU")
        )

    def bad_box(session) -> None:
        session.query(CropBox).filter_by(image_id=gsu_id).delete()
        session.add(
            CropBox(
                image_id=gsu_id,
                owner_key="consensus",
                source="consensus",
                x=600,
                y=10,
                w=200,
                h=100,
            )
        )

    db.write(bad_box)
    predictor = load_predictor(db, run_id)
    review = patient_review(db, store, code, [run_id], predictor_for=lambda _: predictor)
    assert "reaches outside" in review.models[0].error
    assert predict_cohort(db, store, run_id, predictor=predictor) == 23


def test_a_reader_who_has_not_graded_is_blinded(agreed_demo, tiny_models):
    from core.services.review import patient_review

    db, store = agreed_demo
    echo_run = add_tiny_run(db, store, tiny_models["gsu"], task="echogenicity_gsu")
    code = _subset_codes(db, echo_run, "test")[0]
    reader = _reader(db, "radiologist1")
    hidden = patient_review(db, store, code, [echo_run], viewer=reader, gradcam=False)
    assert hidden.blinded and hidden.grades is None and hidden.consensus_grade is None
    assert hidden.models[0].probability is None
    assert "blinding" in hidden.models[0].error

    gsu_id = hidden.images["GSU"].image_id
    db.write(lambda s: save_grade(s, gsu_id, s.get(Reader, reader.id), 1))
    shown = patient_review(db, store, code, [echo_run], viewer=reader, gradcam=False)
    assert not shown.blinded
    assert {g.username for g in shown.grades} == {"radiologist1", "sim_reader_a", "sim_reader_b"}
    assert shown.consensus_grade is not None
    assert shown.models[0].probability == pytest.approx(tiny_models["gsu"].probabilities[code])


# ---------------------------------------------------------------------------------------
# Cohort table, filters, cohort job


def test_review_table_marks_subsets_errors_and_disagreement(agreed_demo, tiny_models):
    from core.services.review import filter_review, review_table

    db, store = agreed_demo
    split = split_of(db, store, "sarcopenia_gsu")
    tests = sorted(c for c, subset in split.items() if subset == "test")
    scored = [c for c, subset in split.items() if subset != "train"]
    truth = {c: int(_label(db, c)) for c in scored}
    wrong = tests[0]
    probs_b = {c: 0.9 if truth[c] else 0.1 for c in scored}
    probs_a = dict(probs_b, **{wrong: 0.1 if truth[wrong] else 0.9})
    run_a = add_tiny_run(db, store, tiny_models["gsu"], probabilities=probs_a)
    run_b = add_tiny_run(db, store, tiny_models["swe"], probabilities=probs_b)

    table = review_table(db, [run_a, run_b])
    assert len(table) == 24
    row = table.set_index("code").loc[wrong]
    assert row[f"run {run_a} subset"] == "test" and row["misclassified"]
    assert row["disagreement"]
    assert not row[f"run {run_a} ok"] and row[f"run {run_b} ok"]
    assert f"run {run_a}" in row["tested in"]

    bad = filter_review(table, misclassified=True)
    assert set(bad["code"]) == {wrong}
    assert set(filter_review(table, disagreement=True)["code"]) == {wrong}
    assert set(filter_review(table, subset="test")["code"]) == set(tests)
    not_in = filter_review(table, subset="not in run")
    assert len(not_in) == 24 - 21


def _label(db: Database, code: str) -> bool:
    from db.cases import case_labels

    with db.read() as session:
        patient = session.scalar(select(Patient).where(Patient.code == code))
        return bool(case_labels(patient).sarcopenic)


def test_cohort_job_predicts_everyone_and_goes_stale_when_a_box_moves(agreed_demo, tiny_models):
    from core.cli.predict import add_predict_parser
    from core.services.review import cohort_predictions, predict_job_status, review_table

    db, store = agreed_demo
    run_id = add_tiny_run(db, store, tiny_models["gsu"])
    import argparse

    parser = argparse.ArgumentParser()
    add_predict_parser(parser.add_subparsers())
    args = parser.parse_args(["predict", "--run-id", str(run_id)])
    assert args.handler(args) == 0
    status = predict_job_status(run_id)
    assert status.state == "done" and status.done == status.total == 24

    probs = cohort_predictions(db, run_id)
    assert len(probs) == 24
    for code, expected in tiny_models["gsu"].probabilities.items():
        assert probs[_patient(db, code).id] == pytest.approx(expected, abs=1e-5)
    table = review_table(db, [run_id]).set_index("code")
    train_code = _subset_codes(db, run_id, "train")[0]
    assert table.loc[train_code, f"run {run_id} p"] == pytest.approx(
        tiny_models["gsu"].probabilities[train_code], abs=1e-5
    )

    patient = _patient(db, train_code)
    with db.read() as session:
        gsu_id = session.scalar(
            select(Image.id).where(Image.patient_id == patient.id, Image.modality == "GSU")
        )
    admin = _reader(db, "admin")
    db.write(
        lambda s: save_box(
            s, gsu_id, s.get(Reader, admin.id), Box(50, 60, 300, 200), owner="consensus"
        )
    )
    assert patient.id not in cohort_predictions(db, run_id)
    assert len(cohort_predictions(db, run_id)) == 23


def test_a_job_whose_process_died_is_reported_failed(agreed_demo):
    from core.services.review import ReviewError, predict_job_status, start_predict_job

    started = start_predict_job(7, argv=[sys.executable, "-c", "import time; time.sleep(1)"])
    assert started.active
    with pytest.raises(ReviewError, match="already running"):
        start_predict_job(7, argv=[sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    status = predict_job_status(7)
    while status.active and time.monotonic() < deadline:
        time.sleep(0.2)
        status = predict_job_status(7)
    assert status.state == "failed"
    assert "ended without finishing" in status.error
    assert (
        json.loads(
            (config.data_dir() / "cache" / "predictions" / "run-7" / "job.json").read_text()
        )["state"]
        == "failed"
    )


def test_a_cohort_job_starts_where_the_core_package_imports(data_dir):
    """The job is ``python -m core predict``: its working folder and PYTHONPATH must be the
    project root (the folder holding ``core/``), wherever the service module itself lives."""
    import os

    from core.services.review import prediction_root, start_predict_job

    started = start_predict_job(8, argv=[sys.executable, "-c", "import core.services"])
    _, status = os.waitpid(started.pid, 0)
    assert status == 0, (prediction_root() / "run-8" / "job.log").read_text()


# ---------------------------------------------------------------------------------------
# Second reader


def test_second_reader_advice_waits_for_two_readers(agreed_demo, tiny_models):
    from core.services.review import SecondReaderUnavailable, second_reader_opinion

    db, store = agreed_demo
    with db.read() as session:
        two, one = session.scalars(
            select(Image.id).where(Image.modality == "GSU").order_by(Image.id).limit(2)
        ).all()
        swe = session.scalar(select(Image.id).where(Image.modality == "SWE"))
    second = _reader(db, "sim_reader_b")
    db.write(
        lambda s: (
            s.query(Grade).filter(Grade.image_id == one, Grade.reader_id == second.id).delete()
        )
    )
    with pytest.raises(SecondReaderUnavailable, match="No finished echogenicity"):
        second_reader_opinion(db, store, two)
    sarc_run = add_tiny_run(db, store, tiny_models["gsu"])
    with pytest.raises(SecondReaderUnavailable, match="not echogenicity"):
        second_reader_opinion(db, store, two, sarc_run)
    echo_run = add_tiny_run(db, store, tiny_models["gsu"], task="echogenicity_gsu")
    with pytest.raises(SecondReaderUnavailable, match="readers have graded"):
        second_reader_opinion(db, store, one)
    with pytest.raises(SecondReaderUnavailable, match="not a GSU image"):
        second_reader_opinion(db, store, swe)

    opinion = second_reader_opinion(db, store, two)
    assert opinion.run_id == echo_run
    assert opinion.grade_label == ("high" if opinion.probability >= 0.5 else "low")
    with db.read() as session:
        code = session.scalar(select(Patient.code).join(Image).where(Image.id == two))
    assert opinion.probability == pytest.approx(tiny_models["gsu"].probabilities[code], abs=1e-5)
    assert opinion.overlay_crop.shape == (opinion.box.h, opinion.box.w, 3)
    assert "Advice only" in opinion.note
