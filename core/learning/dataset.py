"""Model-ready arrays per task, patient-level splits, and the ``tf.data`` input pipeline.

Yi et al. (Sci Rep 2022) cropped the ultrasound image area (GSU) or the elastographic colour
box (SWE), normalized the intensity and resampled to 112×112 (GSU) or 84×84 (SWE), and split
*patients* at random into training, validation and test sets. This module does the same from
the database, which is the only source of labels:

- Sarcopenia tasks take only patients whose CT is eligible (``db.cases.case_labels``);
  excluded patients never enter, and ``TaskData.excluded`` says why each one stayed out.
- The echogenicity task takes only patients whose GSU image has a *consensus* grade (label:
  grade ≥ 2, the study's dichotomy). A single reader's grade is never used as a fallback,
  because the study's ground truth was the two readers' consensus.
- Each image is cut with the consensus box, else a reader's box (first reader by username),
  else the automatic box (a stored ``auto`` box, or one detected on the fly), and
  ``TaskData.box_sources`` records which.
- Decoded, cropped, normalized arrays are cached on disk as ``.npz`` files keyed by image
  hash, box and settings, so epochs and reruns never decode a PNG twice.
- ``TaskData.fingerprint`` hashes image hashes, boxes, labels and settings: a training run
  stores it, so a changed box or label shows up as a different data set.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from core.common import config
from core.common.boxes import Box
from core.common.labels import dichotomize_grade
from core.common.store import ImageStore
from core.imaging.crop import GSU_SIZE, SWE_SIZE, Aspect, ChosenBox, choose_box, crop, resize_crop
from core.imaging.images import load_pixels
from core.imaging.normalize import NORMALIZATION_METHODS, normalize, normalize_rgb
from core.imaging.roi_detect import (
    NoImageContentError,
    detect_color_box,
    detect_ultrasound_area,
    to_rgb_u8,
)
from core.imaging.swe_decode import KPA_UNITS, decode_swe
from db.cases import case_labels
from db.engine import Database
from db.models import SUBSETS, ConsensusGrade, CropBox, Patient, Reader, Split, SplitAssignment

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

InputName = Literal["gsu", "swe"]
LabelKind = Literal["sarcopenia", "echogenicity_high"]
Progress = Callable[[int, int], None]

PIPELINE_VERSION = 1
"""Part of every cache key and fingerprint; bump it when the crop/normalize recipe changes."""

STIFFNESS_FULL_SCALE_KPA = 100.0
"""Decoded stiffness is divided by this (then clipped to [0, 1]) for the fusion input. A fixed
scale, not each image's own range, keeps absolute stiffness comparable between patients;
resting muscle measures a few tens of kPa, well inside it."""

DEFAULT_WORKERS = 4
"""Threads that decode and crop; OpenCV and NumPy release the GIL for most of that work."""

_MODALITY = {"gsu": "GSU", "swe": "SWE"}
_ASPECTS: tuple[str, ...] = get_args(Aspect)


@dataclass(frozen=True)
class TaskSpec:
    """What a task feeds the network and what it predicts.

    ``swe_decoded`` picks the SWE representation: False gives the normalized RGB crop (the
    study's SWE input); True gives decoded stiffness plus the colour overlay (fusion).
    """

    task: str
    inputs: tuple[InputName, ...]
    label: LabelKind
    sizes: dict[str, tuple[int, int]]
    swe_decoded: bool = False

    def channels(self, name: str) -> int:
        if name == "gsu":
            return 1
        return 4 if self.swe_decoded else 3


TASKS: dict[str, TaskSpec] = {
    "sarcopenia_gsu": TaskSpec("sarcopenia_gsu", ("gsu",), "sarcopenia", {"gsu": GSU_SIZE}),
    "sarcopenia_swe": TaskSpec("sarcopenia_swe", ("swe",), "sarcopenia", {"swe": SWE_SIZE}),
    "sarcopenia_fusion": TaskSpec(
        "sarcopenia_fusion",
        ("gsu", "swe"),
        "sarcopenia",
        {"gsu": GSU_SIZE, "swe": SWE_SIZE},
        swe_decoded=True,
    ),
    "echogenicity_gsu": TaskSpec(
        "echogenicity_gsu", ("gsu",), "echogenicity_high", {"gsu": GSU_SIZE}
    ),
}


TASK_TITLES: dict[str, str] = {
    "sarcopenia_gsu": "Sarcopenia from GSU",
    "sarcopenia_swe": "Sarcopenia from SWE",
    "sarcopenia_fusion": "Sarcopenia from GSU + SWE (fusion)",
    "echogenicity_gsu": "Echogenicity (low/high) from GSU",
}
"""The tasks as the study names them, for pages and tables; the keys stay in data and CLI."""


def task_title(task: str) -> str:
    """The study's name of a task ("Sarcopenia from SWE"); an unknown key is shown as is."""
    return TASK_TITLES.get(task, task)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_ints(value: Any, n: int, what: str, names: str) -> tuple[int, ...]:
    ok = isinstance(value, Sequence | np.ndarray) and not isinstance(value, str)
    items = tuple(value) if ok else ()
    if len(items) != n or not all(_is_int(v) and v >= 1 for v in items):
        raise ValueError(f"{what} must be {n} positive integers ({names}); got {value!r}.")
    return tuple(int(v) for v in items)


@dataclass(frozen=True)
class DatasetSettings:
    """Everything that decides which arrays and which split a task gets.

    ``sizes`` = (train, val, test) patients. The default 104/17/20 is the study's text; its
    Fig. 3 says 96:15:30 (sarcopenia) and 115:15:30 (echogenicity), so it is a setting. The
    sizes are exact: patients beyond their sum are left out of the split (make them add up
    to the eligible count to use everyone). With ``k_folds`` ≥ 2 the test set is each
    stratified fold in turn, ``sizes[1]`` patients of the rest form the validation set, and
    ``sizes[0]`` and ``sizes[2]`` are not used. ``input_size`` overrides every input's size.

    ``test_positives`` (single split only) fixes how many positive patients the test set
    holds instead of stratifying it: the study's Table 1 implies 9 sarcopenic patients among
    its 20 (45%, against 21% in the cohort), and 9 reproduces that enriched test set. The
    training and validation sets stay stratified over the patients left.
    """

    task: str
    seed: int = 42
    sizes: tuple[int, int, int] = (104, 17, 20)
    normalization: str = "percentile_gamma"
    aspect: str = "stretch"
    input_size: tuple[int, int] | None = None
    k_folds: int = 0
    test_positives: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"Unknown task {self.task!r}; choose one of {sorted(TASKS)}.")
        sizes = _positive_ints(self.sizes, 3, "sizes", "train, val, test")
        object.__setattr__(self, "sizes", sizes)
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer; got {self.seed!r}.")
        if self.normalization not in NORMALIZATION_METHODS:
            raise ValueError(
                f"Unknown normalization {self.normalization!r}; choose one of "
                f"{list(NORMALIZATION_METHODS)}."
            )
        if self.aspect not in _ASPECTS:
            raise ValueError(f"aspect must be one of {list(_ASPECTS)}; got {self.aspect!r}.")
        if self.input_size is not None:
            size = _positive_ints(self.input_size, 2, "input_size", "height, width")
            object.__setattr__(self, "input_size", size)
        if not _is_int(self.k_folds) or self.k_folds == 1 or self.k_folds < 0:
            raise ValueError(
                f"k_folds must be 0 (one split) or at least 2 (k-fold); got {self.k_folds!r}."
            )
        if self.test_positives is not None:
            if not _is_int(self.test_positives) or not 1 <= self.test_positives < sizes[2]:
                raise ValueError(
                    f"test_positives must be a whole number from 1 to {sizes[2] - 1} (the test "
                    f"set holds {sizes[2]} patients and needs both classes); "
                    f"got {self.test_positives!r}."
                )
            if self.k_folds:
                raise ValueError(
                    "test_positives sets the single split's test set; k-fold tests every "
                    "patient once, so leave it empty with k_folds."
                )

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.task]

    def input_sizes(self) -> dict[str, tuple[int, int]]:
        """(height, width) per input after the ``input_size`` override."""
        return {name: self.input_size or self.spec.sizes[name] for name in self.spec.inputs}

    def fingerprint_payload(self) -> dict[str, Any]:
        """JSON-safe settings, as stored with a split and hashed into the fingerprint.

        ``test_positives`` appears only when set, so splits stored before it existed keep
        their fingerprints.
        """
        enriched = {} if self.test_positives is None else {"test_positives": self.test_positives}
        return {
            "task": self.task,
            "seed": int(self.seed),
            "sizes": list(self.sizes),
            "normalization": self.normalization,
            "aspect": self.aspect,
            "input_size": list(self.input_size) if self.input_size else None,
            "k_folds": int(self.k_folds),
            "input_sizes": {k: list(v) for k, v in self.input_sizes().items()},
            "pipeline_version": PIPELINE_VERSION,
            **enriched,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> DatasetSettings:
        """Rebuild settings from ``fingerprint_payload()`` (e.g. a stored split's settings)."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in payload.items() if k in names}
        if kwargs.get("input_size") is not None:
            kwargs["input_size"] = tuple(kwargs["input_size"])
        if "sizes" in kwargs:
            kwargs["sizes"] = tuple(kwargs["sizes"])
        return cls(**kwargs)


@dataclass(frozen=True)
class CaseImage:
    """One stored image of a case and the box it is cut with."""

    sha256: str
    path: str
    chosen: ChosenBox
    label: str
    """How error messages name it, e.g. "GSU image of DEMO-001"."""


@dataclass(frozen=True)
class Case:
    """A patient that enters a task: label and one image (with its box) per input."""

    patient_id: int
    code: str
    label: int
    images: dict[str, CaseImage]


@dataclass
class TaskData:
    """Arrays for one task, one row per patient, in patient-id order.

    ``inputs``: ``"gsu"`` is (N, H, W, 1) normalized gray; ``"swe"`` is (N, h, w, 3) the
    normalized RGB crop, or for fusion (N, h, w, 4): stiffness / ``STIFFNESS_FULL_SCALE_KPA``
    (0 where nothing was decoded) then the colour overlay RGB (0 outside the overlay; the
    B-mode comes from the GSU input). All float32 in [0, 1].
    """

    settings: DatasetSettings
    patient_ids: np.ndarray
    codes: list[str]
    y: np.ndarray
    inputs: dict[str, np.ndarray]
    box_sources: list[dict[str, str]]
    boxes: list[dict[str, tuple[int, int, int, int]]]
    fingerprint: str
    excluded: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0

    def __len__(self) -> int:
        return len(self.patient_ids)


class Labelled(Protocol):
    """What a split needs: patient ids and their 0/1 labels, in the same order."""

    patient_ids: np.ndarray
    y: np.ndarray


class NoPatientsError(ValueError):
    """No patient qualifies for the task (labels, images or boxes are missing)."""


class SplitError(ValueError):
    """The split sizes do not fit the patients, or a subset would miss a class."""


# ---------------------------------------------------------------------------------------
# On-disk cache of decoded arrays


class ArrayCache:
    """``.npz`` files named by the hash of what produced them; written atomically.

    A damaged file counts as a miss and is rewritten.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else config.data_dir() / "cache" / "crops"
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        text = json.dumps({**parts, "pipeline_version": PIPELINE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, parts: Mapping[str, Any]) -> Path:
        key = self.key(parts)
        return self.root / key[:2] / f"{key}.npz"

    def get_or_compute(
        self, parts: Mapping[str, Any], compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        path = self.path(parts)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    arrays = {name: stored[name] for name in stored.files}
                self.hits += 1
                return arrays
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                pass
        arrays = compute()
        self.misses += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return arrays


# ---------------------------------------------------------------------------------------
# Which patients, which labels, which boxes


def _box(row: CropBox) -> Box:
    return Box(row.x, row.y, row.w, row.h)


def _detect(name: str, pixels: np.ndarray) -> Box | None:
    if name == "gsu":
        return detect_ultrasound_area(pixels)
    return detect_color_box(pixels)


def auto_box(store: ImageStore, cache: ArrayCache, name: str, sha: str, path: str) -> Box | None:
    def compute() -> dict[str, np.ndarray]:
        try:
            found = _detect(name, load_pixels(store, path))
        except NoImageContentError:
            found = None
        return {"box": np.array(found.as_tuple() if found else (), dtype=np.int64)}

    arr = cache.get_or_compute({"kind": f"auto_box_{name}", "sha": sha}, compute)["box"]
    return Box(*(int(v) for v in arr)) if arr.size == 4 else None


def collect_cases(
    db: Database,
    store: ImageStore,
    settings: DatasetSettings,
    *,
    cache: ArrayCache | None = None,
    workers: int = DEFAULT_WORKERS,
) -> tuple[list[Case], dict[str, str]]:
    """The patients that enter ``settings.task`` (in id order) and, by code, why others do not.

    Boxes are chosen consensus > reader > automatic. When an image has no box at all, the
    detector proposes one (``core.imaging.roi_detect``); an image where it finds nothing keeps the
    patient out with that reason. Raises ``NoPatientsError`` when no patient qualifies.
    """
    spec = settings.spec
    cache = cache or ArrayCache(None)
    with db.read() as session:
        patients = session.scalars(
            select(Patient)
            .options(selectinload(Patient.ct), selectinload(Patient.images))
            .order_by(Patient.id)
        ).all()
        box_rows = session.execute(
            select(CropBox, Reader.username).outerjoin(Reader, Reader.id == CropBox.reader_id)
        ).all()
        consensus = {
            image_id: grade
            for image_id, grade in session.execute(
                select(ConsensusGrade.image_id, ConsensusGrade.grade)
            )
        }
    boxes: dict[int, dict[str, Any]] = {}
    for row, username in box_rows:
        entry = boxes.setdefault(row.image_id, {"consensus": None, "readers": {}, "auto": None})
        if row.owner_key == "consensus":
            entry["consensus"] = _box(row)
        elif row.owner_key == "auto":
            entry["auto"] = _box(row)
        else:
            entry["readers"][username or row.owner_key] = _box(row)

    excluded: dict[str, str] = {}
    pending: list[tuple[Patient, int]] = []
    for patient in patients:
        images = {img.modality: img for img in patient.images}
        if spec.label == "sarcopenia":
            derived = case_labels(patient)
            if not derived.eligible or derived.sarcopenic is None:
                excluded[patient.code] = derived.exclusion_reason or "no eligible CT"
                continue
            label = int(derived.sarcopenic)
        else:
            gsu = images.get("GSU")
            grade = consensus.get(gsu.id) if gsu is not None else None
            if grade is None:
                excluded[patient.code] = "no consensus echogenicity grade"
                continue
            label = dichotomize_grade(grade)
        missing = [_MODALITY[n] for n in spec.inputs if _MODALITY[n] not in images]
        if missing:
            excluded[patient.code] = f"no {' or '.join(missing)} image"
            continue
        pending.append((patient, label))

    def resolve(item: tuple[Patient, int]) -> Case | str:
        patient, label = item
        chosen: dict[str, CaseImage] = {}
        for name in spec.inputs:
            image = next(i for i in patient.images if i.modality == _MODALITY[name])
            entry = boxes.get(image.id, {"consensus": None, "readers": {}, "auto": None})
            auto = entry["auto"]
            if entry["consensus"] is None and not entry["readers"] and auto is None:
                auto = auto_box(store, cache, name, image.sha256, image.path)
                if auto is None:
                    return f"no crop box for the {_MODALITY[name]} image and none detected"
            what = f"{_MODALITY[name]} image of {patient.code}"
            pick = choose_box(entry["consensus"], entry["readers"], auto, image_label=what)
            chosen[name] = CaseImage(image.sha256, image.path, pick, what)
        return Case(patient.id, patient.code, label, chosen)

    cases: list[Case] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (patient, _), result in zip(pending, pool.map(resolve, pending), strict=True):
            if isinstance(result, str):
                excluded[patient.code] = result
            else:
                cases.append(result)
    if not cases:
        hint = (
            "Add consensus echogenicity grades first."
            if spec.label == "echogenicity_high"
            else "Check the CT measurements, images and boxes."
        )
        raise NoPatientsError(
            f"No patient qualifies for task {settings.task!r} ({len(excluded)} excluded). {hint}"
        )
    return cases, excluded


# ---------------------------------------------------------------------------------------
# Arrays


def _gsu_arrays(
    pixels: np.ndarray, image: CaseImage, size: tuple[int, int], s: DatasetSettings
) -> dict[str, np.ndarray]:
    roi = crop(pixels, image.chosen.box, image_label=image.label)
    out = resize_crop(normalize(roi, s.normalization), size, s.aspect)
    return {"x": np.clip(out, 0.0, 1.0).astype(np.float32)[:, :, None]}


def _swe_rgb_arrays(
    pixels: np.ndarray, image: CaseImage, size: tuple[int, int], s: DatasetSettings
) -> dict[str, np.ndarray]:
    roi = crop(pixels, image.chosen.box, image_label=image.label)
    out = resize_crop(normalize_rgb(roi, s.normalization), size, s.aspect)
    return {"x": np.clip(out, 0.0, 1.0).astype(np.float32)}


def decoded_swe_crop(store: ImageStore, cache: ArrayCache, image: CaseImage) -> dict[str, Any]:
    """The SWE image decoded inside its box, at native resolution; cached.

    Keys: ``stiffness`` (float32, NaN where nothing was decoded), ``overlay`` (uint8 RGB of
    the colour overlay, 0 elsewhere), ``units`` and ``warning`` (str, "" when none). The
    fusion input and the baseline's stiffness statistics both start from it, so each image
    is decoded once.
    """
    box = image.chosen.box

    def compute() -> dict[str, np.ndarray]:
        rgb = to_rgb_u8(load_pixels(store, image.path))
        decoded = decode_swe(rgb, color_box=box)
        mask = crop(decoded.overlay_mask, box, image_label=image.label)
        overlay = crop(rgb, box, image_label=image.label) * mask[:, :, None].astype(np.uint8)
        return {
            "stiffness": crop(decoded.stiffness, box, image_label=image.label),
            "overlay": overlay,
            "units": np.array(decoded.units),
            "warning": np.array(decoded.warning or ""),
        }

    parts = {"kind": "swe_decoded_crop", "sha": image.sha256, "box": list(box.as_tuple())}
    stored = cache.get_or_compute(parts, compute)
    return {
        "stiffness": stored["stiffness"],
        "overlay": stored["overlay"],
        "units": str(stored["units"]),
        "warning": str(stored["warning"]),
    }


def _swe_decoded_arrays(
    decoded: Mapping[str, Any], size: tuple[int, int], s: DatasetSettings
) -> dict[str, np.ndarray]:
    stiffness = decoded["stiffness"]
    if decoded["units"] == KPA_UNITS:
        stiffness = stiffness / STIFFNESS_FULL_SCALE_KPA
    stiffness = np.clip(np.nan_to_num(stiffness, nan=0.0), 0.0, 1.0)
    overlay = decoded["overlay"].astype(np.float32) / 255.0
    stacked = np.concatenate([stiffness[:, :, None], overlay], axis=2).astype(np.float32)
    out = resize_crop(stacked, size, s.aspect)
    return {
        "x": np.clip(out, 0.0, 1.0).astype(np.float32),
        "units": np.array(decoded["units"]),
        "warning": np.array(decoded["warning"]),
    }


def input_arrays(
    store: ImageStore,
    cache: ArrayCache,
    settings: DatasetSettings,
    name: str,
    image: CaseImage,
) -> dict[str, np.ndarray]:
    size = settings.input_sizes()[name]
    box = image.chosen.box
    parts: dict[str, Any] = {
        "sha": image.sha256,
        "box": list(box.as_tuple()),
        "size": list(size),
        "aspect": settings.aspect,
    }
    if name == "swe" and settings.spec.swe_decoded:
        return cache.get_or_compute(
            {**parts, "kind": "swe_decoded"},
            lambda: _swe_decoded_arrays(decoded_swe_crop(store, cache, image), size, settings),
        )
    make = _gsu_arrays if name == "gsu" else _swe_rgb_arrays
    return cache.get_or_compute(
        {**parts, "kind": name, "normalization": settings.normalization},
        lambda: make(load_pixels(store, image.path), image, size, settings),
    )


def data_fingerprint(settings: DatasetSettings, cases: Sequence[Case]) -> str:
    """sha256 over settings, and per patient its label, image hashes and boxes (with source)."""
    payload = {
        "settings": settings.fingerprint_payload(),
        "cases": [
            [
                c.patient_id,
                c.label,
                {
                    name: [img.sha256, list(img.chosen.box.as_tuple()), img.chosen.source]
                    for name, img in sorted(c.images.items())
                },
            ]
            for c in cases
        ],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_task_data(
    db: Database,
    store: ImageStore,
    settings: DatasetSettings,
    *,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
    workers: int = DEFAULT_WORKERS,
) -> TaskData:
    """Crop, normalize and resize every eligible patient's images for ``settings.task``.

    ``cache_dir`` defaults to ``<data folder>/cache/crops``. Raises ``NoPatientsError`` when
    no patient qualifies, and ``BoxOutsideImageError`` when a stored box leaves its image.
    When stiffness decodes in different units across patients (kPa for some, relative for
    others), the fusion input would mix scales, so that is an error too.
    """
    spec = settings.spec
    cache = ArrayCache(cache_dir)
    cases, excluded = collect_cases(db, store, settings, cache=cache, workers=workers)

    def arrays(case: Case) -> dict[str, dict[str, np.ndarray]]:
        return {
            name: input_arrays(store, cache, settings, name, case.images[name])
            for name in spec.inputs
        }

    per_case: list[dict[str, dict[str, np.ndarray]]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, result in enumerate(pool.map(arrays, cases), start=1):
            per_case.append(result)
            if progress:
                progress(i, len(cases))

    warnings: dict[str, str] = {}
    if spec.swe_decoded:
        units = {c.code: str(r["swe"]["units"]) for c, r in zip(cases, per_case, strict=True)}
        if len(set(units.values())) > 1:
            rel = sorted(code for code, u in units.items() if u != KPA_UNITS)
            raise ValueError(
                f"Stiffness decoded in kPa for some patients but in relative units for "
                f"{len(rel)} ({', '.join(rel[:5])}{', …' if len(rel) > 5 else ''}): their "
                "colour scale labels could not be read. Fix or exclude those SWE images."
            )
        warnings = {
            c.code: str(r["swe"]["warning"])
            for c, r in zip(cases, per_case, strict=True)
            if str(r["swe"]["warning"])
        }
    return TaskData(
        settings=settings,
        patient_ids=np.array([c.patient_id for c in cases], dtype=np.int64),
        codes=[c.code for c in cases],
        y=np.array([c.label for c in cases], dtype=np.int64),
        inputs={name: np.stack([r[name]["x"] for r in per_case]) for name in spec.inputs},
        box_sources=[{n: img.chosen.source for n, img in c.images.items()} for c in cases],
        boxes=[{n: img.chosen.box.as_tuple() for n, img in c.images.items()} for c in cases],
        fingerprint=data_fingerprint(settings, cases),
        excluded=excluded,
        warnings=warnings,
        cache_hits=cache.hits,
        cache_misses=cache.misses,
    )


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


# ---------------------------------------------------------------------------------------
# tf.data


def _augment_fn(
    augment: keras.Model | Mapping[str, keras.Model], names: tuple[str, ...]
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """A ``Dataset.map`` function that augments each input with its own augmenter."""
    if isinstance(augment, Mapping):
        models = dict(augment)
    elif len(names) == 1:
        models = {names[0]: augment}
    else:
        raise ValueError(
            "This task has several inputs; pass augment as a dict of augmenters by input "
            f"name, e.g. {{'gsu': augmenter}} (inputs: {list(names)})."
        )
    unknown = set(models) - set(names)
    if unknown:
        raise ValueError(f"No input named {sorted(unknown)}; this task's inputs are {list(names)}.")

    def run(name: str, x: Any) -> Any:
        return models[name](x, training=True) if name in models else x

    if len(names) == 1:
        return lambda x, y: (run(names[0], x), y)
    return lambda x, y: ({k: run(k, v) for k, v in x.items()}, y)


def tf_dataset(
    task_data: TaskData,
    indices: Sequence[int] | np.ndarray,
    *,
    batch_size: int = 16,
    shuffle: bool = False,
    seed: int = 0,
    augment: keras.Model | Mapping[str, keras.Model] | None = None,
) -> tf.data.Dataset:
    """Batches of (inputs, y) for the rows ``indices``; y is float32 0/1.

    Inputs are one array for single-input tasks and a dict keyed ``"gsu"``/``"swe"`` for
    fusion (name the Keras ``Input`` layers the same). The rows are cached, shuffled each
    epoch when ``shuffle``, batched, then augmented (the ``augment`` model needs batched
    input) and prefetched. Pass ``augment`` only for the training set; for fusion give a dict
    of augmenters by input name (inputs without one pass unchanged).
    """
    import tensorflow as tf

    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError("indices must be a non-empty 1-D list of row positions.")
    if idx.min() < 0 or idx.max() >= len(task_data):
        raise ValueError(
            f"indices must lie in 0…{len(task_data) - 1}; got {idx.min()}…{idx.max()}."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}.")
    names = task_data.settings.spec.inputs
    arrays = {name: task_data.inputs[name][idx] for name in names}
    features: Any = arrays[names[0]] if len(names) == 1 else arrays
    ds = tf.data.Dataset.from_tensor_slices((features, task_data.y[idx].astype(np.float32)))
    ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(_augment_fn(augment, names), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
