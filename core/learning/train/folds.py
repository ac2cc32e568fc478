"""One fold, built and trained: fast mode on cached features, or the ``tf.data`` pipeline.

Full mode (and fast mode with the last block unfrozen) fine-tunes on the pipeline with
augmentation every epoch; ``train_fold`` picks the way, seeds, and returns the model and the
validation and test probabilities.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.learning.dataset import TaskData, subset_indices
from core.learning.train.fast import FeatureCache, standardize_features, train_cached
from core.learning.train.progress import ProgressReporter
from core.learning.train.recipe import (
    augmenters,
    build_task_model,
    class_weight_for,
    compile_model,
    fit_callbacks,
)
from core.learning.train.settings import TrainSettings

if TYPE_CHECKING:
    import keras


@dataclass
class FoldResult:
    model: Any
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    indices: dict[str, np.ndarray] = field(default_factory=dict)
    fold: int = 0
    distribution: dict[str, Any] = field(default_factory=dict)
    """Strategy, replicas and global batch size the fold trained with (``metrics``)."""


def _strategy() -> Any | None:
    """``MirroredStrategy`` over every GPU of this worker when there are several, else None
    (the default strategy: one GPU, or the CPU)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy([d.name for d in gpus]) if len(gpus) > 1 else None


def _seed_everything(seed: int) -> None:
    """Same seed, same machine → same weights, shuffles, augmentations and metrics."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    with contextlib.suppress(RuntimeError, AttributeError):
        tf.config.experimental.enable_op_determinism()


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
    standardize_features(model, task_data, idx["train"], settings, reporter, None)
    trainer = _trainer(model)
    compile_model(trainer, settings)
    bs = settings.batch_size
    augment = augmenters(settings, seed) if settings.augment else None
    train_ds = tf_dataset(
        task_data, idx["train"], batch_size=bs, shuffle=True, seed=seed, augment=augment
    )
    reporter.update(force=True, phase="training", epoch=0, batch=0)
    trainer.fit(
        train_ds,
        epochs=settings.total_epochs,
        validation_data=tf_dataset(task_data, idx["val"], batch_size=bs),
        class_weight=class_weight_for(task_data.y[idx["train"]]),
        callbacks=fit_callbacks(settings, reporter),
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
    strategy = _strategy()
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if replicas > 1:  # the batch is split over the replicas: keep each one's share
        settings = dataclasses.replace(settings, batch_size=settings.batch_size * replicas)
    distribution = {
        "strategy": type(strategy).__name__ if strategy is not None else "default",
        "replicas": replicas,
        "batch_size": settings.batch_size,
    }
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_task_model(settings, task_data)
        if settings.cached_features:
            probs = train_cached(model, task_data, idx, settings, reporter, cache or FeatureCache())
        else:
            probs = _train_pipeline(model, task_data, idx, settings, reporter, settings.seed)
    return FoldResult(model=model, probs=probs, indices=idx, distribution=distribution)
