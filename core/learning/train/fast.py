"""Fast mode: the frozen backbone runs once over every image, then only the head trains.

``FeatureCache`` keeps the pooled features (and augmented copies) for every fold of a run;
``standardize_features`` gives the head's normalization the training patients' statistics
(also used by the pipeline modes in ``folds``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from core.learning.dataset import TASKS, TaskData
from core.learning.train.progress import ProgressReporter
from core.learning.train.recipe import augmenters, class_weight_for, compile_model, fit_callbacks
from core.learning.train.settings import TrainSettings

if TYPE_CHECKING:
    import keras


def _pool_layer_name(model: keras.Model) -> str:
    """The pooled backbone output: the feature vector fast mode caches."""
    names = {layer.name for layer in model.layers}
    return "head_gsu_pool" if "head_gsu_pool" in names else "head_pool"


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


def standardize_features(
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
    augment = augmenters(settings, settings.seed)
    for c in range(1, copies + 1):

        def augmented_features(x: np.ndarray) -> Any:
            return extractor(augment[names[0]](x, training=True), training=False)

        cache.copies.append(_batched(augmented_features, images, bs, reporter, c))
        if fusion:
            swe = task_data.inputs["swe"]
            cache.swe_copies.append(
                np.concatenate(
                    [
                        np.asarray(augment["swe"](swe[i : i + bs], training=True))
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


def train_cached(
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
    standardize_features(model, task_data, idx["train"], settings, reporter, cache)
    fusion = len(TASKS[settings.task].inputs) > 1
    head = _head_model(model, fusion)
    compile_model(head, settings)

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
        class_weight=class_weight_for(task_data.y[train]),
        callbacks=fit_callbacks(settings, reporter),
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
