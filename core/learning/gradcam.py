"""Grad-CAM and Grad-CAM++ heat maps for the Keras classifiers, and their overlays.

Yi et al. (Sci Rep 2022) explained their DCNNs with Grad-CAM on the last convolutional
block, which lit up hyperechoic fascia/fibrosis and hypoechoic fat. The pipeline, after the
keras-io "Grad-CAM class activation visualization" example:

1. ``find_last_conv_layer``: the study's layer for a known backbone (``LAST_CONV_LAYER``),
   else the last layer with a 4-D output.
2. ``GradCAM(model)(x)``: one forward pass to that layer's activations ``A`` and the class
   score, one backward pass from the score to ``A``; channel weights from the gradients;
   ``relu(Σ_c w_c A_c)`` scaled so each map's maximum is 1.
3. ``upsample`` to the crop size, ``overlay`` on the crop, or ``overlay_on_full_image`` at
   the crop's place in the source image.

The score is the *logit* (before the sigmoid or softmax) by default: a saturated sigmoid has
vanishing gradients, which would blank the maps of the most confident predictions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

from core.common.boxes import Box
from core.learning.models import LAST_CONV_LAYER, arch_of

Inputs = np.ndarray | Mapping[str, np.ndarray]


class GradCAMError(ValueError):
    """A model or input Grad-CAM cannot explain; the message says what to change."""


def _is_4d(layer: keras.layers.Layer) -> bool:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return False
    return len(shape) == 4


def find_last_conv_layer(model: keras.Model) -> str:
    """Name of the layer whose activations Grad-CAM weighs.

    For the study's backbones, the output of the last convolutional block (VGG19
    ``block5_conv4``, ResNet50 ``conv5_block3_out``, DenseNet121 ``relu``); for any other Keras
    CNN the last layer with a 4-D (N, H, W, C) output.
    """
    arch = arch_of(model)
    if arch is not None:
        return LAST_CONV_LAYER[arch]
    for layer in reversed(model.layers):
        if not isinstance(layer, keras.layers.InputLayer) and _is_4d(layer):
            return layer.name
    raise GradCAMError(
        f"Model {model.name!r} has no layer with a 4-D (batch, height, width, channels) "
        "output, so there is no convolutional feature map to explain."
    )


def _score_head(
    model: keras.Model, use_logit: bool
) -> tuple[keras.KerasTensor, Callable[[tf.Tensor], tf.Tensor]]:
    """The tensor the grad model should output and the function turning it into class scores.

    Models from ``learning.models`` have a ``logit`` layer. For other models the pre-activation is
    recovered from the final layer: the input of a sigmoid/softmax ``Activation``, or
    ``x @ kernel + bias`` of a sigmoid/softmax ``Dense``.
    """
    if len(model.outputs) != 1:
        raise GradCAMError(f"Model {model.name!r} has {len(model.outputs)} outputs; expected 1.")
    if not use_logit:
        return model.outputs[0], tf.identity
    names = {layer.name for layer in model.layers}
    if "logit" in names:
        return model.get_layer("logit").output, tf.identity
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    squashing = (keras.activations.sigmoid, keras.activations.softmax)
    if activation is keras.activations.linear:
        return model.outputs[0], tf.identity
    if isinstance(last, keras.layers.Activation) and activation in squashing:
        return last.input, tf.identity
    if isinstance(last, keras.layers.Dense) and activation in squashing:

        def dense_logit(features: tf.Tensor) -> tf.Tensor:
            logit = tf.matmul(features, tf.cast(last.kernel, features.dtype))
            return logit + tf.cast(last.bias, features.dtype) if last.use_bias else logit

        return last.input, dense_logit
    raise GradCAMError(
        f"Cannot find the pre-activation score of model {model.name!r} (its last layer "
        f"{last.name!r} is neither a sigmoid/softmax Dense or Activation nor linear). "
        "Pass use_logit=False to explain the output probability instead."
    )


class _GradientStep:
    """Activations of one layer and the class score's gradient with respect to them.

    A ``tf.function`` traced once per input signature; shared by Grad-CAM and Grad-CAM++.
    """

    def __init__(self, model: keras.Model, layer_name: str, use_logit: bool) -> None:
        try:
            layer = model.get_layer(layer_name)
        except ValueError as err:
            raise GradCAMError(
                f"Model {model.name!r} has no layer named {layer_name!r}; pass one of its "
                "convolutional layers, or leave layer_name out to find the last one."
            ) from err
        if not _is_4d(layer):
            raise GradCAMError(
                f"Layer {layer_name!r} has output shape {layer.output.shape}; Grad-CAM "
                "needs a 4-D (batch, height, width, channels) feature map."
            )
        score_tensor, self._to_scores = _score_head(model, use_logit)
        # A Sequential model has ``inputs`` but no ``input``; a dict-input model needs ``input``.
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.input
        self.grad_model = keras.Model(inputs, [layer.output, score_tensor])
        self.n_scores = int(model.outputs[0].shape[-1])
        self.run = tf.function(self._run, reduce_retracing=True)

    def _run(self, x: Any, class_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            # A tape watches only trainable variables by itself; watching the input too keeps
            # the gradient defined whatever the model's frozen layers look like.
            tape.watch(x)
            activations, raw = self.grad_model(x, training=False)
            scores = tf.cast(self._to_scores(raw), tf.float32)
            chosen = tf.where(
                class_index < 0, tf.argmax(scores, axis=-1, output_type=tf.int32), class_index
            )
            target = tf.gather(scores, chosen, axis=1, batch_dims=1)
        grads = tape.gradient(target, activations)
        return tf.cast(activations, tf.float32), tf.cast(grads, tf.float32)


@functools.lru_cache(maxsize=4)
def _gradient_step(model: keras.Model, layer_name: str, use_logit: bool) -> _GradientStep:
    """Cached per (model, layer, mode), so a fresh explainer on a model is already warm.

    Tracing the gradient graph of DenseNet121 takes seconds; a page that builds a new
    ``GradCAM`` on every rerun must not pay that each time. Holds the last 4 models alive.
    """
    return _GradientStep(model, layer_name, use_logit)


class GradCAM:
    """Gradient-weighted class activation maps (Selvaraju et al., ICCV 2017).

    ``GradCAM(model)(x)`` gives one map per image, ``(N, h, w)`` in ``[0, 1]`` at the
    resolution of the explained layer (e.g. 7×7 for VGG19 at 112×112); ``upsample`` it to
    the crop. The channel weight is the spatial mean of the score's gradient. The gradient
    step is a ``tf.function`` traced once per model, layer and input shape, so warm calls
    cost one forward and a short backward pass.
    """

    def __init__(
        self, model: keras.Model, layer_name: str | None = None, *, use_logit: bool = True
    ) -> None:
        self.model = model
        self.layer_name = layer_name if layer_name is not None else find_last_conv_layer(model)
        self.use_logit = use_logit
        self._step = _gradient_step(model, self.layer_name, use_logit)

    @staticmethod
    def channel_weights(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """Grad-CAM: global-average-pooled gradients, ``(N, C)``."""
        del activations
        return grads.mean(axis=(1, 2))

    def __call__(self, x: Inputs, class_index: int | None = None) -> np.ndarray:
        """Maps ``(N, h, w)`` in ``[0, 1]``, each scaled by its own maximum.

        ``x`` is a batch as the model takes it (a dict of arrays for a fusion model).
        ``class_index`` picks the explained class of a softmax head (default: the predicted
        one); a single sigmoid output has only class 0, its positive class. A map with no
        positive evidence is all zeros.
        """
        batch = self._check_inputs(x)
        n_scores = self._step.n_scores
        if class_index is not None and not 0 <= class_index < n_scores:
            raise GradCAMError(
                f"class_index={class_index} is out of range: the model has {n_scores} output(s)."
            )
        index = tf.constant(-1 if class_index is None else class_index, dtype=tf.int32)
        tensors = tf.nest.map_structure(tf.convert_to_tensor, batch)
        activations, grads = (t.numpy() for t in self._step.run(tensors, index))
        weights = self.channel_weights(activations, grads)
        cams = np.maximum(np.einsum("nhwc,nc->nhw", activations, weights), 0.0)
        peak = cams.max(axis=(1, 2), keepdims=True)
        return np.divide(cams, peak, out=np.zeros_like(cams), where=peak > 0)

    def _check_inputs(self, x: Inputs) -> Any:
        expected = self._step.grad_model.input
        if isinstance(expected, Mapping):
            if not isinstance(x, Mapping) or set(x) != set(expected):
                raise GradCAMError(
                    f"Model {self.model.name!r} takes a dict with keys {sorted(expected)}."
                )
            return {k: self._check_array(x[k], expected[k].shape, k) for k in expected}
        if isinstance(x, Mapping):
            raise GradCAMError(f"Model {self.model.name!r} takes one array, not a dict.")
        return self._check_array(x, expected.shape, "image")

    @staticmethod
    def _check_array(a: np.ndarray, shape: tuple[int | None, ...], name: str) -> np.ndarray:
        arr = np.asarray(a, dtype=np.float32)
        if arr.ndim != len(shape) or any(
            s is not None and s != d for s, d in zip(shape[1:], arr.shape[1:], strict=True)
        ):
            raise GradCAMError(
                f"Input {name!r} has shape {arr.shape}; the model expects (N, "
                f"{', '.join(str(s) for s in shape[1:])}). Add a batch axis for one image "
                "(x[None])."
            )
        if not np.isfinite(arr).all():
            raise GradCAMError(f"Input {name!r} contains NaN or infinite values.")
        return arr


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018): pixel-wise weighted positive gradients.

    Better than Grad-CAM when several separate regions carry evidence. Uses the paper's
    closed form for an exponential score, in which the ``exp`` factor cancels from the
    weights ``α = g² / (2g² + Σ_ab A · g³)``; ``w_c = Σ_ab α · relu(g)``.
    """

    @staticmethod
    def channel_weights(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
        g2 = np.square(grads)
        g3 = g2 * grads
        total = activations.sum(axis=(1, 2), keepdims=True)
        denom = 2.0 * g2 + total * g3
        alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=denom != 0)
        return (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2))


def _check_cam(cam: np.ndarray) -> np.ndarray:
    arr = np.asarray(cam, dtype=np.float32)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise GradCAMError(f"A map must be (h, w) or (N, h, w); got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise GradCAMError("The map contains NaN or infinite values.")
    return arr


FLAT_PEAK_TO_MEAN = 1.5
"""Below this peak-to-mean ratio a map lights the whole crop about evenly: no localization.
A map that picks out a region a quarter of the crop wide has a ratio of about 3 or more."""


def flat_map_note(cam: np.ndarray) -> str | None:
    """Why a map shows no localization, or None when it highlights a region.

    Each map is scaled by its own maximum, so a nearly uniform map still renders as a full
    colour wash that looks meaningful; the page says so beside it instead.
    """
    arr = _check_cam(cam)
    peak, mean = float(arr.max()), float(arr.mean())
    if peak <= 0.0:
        return (
            "No localization: the map is empty (no region of this crop raised the model's "
            "score), so the overlay shows nothing."
        )
    ratio = peak / mean
    if ratio < FLAT_PEAK_TO_MEAN:
        return (
            f"No localization: the map is nearly uniform (its peak is {ratio:.2f}× its "
            "mean), so its colours do not point at any region of the image."
        )
    return None


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a map ``(h, w)`` or maps ``(N, h, w)`` to ``size = (height, width)``.

    Pixel-centre aligned (OpenCV), so a coarse cell covers the image region it summarizes.
    """
    arr = _check_cam(cam)
    height, width = size
    if height < 1 or width < 1:
        raise GradCAMError(f"Target size {size} must be positive (height, width).")
    if arr.ndim == 3:
        return np.stack([upsample(m, size) for m in arr])
    out = cv2.resize(arr, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


def overlay(image01: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The image with the map blended on top in the jet colormap, as RGB uint8.

    ``image01`` is gray ``(H, W)``/``(H, W, 1)`` or RGB ``(H, W, 3)`` in ``[0, 1]``; ``cam`` is one
    map in ``[0, 1]`` of any size (upsampled to the image). ``alpha`` is the map's opacity.
    """
    if not 0.0 <= alpha <= 1.0:
        raise GradCAMError(f"alpha={alpha} must be in [0, 1].")
    img = np.asarray(image01, dtype=np.float32)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise GradCAMError(f"The image must be (H, W), (H, W, 1) or (H, W, 3); got {img.shape}.")
    if not np.isfinite(img).all() or img.min() < 0.0 or img.max() > 1.0:
        raise GradCAMError("The image must hold finite values in [0, 1]; divide uint8 by 255.")
    heat01 = _check_cam(cam)
    if heat01.ndim != 2:
        raise GradCAMError(f"overlay takes one (h, w) map; got shape {heat01.shape}.")
    heat01 = upsample(heat01, img.shape[:2])
    heat_bgr = cv2.applyColorMap(np.round(heat01 * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat_rgb = cv2.cvtColor(heat_bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    blended = (1.0 - alpha) * img * 255.0 + alpha * heat_rgb
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def overlay_on_full_image(
    full_rgb: np.ndarray, box: Box, cam_crop: np.ndarray, alpha: float = 0.4
) -> np.ndarray:
    """The source image (uint8, gray or RGB) with the crop's map blended inside ``box`` only.

    So a reader sees the heat map where the model looked, in the context of the whole scan.
    """
    full = np.asarray(full_rgb)
    if full.dtype != np.uint8:
        raise GradCAMError(f"The full image must be uint8 (0..255); got {full.dtype}.")
    if full.ndim == 3 and full.shape[2] == 1:
        full = full[:, :, 0]
    if full.ndim == 2:
        full = np.repeat(full[:, :, None], 3, axis=2)
    if full.ndim != 3 or full.shape[2] != 3:
        raise GradCAMError(f"The full image must be (H, W) or (H, W, 3); got {full.shape}.")
    height, width = full.shape[:2]
    if box.w < 1 or box.h < 1 or not box.inside(width, height):
        raise GradCAMError(
            f"The box {box.as_tuple()} does not lie inside the {width}×{height} image."
        )
    out = full.copy()
    region = out[box.y : box.y2, box.x : box.x2].astype(np.float32) / 255.0
    out[box.y : box.y2, box.x : box.x2] = overlay(region, cam_crop, alpha)
    return out
