"""Training-time augmentation as Keras 3 preprocessing layers.

Yi et al. (Sci Rep 2022) augmented with rotation −5° to 5°, shift limit 0.0625, scale limit
0.1, horizontal/vertical flips, and random contrast, brightness, sharpness, blur and Gaussian
noise. The shift/scale numbers are the defaults of albumentations' ``ShiftScaleRotate``,
whose default border mode is reflection, so geometric layers here fill by reflection too.
The paper gives no range for the photometric ones; the defaults below are mild.

Inputs are float32 in [0, 1], batches shaped (B, H, W, C) with C = 1 or 3. Batch before
mapping the augmenter over a ``tf.data`` pipeline: with Keras 3.15 the ``Sequential`` given
one unbatched (H, W, C) image returns a wrong (H, W, C, 1) shape. Every layer acts only when
called with ``training=True``; with ``training=False`` the augmenter returns its input
unchanged, so the same model graph serves training and inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import keras

VALUE_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges; set a value to 0 (or a flip to False) to switch that layer off."""

    rotation_deg: float = 5.0
    """Maximum rotation either way, degrees (study: ±5°)."""
    translation: float = 0.0625
    """Maximum shift either way, fraction of height/width (study: 0.0625)."""
    zoom: float = 0.1
    """Maximum zoom in or out, fraction (study: scale limit 0.1)."""
    horizontal_flip: bool = True
    vertical_flip: bool = True
    contrast: float = 0.1
    """Contrast factor drawn from [1 − contrast, 1 + contrast]."""
    brightness: float = 0.1
    """Brightness shift drawn from ±brightness, in units of the [0, 1] range."""
    sharpness: float = 0.2
    """Blend with a 3×3 smoothed image by a factor in [1 − 2s, 1 + 2s] (1 = unchanged)."""
    blur_sigma: float = 1.0
    """Largest Gaussian blur sigma, pixels."""
    blur_probability: float = 0.5
    """Share of images that get blurred (when ``blur_sigma`` > 0)."""
    noise_std: float = 0.02
    """Standard deviation of additive Gaussian noise, in units of the [0, 1] range."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                continue
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"AugmentConfig.{f.name} must be ≥ 0; got {value}.")
        if self.rotation_deg > 180:
            raise ValueError(f"rotation_deg must be ≤ 180; got {self.rotation_deg}.")
        if self.translation > 1 or self.zoom >= 1:
            raise ValueError(
                f"translation must be ≤ 1 and zoom < 1 (fractions of the image); got "
                f"translation={self.translation}, zoom={self.zoom}."
            )
        if self.sharpness > 0.5 or self.contrast >= 1 or self.blur_probability > 1:
            raise ValueError(
                "sharpness must be ≤ 0.5, contrast < 1 and blur_probability ≤ 1; got "
                f"sharpness={self.sharpness}, contrast={self.contrast}, "
                f"blur_probability={self.blur_probability}."
            )


@keras.saving.register_keras_serializable(package="sarcopenia")
class ClipToRange(keras.layers.Layer):
    """Clip to [low, high] in training, so added noise cannot leave the input range."""

    def __init__(self, low: float = 0.0, high: float = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.low = low
        self.high = high

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if training:
            return keras.ops.clip(inputs, self.low, self.high)
        return inputs

    def get_config(self) -> dict:
        return {**super().get_config(), "low": self.low, "high": self.high}


def _blur_kernel_size(sigma: float) -> int:
    """Odd kernel covering ±2σ, at least 3."""
    return max(3, 2 * math.ceil(2 * sigma) + 1)


def augment_layers(config: AugmentConfig = AugmentConfig(), seed: int = 0) -> list[keras.Layer]:
    """The enabled layers in application order: geometry, then intensity, then noise, clip.

    Each layer gets its own seed (``seed`` + position) so their random streams differ. With
    everything switched off the list holds one ``Identity`` layer, since an empty
    ``keras.Sequential`` cannot be called.
    """
    layers: list[keras.Layer] = []

    def next_seed() -> int:
        return seed + len(layers)

    if config.rotation_deg > 0:
        layers.append(
            keras.layers.RandomRotation(
                config.rotation_deg / 360.0, fill_mode="reflect", seed=next_seed(), name="rotation"
            )
        )
    if config.translation > 0:
        layers.append(
            keras.layers.RandomTranslation(
                config.translation,
                config.translation,
                fill_mode="reflect",
                seed=next_seed(),
                name="translation",
            )
        )
    if config.zoom > 0:
        layers.append(
            keras.layers.RandomZoom(config.zoom, fill_mode="reflect", seed=next_seed(), name="zoom")
        )
    flip_mode = {
        (True, True): "horizontal_and_vertical",
        (True, False): "horizontal",
        (False, True): "vertical",
    }.get((config.horizontal_flip, config.vertical_flip))
    if flip_mode is not None:
        layers.append(keras.layers.RandomFlip(flip_mode, seed=next_seed(), name="flip"))
    if config.contrast > 0:
        layers.append(
            keras.layers.RandomContrast(
                config.contrast, value_range=VALUE_RANGE, seed=next_seed(), name="contrast"
            )
        )
    if config.brightness > 0:
        layers.append(
            keras.layers.RandomBrightness(
                config.brightness, value_range=VALUE_RANGE, seed=next_seed(), name="brightness"
            )
        )
    if config.sharpness > 0:
        layers.append(
            keras.layers.RandomSharpness(
                (0.5 - config.sharpness, 0.5 + config.sharpness),
                value_range=VALUE_RANGE,
                seed=next_seed(),
                name="sharpness",
            )
        )
    if config.blur_sigma > 0 and config.blur_probability > 0:
        layers.append(
            keras.layers.RandomGaussianBlur(
                factor=(config.blur_probability, config.blur_probability),
                kernel_size=_blur_kernel_size(config.blur_sigma),
                sigma=config.blur_sigma,
                value_range=VALUE_RANGE,
                seed=next_seed(),
                name="blur",
            )
        )
    if config.noise_std > 0:
        layers.append(keras.layers.GaussianNoise(config.noise_std, seed=next_seed(), name="noise"))
    if layers:
        layers.append(ClipToRange(*VALUE_RANGE, name="clip"))
    else:
        layers.append(keras.layers.Identity(name="identity"))
    return layers


def build_augmenter(config: AugmentConfig = AugmentConfig(), seed: int = 0) -> keras.Sequential:
    """A ``keras.Sequential`` of the enabled layers, named ``augment``; seeded, so reproducible.

    Place it first in a training model or map it over a ``tf.data`` pipeline with
    ``training=True``. With every layer switched off it is an empty identity model.
    """
    return keras.Sequential(augment_layers(config, seed), name="augment")
