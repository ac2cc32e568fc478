"""Epoch time of the real training input vs the same batches already in memory.

Run: ``python -m bench.input_pipeline [--patients 60] [--arch vgg19]``. The real input is
what training uses: the database query, decode, crop and normalize (``load_task_data``,
served from its on-disk crop cache after the first epoch), then ``tf_dataset``'s shuffle,
batch, augmentation and prefetch, feeding a VGG19 at the study's 112×112. The baseline
feeds the same model identical batches held in memory. Target (issue 8): ≤ 1.10×.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.demo_folder import demo_folder
from bench.timing import print_table
from core.learning.augment import build_augmenter
from core.learning.dataset import DatasetSettings, load_task_data, tf_dataset
from core.learning.models import ModelSpec, build_model

MAX_RATIO = 1.10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--arch", default="vgg19")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    with demo_folder(args.patients) as (db, store, folder):
        settings = DatasetSettings(
            task="sarcopenia_gsu", input_size=(args.size, args.size), sizes=(1, 1, 1)
        )
        cache = folder / "cache"
        model = build_model(
            ModelSpec(arch=args.arch, input_size=(args.size, args.size), channels=1)
        )
        model.compile(optimizer="adam", loss="binary_crossentropy")
        augment = build_augmenter(seed=0)

        first_start = time.perf_counter()
        data = load_task_data(db, store, settings, cache_dir=cache)
        rows = np.arange(len(data))
        model.fit(tf_dataset(data, rows, shuffle=True, augment=augment), verbose=0)
        first = time.perf_counter() - first_start
        pipeline = tf_dataset(data, rows, shuffle=True, augment=augment)
        batches = list(pipeline)
        held_x = np.concatenate([np.asarray(x) for x, _ in batches])
        held_y = np.concatenate([np.asarray(y) for _, y in batches])

        def real_epoch() -> float:
            start = time.perf_counter()
            model.fit(pipeline, verbose=0)
            return time.perf_counter() - start

        def memory_epoch() -> float:
            start = time.perf_counter()
            model.fit(held_x, held_y, batch_size=16, shuffle=False, verbose=0)
            return time.perf_counter() - start

        memory_epoch()
        real = float(np.median([real_epoch() for _ in range(args.epochs)]))
        held = float(np.median([memory_epoch() for _ in range(args.epochs)]))
    ratio = real / held
    ok = ratio <= MAX_RATIO
    print(f"input_pipeline: {len(data)} eligible patients, {args.arch} at {args.size}×{args.size}")
    print_table(
        ["epoch", "seconds", "ratio", f"target ≤ {MAX_RATIO}×"],
        [
            ["first (query, decode, crop, normalize, fill cache)", first, first / held, ""],
            ["in-memory batches (baseline)", held, 1.0, ""],
            ["real input (cached crops, augment, prefetch)", real, ratio, "ok" if ok else "MISS"],
        ],
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
