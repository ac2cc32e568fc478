"""Patient-level splits: seeded and stratified, with an enriched test set or k folds; stored.

A patient has one row, so their images never straddle subsets; every subset must hold both
classes. ``save_split`` stores a split once (an identical one is reused) and ``load_split``
reads it back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split
from sqlalchemy import select

from core.learning.dataset.arrays import TaskData
from core.learning.dataset.tasks import DatasetSettings
from db.engine import Database
from db.models import SUBSETS, Split, SplitAssignment


class Labelled(Protocol):
    """What a split needs: patient ids and their 0/1 labels, in the same order."""

    patient_ids: np.ndarray
    y: np.ndarray


class SplitError(ValueError):
    """The split sizes do not fit the patients, or a subset would miss a class."""


# ---------------------------------------------------------------------------------------
# Splits


def _check_classes(y: np.ndarray, index: np.ndarray, subset: str, fold: int) -> None:
    present = set(np.unique(y[index]).tolist())
    if present != {0, 1}:
        where = f" of fold {fold}" if fold else ""
        raise SplitError(
            f"The {subset} set{where} would hold only class {sorted(present)} "
            f"({len(index)} patients); make it larger or use another seed."
        )


def _stratified_take(
    index: np.ndarray, y: np.ndarray, n: int, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into (rest, n stratified patients)."""
    try:
        rest, taken = train_test_split(index, test_size=n, stratify=y[index], random_state=seed)
    except ValueError as exc:
        raise SplitError(
            f"Cannot draw {n} {what} patients stratified by label from {len(index)} "
            f"({int(y[index].sum())} positive): {exc}"
        ) from None
    return np.sort(rest), np.sort(taken)


def _enriched_test(
    index: np.ndarray, y: np.ndarray, n_test: int, positives: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into (rest, a test set of exactly ``positives`` positive patients)."""
    pos, neg = index[y[index] == 1], index[y[index] == 0]
    negatives = n_test - positives
    if positives >= len(pos) or negatives >= len(neg):
        raise SplitError(
            f"A test set of {positives} positive and {negatives} negative patients leaves "
            f"too few for training: there are {len(pos)} positive and {len(neg)} negative. "
            "Ask for fewer test positives or a smaller test set."
        )
    rng = np.random.default_rng(seed)
    test = np.concatenate(
        [rng.choice(pos, positives, replace=False), rng.choice(neg, negatives, replace=False)]
    )
    return np.setdiff1d(index, test), np.sort(test)


def make_split(task_data: Labelled, settings: DatasetSettings) -> list[dict[int, str]]:
    """One {patient_id: "train" | "val" | "test"} per fold, stratified by label and seeded.

    Patient-level by construction: each patient has one row, so a patient's images never
    straddle subsets. Raises ``SplitError`` when the sizes exceed the patients or any subset
    would lack a class (AUC needs both).
    """
    ids = np.asarray(task_data.patient_ids)
    y = np.asarray(task_data.y).astype(np.int64)
    if ids.shape != y.shape or ids.ndim != 1:
        raise ValueError(f"patient_ids {ids.shape} and y {y.shape} must be equal-length 1-D.")
    if len(set(ids.tolist())) != len(ids):
        raise ValueError("patient_ids must be unique: one row per patient.")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("y must hold only 0 and 1.")
    n = len(ids)
    n_train, n_val, n_test = settings.sizes
    seed = settings.seed
    index = np.arange(n)
    folds: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if settings.k_folds >= 2:
        k = settings.k_folds
        if min(np.bincount(y, minlength=2)) < k:
            raise SplitError(
                f"{k}-fold stratification needs at least {k} patients of each class; "
                f"there are {int(y.sum())} positive and {int(n - y.sum())} negative."
            )
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for rest, test in skf.split(index, y):
            train, val = _stratified_take(rest, y, n_val, seed, "validation")
            folds.append((train, val, np.sort(test)))
    else:
        total = n_train + n_val + n_test
        if total > n:
            raise SplitError(
                f"Split sizes {n_train}/{n_val}/{n_test} need {total} patients but only {n} "
                f"qualify for task {settings.task!r}; set smaller sizes (they may add up to {n})."
            )
        if settings.test_positives is None:
            if total < n:
                _, index = _stratified_take(index, y, total, seed, "split")
            rest, test = _stratified_take(index, y, n_test, seed, "test")
        else:
            rest, test = _enriched_test(index, y, n_test, settings.test_positives, seed)
            if n_train + n_val < len(rest):
                _, rest = _stratified_take(rest, y, n_train + n_val, seed, "split")
        train, val = _stratified_take(rest, y, n_val, seed, "validation")
        folds.append((train, val, test))
    out: list[dict[int, str]] = []
    for fold, (train, val, test) in enumerate(folds):
        for subset, part in (("train", train), ("val", val), ("test", test)):
            _check_classes(y, part, subset, fold)
        assignment: dict[int, str] = {}
        for subset, part in (("train", train), ("val", val), ("test", test)):
            assignment.update({int(ids[i]): subset for i in part})
        out.append(dict(sorted(assignment.items())))
    return out


def subset_indices(task_data: TaskData, assignment: Mapping[int, str], subset: str) -> np.ndarray:
    """Row positions in ``task_data`` of the patients assigned to ``subset``."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {list(SUBSETS)}; got {subset!r}.")
    return np.array(
        [i for i, pid in enumerate(task_data.patient_ids) if assignment.get(int(pid)) == subset],
        dtype=np.int64,
    )


def split_fingerprint(task_data: TaskData, assignments: Sequence[Mapping[int, str]]) -> str:
    """sha256 of the data fingerprint and the assignments: equal means the very same split."""
    payload = {
        "data": task_data.fingerprint,
        "folds": [sorted((int(p), s) for p, s in a.items()) for a in assignments],
    }
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def save_split(
    db: Database,
    settings: DatasetSettings,
    task_data: TaskData,
    assignments: Sequence[Mapping[int, str]],
) -> int:
    """Store the split (one transaction) and return its id; an identical one is reused.

    ``Split.fingerprint`` is ``split_fingerprint``; the data fingerprint is kept in
    ``Split.settings["data_fingerprint"]`` so a training run can check its data against it.
    """
    if not assignments:
        raise ValueError("No fold to save: make_split returned nothing.")
    known = set(task_data.patient_ids.tolist())
    for fold, assignment in enumerate(assignments):
        unknown = set(assignment) - known
        if unknown:
            raise ValueError(
                f"Fold {fold} assigns {len(unknown)} patient(s) not in the task data "
                f"(ids {sorted(unknown)[:5]}); rebuild the split from this task data."
            )
        bad = set(assignment.values()) - set(SUBSETS)
        if bad:
            raise ValueError(f"Subsets must be {list(SUBSETS)}; fold {fold} has {sorted(bad)}.")
    fingerprint = split_fingerprint(task_data, assignments)
    if settings.k_folds >= 2:
        name = f"{settings.task} seed {settings.seed}, {settings.k_folds}-fold"
    else:
        name = f"{settings.task} seed {settings.seed}, {'/'.join(map(str, settings.sizes))}"

    def work(session) -> int:
        existing = session.scalar(
            select(Split.id).where(Split.fingerprint == fingerprint, Split.task == settings.task)
        )
        if existing is not None:
            return int(existing)
        split = Split(
            name=name,
            task=settings.task,
            seed=settings.seed,
            settings={**settings.fingerprint_payload(), "data_fingerprint": task_data.fingerprint},
            fingerprint=fingerprint,
        )
        split.assignments = [
            SplitAssignment(patient_id=int(pid), fold=fold, subset=subset)
            for fold, assignment in enumerate(assignments)
            for pid, subset in sorted(assignment.items())
        ]
        session.add(split)
        session.flush()
        return int(split.id)

    return db.write(work)


def load_split(db: Database, split_id: int) -> list[dict[int, str]]:
    """The stored assignments of a split, one {patient_id: subset} per fold."""
    with db.read() as session:
        if session.get(Split, split_id) is None:
            raise ValueError(f"There is no split with id {split_id}.")
        rows = session.execute(
            select(SplitAssignment.fold, SplitAssignment.patient_id, SplitAssignment.subset)
            .where(SplitAssignment.split_id == split_id)
            .order_by(SplitAssignment.fold, SplitAssignment.patient_id)
        ).all()
    folds: dict[int, dict[int, str]] = {}
    for fold, pid, subset in rows:
        folds.setdefault(fold, {})[pid] = subset
    return [folds[f] for f in sorted(folds)]
