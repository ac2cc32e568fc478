"""Model builders: flat backbones, in-model preprocessing, heads, saving, freezing.

Each backbone is built once per module at 32×32 (the smallest keras.applications accepts)
with random weights, so the file stays fast on a 2-core machine.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from core.learning.models import (
    ARCHITECTURES,
    LAST_CONV_LAYER,
    VARIANCE_FLOOR,
    ArchPreprocess,
    ModelSpec,
    ModelSpecError,
    arch_of,
    build_fusion_model,
    build_model,
    freeze_backbone,
    is_backbone_layer,
    preprocess_for,
    set_feature_statistics,
)

SIZE = (32, 32)


@pytest.fixture(scope="module")
def models() -> dict[str, keras.Model]:
    keras.utils.set_random_seed(1)
    return {arch: build_model(ModelSpec(arch, SIZE)) for arch in ARCHITECTURES}


@pytest.fixture(scope="module")
def fusion() -> keras.Model:
    """Gray GSU on VGG19 + 4-channel SWE, with a 3-class softmax head to cover that too."""
    keras.utils.set_random_seed(2)
    spec = ModelSpec("vgg19", SIZE, channels=1, n_classes=3)
    return build_fusion_model(spec, swe_size=(24, 24), swe_channels=4, swe_filters=(4, 8, 8))


def _images(n: int, channels: int = 3, size: tuple[int, int] = SIZE) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (n, *size, channels)).astype("float32")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_arch_preprocess_equals_keras_preprocess_input(arch):
    x01 = _images(2)
    expected = preprocess_for(arch)(x01.copy() * 255.0)
    got = np.asarray(ArchPreprocess(arch)(x01))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("arch", ["vgg19", "densenet121"])
def test_gray_input_is_repeated_to_rgb(arch):
    gray = _images(1, channels=1)
    layer = ArchPreprocess(arch)
    np.testing.assert_allclose(
        np.asarray(layer(gray)), np.asarray(layer(np.repeat(gray, 3, axis=-1))), atol=1e-5
    )


def test_unknown_arch_is_refused():
    with pytest.raises(ModelSpecError, match="vgg19"):
        ArchPreprocess("alexnet")
    with pytest.raises(ModelSpecError, match="vgg19"):
        preprocess_for("alexnet")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_backbone_is_flat_with_named_head(models, arch):
    model = models[arch]
    conv = model.get_layer(LAST_CONV_LAYER[arch])
    assert len(conv.output.shape) == 4
    assert arch_of(model) == arch
    assert model.get_layer("logit").activation is keras.activations.linear
    assert model.get_layer("prob").activation is keras.activations.sigmoid
    prob = np.asarray(model(_images(3), training=False))
    assert prob.shape == (3, 1)
    assert np.all((prob > 0) & (prob < 1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "alexnet"}, "Unknown architecture"),
        ({"arch": "vgg19", "input_size": (31, 64)}, "at least 32"),
        ({"arch": "vgg19", "channels": 2}, "channels"),
        ({"arch": "vgg19", "n_classes": 2}, "use 1 for a binary task"),
        ({"arch": "vgg19", "n_classes": 0}, "n_classes"),
        ({"arch": "vgg19", "dropout": 1.0}, "dropout"),
        ({"arch": "vgg19", "dense_units": 0}, "dense_units"),
        ({"arch": "vgg19", "pooling": "sum"}, "pooling"),
    ],
)
def test_bad_spec_is_refused_with_reason(kwargs, match):
    with pytest.raises(ModelSpecError, match=match):
        ModelSpec(**kwargs)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_arch_preprocess_config_round_trips(arch):
    layer = ArchPreprocess(arch, name="p")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    x01 = _images(1)
    np.testing.assert_array_equal(np.asarray(clone(x01)), np.asarray(layer(x01)))
    assert clone.arch == arch


def test_saved_model_reloads_in_safe_mode_and_predicts_identically(models, tmp_path):
    """The ``.keras`` file holds the preprocessing; the fusion round trip covers gray input."""
    arch = "vgg19"
    model = models[arch]
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    x = _images(2)
    np.testing.assert_array_equal(
        np.asarray(reloaded(x, training=False)), np.asarray(model(x, training=False))
    )
    assert isinstance(reloaded.get_layer("preprocess"), ArchPreprocess)


def test_feature_normalization_is_the_identity_until_given_statistics():
    model = build_model(ModelSpec("vgg19", SIZE, dense_units=4))
    features = np.random.default_rng(3).uniform(0, 1, (3, 512)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model.get_layer("head_norm")(features)), features)


def test_feature_statistics_standardize_and_floor_dead_channels(tmp_path: Path):
    """Pooled features of a random VGG19 sit near 0.03 (see ``core.learning.models``); after
    ``set_feature_statistics`` they are standardized, a channel dead on the training
    patients stays finite on a new image, and the statistics survive saving."""
    model = build_model(ModelSpec("vgg19", SIZE, dense_units=4))
    rng = np.random.default_rng(4)
    features = rng.gamma(2.0, 0.015, (40, 512))
    features[:, 7] = 0.0
    set_feature_statistics(model, features)
    norm = model.get_layer("head_norm")
    z = np.asarray(norm(features.astype("float32")))
    np.testing.assert_allclose(np.delete(z.mean(axis=0), 7), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.delete(z.std(axis=0), 7), 1.0, atol=1e-3)
    unseen = np.full((1, 512), 0.03, dtype="float32")
    assert np.isfinite(np.asarray(norm(unseen))).all()
    floor = VARIANCE_FLOOR * features.var(axis=0).mean()
    assert float(np.asarray(norm(unseen))[0, 7]) == pytest.approx(0.03 / np.sqrt(floor), rel=1e-4)
    path = tmp_path / "standardized.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True).get_layer("head_norm")
    np.testing.assert_allclose(np.asarray(reloaded(unseen)), np.asarray(norm(unseen)), rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 512), (10, 256), (512,)])
def test_feature_statistics_refuse_the_wrong_shape(shape):
    model = build_model(ModelSpec("vgg19", SIZE, dense_units=4))
    with pytest.raises(ModelSpecError, match="pooled features"):
        set_feature_statistics(model, np.ones(shape))


def _fusion_inputs(n: int) -> dict[str, np.ndarray]:
    return {"gsu": _images(n, channels=1), "swe": _images(n, channels=4, size=(24, 24))}


def test_fusion_model_takes_named_inputs_and_softmax_head(fusion):
    assert {t.name for t in fusion.inputs} == {"gsu", "swe"}
    prob = np.asarray(fusion(_fusion_inputs(2), training=False))
    assert prob.shape == (2, 3)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)
    assert fusion.get_layer("block5_conv4") is not None
    assert fusion.get_layer("swe_relu3").output.shape[1:3] == (6, 6)


def test_fusion_model_round_trips(fusion, tmp_path: Path):
    path = tmp_path / "fusion.keras"
    fusion.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    x = _fusion_inputs(2)
    np.testing.assert_array_equal(
        np.asarray(reloaded(x, training=False)), np.asarray(fusion(x, training=False))
    )


def test_fusion_refuses_swe_too_small_for_its_blocks():
    with pytest.raises(ModelSpecError, match="swe_size"):
        build_fusion_model(ModelSpec("vgg19", SIZE), swe_size=(3, 3), swe_filters=(4, 4, 4))


def test_freeze_backbone_keeps_head_and_swe_branch_trainable(fusion):
    freeze_backbone(fusion)
    trainable = {layer.name for layer in fusion.layers if layer.trainable and layer.weights}
    assert {"head_dense", "logit", "swe_conv1", "swe_bn1"} <= trainable
    assert not any(is_backbone_layer(fusion.get_layer(n)) for n in trainable)
    assert fusion.get_layer("block5_conv4").trainable is False


def test_unfreeze_last_block_vgg19(fusion):
    freeze_backbone(fusion, unfreeze_last_block=True)
    assert fusion.get_layer("block5_conv1").trainable
    assert fusion.get_layer("block5_conv4").trainable
    assert not fusion.get_layer("block4_conv4").trainable
    assert fusion.get_layer("head_dense").trainable


def test_unfreeze_last_block_densenet_keeps_batchnorm_frozen(models):
    model = models["densenet121"]
    freeze_backbone(model, unfreeze_last_block=True)
    assert model.get_layer("conv5_block16_2_conv").trainable
    assert not model.get_layer("conv5_block16_1_bn").trainable
    assert not model.get_layer("bn").trainable
    assert not model.get_layer("conv5_block15_2_conv").trainable
    assert model.get_layer("logit").trainable


def test_freeze_backbone_refuses_foreign_model():
    tiny = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ModelSpecError, match="build_model"):
        freeze_backbone(tiny)
