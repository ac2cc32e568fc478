"""What decides a training run: ``TrainSettings``, its checks and JSON form, and the run errors.

Imports neither Keras nor TensorFlow, so the app can build and check settings cheaply.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from core.learning.dataset import TASKS, DatasetSettings
from core.learning.weights import resolve_weights

Mode = Literal["fast", "full"]
MODES: Final[tuple[str, ...]] = get_args(Mode)
ARCHITECTURES: Final = ("vgg19", "resnet50", "densenet121")
"""Same as ``core.learning.models.ARCHITECTURES``; repeated so this module imports without Keras."""
DEFAULT_EPOCHS: Final[dict[str, int]] = {"fast": 15, "full": 30}
DEFAULT_VAL_TEST: Final = (17, 20)
"""Validation and test patients in the study's text (Yi et al. 2022); training gets the rest."""


class TrainingError(RuntimeError):
    """A run that cannot be trained in its current state; the message says why."""


class RunCancelled(Exception):
    """Raised inside training when the run's ``cancel_requested`` flag is seen."""


def _pair(value: Any, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{what} must be one integer or two (height, width); got {value!r}.")
    return (int(pair[0]), int(pair[1]))


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a run; stored as JSON with the run (``to_dict``).

    ``weights`` is ``"imagenet"`` (the study; from the Keras cache, never downloaded),
    ``"none"`` (random initialization) or the path of a notop weights file. ``sizes`` are
    (train, val, test) patients; None keeps the study's 17 validation and 20 test patients
    and trains on all the others; ``test_positives`` fixes the sarcopenic patients in the
    test set (9 of 20 in the study; see ``DatasetSettings``). ``augment_copies`` is how many
    augmented copies of each image fast mode adds to the cached features (full mode augments
    every epoch instead).
    Fusion uses ``arch`` for its GSU backbone. ``run_eagerly`` skips Keras's graph tracing:
    slower per step, but quicker for a run of one or two epochs on a handful of patients.
    ``fold`` trains only that fold of the k-fold split (a k-fold run fanned out over
    workers, one run per fold); None trains every fold.
    """

    task: str
    arch: str = "vgg19"
    mode: str = "fast"
    epochs: int | None = None
    batch_size: int = 16
    lr: float = 1e-4
    patience: int = 8
    lr_patience: int = 3
    weights: str = "imagenet"
    input_size: tuple[int, int] | None = None
    seed: int = 42
    sizes: tuple[int, int, int] | None = None
    k_folds: int = 0
    test_positives: int | None = None
    normalization: str = "percentile_gamma"
    aspect: str = "stretch"
    augment: bool = True
    augment_copies: int = 2
    unfreeze_last_block: bool = False
    threshold: float = 0.5
    dense_units: int = 256
    dropout: float = 0.5
    run_eagerly: bool = False
    fold: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"Unknown task {self.task!r}; choose one of {sorted(TASKS)}.")
        if self.arch not in ARCHITECTURES:
            raise ValueError(
                f"Unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}."
            )
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'fast' or 'full'; got {self.mode!r}.")
        for name in ("batch_size", "patience", "lr_patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)!r}.")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1; got {self.epochs!r}.")
        if self.augment_copies < 0:
            raise ValueError(f"augment_copies must be 0 or more; got {self.augment_copies!r}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"The learning rate must be positive; got {self.lr!r}.")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1]; got {self.threshold}.")
        if not str(self.weights).strip():
            raise ValueError("weights is empty: use 'imagenet', 'none' or a weights file path.")
        object.__setattr__(self, "input_size", _pair(self.input_size, "input_size"))
        if self.sizes is not None:
            object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        if self.fold is not None and not (self.k_folds >= 2 and 0 <= self.fold < self.k_folds):
            raise ValueError(
                f"fold {self.fold} needs k-fold cross-validation with more than {self.fold} "
                f"folds; got k_folds={self.k_folds}."
            )
        self.provisional_dataset_settings()

    @property
    def total_epochs(self) -> int:
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.mode]

    @property
    def cached_features(self) -> bool:
        """Fast mode with a fully frozen backbone: features are computed once (see ``fast``)."""
        return self.mode == "fast" and not self.unfreeze_last_block

    @property
    def modality(self) -> str:
        return "+".join(name.upper() for name in TASKS[self.task].inputs)

    def input_sizes(self) -> dict[str, tuple[int, int]]:
        return {
            name: self.input_size or size
            for name, size in TASKS[self.task].sizes.items()
            if name in TASKS[self.task].inputs
        }

    def dataset_settings(self, sizes: tuple[int, int, int]) -> DatasetSettings:
        return DatasetSettings(
            task=self.task,
            seed=self.seed,
            sizes=sizes,
            normalization=self.normalization,
            aspect=self.aspect,
            input_size=self.input_size,
            k_folds=self.k_folds,
            test_positives=self.test_positives,
        )

    def folds_to_train(self, folds: int) -> list[int]:
        """The folds of a ``folds``-fold split this run trains: all, or just ``fold``."""
        return list(range(folds)) if self.fold is None else [self.fold]

    def provisional_dataset_settings(self) -> DatasetSettings:
        """Dataset settings for choosing and loading patients before the sizes are resolved
        (the study's 17 validation and 20 test patients stand in for unset sizes)."""
        return self.dataset_settings(self.sizes or (1, *DEFAULT_VAL_TEST))

    def check_weights(self) -> None:
        """Fail now, not in the background job, when the backbone weights are missing.

        Raises ``WeightsUnavailableError`` (with instructions) or ``FileNotFoundError``.
        """
        resolve_weights(self.arch, self.weights)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, with the resolved epoch count."""
        out = dataclasses.asdict(self)
        out["input_size"] = list(self.input_size) if self.input_size else None
        out["sizes"] = list(self.sizes) if self.sizes else None
        out["epochs"] = self.total_epochs
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> TrainSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(payload) - names
        if unknown:
            raise ValueError(f"Unknown training settings {sorted(unknown)}.")
        kwargs = dict(payload)
        if kwargs.get("sizes") is not None:
            kwargs["sizes"] = tuple(kwargs["sizes"])
        return cls(**kwargs)
