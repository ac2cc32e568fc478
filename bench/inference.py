"""Warm latency of the Review page's model work against the fastest honest way to get it.

Run: ``python -m bench.inference [--size 112] [--batch 16]``. The review path is what the
Review page does per patient: decode the stored GSU image, crop and resize to the study's
112×112, normalize, predict through ``RunPredictor`` and compute its Grad-CAM, then overlay
the map on the crop and on the full image, for VGG19, ResNet50 and DenseNet121.

The baseline (the floor) gets the same outputs with the least work: per model one compiled
forward pass for the probability and one compiled gradient of the logit at the Grad-CAM
layer, with the map computed from them, on the already prepared crop, batched as the
review batches: one patient per call on the page, ``--batch`` patients per call in a
cohort prediction (``core.services.review.predict_cases``). Both run in this process, timed in
alternation so that a shared machine's drifting load hits them alike.

Target (issue 8): the page's review ≤ 1.3× the floor at one patient. Exits 1 when missed.
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np
import tensorflow as tf

from bench.timing import interleaved_medians, print_table
from core.cases.cohort import synthetic_cohort
from core.imaging.crop import crop_and_resize
from core.imaging.images import decode_stored
from core.imaging.normalize import normalize
from core.learning.dataset import DatasetSettings
from core.learning.gradcam import find_last_conv_layer, overlay, overlay_on_full_image, upsample
from core.learning.models import ARCHITECTURES, ModelSpec, build_model
from core.services.demo import render_patient
from core.services.review import RunPredictor

MAX_RATIO = 1.3
ROWS = (
    "floor, 1 patient",
    "review models, 1 patient",
    "review page, 1 patient",
    "floor, batch",
    "cohort batch",
)
"""First cells of the rows printed (the smoke test checks that each is measured)."""


def floor_step(model: keras.Model):
    """Probability and Grad-CAM map from one compiled forward and one compiled gradient."""
    layer = model.get_layer(find_last_conv_layer(model))
    grad_model = keras.Model(model.inputs[0], [layer.output, model.get_layer("logit").output])
    forward = tf.function(lambda x: model(x, training=False))

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            activations, logit = grad_model(x, training=False)
        return activations, tape.gradient(logit, activations)

    def run(x: tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
        probability = forward(x).numpy()
        activations, grads = (t.numpy() for t in gradient(x))
        weights = grads.mean(axis=(1, 2))
        return probability, np.maximum(np.einsum("nhwc,nc->nhw", activations, weights), 0.0)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=112, help="input side (study: 112)")
    parser.add_argument("--batch", type=int, default=16, help="cohort batch (review: 16)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    size = (args.size, args.size)
    rendered = render_patient(synthetic_cohort(n=160)[0])
    png, box = rendered.gsu_png, rendered.us_box
    predictors = []
    for index, arch in enumerate(ARCHITECTURES):
        model = build_model(ModelSpec(arch=arch, input_size=size, channels=1, weights="none"))
        settings = DatasetSettings(task="sarcopenia_gsu", input_size=size)
        predictors.append(RunPredictor(index, "sarcopenia_gsu", arch, 0.5, settings, "", model))
    floors = [floor_step(p.model) for p in predictors]

    def prepared() -> tuple[np.ndarray, np.ndarray]:
        full = decode_stored(png, "gsu.png")
        return full, normalize(crop_and_resize(full, box, size))[None, :, :, None]

    _, crop = prepared()
    batch = np.repeat(crop, args.batch, axis=0)

    def review() -> None:
        full, x = prepared()
        for predictor in predictors:
            predictor.predict({"gsu": x})
            cam = predictor.explain({"gsu": x})[0]
            overlay(x[0], upsample(cam, size))
            overlay_on_full_image(full, box, cam)

    def models_only(x: np.ndarray) -> None:
        for predictor in predictors:
            predictor.predict({"gsu": x})
            predictor.explain({"gsu": x})

    def floor(x: np.ndarray) -> None:
        tensor = tf.constant(x)
        for step in floors:
            step(tensor)

    times = interleaved_medians(
        {
            "one_floor": lambda: floor(crop),
            "one_models": lambda: models_only(crop),
            "one_review": review,
            "many_floor": lambda: floor(batch),
            "many_models": lambda: models_only(batch),
        },
        repeat=args.repeat,
        warmup=2,
    )
    one_floor, one_models, one_review = times["one_floor"], times["one_models"], times["one_review"]
    many_floor, many_models = times["many_floor"], times["many_models"]
    ratio = one_review / one_floor
    ok = ratio <= MAX_RATIO
    print(f"inference: one patient's review, 3 models at {args.size}×{args.size} (median s)")
    print_table(
        ["path", "seconds", "ratio", f"target ≤ {MAX_RATIO}×"],
        [
            [f"{ROWS[0]}: compiled forward + gradient at the Grad-CAM layer", one_floor, 1.0, ""],
            [f"{ROWS[1]}: RunPredictor predict + explain", one_models, one_models / one_floor, ""],
            [
                f"{ROWS[2]}: decode, crop, predict, Grad-CAM, overlays",
                one_review,
                ratio,
                "ok" if ok else "MISS",
            ],
            [f"{ROWS[3]} of {args.batch}: the same compiled pair", many_floor, 1.0, ""],
            [
                f"{ROWS[4]} of {args.batch}: RunPredictor predict + explain",
                many_models,
                many_models / many_floor,
                "",
            ],
        ],
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
