"""(Re)generate the echogenicity grade reference images that readers see while grading.

Run ``python -m scripts.make_grade_reference`` from the repository root. It writes one
phantom B-mode image area per grade (0–3, the study's Heckmatt-style scale, Yi et al.,
Sci Rep 2022) to ``assets/grade_reference/grade_<g>.png``, deterministically, so the files
can be rebuilt and checked against the code at any time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from core.cases.phantom import render_case

DEFAULT_OUT = Path("assets/grade_reference")
REFERENCE_SEED = 20190101
REFERENCE_SWE_KPA = 18.0


def write_references(out_dir: Path) -> list[Path]:
    """Write one image-area PNG per grade into ``out_dir`` and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for grade in range(4):
        case = render_case(REFERENCE_SEED, grade, 0.0, REFERENCE_SWE_KPA)
        box = case.us_box
        area = case.gsu[box.y : box.y2, box.x : box.x2]
        path = out_dir / f"grade_{grade}.png"
        Image.fromarray(area).save(path, optimize=True)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    for path in write_references(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
