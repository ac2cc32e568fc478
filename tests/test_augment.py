"""Augmentation layers: each active in training, identity in inference, switchable, seeded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.learning.augment import AugmentConfig, build_augmenter

ALL_OFF = AugmentConfig(
    rotation_deg=0,
    translation=0,
    zoom=0,
    horizontal_flip=False,
    vertical_flip=False,
    contrast=0,
    brightness=0,
    sharpness=0,
    blur_sigma=0,
    noise_std=0,
)
DEFAULT = AugmentConfig()

# layer name -> the config fields that switch it on (taken from the defaults)
LAYER_FIELDS = {
    "rotation": ["rotation_deg"],
    "translation": ["translation"],
    "zoom": ["zoom"],
    "flip": ["horizontal_flip", "vertical_flip"],
    "contrast": ["contrast"],
    "brightness": ["brightness"],
    "sharpness": ["sharpness"],
    "blur": ["blur_sigma"],
    "noise": ["noise_std"],
}


def _batch(channels: int) -> np.ndarray:
    return np.random.default_rng(3).random((8, 32, 32, channels)).astype(np.float32)


def _only(layer: str) -> AugmentConfig:
    return dataclasses.replace(ALL_OFF, **{f: getattr(DEFAULT, f) for f in LAYER_FIELDS[layer]})


def _names(config: AugmentConfig) -> list[str]:
    return [layer.name for layer in build_augmenter(config).layers]


def test_default_config_matches_the_study() -> None:
    assert DEFAULT.rotation_deg == 5.0
    assert DEFAULT.translation == 0.0625
    assert DEFAULT.zoom == 0.1
    assert DEFAULT.horizontal_flip and DEFAULT.vertical_flip
    assert _names(DEFAULT) == [*LAYER_FIELDS, "clip"]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("layer", list(LAYER_FIELDS))
def test_each_layer_acts_in_training_and_is_identity_in_inference(
    layer: str, channels: int
) -> None:
    x = _batch(channels)
    augmenter = build_augmenter(_only(layer), seed=1)
    assert _names(_only(layer)) == [layer, "clip"]
    trained = np.asarray(augmenter(x, training=True))
    assert trained.shape == x.shape
    assert not np.allclose(trained, x, atol=1e-4)
    assert trained.min() >= 0.0 and trained.max() <= 1.0
    inferred = np.asarray(augmenter(x, training=False))
    assert np.array_equal(inferred, x)


@pytest.mark.parametrize("layer", list(LAYER_FIELDS))
def test_switching_a_layer_off_removes_it(layer: str) -> None:
    off = dataclasses.replace(
        DEFAULT, **{f: type(getattr(DEFAULT, f))(0) for f in LAYER_FIELDS[layer]}
    )
    names = _names(off)
    assert layer not in names
    assert set(names) == (set(LAYER_FIELDS) - {layer}) | {"clip"}


def test_single_flip_directions() -> None:
    x = _batch(1)
    only_h = dataclasses.replace(ALL_OFF, horizontal_flip=True)
    out = np.asarray(build_augmenter(only_h, seed=2)(x, training=True))
    for img, aug in zip(x, out, strict=True):
        assert np.array_equal(aug, img) or np.array_equal(aug, img[:, ::-1])
    assert build_augmenter(only_h).layers[0].mode == "horizontal"
    only_v = dataclasses.replace(ALL_OFF, vertical_flip=True)
    assert build_augmenter(only_v).layers[0].mode == "vertical"


def test_everything_off_is_identity_even_in_training() -> None:
    x = _batch(3)
    assert np.array_equal(np.asarray(build_augmenter(ALL_OFF)(x, training=True)), x)


def test_full_augmenter_keeps_range_and_is_reproducible_with_a_seed() -> None:
    x = _batch(3)
    a = np.asarray(build_augmenter(DEFAULT, seed=5)(x, training=True))
    b = np.asarray(build_augmenter(DEFAULT, seed=5)(x, training=True))
    c = np.asarray(build_augmenter(DEFAULT, seed=6)(x, training=True))
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.array_equal(np.asarray(build_augmenter(DEFAULT)(x, training=False)), x)


@pytest.mark.parametrize(
    "kwargs",
    [{"rotation_deg": -1}, {"zoom": 1.0}, {"sharpness": 0.6}, {"noise_std": float("nan")}],
)
def test_bad_config_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AugmentConfig(**kwargs)
