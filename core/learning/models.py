"""Keras model builders for the study's three architectures and a GSU+SWE fusion model.

Yi et al. (Sci Rep 2022) fine-tuned VGG19, ResNet50 and DenseNet121 (ImageNet) with the
classifier top replaced by a new fully connected layer and a sigmoid output, on 112×112 GSU
and 84×84 SWE crops. Every model here is built *flat*: the ``keras.applications`` backbone
is called on the model's own (preprocessed) input tensor, so its layers are the model's
layers and Grad-CAM reaches ``block5_conv4`` etc. with ``model.get_layer``.

Conventions shared by all models:

- Input: float images in ``[0, 1]`` (what the imaging pipeline produces), ``(H, W, 1)`` gray
  or ``(H, W, 3)`` RGB. The ``ArchPreprocess`` layer inside the model repeats gray to three
  channels, rescales to 0..255 and applies the backbone's own ImageNet preprocessing, so a
  saved ``.keras`` file is self-contained and reloads with ``safe_mode=True`` (no Lambda).
- Head: global pooling → ``Normalization`` (``head_norm``) → ``Dense(dense_units, relu)`` →
  ``Dropout`` → ``Dense(name="logit")`` → ``Activation(sigmoid|softmax, name="prob")``. The
  separate ``logit`` layer lets Grad-CAM differentiate the pre-activation score. The
  normalization is the identity until ``set_feature_statistics`` gives it the training
  patients' feature mean and variance (training does, before the first epoch): pooled
  backbone features can sit far from unit scale (about 0.03 for a randomly initialized
  VGG19, which has no BatchNormalization), and a head trained with the study's Adam at 1e-4
  on such inputs barely moves.
- Layers this module adds are named ``image``/``gsu``/``swe`` (inputs), ``*preprocess``,
  ``head_*``, ``swe_*``, ``fusion_*``, ``logit`` and ``prob``; every other layer belongs to
  the backbone (``freeze_backbone`` relies on this).
- ``keras.applications`` needs inputs of at least 32×32 pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import keras
import numpy as np
from keras import layers, ops

from core.learning.weights import resolve_weights

Architecture = Literal["vgg19", "resnet50", "densenet121"]
ARCHITECTURES: Final[tuple[str, ...]] = get_args(Architecture)

LAST_CONV_LAYER: Final[dict[str, str]] = {
    "vgg19": "block5_conv4",
    "resnet50": "conv5_block3_out",
    "densenet121": "relu",
}
"""Output of the last convolutional block, the study's Grad-CAM layer (DOMAIN.md)."""

_SIGNATURE_LAYER: Final[dict[str, str]] = {
    "vgg19": "block5_conv4",
    "resnet50": "conv5_block3_out",
    "densenet121": "conv5_block16_concat",
}
"""A layer name unique to each backbone; ``relu`` alone is too common to identify DenseNet."""

_LAST_BLOCK: Final[dict[str, tuple[str, ...]]] = {
    "vgg19": ("block5",),
    "resnet50": ("conv5_block3",),
    "densenet121": ("conv5_block16", "bn", "relu"),
}
"""Layer-name stems of each backbone's last block, unfrozen by ``unfreeze_last_block``."""

_APPLICATIONS: Final[dict[str, Callable[..., keras.Model]]] = {
    "vgg19": keras.applications.VGG19,
    "resnet50": keras.applications.ResNet50,
    "densenet121": keras.applications.DenseNet121,
}

_PREPROCESS_MODE: Final[dict[str, str]] = {
    "vgg19": "caffe",
    "resnet50": "caffe",
    "densenet121": "torch",
}
"""ImageNet preprocessing each backbone was trained with (keras.applications.*.preprocess_input)."""

_CAFFE_MEAN_BGR: Final = (103.939, 116.779, 123.68)
_TORCH_MEAN: Final = (0.485, 0.456, 0.406)
_TORCH_STD: Final = (0.229, 0.224, 0.225)

MIN_INPUT_SIDE: Final = 32
"""keras.applications rejects smaller inputs for these backbones."""

_OWN_LAYER_STEMS: Final = (
    "image",
    "gsu",
    "swe",
    "preprocess",
    "head",
    "fusion",
    "logit",
    "prob",
)

GSU_SIZE: Final = (112, 112)
"""GSU crop size in the study (height, width)."""
SWE_SIZE: Final = (84, 84)
"""SWE crop size in the study (height, width)."""


FEATURE_NORM_LAYER: Final = "head_norm"
"""Standardizes the pooled backbone features; see ``set_feature_statistics``."""

VARIANCE_FLOOR: Final = 1e-4
"""Smallest variance ``set_feature_statistics`` stores, as a fraction of the mean variance."""


class ModelSpecError(ValueError):
    """A model specification that cannot be built; the message says which field to change."""


@dataclass(frozen=True)
class ModelSpec:
    """What to build: backbone, input size and head (defaults follow the study).

    ``n_classes=1`` gives the study's single sigmoid output (binary tasks); ``n_classes >= 3``
    a softmax head, e.g. for the four echogenicity grades. Two classes are refused: use 1.
    ``weights`` is ``"imagenet"`` (Keras cache, never downloaded), ``"none"`` or the path of a
    notop backbone weights file (see ``core.learning.weights``).
    """

    arch: Architecture
    input_size: tuple[int, int] = GSU_SIZE
    channels: int = 3
    n_classes: int = 1
    dense_units: int = 256
    dropout: float = 0.5
    pooling: Literal["avg", "max"] = "avg"
    weights: str = "none"

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ModelSpecError(
                f"Unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}."
            )
        h, w = self.input_size
        if min(h, w) < MIN_INPUT_SIDE:
            raise ModelSpecError(
                f"Input size {h}×{w} is too small: {self.arch} needs at least "
                f"{MIN_INPUT_SIDE}×{MIN_INPUT_SIDE} pixels. The study used 112×112 (GSU) "
                "and 84×84 (SWE)."
            )
        if self.channels not in (1, 3):
            raise ModelSpecError(
                f"channels={self.channels}: use 1 (gray, repeated to RGB inside the model) or 3."
            )
        if self.n_classes < 1 or self.n_classes == 2:
            raise ModelSpecError(
                f"n_classes={self.n_classes}: use 1 for a binary task (single sigmoid output, "
                "as in the study) or 3 or more for a softmax over classes."
            )
        if self.dense_units < 1:
            raise ModelSpecError(f"dense_units={self.dense_units} must be at least 1.")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelSpecError(f"dropout={self.dropout} must be in [0, 1).")
        if self.pooling not in ("avg", "max"):
            raise ModelSpecError(f"pooling={self.pooling!r}: use 'avg' or 'max'.")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_size[0], self.input_size[1], self.channels)


@keras.saving.register_keras_serializable(package="sarcopenia")
class ArchPreprocess(layers.Layer):
    """``[0, 1]`` gray or RGB → the input the ImageNet backbone ``arch`` was trained on.

    Equals ``keras.applications.<arch>.preprocess_input(255 * x)`` on RGB: "caffe" mode
    (VGG19, ResNet50) flips RGB to BGR and subtracts the ImageNet BGR mean; "torch" mode
    (DenseNet121) scales to [0, 1] and standardizes with the ImageNet mean and std. A
    one-channel input is repeated to three channels first. No weights, so it does not disturb
    the layer-order loading of legacy ``.h5`` weight files.
    """

    def __init__(self, arch: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if arch not in _PREPROCESS_MODE:
            raise ModelSpecError(
                f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}."
            )
        self.arch = arch

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if x.shape[-1] == 1:
            x = ops.repeat(x, 3, axis=-1)
        if _PREPROCESS_MODE[self.arch] == "caffe":
            mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
            return ops.flip(x, axis=-1) * 255.0 - mean
        mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(_TORCH_STD, dtype=self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], 3)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "arch": self.arch}


def preprocess_for(arch: str) -> Callable[[np.ndarray], np.ndarray]:
    """``keras.applications.<arch>.preprocess_input``: 3-channel inputs in the 0..255 range.

    Only for backbones used outside ``build_model``; models built here preprocess inside.
    """
    modules = {
        "vgg19": keras.applications.vgg19,
        "resnet50": keras.applications.resnet50,
        "densenet121": keras.applications.densenet,
    }
    if arch not in modules:
        raise ModelSpecError(
            f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}."
        )
    return modules[arch].preprocess_input


def _backbone(spec: ModelSpec, image: keras.KerasTensor, prefix: str) -> keras.KerasTensor:
    """Preprocess ``image`` and run the ImageNet backbone on it, flat, returning its 4-D output."""
    x = ArchPreprocess(spec.arch, name=f"{prefix}preprocess")(image)
    path = resolve_weights(spec.arch, spec.weights)
    try:
        backbone = _APPLICATIONS[spec.arch](include_top=False, weights=path, input_tensor=x)
    except ValueError as err:
        raise ModelSpecError(
            f"The weights file {path} does not fit a {spec.arch} backbone without top "
            f"(include_top=False): {err}"
        ) from err
    return backbone.output


def _head(features: keras.KerasTensor, spec: ModelSpec) -> keras.KerasTensor:
    x = layers.Dense(spec.dense_units, activation="relu", name="head_dense")(features)
    x = layers.Dropout(spec.dropout, name="head_dropout")(x)
    logit = layers.Dense(spec.n_classes, name="logit")(x)
    activation = "sigmoid" if spec.n_classes == 1 else "softmax"
    return layers.Activation(activation, name="prob", dtype="float32")(logit)


def _pool(spec: ModelSpec, name: str) -> layers.Layer:
    if spec.pooling == "max":
        return layers.GlobalMaxPooling2D(name=name)
    return layers.GlobalAveragePooling2D(name=name)


def build_model(spec: ModelSpec) -> keras.Model:
    """One image in ``[0, 1]`` → probability of the positive class (or class probabilities).

    Raises:
        WeightsUnavailableError: ``weights="imagenet"`` and the file is not in the Keras cache.
        FileNotFoundError: ``weights`` is a path that does not exist.
        ModelSpecError: the weights file does not fit the backbone.
    """
    image = keras.Input(shape=spec.input_shape, name="image")
    pooled = _pool(spec, "head_pool")(_backbone(spec, image, prefix=""))
    features = layers.Normalization(name=FEATURE_NORM_LAYER)(pooled)
    return keras.Model(image, _head(features, spec), name=f"{spec.arch}_classifier")


def build_fusion_model(
    gsu_spec: ModelSpec,
    swe_size: tuple[int, int] = SWE_SIZE,
    swe_channels: int = 4,
    swe_filters: Sequence[int] = (32, 64, 128),
) -> keras.Model:
    """GSU backbone + small SWE CNN, concatenated before one head (the paper's future work).

    Inputs ``"gsu"`` (``gsu_spec.input_shape``, ``[0, 1]``) and ``"swe"`` (``swe_size`` ×
    ``swe_channels``, default the decoded stiffness map plus the RGB overlay, each scaled to
    ``[0, 1]``). The SWE branch is a small Conv-BN-ReLU stack trained from scratch: an
    elastogram is not a natural image, and a second ImageNet backbone would double the size
    for about 100 training patients. Grad-CAM on the GSU branch uses ``LAST_CONV_LAYER``; on
    the SWE branch pass ``layer_name=f"swe_relu{len(swe_filters)}"``.
    """
    if swe_channels < 1:
        raise ModelSpecError(f"swe_channels={swe_channels} must be at least 1.")
    if not swe_filters or min(swe_filters) < 1:
        raise ModelSpecError(f"swe_filters={tuple(swe_filters)} needs positive filter counts.")
    smallest = 2 ** (len(swe_filters) - 1)
    if min(swe_size) < smallest:
        raise ModelSpecError(
            f"swe_size={swe_size} is too small for {len(swe_filters)} pooled conv blocks; "
            f"use at least {smallest}×{smallest} (the study used 84×84)."
        )
    gsu = keras.Input(shape=gsu_spec.input_shape, name="gsu")
    gsu_pooled = _pool(gsu_spec, "head_gsu_pool")(_backbone(gsu_spec, gsu, prefix="gsu_"))
    gsu_features = layers.Normalization(name=FEATURE_NORM_LAYER)(gsu_pooled)

    swe = keras.Input(shape=(*swe_size, swe_channels), name="swe")
    y = swe
    for i, filters in enumerate(swe_filters, start=1):
        if i > 1:
            y = layers.MaxPooling2D(name=f"swe_pool{i - 1}")(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"swe_conv{i}")(y)
        y = layers.BatchNormalization(name=f"swe_bn{i}")(y)
        y = layers.Activation("relu", name=f"swe_relu{i}")(y)
    swe_features = _pool(gsu_spec, "swe_gap")(y)

    features = layers.Concatenate(name="fusion_concat")([gsu_features, swe_features])
    return keras.Model(
        {"gsu": gsu, "swe": swe}, _head(features, gsu_spec), name=f"{gsu_spec.arch}_fusion"
    )


def set_feature_statistics(model: keras.Model, features: np.ndarray) -> None:
    """Standardize the pooled backbone features with the statistics of ``features``.

    ``features`` are the pooled backbone outputs of the training patients (rows × channels).
    A channel that never fires on them (a dead ReLU of a random backbone) would divide by
    zero; its variance is floored at ``VARIANCE_FLOOR`` × the mean variance instead, so an
    activation on an unseen image stays finite and small.
    """
    layer = model.get_layer(FEATURE_NORM_LAYER)
    features = np.asarray(features, dtype=np.float64)
    channels = layer.adapt_mean.shape[-1]
    if features.ndim != 2 or features.shape[1] != channels or len(features) < 2:
        raise ModelSpecError(
            f"Feature statistics need at least two rows of {channels} pooled features; "
            f"got an array of shape {features.shape}."
        )
    variance = features.var(axis=0)
    floor = max(float(variance.mean()) * VARIANCE_FLOOR, 1e-12)
    layer.adapt_mean.assign(features.mean(axis=0).astype("float32"))
    layer.adapt_variance.assign(np.maximum(variance, floor).astype("float32"))
    layer.count.assign(len(features))
    layer.finalize_state()


def is_backbone_layer(layer: layers.Layer) -> bool:
    """True for layers that came from ``keras.applications`` (not added by this module)."""
    return not layer.name.startswith(_OWN_LAYER_STEMS)


def arch_of(model: keras.Model) -> str | None:
    """Which of the study's backbones a flat model contains, or None."""
    names = {layer.name for layer in model.layers}
    for arch, signature in _SIGNATURE_LAYER.items():
        if signature in names:
            return arch
    return None


def freeze_backbone(model: keras.Model, *, unfreeze_last_block: bool = False) -> None:
    """Freeze the ImageNet backbone for fast head-only (or last-block) training.

    The head, and the SWE branch of a fusion model, stay trainable. With
    ``unfreeze_last_block`` the backbone's last block (VGG19 ``block5``, ResNet50
    ``conv5_block3``, DenseNet121 ``conv5_block16`` + final ``bn``) trains too, except its
    BatchNormalization layers: their statistics stay at ImageNet values because a batch of a
    few ultrasound crops estimates them poorly (Keras transfer-learning guide). Compile the
    model after calling this; trainability is read at compile time.
    """
    arch = arch_of(model)
    if arch is None:
        raise ModelSpecError(
            f"Model {model.name!r} contains none of the backbones {', '.join(ARCHITECTURES)}; "
            "freeze_backbone only works on models from build_model or build_fusion_model."
        )
    for layer in model.layers:
        if not is_backbone_layer(layer):
            layer.trainable = True
            continue
        in_last_block = any(
            layer.name == s or layer.name.startswith(f"{s}_") for s in _LAST_BLOCK[arch]
        )
        layer.trainable = (
            unfreeze_last_block
            and in_last_block
            and not isinstance(layer, layers.BatchNormalization)
        )
