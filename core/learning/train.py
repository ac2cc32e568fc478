"""Train one DCNN for one task, end to end, for a queued ``training_run`` row.

The recipe is the study's (Yi et al., Sci Rep 2022): an ImageNet backbone with a new fully
connected head and a sigmoid output, mini-batch Adam at a base learning rate of 1e-4, cut by
a factor of 0.1 when the validation loss plateaus. On top of that: class weights (29 of 141
patients had sarcopenia), early stopping on the validation AUC with the best epoch's weights
restored, seeds for repeatable runs, and DeLong/Wilson intervals on the test metrics.

Two modes:

- ``full``: every layer trains (the study's fine-tuning), on the ``tf.data`` pipeline with
  augmentation.
- ``fast`` (default): the backbone stays frozen and only the head trains. Because a frozen
  backbone maps each image to the same pooled feature vector in every epoch, the backbone
  runs *once* over all patients (plus ``augment_copies`` augmented copies of every image),
  and the epochs train the head on those vectors: an epoch costs well under a second on
  two CPU cores instead of a backbone pass over every image (about 20 s for VGG19 at 112×112
  on the 104 training patients). The head's layers are shared with the full model, so the
  model saved at the end is the whole network (backbone + trained head) that Grad-CAM and
  review load.
  With ``unfreeze_last_block`` the backbone's last block trains too, so features cannot be
  cached and fast mode trains on the pipeline like full mode.

With ``k_folds`` ≥ 2 each fold trains its own model; the test metrics pool the out-of-fold
predictions (every patient tested once), ``metrics["cv"]`` holds the folds' test AUCs with
their mean and SD, and the last fold's model is the one saved (``metrics["saved_fold"]``).

The run row in the database is the only state: progress (throttled to one short write per
``PROGRESS_INTERVAL_S``), per-epoch history, predictions and metrics are all written there,
so a page in another process, a reload or a second tab sees the same thing. Keras and
TensorFlow are imported inside the functions that need them, so the app can import this
module (for ``TrainSettings``) without loading TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import numpy as np
from sklearn.utils.class_weight import compute_class_weight
from sqlalchemy import delete

from core.common import config
from core.common.store import ImageStore
from core.learning.dataset import (
    TASKS,
    DatasetSettings,
    TaskData,
    collect_cases,
    load_task_data,
    make_split,
    save_split,
    subset_indices,
)
from core.learning.weights import resolve_weights
from core.stats.delong import StatisticsInputError
from core.stats.metrics import diagnostic_metrics
from db.datafiles import file_sha256, stored_path
from db.engine import Database
from db.models import Prediction, TrainingRun, utcnow

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

Mode = Literal["fast", "full"]
MODES: Final[tuple[str, ...]] = get_args(Mode)
ARCHITECTURES: Final = ("vgg19", "resnet50", "densenet121")
"""Same as ``core.learning.models.ARCHITECTURES``; repeated so this module imports without Keras."""
DEFAULT_EPOCHS: Final[dict[str, int]] = {"fast": 15, "full": 30}
DEFAULT_VAL_TEST: Final = (17, 20)
"""Validation and test patients in the study's text (Yi et al. 2022); training gets the rest."""
PROGRESS_INTERVAL_S: Final = 0.5
"""Least time between two progress writes: short transactions, a live bar, no write storm."""
Listener = Callable[[dict[str, Any]], None]


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
        self.provisional_dataset_settings()

    @property
    def total_epochs(self) -> int:
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.mode]

    @property
    def cached_features(self) -> bool:
        """Fast mode with a fully frozen backbone: features are computed once (see module)."""
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


# ---------------------------------------------------------------------------------------
# Which process trains a run


def proc_stat(pid: int) -> list[str] | None:
    """Fields of Linux ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, None where ``/proc`` is missing."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else None


def process_tag(pid: int | None = None) -> dict[str, Any]:
    """Host, pid and start time of a process, kept in the run's progress.

    The host lets a shared database tell local processes from another machine's; the start
    time tells the process from a later one that reused its pid.
    """
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _start_ticks(pid)}


# ---------------------------------------------------------------------------------------
# Progress in the database


class ProgressReporter:
    """Writes ``progress`` (and ``history``) to the run row, at most every ``interval`` s.

    Each write is one short transaction that also reads ``cancel_requested``; when it is set,
    ``RunCancelled`` is raised from wherever training is (a Keras callback), which stops it.
    """

    def __init__(
        self,
        db: Database,
        run_id: int,
        base: Mapping[str, Any],
        *,
        interval: float = PROGRESS_INTERVAL_S,
        listener: Listener | None = None,
    ) -> None:
        self.db = db
        self.run_id = run_id
        self.state: dict[str, Any] = dict(base)
        self.history: list[dict[str, Any]] = []
        self.interval = interval
        self.listener = listener
        self._last = -math.inf
        self._history_dirty = False

    def update(self, force: bool = False, **fields: Any) -> None:
        self.state.update(fields)
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.listener is not None:
            self.listener(dict(self.state))
        self._flush()

    def add_epoch(self, record: Mapping[str, Any]) -> None:
        self.history.append(_json_safe(dict(record)))
        self._history_dirty = True
        self.update(force=True)

    def _flush(self) -> None:
        progress = _json_safe(dict(self.state))
        history = {"epochs": list(self.history)} if self._history_dirty else None

        def work(session) -> bool:
            run = session.get(TrainingRun, self.run_id)
            if run is None:
                raise TrainingError(f"Run {self.run_id} was deleted while it trained.")
            run.progress = progress
            if history is not None:
                run.history = history
            return bool(run.cancel_requested)

        if self.db.write(work):
            raise RunCancelled(f"Run {self.run_id} was cancelled.")
        self._history_dirty = False


def _keras_progress(reporter: ProgressReporter) -> keras.callbacks.Callback:
    """A Keras callback feeding ``reporter`` from ``fit``: batches, epochs and the history."""
    import keras

    class DbProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch_started = time.monotonic()
            reporter.update(
                force=True,
                phase="training",
                epoch=epoch + 1,
                batch=0,
                batches=self.params.get("steps"),
            )

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            reporter.update(batch=batch + 1, loss=(logs or {}).get("loss"))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = dict(logs or {})
            lr = self.model.optimizer.learning_rate
            record = {
                "fold": reporter.state.get("fold", 0),
                "epoch": epoch + 1,
                "loss": logs.get("loss"),
                "auc": logs.get("auc"),
                "val_loss": logs.get("val_loss"),
                "val_auc": logs.get("val_auc"),
                "learning_rate": float(np.asarray(lr)),
                "seconds": time.monotonic() - self.epoch_started,
            }
            reporter.state.update(loss=record["loss"], val_auc=record["val_auc"])
            reporter.add_epoch(record)

    return DbProgress()


# ---------------------------------------------------------------------------------------
# Metrics


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _json_safe(value: Any) -> Any:
    """Floats that JSON (and PostgreSQL) accept: NaN and infinity become None."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return _finite(value)


def subset_metrics(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """Table 1's metrics for one subset, flat and JSON-safe; AUC None if a class is missing."""
    y = np.asarray(y).astype(int)
    out: dict[str, Any] = {"n": len(y), "positives": int(y.sum()), "threshold": threshold}
    try:
        m = diagnostic_metrics(y, prob, threshold)
    except StatisticsInputError as exc:
        return {**out, "auc": None, "note": str(exc)}
    out.update(
        auc=m.auc.auc,
        auc_lower=m.auc.lower,
        auc_upper=m.auc.upper,
        tp=m.tp,
        fp=m.fp,
        tn=m.tn,
        fn=m.fn,
        lr_positive=m.lr_positive,
        lr_negative=m.lr_negative,
    )
    for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        p = getattr(m, name)
        out[name] = p.value
        out[f"{name}_ci"] = [p.lower, p.upper]
    return _json_safe(out)


# ---------------------------------------------------------------------------------------
# Models


def build_task_model(settings: TrainSettings, task_data: TaskData) -> keras.Model:
    """The study's classifier for ``settings`` (fusion: GSU backbone + SWE branch)."""
    from core.learning.models import ModelSpec, build_fusion_model, build_model

    spec = TASKS[settings.task]
    sizes = task_data.settings.input_sizes()
    first = spec.inputs[0]
    model_spec = ModelSpec(
        settings.arch,  # type: ignore[arg-type]
        sizes[first],
        channels=spec.channels(first),
        dense_units=settings.dense_units,
        dropout=settings.dropout,
        weights=settings.weights,
    )
    if len(spec.inputs) == 1:
        return build_model(model_spec)
    return build_fusion_model(model_spec, swe_size=sizes["swe"], swe_channels=spec.channels("swe"))


def _pool_layer_name(model: keras.Model) -> str:
    """The pooled backbone output: the feature vector fast mode caches."""
    names = {layer.name for layer in model.layers}
    return "head_gsu_pool" if "head_gsu_pool" in names else "head_pool"


def _strategy_scope() -> contextlib.AbstractContextManager[Any]:
    """``MirroredStrategy`` over every GPU when there are several, else the default."""
    import tensorflow as tf

    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy().scope()
    return contextlib.nullcontext()


def _seed_everything(seed: int) -> None:
    """Same seed, same machine → same weights, shuffles, augmentations and metrics."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    with contextlib.suppress(RuntimeError, AttributeError):
        tf.config.experimental.enable_op_determinism()


def _augmenters(settings: TrainSettings, seed: int) -> dict[str, keras.Model]:
    """The study's augmentation for images; geometry only for decoded stiffness (fusion SWE),
    whose values are measurements that contrast or noise would falsify."""
    from core.learning.augment import AugmentConfig, build_augmenter

    spec = TASKS[settings.task]
    out = {}
    for i, name in enumerate(spec.inputs):
        if name == "swe" and spec.swe_decoded:
            cfg = AugmentConfig(contrast=0, brightness=0, sharpness=0, blur_sigma=0, noise_std=0)
        else:
            cfg = AugmentConfig()
        out[name] = build_augmenter(cfg, seed=seed + 100 * i)
    return out


def _compile(model: keras.Model, settings: TrainSettings) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.lr),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
        run_eagerly=settings.run_eagerly,
    )


def _callbacks(
    settings: TrainSettings, reporter: ProgressReporter
) -> list[keras.callbacks.Callback]:
    import keras

    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.1, patience=settings.lr_patience, min_lr=1e-7
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_auc",
            mode="max",
            patience=settings.patience,
            restore_best_weights=True,
        ),
        _keras_progress(reporter),
    ]


def _class_weight(y: np.ndarray) -> dict[int, float]:
    """'Balanced' weights, so the minority class (sarcopenia, 21%) counts as much in the loss."""
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=y.astype(int))
    return {0: float(weights[0]), 1: float(weights[1])}


@dataclass
class FoldResult:
    model: Any
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    indices: dict[str, np.ndarray] = field(default_factory=dict)


class FeatureCache:
    """Pooled backbone features of every patient (and augmented copies), computed once.

    Valid for every fold of a run: the backbone is frozen and identically initialized (same
    seed, or ImageNet) in each fold's model.
    """

    def __init__(self) -> None:
        self.plain: np.ndarray | None = None
        self.copies: list[np.ndarray] = []
        self.swe_copies: list[np.ndarray] = []
        self.seconds = 0.0


def _batched(
    fn: Callable[[np.ndarray], Any],
    images: np.ndarray,
    batch_size: int,
    reporter: ProgressReporter,
    copy: int,
) -> np.ndarray:
    """``fn`` over ``images`` batch by batch, eagerly, reporting each batch.

    Eager calls, not ``Model.predict``: each image passes the backbone once, so tracing a
    graph (10–20 s for ResNet50 or DenseNet121 on two CPU cores) would cost more than it saves.
    """
    batches = math.ceil(len(images) / batch_size)
    out = []
    for b in range(batches):
        out.append(np.asarray(fn(images[b * batch_size : (b + 1) * batch_size])))
        reporter.update(phase="features", copy=copy, batch=b + 1, batches=batches)
    return np.concatenate(out)


def _feature_extractor(model: keras.Model) -> keras.Model:
    """The (GSU) image → pooled backbone features part of ``model``."""
    import keras

    pool = model.get_layer(_pool_layer_name(model))
    names = {layer.name for layer in model.layers}
    image = model.get_layer("gsu").output if "gsu" in names else model.inputs[0]
    return keras.Model(image, pool.output)


def _standardize_features(
    model: keras.Model,
    task_data: TaskData,
    train: np.ndarray,
    settings: TrainSettings,
    reporter: ProgressReporter,
    cache: FeatureCache | None,
) -> None:
    """Give the head's normalization the training patients' pooled-feature statistics.

    Fast mode reads them from the feature cache; the other modes make one forward pass of
    the initial backbone over the training images (a fraction of an epoch).
    """
    from core.learning.models import set_feature_statistics

    if cache is not None and cache.plain is not None:
        features = cache.plain[train]
    else:
        extractor = _feature_extractor(model)
        images = task_data.inputs[TASKS[settings.task].inputs[0]][train]
        reporter.update(force=True, phase="features", batch=0, copy=0, copies=0)
        features = _batched(
            lambda x: extractor(x, training=False), images, settings.batch_size, reporter, 0
        )
    set_feature_statistics(model, features)


def _extract_features(
    model: keras.Model,
    task_data: TaskData,
    settings: TrainSettings,
    reporter: ProgressReporter,
    cache: FeatureCache,
) -> None:
    if cache.plain is not None:
        return
    names = TASKS[settings.task].inputs
    fusion = len(names) > 1
    extractor = _feature_extractor(model)
    images = task_data.inputs[names[0]]
    bs = settings.batch_size
    started = time.monotonic()
    copies = settings.augment_copies if settings.augment else 0
    reporter.update(force=True, phase="features", batch=0, copy=0, copies=copies)

    def features(x: np.ndarray) -> Any:
        return extractor(x, training=False)

    cache.plain = _batched(features, images, bs, reporter, 0)
    augmenters = _augmenters(settings, settings.seed)
    for c in range(1, copies + 1):

        def augmented_features(x: np.ndarray) -> Any:
            return extractor(augmenters[names[0]](x, training=True), training=False)

        cache.copies.append(_batched(augmented_features, images, bs, reporter, c))
        if fusion:
            swe = task_data.inputs["swe"]
            cache.swe_copies.append(
                np.concatenate(
                    [
                        np.asarray(augmenters["swe"](swe[i : i + bs], training=True))
                        for i in range(0, len(swe), bs)
                    ]
                )
            )
    cache.seconds = time.monotonic() - started


def _head_model(model: keras.Model, fusion: bool) -> keras.Model:
    """Pooled features (and, for fusion, the SWE image) → probability, sharing ``model``'s
    layers, so training it trains the full model's head.

    For fusion the SWE branch and the head are wrapped as sub-models on fresh inputs: a
    model cut from the full model's own ``swe`` input tensor leaves graph nodes behind that
    break ``model.save``.
    """
    import keras

    pool = model.get_layer(_pool_layer_name(model))
    if not fusion:
        return keras.Model(pool.output, model.output, name="head")
    swe_gap = model.get_layer("swe_gap")
    swe_branch = keras.Model(model.input["swe"], swe_gap.output, name="swe_branch")
    tail = keras.Model([pool.output, swe_gap.output], model.output, name="fusion_tail")
    features = keras.Input(shape=pool.output.shape[1:], name="features")
    swe = keras.Input(shape=model.input["swe"].shape[1:], name="swe_image")
    return keras.Model([features, swe], tail([features, swe_branch(swe)]), name="head")


def _trainer(model: keras.Model) -> keras.Model:
    """``model`` nested in a wrapper that is compiled and fitted instead of it.

    The variables are shared, but the optimizer state stays with the wrapper, so the saved
    ``model`` is just the network (the optimizer would triple a full-mode file).
    """
    import keras

    if isinstance(model.input, dict):
        inputs: Any = {
            name: keras.Input(shape=t.shape[1:], name=name) for name, t in model.input.items()
        }
    else:
        inputs = keras.Input(shape=model.inputs[0].shape[1:], name=model.inputs[0].name)
    return keras.Model(inputs, model(inputs), name="trainer")


def _train_cached(
    model: keras.Model,
    task_data: TaskData,
    idx: dict[str, np.ndarray],
    settings: TrainSettings,
    reporter: ProgressReporter,
    cache: FeatureCache,
) -> dict[str, np.ndarray]:
    """Fast mode: train the head on cached features; returns val/test probabilities."""

    from core.learning.models import freeze_backbone

    freeze_backbone(model)
    _extract_features(model, task_data, settings, reporter, cache)
    assert cache.plain is not None
    _standardize_features(model, task_data, idx["train"], settings, reporter, cache)
    fusion = len(TASKS[settings.task].inputs) > 1
    head = _head_model(model, fusion)
    _compile(head, settings)

    def inputs(rows: np.ndarray, feats: np.ndarray, swe: np.ndarray | None = None) -> Any:
        if not fusion:
            return feats[rows]
        source = task_data.inputs["swe"] if swe is None else swe
        return [feats[rows], source[rows]]

    train = idx["train"]
    x_parts = [inputs(train, cache.plain)]
    for c, feats in enumerate(cache.copies):
        x_parts.append(inputs(train, feats, cache.swe_copies[c] if fusion else None))
    if fusion:
        x_train: Any = [np.concatenate([p[j] for p in x_parts]) for j in range(2)]
    else:
        x_train = np.concatenate(x_parts)
    y_train = np.tile(task_data.y[train], len(x_parts)).astype("float32")
    y_val = task_data.y[idx["val"]].astype("float32")
    reporter.update(force=True, phase="training", epoch=0, batch=0)
    head.fit(
        x_train,
        y_train,
        batch_size=settings.batch_size,
        epochs=settings.total_epochs,
        validation_data=(inputs(idx["val"], cache.plain), y_val),
        class_weight=_class_weight(task_data.y[train]),
        callbacks=_callbacks(settings, reporter),
        shuffle=True,
        verbose=0,
    )
    reporter.update(force=True, phase="evaluating")
    return {
        subset: np.asarray(head(inputs(idx[subset], cache.plain), training=False))
        .reshape(-1)
        .astype(np.float64)
        for subset in ("val", "test")
    }


def _train_pipeline(
    model: keras.Model,
    task_data: TaskData,
    idx: dict[str, np.ndarray],
    settings: TrainSettings,
    reporter: ProgressReporter,
    seed: int,
) -> dict[str, np.ndarray]:
    """Full mode (or fast mode with the last block unfrozen): train on ``tf.data``."""
    from core.learning.dataset import tf_dataset
    from core.learning.models import freeze_backbone

    if settings.mode == "fast":
        freeze_backbone(model, unfreeze_last_block=True)
    _standardize_features(model, task_data, idx["train"], settings, reporter, None)
    trainer = _trainer(model)
    _compile(trainer, settings)
    bs = settings.batch_size
    augment = _augmenters(settings, seed) if settings.augment else None
    train_ds = tf_dataset(
        task_data, idx["train"], batch_size=bs, shuffle=True, seed=seed, augment=augment
    )
    reporter.update(force=True, phase="training", epoch=0, batch=0)
    trainer.fit(
        train_ds,
        epochs=settings.total_epochs,
        validation_data=tf_dataset(task_data, idx["val"], batch_size=bs),
        class_weight=_class_weight(task_data.y[idx["train"]]),
        callbacks=_callbacks(settings, reporter),
        shuffle=False,  # tf_dataset reshuffles every epoch itself
        verbose=0,
    )
    reporter.update(force=True, phase="evaluating")
    return {
        subset: trainer.predict(tf_dataset(task_data, idx[subset], batch_size=bs), verbose=0)
        .reshape(-1)
        .astype(np.float64)
        for subset in ("val", "test")
    }


def train_fold(
    settings: TrainSettings,
    task_data: TaskData,
    assignment: Mapping[int, str],
    reporter: ProgressReporter,
    cache: FeatureCache | None = None,
) -> FoldResult:
    """Build, train and evaluate one model on one split; the model comes back for saving."""
    import keras

    keras.backend.clear_session()
    _seed_everything(settings.seed)
    idx = {s: subset_indices(task_data, assignment, s) for s in ("train", "val", "test")}
    with _strategy_scope():
        model = build_task_model(settings, task_data)
        if settings.cached_features:
            probs = _train_cached(
                model, task_data, idx, settings, reporter, cache or FeatureCache()
            )
        else:
            probs = _train_pipeline(model, task_data, idx, settings, reporter, settings.seed)
    return FoldResult(model=model, probs=probs, indices=idx)


# ---------------------------------------------------------------------------------------
# One run, start to finish


def _resolve_sizes(
    db: Database, store: ImageStore, settings: TrainSettings
) -> tuple[int, int, int]:
    if settings.sizes is not None:
        return settings.sizes
    cases, _ = collect_cases(db, store, settings.provisional_dataset_settings())
    val, test = DEFAULT_VAL_TEST
    train = len(cases) - val - test
    if train < 2:
        raise ValueError(
            f"Only {len(cases)} patients qualify for {settings.task}: too few for the study's "
            f"{val} validation and {test} test patients. Set smaller split sizes."
        )
    return (train, val, test)


def _save_model(model: keras.Model, run_id: int) -> Path:
    """``<models>/run-<id>.keras``, written to a temporary name first so no half file remains.

    The model was never compiled itself (see ``_trainer``), so the file holds the network
    without optimizer state, and reloads with ``safe_mode=True``.
    """
    path = config.models_dir() / f"run-{run_id}.keras"
    tmp = path.with_name(f".tmp-{path.name}")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def _claim(db: Database, run_id: int) -> TrainSettings:
    """Mark a queued run as running in this process (or accept one claimed by it)."""
    tag = process_tag()

    def work(session) -> dict[str, Any]:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise TrainingError(f"There is no training run {run_id}.")
        if run.status == "running" and run.pid == tag["pid"]:
            return dict(run.settings)
        if run.status != "queued":
            raise TrainingError(
                f"Run {run_id} is {run.status}"
                + (f" in process {run.pid}" if run.status == "running" else "")
                + "; only a queued run can be trained."
            )
        run.status = "running"
        run.pid = tag["pid"]
        run.started_at = utcnow()
        run.progress = {**tag, "phase": "starting"}
        return dict(run.settings)

    return TrainSettings.from_dict(db.write(work))


def _finish(db: Database, run_id: int, status: str, **fields: Any) -> None:
    def work(session) -> None:
        run = session.get(TrainingRun, run_id)
        if run is None:
            return
        run.status = status
        run.finished_at = utcnow()
        progress = dict(run.progress or {})
        progress["phase"] = status
        run.progress = progress
        for name, value in fields.items():
            setattr(run, name, value)

    db.write(work)


def _cv_summary(fold_aucs: Sequence[float | None]) -> dict[str, Any]:
    aucs = np.array([a for a in fold_aucs if a is not None], dtype=float)
    return _json_safe(
        {
            "test_auc_folds": list(fold_aucs),
            "test_auc_mean": float(aucs.mean()) if aucs.size else None,
            "test_auc_sd": float(aucs.std(ddof=1)) if aucs.size > 1 else None,
        }
    )


def run_training(
    db: Database,
    store: ImageStore,
    run_id: int,
    *,
    listener: Listener | None = None,
    cache_dir: Path | None = None,
) -> str:
    """Train the queued run ``run_id`` and return its final status.

    Loads the task data, stores the split, trains (one model, or one per fold), writes
    predictions of the validation and test patients, metrics and the model file, and marks
    the run ``done``. A cancel request ends it ``cancelled`` (return value); any error ends
    it ``failed`` with the error text, and is raised again.
    """
    settings = _claim(db, run_id)
    reporter = ProgressReporter(db, run_id, process_tag(), listener=listener)
    timing: dict[str, float] = {}
    started = time.monotonic()
    model_path: Path | None = None
    try:
        reporter.update(force=True, phase="loading", batch=0)
        sizes = _resolve_sizes(db, store, settings)
        ds_settings = settings.dataset_settings(sizes)
        task_data = load_task_data(
            db,
            store,
            ds_settings,
            cache_dir=cache_dir,
            progress=lambda done, total: reporter.update(
                phase="loading", batch=done, batches=total
            ),
        )
        assignments = make_split(task_data, ds_settings)
        split_id = save_split(db, ds_settings, task_data, assignments)
        timing["load_s"] = time.monotonic() - started

        folds = len(assignments)
        cache = FeatureCache()
        results: list[FoldResult] = []
        fold_aucs: list[float | None] = []
        for fold, assignment in enumerate(assignments):
            reporter.update(force=True, fold=fold, folds=folds, epochs=settings.total_epochs)
            result = train_fold(settings, task_data, assignment, reporter, cache)
            y_test = task_data.y[result.indices["test"]]
            fold_aucs.append(
                subset_metrics(y_test, result.probs["test"], settings.threshold).get("auc")
            )
            results.append(result)
            if fold + 1 < folds:
                results[-1].model = None
        timing["train_s"] = time.monotonic() - started - timing["load_s"]
        if settings.cached_features:
            timing["features_s"] = cache.seconds

        reporter.update(force=True, phase="saving")
        metrics, predictions = _collect_results(settings, task_data, results, run_id)
        if folds > 1:
            metrics["cv"] = _cv_summary(fold_aucs)
        model_path = _save_model(results[-1].model, run_id)
        model_sha256 = file_sha256(model_path)
        timing["total_s"] = time.monotonic() - started
        metrics["timing"] = _json_safe(timing)
        metrics["n"] = {s: len(results[0].indices[s]) for s in ("train", "val", "test")}
        metrics["dataset"] = {
            **ds_settings.fingerprint_payload(),
            "excluded": len(task_data.excluded),
            "box_sources": _count_box_sources(task_data),
        }
        metrics["saved_fold"] = folds - 1

        def finish(session) -> None:
            session.execute(delete(Prediction).where(Prediction.run_id == run_id))
            run = session.get(TrainingRun, run_id)
            if run is None:
                raise TrainingError(f"Run {run_id} was deleted while it trained.")
            session.add_all(predictions)
            run.split_id = split_id
            run.fingerprint = task_data.fingerprint
            run.metrics = _json_safe(metrics)
            run.model_path = stored_path(model_path)
            run.model_sha256 = model_sha256
            run.history = {"epochs": reporter.history}
            run.status = "done"
            run.finished_at = utcnow()
            run.progress = _json_safe({**reporter.state, "phase": "done"})

        db.write(finish)
        return "done"
    except RunCancelled:
        _discard(model_path)
        _finish(db, run_id, "cancelled", error="Cancelled on request.")
        return "cancelled"
    except BaseException as exc:
        _discard(model_path)
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            reason = "The training process was interrupted (signal or Ctrl-C)."
        else:
            log.exception("Training run %s failed", run_id)
        _finish(db, run_id, "failed", error=reason)
        raise


def _discard(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _count_box_sources(task_data: TaskData) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sources in task_data.box_sources:
        for name, source in sources.items():
            key = f"{name}:{source}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def _collect_results(
    settings: TrainSettings, task_data: TaskData, results: Sequence[FoldResult], run_id: int
) -> tuple[dict[str, Any], list[Prediction]]:
    """Prediction rows for every fold's val and test patients, and metrics.

    With k folds, ``test`` is the pooled out-of-fold test predictions (each patient is
    tested once) and ``val`` pools the folds' validation predictions.
    """
    predictions: list[Prediction] = []
    pooled: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        "val": ([], []),
        "test": ([], []),
    }
    for fold, result in enumerate(results):
        for subset in ("val", "test"):
            rows = result.indices[subset]
            probs = result.probs[subset]
            pooled[subset][0].append(task_data.y[rows])
            pooled[subset][1].append(probs)
            for row, p in zip(rows, probs, strict=True):
                predictions.append(
                    Prediction(
                        run_id=run_id,
                        patient_id=int(task_data.patient_ids[row]),
                        subset=subset,
                        fold=fold,
                        probability=float(p),
                        threshold=settings.threshold,
                        predicted_label=int(p >= settings.threshold),
                    )
                )
    metrics: dict[str, Any] = {"threshold": settings.threshold}
    for subset, (ys, ps) in pooled.items():
        metrics[subset] = subset_metrics(np.concatenate(ys), np.concatenate(ps), settings.threshold)
    return metrics, predictions
