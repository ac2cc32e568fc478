"""Grad-CAM overlays sent back beside the report as Secondary Capture images.

Each overlay shows where a model looked, on the stored (de-identified) screen at its
original size, so a viewer can lay it over the original. Headers come from the original
image (patient, study), the series says it is research output, not for diagnostic use.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from core.services.pacs.sr import MANUFACTURER, NOT_FOR_DIAGNOSIS

SERIES_NUMBER = 9902


def gradcam_capture(
    overlay: np.ndarray, source: Dataset, *, run_id: int, model_name: str, instance_number: int
) -> hd.sc.SCImage:
    """One Secondary Capture of a model's Grad-CAM overlay on ``source``'s screen."""
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(overlay, dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
    )
    # highdicom insists on an orientation for patient images; a scanner screen has none
    # known, which DICOM writes as an empty Patient Orientation (type 2).
    image.PatientOrientation = source.get("PatientOrientation", "")
    image.Laterality = source.get("Laterality", "")
    image.SeriesDescription = f"Grad-CAM, run {run_id} - research, not for diagnostic use"
    image.ImageComments = f"Grad-CAM of {model_name} (run {run_id}). {NOT_FOR_DIAGNOSIS}."
    image.BurnedInAnnotation = "NO"
    image.DerivationDescription = "Grad-CAM heat map blended into the crop box of the screen"
    return image
