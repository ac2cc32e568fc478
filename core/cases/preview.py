"""The import preview: what each image of a bundle will look like once stored, before it is.

Before an import stores anything, the admin looks at every image with what the pipeline
would blank (burned-in text) and propose (views, color box, color bar), corrects the
blanking where it is wrong (:class:`~core.imaging.pixel_deid.Corrections`), and confirms.
The preview runs the very cleaning the import runs, so what is shown is what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.cases.archive import BundleError, ZipBundle
from core.cases.manifest import Problem, parse_manifest
from core.imaging.imageio import ImageReadError, decode_image
from core.imaging.pixel_deid import Corrections, TextLine
from core.imaging.regions import RegionProposal
from core.imaging.upload_cleaning import clean_upload, preview


@dataclass(frozen=True)
class BundleImage:
    """One image a manifest row names."""

    row: int
    code: str
    modality: str
    file: str
    """The file name as the manifest writes it (the key of the admin's corrections)."""

    def label(self) -> str:
        return f"row {self.row} · {self.code} · {self.modality} · {self.file}"


@dataclass(frozen=True)
class ImagePreview:
    """One image as the import would store it, outlined, or why it cannot be read."""

    image: BundleImage
    picture: np.ndarray | None
    """The cleaned frame, RGB, with views, color box and bar, blanked and kept text outlined."""
    blanked: tuple[TextLine, ...] = ()
    kept: tuple[TextLine, ...] = ()
    proposal: RegionProposal | None = None
    problem: str | None = None


def bundle_images(data: bytes) -> tuple[list[BundleImage], list[Problem]]:
    """Every image the uploaded zip's manifest names, and the manifest's problems."""
    try:
        with ZipBundle(data) as bundle:
            records, problems = parse_manifest(bundle.manifest_text())
    except BundleError as exc:
        return [], [Problem(str(exc))]
    images = [
        BundleImage(record.row, record.code, modality, name)
        for record in records
        for modality, name in (("GSU", record.gsu_file), ("SWE", record.swe_file))
        if name
    ]
    return images, problems


def preview_image(
    data: bytes,
    image: BundleImage,
    corrections: Corrections | None = None,
    *,
    pixel_ocr: bool = True,
) -> ImagePreview:
    """Clean one image of the uploaded zip as the import would, and outline the result."""
    try:
        with ZipBundle(data) as bundle:
            member = bundle.resolve(bundle.find_manifest(), image.file)
            if member is None:
                return ImagePreview(image, None, problem="The file is not in the bundle.")
            raw = bundle.read(member)
        decoded = decode_image(raw, name=image.file, pseudonym=image.code)
        clean = clean_upload(
            raw,
            decoded,
            name=image.file,
            pseudonym=image.code,
            corrections=corrections,
            ocr=pixel_ocr,
        )
    except (BundleError, ImageReadError) as exc:
        return ImagePreview(image, None, problem=str(exc))
    cleaning = clean.cleaning
    return ImagePreview(
        image, preview(cleaning), cleaning.blanked, cleaning.kept, cleaning.proposal
    )
