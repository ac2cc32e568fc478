"""Burned-in text removal on real scanner screens (issue 14), against hand-marked truth.

For every file of ``../shared/real-us/`` (or ``--corpus``): the import without pixel cleaning
(decode, header de-identification, the stored file) as the baseline, then the import with it
(OCR, blanking, re-encoding). Prints per file the text lines blanked and kept, how many
hand-marked identifying boxes are blank in the stored pixels, the identifying words that
Tesseract still reads in the stored image, the time of both imports with their ratio, and
the CPU time of the cleaning import (Tesseract included; wall time suffers on a busy machine).
Exits 1 when a box is left unblanked or a word is read again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytesseract
from PIL import Image

from bench.real_corpus import DEFAULT_CORPUS
from core.cases.staging import encode_png
from core.imaging.imageio import decode_image, deidentified_dicom_bytes
from core.imaging.upload_cleaning import clean_upload, preview

PSEUDONYM = "RF-0042"
STROKE = 24
"""A pixel more than this many gray levels from its box's commonest value is a mark."""


def gray(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) if pixels.ndim == 3 else pixels


def marks_in(gray_pixels: np.ndarray, box: list[int]) -> int:
    """Pixels of ``[x0, y0, x1, y1)`` that stand out from the box's background: text left."""
    region = gray_pixels[box[1] : box[3], box[0] : box[2]].astype(int)
    mode = np.bincount(region.ravel()).argmax()
    return int((np.abs(region - mode) > STROKE).sum())


def identifying_words(entry: dict[str, Any]) -> list[str]:
    """Words of 4+ characters of the truth's labels ('DOE, JOHN (patient name)' -> 'JOHN')."""
    words = []
    for label in entry["ground_truth"]["burned_in_text_labels"]:
        text = label.split(" (")[0].replace('"', " ").replace("...", " ")
        words += [w.strip(",.:") for w in text.split() if len(w.strip(",.:")) >= 4]
    return words


def words_read_again(pixels: np.ndarray, words: list[str]) -> list[str]:
    """The words Tesseract still reads anywhere in ``pixels`` (twice enlarged, sparse text)."""
    if not words:
        return []
    big = cv2.resize(gray(pixels), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    read = pytesseract.image_to_string(Image.fromarray(big), config="--psm 11").lower()
    return [w for w in words if w.lower() in read]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (Tesseract runs as a child)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _baseline(data: bytes, name: str) -> bytes:
    decoded = decode_image(data, name=name, pseudonym=PSEUDONYM)
    if decoded.source_format == "dicom":
        return deidentified_dicom_bytes(data, pseudonym=PSEUDONYM, name=name)
    return encode_png(decoded.pixels)


def _cleaned(data: bytes, name: str) -> tuple[bytes, Any]:
    decoded = decode_image(data, name=name, pseudonym=PSEUDONYM)
    clean = clean_upload(data, decoded, name=name, pseudonym=PSEUDONYM)
    return (clean.dicom if clean.dicom is not None else encode_png(clean.pixels)), clean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument(
        "--figures",
        type=Path,
        help="write each file's review picture (core.imaging.upload_cleaning.preview)",
    )
    args = parser.parse_args(argv)
    if not (args.corpus / "manifest.json").is_file():
        print(f"No real-screen corpus at {args.corpus}: it needs ../shared/real-us/manifest.json")
        return 1
    os.environ["SARCOPENIA_DATA_DIR"] = tempfile.mkdtemp(prefix="pixel-deid-bench-")
    entries = json.loads((args.corpus / "manifest.json").read_text())
    print(
        f"{'file':46} {'size':>9} {'blanked':>7} {'kept':>4} {'boxes':>6} {'reread':>6} "
        f"{'base s':>6} {'clean s':>7} {'ratio':>6} {'cpu s':>6}"
    )
    boxes_total = boxes_blank = reread_total = 0
    base_total = clean_total = cpu_total = 0.0
    for entry in entries:
        name = Path(entry["file"]).name
        data = (args.corpus / entry["file"]).read_bytes()
        started = time.perf_counter()
        _baseline(data, name)
        base = time.perf_counter() - started
        started, cpu = time.perf_counter(), cpu_seconds()
        stored, clean = _cleaned(data, name)
        cleaned, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        pixels = decode_image(stored, name=name).pixels
        if args.figures:
            args.figures.mkdir(parents=True, exist_ok=True)
            figure = cv2.cvtColor(preview(clean.cleaning), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(args.figures / f"{Path(name).stem}.png"), figure)
        truth = entry["ground_truth"]["burned_in_text"]
        blank = sum(marks_in(gray(pixels), box) == 0 for box in truth)
        reread = words_read_again(pixels, identifying_words(entry))
        boxes_total, boxes_blank = boxes_total + len(truth), boxes_blank + blank
        reread_total += len(reread)
        base_total, clean_total = base_total + base, clean_total + cleaned
        cpu_total += cpu
        height, width = pixels.shape[:2]
        print(
            f"{name:46} {width:>4}×{height:<4} {len(clean.cleaning.blanked):>7} "
            f"{len(clean.cleaning.kept):>4} {blank:>3}/{len(truth):<2} {len(reread):>6} "
            f"{base:6.2f} {cleaned:7.2f} {cleaned / base:5.0f}× {cpu:6.2f}"
            + (f"  still read: {reread}" if reread else "")
        )
    print()
    print(f"identifying boxes blank in the stored pixels: {boxes_blank} of {boxes_total}")
    print(f"identifying words OCR still reads in the stored images: {reread_total} (target 0)")
    print(
        f"import time per image: {base_total / len(entries):.2f} s without pixel cleaning, "
        f"{clean_total / len(entries):.2f} s with it ({clean_total / base_total:.0f}×); "
        f"CPU time with it {cpu_total / len(entries):.2f} s per image"
    )
    return 0 if boxes_blank == boxes_total and reread_total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
