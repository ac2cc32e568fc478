"""Box proposals and reading on real scanner screens (issue 14), against hand-checked truth.

Reads every file of ``../shared/real-us/`` (or ``--corpus``) with the importer's own decoder,
runs the proposals, and prints per file and in total: the best IoU of a proposed ultrasound
area with a true view, whether every view of a dual-view screen was found, color boxes
proposed where there is none, color-box IoU where there is one, crashes and unreadable
files. Exits 1 when a target of issue 14 is missed.

``--stress`` also runs the proposals on altered copies, to see how far they carry beyond
these 22 files: without the DICOM header (pixels only, as for a stripped file or a
screenshot), shrunk to 70 %, saved as JPEG at quality 60, and mirrored left to right.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.common.boxes import Box
from core.imaging.imageio import ImageReadError, decode_image
from core.imaging.regions import propose_regions
from core.imaging.roi_detect import to_rgb_u8

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "real-us"
AREA_IOU = 0.8
COLOR_IOU = 0.7


def truth_box(xyxy: list[int]) -> Box:
    """A manifest box ``[x0, y0, x1, y1)`` as a :class:`Box`."""
    x0, y0, x1, y1 = xyxy
    return Box(x0, y0, x1 - x0, y1 - y0)


@dataclass
class FileResult:
    """What the proposals got right and wrong on one file."""

    name: str
    area_iou: float = 0.0
    views_found: int = 0
    views_true: int = 0
    color_true: bool = False
    color_iou: float | None = None
    color_false_alarm: bool = False
    error: str = ""
    notes: list[str] = field(default_factory=list)


Move = Callable[[list[int]], list[int]]


def _shrunk(pixels: np.ndarray) -> tuple[np.ndarray, Move]:
    height, width = pixels.shape[:2]
    size = (round(width * 0.7), round(height * 0.7))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), lambda b: [
        round(v * 0.7) for v in b
    ]


def _jpeg(pixels: np.ndarray) -> tuple[np.ndarray, Move]:
    ok, buffer = cv2.imencode(".jpg", pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    return cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1], lambda b: b


def _mirrored(pixels: np.ndarray) -> tuple[np.ndarray, Move]:
    width = pixels.shape[1]
    return pixels[:, ::-1], lambda b: [width - b[2], b[1], width - b[0], b[3]]


def _framed(pixels: np.ndarray) -> tuple[np.ndarray, Move]:
    """The screen inside a viewer's dark gray frame, as a screenshot of a PACS viewer has it."""
    top, left = 80, 120
    framed = cv2.copyMakeBorder(pixels, top, 40, left, 60, cv2.BORDER_CONSTANT, value=(28,) * 3)
    return framed, lambda b: [b[0] + left, b[1] + top, b[2] + left, b[3] + top]


VARIANTS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, Move]]] = {
    "no header": lambda pixels: (pixels, lambda b: b),
    "70 %": _shrunk,
    "JPEG 60": _jpeg,
    "mirrored": _mirrored,
    "framed": _framed,
}
"""Altered copies for ``--stress``; every one also drops the DICOM header."""


def evaluate(corpus: Path, variant: str | None = None) -> list[FileResult]:
    """Run the importer's decoder and the proposals on every file of the corpus manifest,
    or on its ``variant`` (a key of :data:`VARIANTS`) with the truth moved along."""
    entries = json.loads((corpus / "manifest.json").read_text())
    results = []
    for entry in entries:
        truth = entry["ground_truth"]
        result = FileResult(Path(entry["file"]).name, views_true=len(truth["ultrasound_area"]))
        try:
            decoded = decode_image(
                (corpus / entry["file"]).read_bytes(), name=result.name, pseudonym="X"
            )
        except ImageReadError as exc:
            result.error = f"unreadable: {exc}"
            results.append(result)
            continue
        pixels, header, move = decoded.pixels, decoded.dicom_header, lambda b: b
        if variant is not None:
            pixels, move = VARIANTS[variant](to_rgb_u8(pixels))
            pixels, header = np.ascontiguousarray(pixels), None
        try:
            found = propose_regions(pixels, header)
        except Exception as exc:  # a crash is what this bench counts
            result.error = f"crash: {type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
            results.append(result)
            continue
        views = [truth_box(move(b)) for b in truth["ultrasound_area"]]
        ious = [max((v.iou(p) for p in found.views), default=0.0) for v in views]
        result.area_iou = max(ious)
        result.views_found = sum(iou >= AREA_IOU for iou in ious)
        result.color_true = truth["color_box"] is not None
        if found.color_box is not None and not result.color_true:
            result.color_false_alarm = True
        if result.color_true:
            expected = truth_box(move(truth["color_box"]))
            result.color_iou = expected.iou(found.color_box) if found.color_box else 0.0
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--stress", action="store_true", help="also run on altered copies")
    args = parser.parse_args(argv)
    if not (args.corpus / "manifest.json").is_file():
        print(f"No real-screen corpus at {args.corpus}: it needs ../shared/real-us/manifest.json")
        return 1
    results = evaluate(args.corpus)
    width = max(len(r.name) for r in results)
    print(f"{'file':{width}}  area IoU  views  color IoU  false color  error")
    for r in results:
        color = "—" if r.color_iou is None else f"{r.color_iou:.2f}"
        print(
            f"{r.name:{width}}  {r.area_iou:8.2f}  {r.views_found}/{r.views_true}  "
            f"{color:>9}  {'yes' if r.color_false_alarm else 'no':>11}  {r.error}"
        )
    total = len(results)
    area_ok = sum(r.area_iou >= AREA_IOU for r in results)
    all_views = sum(r.views_found == r.views_true for r in results)
    colors = [r for r in results if r.color_true]
    color_ok = sum((r.color_iou or 0) >= COLOR_IOU for r in colors)
    false_color = sum(r.color_false_alarm for r in results)
    crashes = sum(r.error.startswith("crash") for r in results)
    unreadable = sum(r.error.startswith("unreadable") for r in results)
    print()
    print(f"ultrasound area IoU ≥ {AREA_IOU}: {area_ok} of {total} (target ≥ {total - 2})")
    print(f"every view found: {all_views} of {total}")
    print(f"color box IoU ≥ {COLOR_IOU}: {color_ok} of {len(colors)} (target all)")
    print(f"color boxes proposed where there is none: {false_color} (target 0)")
    print(f"crashes: {crashes}, unreadable files: {unreadable} (target 0 and 0)")
    if args.stress:
        print_stress(args.corpus)
    met = (
        area_ok >= total - 2
        and color_ok == len(colors)
        and false_color == 0
        and crashes == 0
        and unreadable == 0
    )
    return 0 if met else 1


def print_stress(corpus: Path) -> None:
    """One line per altered copy: views found, color boxes right, false ones, crashes."""
    print("\naltered copies (no DICOM header): views IoU ≥ 0.8, color boxes, false, crashes")
    for variant in VARIANTS:
        results = evaluate(corpus, variant)
        colors = [r for r in results if r.color_true]
        print(
            f"{variant:>9}: {sum(r.views_found == r.views_true for r in results)} of "
            f"{len(results)}, {sum((r.color_iou or 0) >= COLOR_IOU for r in colors)} of "
            f"{len(colors)}, {sum(r.color_false_alarm for r in results)}, "
            f"{sum(r.error.startswith('crash') for r in results)}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
