"""Box proposals on real scanner screens from many vendors (``../shared/real-us/``).

The corpus holds 22 public screens (GE, Philips, ATL, Acuson, Esaote, Mindray, HP,
Telemed-style MSK, panoramas, a SuperSonic SWE dual view) with hand-checked boxes; its
README gives provenance and licences. The tests assert issue 14's targets (≥ 20 of 22
views, every color box, no false one), which ``python -m bench.real_corpus`` also prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.real_corpus import AREA_IOU, COLOR_IOU, VARIANTS, FileResult, evaluate
from core.common.boxes import Box
from core.imaging.imageio import decode_image
from core.imaging.regions import calibration, dicom_regions, propose_regions, view_names


@pytest.fixture(scope="module")
def results(corpus: Path) -> list[FileResult]:
    return evaluate(corpus)


def test_every_file_is_read_and_no_detector_crashes(results: list[FileResult]) -> None:
    assert len(results) == 22
    assert [r.error for r in results if r.error] == []


def test_no_color_box_where_there_is_none(results: list[FileResult]) -> None:
    assert [r.name for r in results if r.color_false_alarm] == []


def test_ultrasound_area_found_on_most_vendors(results: list[FileResult]) -> None:
    found = [r.name for r in results if r.area_iou >= AREA_IOU]
    assert len(found) >= 20, (
        f"only {len(found)} of 22: missed {set(r.name for r in results) - set(found)}"
    )


def test_both_views_of_the_dual_view_swe_screen(results: list[FileResult]) -> None:
    swe = next(r for r in results if r.name == "swepy_sc0.png")
    assert swe.views_found == swe.views_true == 2
    assert swe.color_iou is not None and swe.color_iou >= COLOR_IOU


def test_color_boxes_of_doppler_and_swe_screens(results: list[FileResult]) -> None:
    colors = [r for r in results if r.color_true]
    assert len(colors) == 5
    assert [r.name for r in colors if (r.color_iou or 0.0) < COLOR_IOU] == []


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_altered_copies_never_crash_or_invent_a_color_box(corpus: Path, variant: str) -> None:
    """Without the header, shrunk, recompressed, mirrored or in a viewer's frame: the pixel
    path still finds most views (today 18-19 of 22) and never proposes a color box where
    there is none."""
    results = evaluate(corpus, variant)
    assert [r.error for r in results if r.error] == []
    assert [r.name for r in results if r.color_false_alarm] == []
    assert sum(r.views_found == r.views_true for r in results) >= 18


def test_a_screenshot_in_a_viewers_frame_keeps_its_color_box(corpus: Path) -> None:
    """The frame makes the scale bar a smaller share of the image; it must still be found,
    or the SWE screen loses its color box."""
    swe = next(r for r in evaluate(corpus, "framed") if r.name == "swepy_sc0.png")
    assert swe.views_found == 2
    assert swe.color_iou is not None and swe.color_iou >= COLOR_IOU


@pytest.mark.parametrize("name", ["dcm4che_YBR_422_Esaote.dcm", "dcm4che_YBR_FULL-RLE_Acuson.dcm"])
def test_jpeg_screens_keep_text_and_gray_bar_out_of_the_view(corpus: Path, name: str) -> None:
    """Saved as JPEG, the ringing joins the settings text (Esaote) and the gray bar with its
    depth marks (Acuson) to the image; the box must still be the image alone."""
    result = next(r for r in evaluate(corpus, "JPEG 60") if r.name == name)
    assert result.area_iou >= AREA_IOU


def test_dicom_regions_give_the_views_and_the_calibration(corpus: Path) -> None:
    data = (corpus / "images" / "dcm4che_YBR_422_Esaote.dcm").read_bytes()
    image = decode_image(data, name="esaote.dcm", pseudonym="X")
    found = propose_regions(image.pixels, image.dicom_header)
    assert found.source == "dicom"
    assert found.views[0].iou(Box(185, 76, 614, 472)) >= 0.95
    assert found.mm_per_pixel == pytest.approx((0.0616, 0.0616), rel=1e-6)


def test_calibration_is_said_with_its_source(corpus: Path) -> None:
    data = (corpus / "images" / "dcm4che_YBR_422_Esaote.dcm").read_bytes()
    header = decode_image(data, name="esaote.dcm", pseudonym="X").dicom_header
    assert calibration(header).describe() == "0.0616 mm per pixel (DICOM ultrasound regions)"
    png = (corpus / "images" / "swepy_sc0.png").read_bytes()
    assert calibration(decode_image(png, name="swe.png", pseudonym="X").dicom_header) is None


def test_views_are_named_by_where_they_lie() -> None:
    side_by_side = [Box(400, 50, 300, 400), Box(20, 60, 300, 400)]
    assert view_names(side_by_side) == ["View 1 of 2 (right)", "View 2 of 2 (left)"]
    assert view_names([Box(0, 0, 10, 10)]) == ["Ultrasound view"]


def test_a_region_far_larger_than_the_visible_image_is_shrunk(corpus: Path) -> None:
    entry = next(
        e
        for e in json.loads((corpus / "manifest.json").read_text())
        if e["file"].endswith("jp2k91YBR-ICT_GE.dcm")
    )
    image = decode_image((corpus / entry["file"]).read_bytes(), name="ge.dcm", pseudonym="X")
    declared = dicom_regions(image.dicom_header)[0].box
    x0, y0, x1, y1 = entry["ground_truth"]["ultrasound_area"][0]
    truth = Box(x0, y0, x1 - x0, y1 - y0)
    assert declared.iou(truth) < 0.6  # the header's region is the whole screen area
    assert propose_regions(image.pixels, image.dicom_header).views[0].iou(truth) >= AREA_IOU


def test_regions_parse_only_well_formed_items() -> None:
    header = {
        "SequenceOfUltrasoundRegions": [
            {
                "RegionLocationMinX0": 10,
                "RegionLocationMinY0": 20,
                "RegionLocationMaxX1": 109,
                "RegionLocationMaxY1": 219,
                "RegionSpatialFormat": 1,
                "RegionDataType": 2,
                "PhysicalUnitsXDirection": 3,
                "PhysicalUnitsYDirection": 3,
                "PhysicalDeltaX": 0.01,
                "PhysicalDeltaY": 0.02,
            },
            {"RegionLocationMinX0": 5},  # corners missing
            {  # inverted corners
                "RegionLocationMinX0": 50,
                "RegionLocationMinY0": 0,
                "RegionLocationMaxX1": 10,
                "RegionLocationMaxY1": 9,
            },
            {  # seconds, not centimetres: no spatial calibration
                "RegionLocationMinX0": 0,
                "RegionLocationMinY0": 0,
                "RegionLocationMaxX1": 9,
                "RegionLocationMaxY1": 9,
                "PhysicalUnitsXDirection": 4,
                "PhysicalUnitsYDirection": 3,
                "PhysicalDeltaX": 0.5,
                "PhysicalDeltaY": 0.5,
            },
        ]
    }
    regions = dicom_regions(header)
    assert [r.box for r in regions] == [Box(10, 20, 100, 200), Box(0, 0, 10, 10)]
    assert regions[0].data_type == 2 and regions[0].spatial_format == 1
    assert regions[0].mm_per_pixel == pytest.approx((0.1, 0.2))
    assert regions[1].mm_per_pixel is None
    assert dicom_regions(None) == [] and dicom_regions({}) == []


def test_nothing_found_is_an_answer_not_an_error() -> None:
    found = propose_regions(np.zeros((120, 160, 3), np.uint8))
    assert found.views == () and found.color_box is None and found.source == "none"
