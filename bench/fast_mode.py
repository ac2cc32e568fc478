"""Fast mode (head on cached features of a frozen backbone) vs full fine-tuning.

Run: ``python -m bench.fast_mode [--full-epochs 30] [--k-folds 5] [--archs vgg19,resnet50]``.
On the demo cohort (loaded into a temporary folder) it trains ``sarcopenia_gsu`` per
architecture at the study's 112×112 in both modes through ``core.learning.train.run_training``, and
reports the time per epoch, the total time to a trained model, and the test AUC of both.
The study's single split tests 20 patients, about 4 of them sarcopenic, so its AUCs carry
intervals of ±0.2; ``--k-folds 5`` compares pooled out-of-fold AUCs, every eligible patient
tested once, at five times the cost; the target is checked on the pooled AUC, and the mean
± SD of the folds' AUCs is printed beside it.
Targets (issue 8): fast ≥ 10× faster per epoch, with test AUC within 0.05 of full
fine-tuning or better. Weights are ``none`` unless ``--weights imagenet`` (the Keras cache
must hold the files). Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from bench.demo_folder import demo_folder
from bench.timing import print_table
from core.common.store import ImageStore
from core.learning.train import TrainSettings, run_training
from core.services.jobs import create_run
from db.engine import Database
from db.models import TrainingRun
from db.runs import run_test_auc

MIN_SPEEDUP = 10.0
MAX_AUC_LOSS = 0.05


def train(db: Database, store: ImageStore, cache: Path, settings: TrainSettings) -> dict:
    run_id = create_run(db, settings, owner_pid=os.getpid())
    run_training(db, store, run_id, cache_dir=cache)
    with db.read() as session:
        run = session.get(TrainingRun, run_id)
        timing = (run.metrics or {}).get("timing", {})
        seconds = [e["seconds"] for e in (run.history or {}).get("epochs", []) if "seconds" in e]
        auc = run_test_auc(run)
        cv = (run.metrics or {}).get("cv") or {}
    steady = seconds[1:] or seconds  # the first epoch also traces the graph
    per_epoch = float(np.median(steady)) if steady else float("nan")
    folds = f"{cv['test_auc_mean']:.2f} ± {cv['test_auc_sd']:.2f}" if cv.get("test_auc_sd") else ""
    return {
        "per_epoch": per_epoch,
        "total": timing.get("total_s", 0.0),
        "auc": auc,
        "folds": folds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archs", default="vgg19,resnet50,densenet121")
    parser.add_argument("--patients", type=int, default=160)
    parser.add_argument("--full-epochs", type=int, default=30, help="the study's schedule")
    parser.add_argument("--fast-epochs", type=int, default=15)
    parser.add_argument("--weights", default="none")
    parser.add_argument("--size", type=int, default=112, help="input side (study: 112)")
    parser.add_argument(
        "--k-folds", type=int, default=0, help="0: the study's single split; k ≥ 2: k-fold"
    )
    args = parser.parse_args(argv)
    rows, failed = [], []
    with demo_folder(args.patients) as (db, store, folder):
        sizes = None if args.patients >= 141 else (args.patients // 3, 4, 6)
        for arch in args.archs.split(","):
            common = {
                "task": "sarcopenia_gsu",
                "arch": arch,
                "weights": args.weights,
                "input_size": args.size,
                "k_folds": args.k_folds,
            }
            if sizes:
                common["sizes"] = sizes
            fast = train(
                db,
                store,
                folder / "cache",
                TrainSettings(mode="fast", epochs=args.fast_epochs, **common),
            )
            full = train(
                db,
                store,
                folder / "cache",
                TrainSettings(mode="full", epochs=args.full_epochs, **common),
            )
            speedup = full["per_epoch"] / max(fast["per_epoch"], 1e-9)
            auc_ok = (
                fast["auc"] is not None
                and full["auc"] is not None
                and fast["auc"] >= full["auc"] - MAX_AUC_LOSS
            )
            ok = speedup >= MIN_SPEEDUP and auc_ok
            rows.append(
                [
                    arch,
                    full["per_epoch"],
                    fast["per_epoch"],
                    speedup,
                    full["total"],
                    fast["total"],
                    full["auc"],
                    fast["auc"],
                    *([full["folds"], fast["folds"]] if args.k_folds else []),
                    "ok" if ok else "MISS",
                ]
            )
            if not ok:
                failed.append(arch)
    split = f"{args.k_folds}-fold pooled test AUC" if args.k_folds else "single split"
    print(
        f"fast_mode: sarcopenia_gsu at {args.size}×{args.size}, weights {args.weights}, "
        f"full {args.full_epochs} / fast {args.fast_epochs} epochs (early stopping may end "
        f"sooner), {split}"
    )
    print_table(
        [
            "arch",
            "full s/epoch",
            "fast s/epoch",
            "speedup",
            "full total s",
            "fast total s",
            "full AUC",
            "fast AUC",
            *(["full folds", "fast folds"] if args.k_folds else []),
            f"≥{MIN_SPEEDUP:g}×, ΔAUC ≤ {MAX_AUC_LOSS}",
        ],
        rows,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
