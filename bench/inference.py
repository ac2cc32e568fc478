"""Warm latency of one patient's review vs raw model calls, for the three study models.

Run: ``python -m bench.inference [--size 112]``. The review path is what the Review page
does per patient: decode the stored GSU image, crop and resize to the study's 112×112,
normalize, predict through the compiled forward pass and compute Grad-CAM, then overlay
it on the crop and on the full image, for VGG19, ResNet50 and DenseNet121. The baseline is
``model(x, training=False)`` plus one gradient pass (``tf.GradientTape``) for the same
models. Target (issue 8): review ≤ 1.3× the baseline. Exits 1 when missed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tensorflow as tf

from bench.timing import median_seconds, print_table
from core.cohort import synthetic_cohort
from core.crop import crop_and_resize
from core.dataset import DatasetSettings
from core.demo import render_patient
from core.gradcam import overlay, overlay_on_full_image, upsample
from core.images import decode_stored
from core.models import ARCHITECTURES, ModelSpec, build_model
from core.normalize import normalize
from core.review import RunPredictor

MAX_RATIO = 1.3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=112, help="input side (study: 112)")
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

    def review() -> None:
        full = decode_stored(png, "gsu.png")
        crop = normalize(crop_and_resize(full, box, size))[None, :, :, None]
        for predictor in predictors:
            predictor.predict({"gsu": crop})
            cam = predictor.explain({"gsu": crop})[0]
            overlay(crop[0], upsample(cam, size))
            overlay_on_full_image(full, box, cam)

    x = tf.constant(np.random.default_rng(0).random((1, *size, 1), dtype=np.float32))

    def raw() -> None:
        for predictor in predictors:
            predictor.model(x, training=False)
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = predictor.model(x, training=False)
            tape.gradient(out, x)

    compiled_steps = []
    for predictor in predictors:
        model = predictor.model

        @tf.function(reduce_retracing=True)
        def step(batch, model=model):
            with tf.GradientTape() as tape:
                tape.watch(batch)
                out = model(batch, training=False)
            return out, tape.gradient(out, batch)

        compiled_steps.append(step)

    def compiled() -> None:
        for predictor, step in zip(predictors, compiled_steps, strict=True):
            predictor._forward(x)
            step(x)

    review_s = median_seconds(review, repeat=args.repeat, warmup=2)
    raw_s = median_seconds(raw, repeat=args.repeat, warmup=2)
    compiled_s = median_seconds(compiled, repeat=args.repeat, warmup=2)
    ratio = review_s / raw_s
    print(f"inference: one patient's review, 3 models at {args.size}×{args.size} (median s)")
    print(f"review / compiled floor: {review_s / compiled_s:.2f}× (information)")
    print_table(
        ["path", "seconds", "ratio", f"target ≤ {MAX_RATIO}×"],
        [
            ["raw model(x) + gradient pass", raw_s, 1.0, ""],
            ["(floor) compiled forward + compiled gradient", compiled_s, compiled_s / raw_s, ""],
            [
                "review: preprocess, predict, Grad-CAM, overlays",
                review_s,
                ratio,
                "ok" if ratio <= MAX_RATIO else "MISS",
            ],
        ],
    )
    return 0 if ratio <= MAX_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
