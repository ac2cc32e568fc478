"""The study's tasks (inputs, label, sizes, titles) and ``DatasetSettings``, the data recipe.

Which task, which seed and split sizes, which normalization and crop aspect: everything that
decides which arrays and which split a task gets, with the checks a user's input needs.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import numpy as np

from core.imaging.crop import GSU_SIZE, SWE_SIZE, Aspect
from core.imaging.normalize import NORMALIZATION_METHODS

InputName = Literal["gsu", "swe"]
LabelKind = Literal["sarcopenia", "echogenicity_high"]

PIPELINE_VERSION = 1
"""Part of every cache key and fingerprint; bump it when the crop/normalize recipe changes."""

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
