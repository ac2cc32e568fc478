"""Grad-CAM: does the map point at the evidence, and do the real backbones give sane maps?

The localisation check trains a tiny CNN (a few seconds) on 32×32 images whose label is
whether a bright blob sits in the top-right quadrant; a dimmer distractor blob appears
elsewhere in every image. Top-right, not top-left, so that a transposed map would fail.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from core.common.boxes import Box
from core.learning.gradcam import (
    GradCAM,
    GradCAMError,
    GradCAMPlusPlus,
    find_last_conv_layer,
    overlay,
    overlay_on_full_image,
    upsample,
)
from core.learning.models import (
    ARCHITECTURES,
    LAST_CONV_LAYER,
    ModelSpec,
    build_fusion_model,
    build_model,
)

SIZE = 32
HALF = SIZE // 2


def _blob_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.3, (n, SIZE, SIZE, 1)).astype("float32")
    y = rng.integers(0, 2, n).astype("float32")
    for i in range(n):
        if y[i]:
            r, c = rng.integers(3, HALF - 3, 2)
            x[i, r - 2 : r + 3, HALF + c - 2 : HALF + c + 3] += 0.7
        quadrant = rng.integers(1, 4)  # distractor in top-left, bottom-left or bottom-right
        r, c = rng.integers(3, HALF - 3, 2) + np.array(
            [HALF * (quadrant >= 2), HALF * (quadrant == 3)]
        )
        x[i, r - 1 : r + 2, c - 1 : c + 2] += 0.3
    return np.clip(x, 0.0, 1.0), y


@pytest.fixture(scope="module")
def blob_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    x, y = _blob_images(400, seed=0)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def positives(blob_model) -> np.ndarray:
    x, y = _blob_images(64, seed=1)
    assert blob_model.evaluate(x, y, verbose=0)[1] >= 0.9  # the model did learn the task
    return x[y == 1]


@pytest.fixture(scope="module")
def backbones() -> dict[str, keras.Model]:
    keras.utils.set_random_seed(3)
    return {arch: build_model(ModelSpec(arch, (SIZE, SIZE))) for arch in ARCHITECTURES}


@pytest.mark.parametrize("cam_class", [GradCAM, GradCAMPlusPlus])
def test_map_mass_lies_on_the_evidence(blob_model, positives, cam_class):
    cams = cam_class(blob_model)(positives)
    assert cams.shape == (len(positives), HALF, HALF)
    half = HALF // 2
    share = cams[:, :half, half:].sum(axis=(1, 2)) / cams.sum(axis=(1, 2))
    assert share.mean() >= 0.7


def test_dense_sigmoid_logit_matches_explicit_logit_layer(blob_model, positives):
    """A Dense(sigmoid) head is explained on its pre-activation, like a logit + sigmoid pair."""
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logit = keras.layers.Dense(1, name="logit")(x)
    split = keras.Model(inputs, keras.layers.Activation("sigmoid")(logit))
    src = [layer for layer in blob_model.layers if layer.weights]
    dst = [layer for layer in split.layers if layer.weights]
    for a, b in zip(src, dst, strict=True):
        b.set_weights(a.get_weights())
    np.testing.assert_allclose(GradCAM(blob_model)(positives), GradCAM(split)(positives), atol=1e-5)


def test_fully_frozen_model_gives_the_same_maps(blob_model, positives):
    """A tape watches only trainable variables; a frozen copy must still be explained."""
    frozen = keras.models.clone_model(blob_model)
    frozen.set_weights(blob_model.get_weights())
    frozen.trainable = False
    np.testing.assert_allclose(
        GradCAM(frozen)(positives[:4]), GradCAM(blob_model)(positives[:4]), atol=1e-5
    )


def test_probability_mode_gives_maps_too(blob_model, positives):
    cams = GradCAM(blob_model, use_logit=False)(positives[:4])
    assert cams.shape == (4, HALF, HALF)
    assert np.isfinite(cams).all()


def test_last_conv_layer_found_for_any_cnn(blob_model):
    assert find_last_conv_layer(blob_model) == "last_conv"
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(GradCAMError, match="4-D"):
        find_last_conv_layer(flat)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("cam_class", [GradCAM, GradCAMPlusPlus])
def test_backbone_maps_have_conv_shape_and_unit_range(backbones, arch, cam_class):
    """Each backbone's gradient graph is traced once (several seconds for DenseNet121)."""
    model = backbones[arch]
    assert find_last_conv_layer(model) == LAST_CONV_LAYER[arch]
    x = np.random.default_rng(4).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
    cams = cam_class(model)(x)
    h, w = model.get_layer(LAST_CONV_LAYER[arch]).output.shape[1:3]
    assert cams.shape == (2, h, w)
    assert np.isfinite(cams).all()
    assert cams.min() >= 0.0
    assert cams.max() <= 1.0


def test_bad_layer_and_inputs_are_refused(blob_model):
    with pytest.raises(GradCAMError, match="no layer named"):
        GradCAM(blob_model, "block9_conv1")
    with pytest.raises(GradCAMError, match="4-D"):
        GradCAM(blob_model, "pool")
    cam = GradCAM(blob_model)
    with pytest.raises(GradCAMError, match="batch axis"):
        cam(np.zeros((SIZE, SIZE, 1), dtype="float32"))
    bad = np.zeros((1, SIZE, SIZE, 1), dtype="float32")
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(GradCAMError, match="NaN"):
        cam(bad)


def test_fusion_model_branches_and_class_index():
    keras.utils.set_random_seed(5)
    model = build_fusion_model(
        ModelSpec("vgg19", (SIZE, SIZE), channels=1, n_classes=3),
        swe_size=(24, 24),
        swe_filters=(4, 8),
    )
    rng = np.random.default_rng(6)
    x = {
        "gsu": rng.uniform(0, 1, (2, SIZE, SIZE, 1)).astype("float32"),
        "swe": rng.uniform(0, 1, (2, 24, 24, 4)).astype("float32"),
    }
    assert GradCAM(model)(x, class_index=2).shape == (2, 2, 2)
    assert GradCAM(model, "swe_relu2")(x).shape == (2, 12, 12)
    with pytest.raises(GradCAMError, match="out of range"):
        GradCAM(model)(x, class_index=3)
    with pytest.raises(GradCAMError, match="dict"):
        GradCAM(model)(x["gsu"])


def test_upsample_keeps_the_hot_corner_in_place():
    cam = np.zeros((4, 4), dtype="float32")
    cam[0, 3] = 1.0
    big = upsample(cam, (40, 80))
    assert big.shape == (40, 80)
    row, col = np.unravel_index(big.argmax(), big.shape)
    assert row < 10
    assert col >= 60
    assert upsample(np.stack([cam, cam]), (8, 8)).shape == (2, 8, 8)
    with pytest.raises(GradCAMError, match="NaN"):
        upsample(np.full((2, 2), np.nan), (4, 4))


def test_overlay_is_rgb_jet_with_alpha():
    image = np.full((20, 30), 0.5, dtype="float32")
    cam = np.zeros((2, 2), dtype="float32")
    cam[:, 1] = 1.0
    out = overlay(image, cam, alpha=1.0)
    assert out.dtype == np.uint8
    assert out.shape == (20, 30, 3)
    red, blue = out[10, 29], out[10, 0]
    assert red[0] > red[2]  # hot = red in RGB order
    assert blue[2] > blue[0]  # cold = blue
    np.testing.assert_array_equal(overlay(image, cam, alpha=0.0), np.full((20, 30, 3), 128))
    with pytest.raises(GradCAMError, match=r"\[0, 1\]"):
        overlay(image * 255, cam)
    with pytest.raises(GradCAMError, match="alpha"):
        overlay(image, cam, alpha=1.5)


def test_overlay_on_full_image_only_inside_the_box():
    full = np.full((60, 80, 3), 100, dtype=np.uint8)
    box = Box(x=20, y=10, w=30, h=20)
    out = overlay_on_full_image(full, box, np.ones((3, 3), dtype="float32"), alpha=0.5)
    inside = np.zeros((60, 80), dtype=bool)
    inside[box.y : box.y2, box.x : box.x2] = True
    np.testing.assert_array_equal(out[~inside], full[~inside])
    assert np.all(np.any(out[inside] != full[inside], axis=-1))
    with pytest.raises(GradCAMError, match="inside"):
        overlay_on_full_image(full, Box(70, 50, 20, 20), np.ones((3, 3)))
    with pytest.raises(GradCAMError, match="uint8"):
        overlay_on_full_image(full.astype("float32"), box, np.ones((3, 3)))


def test_flat_maps_are_called_out_and_localized_ones_are_not():
    """A map whose peak barely exceeds its mean renders as an even colour wash: say so."""
    from core.learning.gradcam import flat_map_note

    wash = np.full((7, 7), 0.9, dtype=np.float32)
    wash[3, 3] = 1.0
    note = flat_map_note(wash)
    assert note is not None and note.startswith("No localization") and "1.1" in note
    empty = flat_map_note(np.zeros((7, 7), dtype=np.float32))
    assert empty is not None and "empty" in empty
    blob = np.zeros((7, 7), dtype=np.float32)
    blob[2:5, 2:5] = 1.0
    assert flat_map_note(blob) is None
    assert flat_map_note(upsample(blob, (112, 112))) is None
