"""Task data from the database: who enters, which box, labels, cache, fingerprint, splits."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload

from core.common import config
from core.common.boxes import Box
from core.common.store import ImageStore
from core.imaging.crop import BoxOutsideImageError
from core.imaging.images import load_pixels
from core.imaging.roi_detect import detect_ultrasound_area
from core.learning.dataset import (
    TASKS,
    DatasetSettings,
    NoPatientsError,
    SplitError,
    load_split,
    load_task_data,
    make_split,
    save_split,
    subset_indices,
    tf_dataset,
)
from db.cases import case_labels
from db.engine import Database
from db.models import ConsensusGrade, CropBox, Image, Patient, Reader, Split, SplitAssignment

SMALL = (32, 32)


def gsu_settings(**kwargs) -> DatasetSettings:
    return DatasetSettings("sarcopenia_gsu", input_size=SMALL, sizes=(11, 4, 6), **kwargs)


@dataclass
class Demo:
    db: Database
    store: ImageStore
    cache: Path


@pytest.fixture(scope="module")
def demo(small_demo: Path, tmp_path_factory: pytest.TempPathFactory):
    """A private copy of the 24-patient demo for this module's read-only tests.

    Its crop cache sits beside the session's demo folder, so test_baseline reuses the
    decoded SWE crops (the same images, hence the same cache keys).
    """
    folder = tmp_path_factory.mktemp("dataset") / "data"
    shutil.copytree(small_demo, folder)
    db = Database(f"sqlite:///{folder / 'sarcopenia.db'}")
    yield Demo(db, ImageStore(folder / "images"), small_demo.parent / "shared-cache")
    db.dispose()


@pytest.fixture
def own_demo(demo_env: Path) -> Demo:
    """A per-test copy that the test may change, without the demo's agreement consensus."""
    db = Database(config.database_url())

    def forget_consensus(session) -> None:
        session.execute(delete(CropBox).where(CropBox.owner_key == "consensus"))
        session.execute(delete(ConsensusGrade))

    db.write(forget_consensus)
    return Demo(db, ImageStore(config.images_dir()), demo_env / "c")


@pytest.fixture(scope="module")
def fusion(demo: Demo):
    return load_task_data(
        demo.db,
        demo.store,
        DatasetSettings("sarcopenia_fusion", input_size=SMALL, sizes=(11, 4, 6)),
        cache_dir=demo.cache,
    )


def _patients(db: Database) -> list[Patient]:
    with db.read() as session:
        return list(
            session.scalars(
                select(Patient)
                .options(selectinload(Patient.ct), selectinload(Patient.images))
                .order_by(Patient.id)
            )
        )


def _image(db: Database, code: str, modality: str) -> Image:
    with db.read() as session:
        return session.scalars(
            select(Image).join(Patient).where(Patient.code == code, Image.modality == modality)
        ).one()


# ---------------------------------------------------------------------------------------
# Who enters, with which label


def test_only_eligible_patients_enter_with_case_labels(demo: Demo) -> None:
    progress: list[tuple[int, int]] = []
    td = load_task_data(
        demo.db,
        demo.store,
        gsu_settings(),
        cache_dir=demo.cache,
        progress=lambda *a: progress.append(a),
    )
    patients = _patients(demo.db)
    derived = {p.id: case_labels(p) for p in patients}
    eligible = [p.id for p in patients if derived[p.id].eligible]
    assert 0 < len(eligible) < len(patients)
    assert td.patient_ids.tolist() == eligible
    assert td.y.tolist() == [int(derived[pid].sarcopenic) for pid in eligible]
    assert 0 < td.y.sum() < len(td)
    codes = {p.id: p.code for p in patients}
    assert set(td.excluded) == {codes[p.id] for p in patients if not derived[p.id].eligible}
    for code, reason in td.excluded.items():
        pid = next(i for i, c in codes.items() if c == code)
        assert reason == derived[pid].exclusion_reason
    assert td.codes == [codes[pid] for pid in eligible]
    assert progress[-1] == (len(td), len(td))


def test_gsu_arrays_have_the_requested_shape_and_range(demo: Demo) -> None:
    td = load_task_data(demo.db, demo.store, gsu_settings(), cache_dir=demo.cache)
    x = td.inputs["gsu"]
    assert x.shape == (len(td), *SMALL, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.std() > 0.05


def test_fusion_inputs_hold_gsu_and_decoded_stiffness(fusion) -> None:
    gsu, swe = fusion.inputs["gsu"], fusion.inputs["swe"]
    assert gsu.shape == (len(fusion), *SMALL, 1)
    assert swe.shape == (len(fusion), *SMALL, 4)
    assert swe.dtype == np.float32 and swe.min() >= 0.0 and swe.max() <= 1.0
    stiffness, overlay = swe[..., 0], swe[..., 1:]
    assert (stiffness > 0).mean() > 0.5  # the SWE box is mostly coloured
    assert np.all(overlay.max(axis=-1)[stiffness > 0] > 0)  # decoded where it is coloured
    assert all(set(sources) == {"gsu", "swe"} for sources in fusion.box_sources)


def test_sarcopenia_swe_input_is_the_normalized_rgb_crop(demo: Demo) -> None:
    td = load_task_data(
        demo.db,
        demo.store,
        DatasetSettings("sarcopenia_swe", input_size=SMALL, sizes=(11, 4, 6)),
        cache_dir=demo.cache,
    )
    assert td.inputs["swe"].shape == (len(td), *SMALL, 3)
    colour = td.inputs["swe"].max(axis=-1) - td.inputs["swe"].min(axis=-1)
    assert colour.mean() > 0.1


def test_echogenicity_takes_consensus_grades_only(own_demo: Demo) -> None:
    settings = DatasetSettings("echogenicity_gsu", input_size=SMALL, sizes=(2, 1, 1))
    with pytest.raises(NoPatientsError, match="consensus"):
        load_task_data(own_demo.db, own_demo.store, settings, cache_dir=own_demo.cache)
    patients = _patients(own_demo.db)
    graded = {
        patients[i].id: grade for i, grade in zip((0, 2, 3, 5, 8), (0, 1, 2, 3, 2), strict=True)
    }

    def work(session) -> None:
        for p in patients:
            if p.id in graded:
                gsu = next(i for i in p.images if i.modality == "GSU")
                session.add(ConsensusGrade(image_id=gsu.id, grade=graded[p.id], method="agreement"))

    own_demo.db.write(work)
    td = load_task_data(own_demo.db, own_demo.store, settings, cache_dir=own_demo.cache)
    assert td.patient_ids.tolist() == sorted(graded)
    assert td.y.tolist() == [int(graded[pid] >= 2) for pid in sorted(graded)]
    assert set(td.excluded.values()) == {"no consensus echogenicity grade"}
    assert len(td.excluded) == len(patients) - len(graded)


# ---------------------------------------------------------------------------------------
# Boxes: consensus > reader > auto, recorded


def test_box_preference_is_consensus_then_reader_then_auto(own_demo: Demo) -> None:
    db = own_demo.db
    eligible = [p for p in _patients(db) if case_labels(p).eligible]
    with_consensus, with_stored_auto, with_detected_auto = (p.code for p in eligible[:3])
    consensus_box = Box(140, 60, 380, 330)
    stored_auto = Box(150, 58, 400, 355)

    def work(session) -> None:
        img = _image(db, with_consensus, "GSU")
        session.add(
            CropBox(
                image_id=img.id,
                owner_key="consensus",
                source="consensus",
                x=140,
                y=60,
                w=380,
                h=330,
            )
        )
        for code in (with_stored_auto, with_detected_auto):
            session.execute(delete(CropBox).where(CropBox.image_id == _image(db, code, "GSU").id))
        session.add(
            CropBox(
                image_id=_image(db, with_stored_auto, "GSU").id,
                owner_key="auto",
                source="auto",
                x=150,
                y=58,
                w=400,
                h=355,
            )
        )

    db.write(work)
    td = load_task_data(db, own_demo.store, gsu_settings(), cache_dir=own_demo.cache)
    by_code = dict(zip(td.codes, zip(td.box_sources, td.boxes, strict=True), strict=True))
    assert by_code[with_consensus] == ({"gsu": "consensus"}, {"gsu": consensus_box.as_tuple()})
    assert by_code[with_stored_auto] == ({"gsu": "auto"}, {"gsu": stored_auto.as_tuple()})
    gsu = _image(db, with_detected_auto, "GSU")
    detected = detect_ultrasound_area(load_pixels(own_demo.store, gsu.path))
    assert by_code[with_detected_auto] == ({"gsu": "auto"}, {"gsu": detected.as_tuple()})
    # everyone else: the box of the first reader by username
    with db.read() as session:
        first_reader = session.scalar(select(Reader.id).where(Reader.username == "sim_reader_a"))
        reader_boxes = {
            row.image_id: (row.x, row.y, row.w, row.h)
            for row in session.scalars(select(CropBox).where(CropBox.reader_id == first_reader))
        }
    others = [
        c for c in td.codes if c not in {with_consensus, with_stored_auto, with_detected_auto}
    ]
    assert others
    for code in others:
        assert by_code[code] == (
            {"gsu": "reader"},
            {"gsu": reader_boxes[_image(db, code, "GSU").id]},
        )


# ---------------------------------------------------------------------------------------
# Fingerprint and cache


def test_fingerprint_is_stable_and_follows_boxes_labels_and_settings(own_demo: Demo) -> None:
    db, store, cache = own_demo.db, own_demo.store, own_demo.cache
    base = load_task_data(db, store, gsu_settings(), cache_dir=cache).fingerprint
    assert load_task_data(db, store, gsu_settings(), cache_dir=cache).fingerprint == base
    assert load_task_data(db, store, gsu_settings(), cache_dir=cache / "other").fingerprint == base
    other_setting = load_task_data(
        db, store, gsu_settings(normalization="clahe"), cache_dir=cache
    ).fingerprint
    assert other_setting != base

    code = load_task_data(db, store, gsu_settings(), cache_dir=cache).codes[0]
    gsu_id = _image(db, code, "GSU").id

    def move_box(session) -> None:
        for row in session.scalars(select(CropBox).where(CropBox.image_id == gsu_id)):
            row.x += 2

    db.write(move_box)
    moved = load_task_data(db, store, gsu_settings(), cache_dir=cache).fingerprint
    assert moved not in {base, other_setting}

    def flip_label(session) -> None:
        patient = session.scalars(select(Patient).where(Patient.code == code)).one()
        patient.ct.sma_cm2 = 60.0 if not case_labels(patient).sarcopenic else 250.0

    db.write(flip_label)
    flipped = load_task_data(db, store, gsu_settings(), cache_dir=cache)
    assert flipped.fingerprint not in {base, other_setting, moved}
    assert (
        flipped.fingerprint
        == load_task_data(db, store, gsu_settings(), cache_dir=cache).fingerprint
    )


def test_cache_hit_returns_identical_arrays_without_reading_images(own_demo: Demo) -> None:
    db, store, cache = own_demo.db, own_demo.store, own_demo.cache
    first = load_task_data(db, store, gsu_settings(), cache_dir=cache)
    assert first.cache_misses == len(first) and first.cache_hits == 0
    for file in store.root.rglob("*.png"):
        file.unlink()  # a second load that decoded PNGs would now fail
    second = load_task_data(db, store, gsu_settings(), cache_dir=cache)
    assert second.cache_hits == len(first) and second.cache_misses == 0
    np.testing.assert_array_equal(second.inputs["gsu"], first.inputs["gsu"])
    assert second.fingerprint == first.fingerprint
    with pytest.raises(FileNotFoundError):
        load_task_data(db, store, gsu_settings(aspect="pad"), cache_dir=cache)


def test_a_damaged_cache_file_is_recomputed(own_demo: Demo) -> None:
    db, store, cache = own_demo.db, own_demo.store, own_demo.cache
    first = load_task_data(db, store, gsu_settings(), cache_dir=cache)
    victim = next(cache.rglob("*.npz"))
    victim.write_bytes(b"not a zip")
    again = load_task_data(db, store, gsu_settings(), cache_dir=cache)
    assert again.cache_misses == 1
    np.testing.assert_array_equal(again.inputs["gsu"], first.inputs["gsu"])


# ---------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "nope"}, "Unknown task"),
        ({"sizes": (10, 0, 5)}, "sizes"),
        ({"sizes": (10, 5)}, "sizes"),
        ({"sizes": ("10", 5, 5)}, "sizes"),
        ({"seed": 1.5}, "seed"),
        ({"normalization": "zscore"}, "normalization"),
        ({"aspect": "crop"}, "aspect"),
        ({"input_size": (32, 0)}, "input_size"),
        ({"k_folds": 1}, "k_folds"),
        ({"test_positives": 0}, "test_positives must be a whole number from 1 to 19"),
        ({"test_positives": 20}, "test_positives"),
        ({"test_positives": 2.5}, "test_positives"),
        ({"test_positives": 9, "k_folds": 5}, "leave it empty with k_folds"),
    ],
)
def test_bad_settings_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        DatasetSettings(**{"task": "sarcopenia_gsu", **kwargs})


def test_settings_round_trip_through_their_payload() -> None:
    settings = DatasetSettings("sarcopenia_fusion", seed=7, sizes=(20, 5, 5), input_size=(48, 40))
    payload = settings.fingerprint_payload()
    assert payload["input_sizes"] == {"gsu": [48, 40], "swe": [48, 40]}
    assert DatasetSettings.from_payload(payload) == settings
    assert DatasetSettings("sarcopenia_gsu", sizes=np.array([20, 5, 5])).sizes == (20, 5, 5)
    assert DatasetSettings("sarcopenia_fusion").input_sizes() == TASKS["sarcopenia_fusion"].sizes
    enriched = DatasetSettings("sarcopenia_gsu", test_positives=9)
    assert DatasetSettings.from_payload(enriched.fingerprint_payload()) == enriched


def test_unset_test_positives_keep_the_payload_of_earlier_splits() -> None:
    """Splits stored before the setting existed keep their fingerprints."""
    assert "test_positives" not in DatasetSettings("sarcopenia_gsu").fingerprint_payload()
    assert (
        DatasetSettings("sarcopenia_gsu", test_positives=9).fingerprint_payload()["test_positives"]
        == 9
    )


# ---------------------------------------------------------------------------------------
# Splits (pure: only patient ids and labels matter)


@dataclass
class Labels:
    patient_ids: np.ndarray
    y: np.ndarray


def study_cohort(n: int = 141, positives: int = 29) -> Labels:
    rng = np.random.default_rng(3)
    y = np.zeros(n, np.int64)
    y[rng.choice(n, positives, replace=False)] = 1
    return Labels(np.arange(1000, 1000 + n), y)


@pytest.mark.parametrize("seed", range(8))
def test_default_split_has_the_study_sizes_stratified_and_patient_level(seed: int) -> None:
    cohort = study_cohort()
    [split] = make_split(cohort, DatasetSettings("sarcopenia_gsu", seed=seed))
    assert Counter(split.values()) == {"train": 104, "val": 17, "test": 20}
    assert set(split) == set(cohort.patient_ids.tolist())  # every patient exactly once
    label = dict(zip(cohort.patient_ids.tolist(), cohort.y.tolist(), strict=True))
    rate = cohort.y.mean()
    for subset, size in (("train", 104), ("val", 17), ("test", 20)):
        positives = sum(label[p] for p, s in split.items() if s == subset)
        assert abs(positives - rate * size) <= 1, subset


def test_split_is_deterministic_per_seed() -> None:
    cohort = study_cohort()
    a = make_split(cohort, DatasetSettings("sarcopenia_gsu", seed=1))
    assert make_split(cohort, DatasetSettings("sarcopenia_gsu", seed=1)) == a
    assert make_split(cohort, DatasetSettings("sarcopenia_gsu", seed=2)) != a


def test_sizes_below_the_cohort_leave_patients_out() -> None:
    cohort = study_cohort()
    [split] = make_split(cohort, DatasetSettings("sarcopenia_gsu", sizes=(60, 10, 20)))
    assert Counter(split.values()) == {"train": 60, "val": 10, "test": 20}
    assert set(split) < set(cohort.patient_ids.tolist())


def test_sizes_above_the_cohort_are_refused() -> None:
    with pytest.raises(SplitError, match="need 142 patients but only 141"):
        make_split(study_cohort(), DatasetSettings("sarcopenia_gsu", sizes=(105, 17, 20)))


def test_a_subset_without_both_classes_is_refused() -> None:
    with pytest.raises(SplitError):
        make_split(study_cohort(30, 2), DatasetSettings("sarcopenia_gsu", sizes=(20, 5, 5)))


@pytest.mark.parametrize("seed", range(4))
def test_enriched_test_set_holds_the_studys_nine_of_twenty(seed: int) -> None:
    """Table 1 implies 9 sarcopenic patients among the 20 tested (DOMAIN.md)."""
    cohort = study_cohort()
    settings = DatasetSettings("sarcopenia_gsu", seed=seed, test_positives=9)
    [split] = make_split(cohort, settings)
    assert make_split(cohort, settings) == [split]
    assert Counter(split.values()) == {"train": 104, "val": 17, "test": 20}
    label = dict(zip(cohort.patient_ids.tolist(), cohort.y.tolist(), strict=True))
    positives = Counter(s for p, s in split.items() if label[p])
    assert positives["test"] == 9
    rest = positives["train"] + positives["val"]
    assert rest == 20 and abs(positives["val"] - 20 * 17 / 121) <= 1


def test_enriched_test_set_with_smaller_sizes_leaves_patients_out() -> None:
    cohort = study_cohort()
    settings = DatasetSettings("sarcopenia_gsu", sizes=(60, 10, 30), test_positives=15)
    [split] = make_split(cohort, settings)
    assert Counter(split.values()) == {"train": 60, "val": 10, "test": 30}
    label = dict(zip(cohort.patient_ids.tolist(), cohort.y.tolist(), strict=True))
    assert sum(label[p] for p, s in split.items() if s == "test") == 15


def test_enrichment_that_starves_training_is_refused() -> None:
    settings = DatasetSettings("sarcopenia_gsu", sizes=(60, 10, 40), test_positives=29)
    with pytest.raises(SplitError, match=r"29 positive and 11 negative .* leaves too few"):
        make_split(study_cohort(), settings)


def test_k_fold_puts_every_patient_in_test_once() -> None:
    cohort = study_cohort()
    folds = make_split(cohort, DatasetSettings("sarcopenia_gsu", k_folds=5))
    assert len(folds) == 5
    tested = Counter(p for fold in folds for p, s in fold.items() if s == "test")
    assert set(tested) == set(cohort.patient_ids.tolist()) and set(tested.values()) == {1}
    for fold in folds:
        counts = Counter(fold.values())
        assert counts["val"] == 17 and sum(counts.values()) == 141
        assert counts["test"] in (28, 29)


def test_k_fold_needs_k_patients_per_class() -> None:
    with pytest.raises(SplitError, match="at least 5 patients of each class"):
        make_split(study_cohort(40, 4), DatasetSettings("sarcopenia_gsu", k_folds=5))


# ---------------------------------------------------------------------------------------
# Stored splits


def test_save_split_stores_once_and_reuses_an_identical_split(own_demo: Demo) -> None:
    db = own_demo.db
    settings = gsu_settings()
    td = load_task_data(db, own_demo.store, settings, cache_dir=own_demo.cache)
    folds = make_split(td, settings)
    split_id = save_split(db, settings, td, folds)
    assert save_split(db, settings, td, make_split(td, settings)) == split_id
    assert load_split(db, split_id) == folds
    with db.read() as session:
        assert session.query(Split).count() == 1
        assert session.query(SplitAssignment).count() == sum(len(f) for f in folds)
        stored = session.get(Split, split_id)
        assert stored.settings["data_fingerprint"] == td.fingerprint
        assert DatasetSettings.from_payload(stored.settings) == settings

    other = DatasetSettings("sarcopenia_gsu", input_size=SMALL, sizes=(11, 4, 6), seed=5)
    td_other = load_task_data(db, own_demo.store, other, cache_dir=own_demo.cache)
    assert save_split(db, other, td_other, make_split(td_other, other)) != split_id
    with pytest.raises(ValueError, match="not in the task data"):
        save_split(db, settings, td, [{**folds[0], 999_999: "train"}])


def test_subset_indices_select_the_assigned_rows(demo: Demo) -> None:
    td = load_task_data(demo.db, demo.store, gsu_settings(), cache_dir=demo.cache)
    [split] = make_split(td, gsu_settings())
    test = subset_indices(td, split, "test")
    assert len(test) == 6
    assert all(split[int(td.patient_ids[i])] == "test" for i in test)


# ---------------------------------------------------------------------------------------
# tf.data


def test_tf_dataset_batches_single_and_fused_inputs(demo: Demo, fusion) -> None:
    td = load_task_data(demo.db, demo.store, gsu_settings(), cache_dir=demo.cache)
    batches = list(tf_dataset(td, np.arange(10), batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    x, y = batches[0]
    assert tuple(x.shape) == (4, *SMALL, 1) and y.dtype.name == "float32"
    np.testing.assert_array_equal(y.numpy(), td.y[:4].astype(np.float32))
    np.testing.assert_array_equal(x.numpy(), td.inputs["gsu"][:4])

    x, y = next(iter(tf_dataset(fusion, [0, 1, 2], batch_size=3, shuffle=True, seed=1)))
    assert set(x) == {"gsu", "swe"}
    assert tuple(x["gsu"].shape) == (3, *SMALL, 1) and tuple(x["swe"].shape) == (3, *SMALL, 4)
    assert sorted(y.numpy().tolist()) == sorted(fusion.y[:3].astype(float).tolist())


def test_tf_dataset_augments_batches_only_when_asked(demo: Demo, fusion) -> None:
    from core.learning.augment import build_augmenter

    td = load_task_data(demo.db, demo.store, gsu_settings(), cache_dir=demo.cache)
    augmenter = build_augmenter(seed=3)
    x_aug, _ = next(iter(tf_dataset(td, np.arange(8), batch_size=8, augment=augmenter)))
    assert tuple(x_aug.shape) == (8, *SMALL, 1)
    assert not np.allclose(x_aug.numpy(), td.inputs["gsu"][:8])
    assert float(x_aug.numpy().min()) >= 0.0 and float(x_aug.numpy().max()) <= 1.0

    x, _ = next(iter(tf_dataset(fusion, np.arange(4), batch_size=4, augment={"gsu": augmenter})))
    np.testing.assert_array_equal(x["swe"].numpy(), fusion.inputs["swe"][:4])
    assert not np.allclose(x["gsu"].numpy(), fusion.inputs["gsu"][:4])
    with pytest.raises(ValueError, match="several inputs"):
        tf_dataset(fusion, np.arange(4), augment=augmenter)
    with pytest.raises(ValueError, match="indices"):
        tf_dataset(td, [len(td)])


def test_a_box_outside_its_image_names_the_patient(own_demo: Demo) -> None:
    db = own_demo.db
    code = load_task_data(db, own_demo.store, gsu_settings(), cache_dir=own_demo.cache).codes[1]
    gsu_id = _image(db, code, "GSU").id

    def widen(session) -> None:
        for row in session.scalars(select(CropBox).where(CropBox.image_id == gsu_id)):
            row.w = 700  # the demo frames are 640 px wide

    db.write(widen)
    with pytest.raises(BoxOutsideImageError, match=f"GSU image of {code}"):
        load_task_data(db, own_demo.store, gsu_settings(), cache_dir=own_demo.cache)
