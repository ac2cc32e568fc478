"""The ``tf.data`` input pipeline: cached, shuffled, batched, augmented, prefetched rows.

TensorFlow is imported inside ``tf_dataset``, so importing the package stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from core.learning.dataset.arrays import TaskData

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

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
