"""The study's training recipe in Keras: the model, optimizer, callbacks, class weights, augmenters.

Shared by both ways of fitting (``fast`` on cached features, ``folds`` on ``tf.data``).
Keras and TensorFlow are imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from core.learning.dataset import TASKS, TaskData
from core.learning.train.progress import ProgressReporter, keras_progress
from core.learning.train.settings import TrainSettings

if TYPE_CHECKING:
    import keras


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


def augmenters(settings: TrainSettings, seed: int) -> dict[str, keras.Model]:
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


def compile_model(model: keras.Model, settings: TrainSettings) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.lr),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
        run_eagerly=settings.run_eagerly,
    )


def fit_callbacks(
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
        keras_progress(reporter),
    ]


def class_weight_for(y: np.ndarray) -> dict[int, float]:
    """'Balanced' weights, so the minority class (sarcopenia, 21%) counts as much in the loss."""
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=y.astype(int))
    return {0: float(weights[0]), 1: float(weights[1])}
