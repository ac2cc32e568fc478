"""Tiny trained runs for the evaluation tests: untrained 32×32 models with real rows.

Registered as a fixture in ``tests/conftest.py`` so every evaluation test file shares one
build (about 18 s) per session.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from core.common import config
from core.common.store import ImageStore
from core.learning.dataset import TASKS, ArrayCache, collect_cases, make_split
from db.consensus import auto_agree
from db.datafiles import file_sha256, stored_path
from db.engine import Database
from db.models import (
    Patient,
    Prediction,
    Split,
    SplitAssignment,
    TrainingRun,
)

TINY = (32, 32)
SIZES = {"echogenicity_gsu": (8, 5, 5)}
"""Split sizes of tiny runs: all 18 (echogenicity) or 21 (sarcopenia) qualifying patients."""
DEFAULT_SIZES = (9, 6, 6)
MODEL_ARCH = "vgg19"


@dataclass(frozen=True)
class TinyModel:
    """An untrained tiny model file for ``task`` and its probability for every demo patient."""

    task: str
    path: Path
    probabilities: dict[str, float]


@dataclass(frozen=True)
class _Labels:
    patient_ids: np.ndarray
    y: np.ndarray


def _train_settings(task: str, seed: int, sizes: tuple[int, int, int]):
    from core.learning.train import TrainSettings

    return TrainSettings(
        task=task, arch=MODEL_ARCH, weights="none", input_size=TINY, seed=seed, sizes=sizes
    )


def _build(task: str, folder: Path, out: Path, seed: int) -> TinyModel:
    """Build and save a tiny model; its probabilities come from a plain ``model(x)`` call."""
    import keras

    from core.learning.dataset import input_arrays
    from core.learning.models import ModelSpec, build_model
    from core.services.review import case_images

    keras.utils.set_random_seed(seed)
    spec = TASKS[task]
    name = spec.inputs[0]
    model = build_model(
        ModelSpec(arch=MODEL_ARCH, input_size=TINY, channels=spec.channels(name), weights="none")
    )
    path = out / f"{task}.keras"
    model.save(path)
    db = Database(f"sqlite:///{folder / 'sarcopenia.db'}")
    store = ImageStore(folder / "images")
    crops = ArrayCache(out / "crops")
    settings = _train_settings(task, seed, (1, 1, 1)).dataset_settings((1, 1, 1))
    cases = case_images(db, store, task, cache=crops)
    with db.read() as session:
        codes = dict(session.execute(select(Patient.id, Patient.code)).all())
    probabilities = {}
    for pid, images in cases.items():
        if isinstance(images, str):
            continue
        x = input_arrays(store, crops, settings, name, images[name])["x"][None]
        probabilities[codes[pid]] = float(np.asarray(model(x, training=False)).reshape(-1)[0])
    db.dispose()
    return TinyModel(task, path, probabilities)


@pytest.fixture(scope="session")
def tiny_models(small_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyModel]:
    """Tiny GSU and SWE models, built once per test session on the small demo cohort.

    The probabilities are those of the ``demo`` fixture's data: the small demo after the
    automatic consensus (whose mean boxes are the crops). Other test modules import this
    fixture, which makes pytest register it once per module; ``_BUILT`` keeps it to one build.
    """
    key = str(small_demo)
    if key not in _BUILT:
        _BUILT[key] = _build_all(small_demo, tmp_path_factory.mktemp("tiny_models"))
    return _BUILT[key]


_BUILT: dict[str, dict[str, TinyModel]] = {}


def _build_all(small_demo: Path, out: Path) -> dict[str, TinyModel]:
    folder = out / "data"
    shutil.copytree(small_demo, folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SARCOPENIA_DATA_DIR", str(folder))
        db = Database(f"sqlite:///{folder / 'sarcopenia.db'}")
        db.write(auto_agree)
        db.dispose()
        return {
            "gsu": _build("sarcopenia_gsu", folder, out, seed=1),
            "swe": _build("sarcopenia_swe", folder, out, seed=2),
        }


def split_of(
    db: Database,
    store: ImageStore,
    task: str,
    sizes: tuple[int, int, int] | None = None,
    seed: int = 42,
) -> dict[str, str]:
    """The {code: subset} split ``add_tiny_run`` stores for these settings (deterministic)."""
    sizes = sizes or SIZES.get(task, DEFAULT_SIZES)
    ds = _train_settings(task, seed, sizes).dataset_settings(sizes)
    cases, _ = collect_cases(db, store, ds)
    labels = _Labels(np.array([c.patient_id for c in cases]), np.array([c.label for c in cases]))
    codes = {c.patient_id: c.code for c in cases}
    return {codes[pid]: subset for pid, subset in make_split(labels, ds)[0].items()}


def add_tiny_run(
    db: Database,
    store: ImageStore,
    model: TinyModel,
    *,
    task: str | None = None,
    sizes: tuple[int, int, int] | None = None,
    seed: int = 42,
    probabilities: Mapping[str, float] | None = None,
) -> int:
    """A finished run as ``core.learning.train`` leaves it: split, model file, val/test predictions.

    ``probabilities`` (by patient code) replaces the model's own outputs in the stored
    predictions, to test metrics and filters on known numbers.
    """
    task = task or model.task
    sizes = sizes or SIZES.get(task, DEFAULT_SIZES)
    settings = _train_settings(task, seed, sizes)
    ds = settings.dataset_settings(sizes)
    split = split_of(db, store, task, sizes, seed)
    with db.read() as session:
        ids = dict(session.execute(select(Patient.code, Patient.id)).all())
    assignment = {ids[code]: subset for code, subset in split.items()}
    codes = {pid: code for code, pid in ids.items()}
    probs = dict(model.probabilities, **(probabilities or {}))

    def work(session) -> int:
        split = Split(
            name=f"{task} test split",
            task=task,
            seed=seed,
            settings=ds.fingerprint_payload(),
            fingerprint=f"tiny-{task}-{seed}-{time.monotonic_ns()}",
        )
        split.assignments = [
            SplitAssignment(patient_id=pid, fold=0, subset=subset)
            for pid, subset in assignment.items()
        ]
        session.add(split)
        session.flush()
        run = TrainingRun(
            task=task,
            arch=MODEL_ARCH,
            modality=settings.modality,
            input_size=list(TINY),
            settings=settings.to_dict(),
            weights_source="none",
            split_id=split.id,
            status="done",
            metrics={"threshold": 0.5, "saved_fold": 0},
            history={"epochs": []},
        )
        session.add(run)
        session.flush()
        target = config.models_dir() / f"run-{run.id}.keras"
        os.link(model.path, target)
        run.model_path = stored_path(target)
        run.model_sha256 = file_sha256(target)
        for pid, subset in assignment.items():
            if subset == "train":
                continue
            p = probs[codes[pid]]
            session.add(
                Prediction(
                    run_id=run.id,
                    patient_id=pid,
                    subset=subset,
                    fold=0,
                    probability=p,
                    threshold=0.5,
                    predicted_label=int(p >= 0.5),
                )
            )
        return run.id

    return db.write(work)
