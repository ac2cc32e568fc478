"""Peak resident memory of a process holding the three study models for review.

Run: ``python -m bench.memory``. It imports what the app imports, builds VGG19, ResNet50
and DenseNet121 at 112×112, and runs one review (predict + Grad-CAM) with each, then
reports the peak RSS. Target (issue 8): under 3 GB. Exits 1 when missed.
"""

from __future__ import annotations

import argparse
import resource
import sys

LIMIT_GB = 3.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args(argv)
    from bench.inference import main as review_bench

    review_bench(["--size", str(args.size), "--repeat", "1"])
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    ok = peak_gb < LIMIT_GB
    print(
        f"memory: peak RSS with the three models loaded and used: {peak_gb:.2f} GB "
        f"(target < {LIMIT_GB:g} GB) {'ok' if ok else 'MISS'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
