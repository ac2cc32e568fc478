"""Burned-in identifying text is blanked from stored pixels (the Clean Pixel Data Option).

Checked on the real-screen corpus (``../shared/real-us/``): every hand-marked text box is
blank in what the store keeps, Tesseract finds none of the identifying strings in it again,
and the SWE colour bar with its scale labels is untouched. Small drawn screens check the
rules one at a time.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytesseract
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from bench.pixel_deid import gray, identifying_words, marks_in, words_read_again
from bench.real_corpus import DEFAULT_CORPUS
from core.cases.staging import encode_png
from core.common.boxes import Box
from core.imaging.imageio import ImageReadError, decode_image
from core.imaging.pixel_deid import Corrections, clean_pixels, looks_identifying
from core.imaging.regions import RegionProposal
from core.imaging.upload_cleaning import PREVIEW_COLOURS, clean_upload, preview

PSEUDONYM = "RF-0042"


def _manifest() -> list[dict[str, Any]]:
    path = DEFAULT_CORPUS / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else []


ENTRIES = {Path(e["file"]).name: e for e in _manifest()}
READ_BEFORE = ("dcm4che_YBR_FULL-RLE_Acuson.dcm", "orthanc_PilatesArgenturGEUltrasoundOsiriX.dcm")
WITH_TEXT = sorted(n for n, e in ENTRIES.items() if e["ground_truth"]["burned_in_text"])


@pytest.fixture(scope="module")
def stored(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Each corpus file as the importer stores it: name -> (stored bytes, decoded pixels)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SARCOPENIA_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        out = {}
        for name, entry in ENTRIES.items():
            data = (corpus / entry["file"]).read_bytes()
            decoded = decode_image(data, name=name, pseudonym=PSEUDONYM)
            clean = clean_upload(data, decoded, name=name, pseudonym=PSEUDONYM)
            kept = clean.dicom if clean.dicom is not None else encode_png(clean.pixels)
            out[name] = (kept, decode_image(kept, name=name).pixels, decoded.pixels)
        yield out


def test_corpus_has_burned_in_text(corpus: Path) -> None:
    """Guards the tests below: they prove nothing without text to remove."""
    assert len(WITH_TEXT) >= 10
    for name in WITH_TEXT:
        original = decode_image((corpus / ENTRIES[name]["file"]).read_bytes(), name=name).pixels
        levels = gray(original)
        assert all(marks_in(levels, b) > 0 for b in ENTRIES[name]["ground_truth"]["burned_in_text"])
        if name in READ_BEFORE:
            assert words_read_again(original, identifying_words(ENTRIES[name])), name


@pytest.mark.parametrize("name", WITH_TEXT)
def test_every_burned_in_text_box_is_blank(name: str, stored: dict[str, Any]) -> None:
    _, pixels, _ = stored[name]
    levels = gray(pixels)
    left = {
        tuple(b): marks_in(levels, b)
        for b in ENTRIES[name]["ground_truth"]["burned_in_text"]
        if marks_in(levels, b)
    }
    assert left == {}, f"text pixels left in {name}: {left}"


@pytest.mark.parametrize("name", WITH_TEXT)
def test_ocr_finds_no_identifying_string_again(name: str, stored: dict[str, Any]) -> None:
    _, pixels, _ = stored[name]
    found = words_read_again(pixels, identifying_words(ENTRIES[name]))
    assert found == [], f"OCR still reads {found} in {name}"


def test_swe_colour_bar_and_its_labels_survive(stored: dict[str, Any]) -> None:
    _, pixels, original = stored["swepy_sc0.png"]
    bar = ENTRIES["swepy_sc0.png"]["ground_truth"]["color_bar"]["box"]
    labels = [bar[0] - 40, bar[1] - 30, bar[2] + 45, bar[3] + 10]  # '≥300 kPa' … '60'
    for x0, y0, x1, y1 in (bar, labels):
        np.testing.assert_array_equal(pixels[y0:y1, x0:x1], original[y0:y1, x0:x1])
    assert marks_in(gray(pixels), labels) > 100  # the labels are there to be kept


def test_stored_dicom_says_how_it_was_cleaned(stored: dict[str, Any]) -> None:
    data, _, _ = stored["orthanc_2023-04-21_Mindray_RLE_YBR_FULL.dcm"]
    ds = dcmread(io.BytesIO(data))
    assert ds.BurnedInAnnotation == "NO"
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113106", "113108", "113101"]
    assert "Clean Pixel Data Option" in ds.DeidentificationMethod
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # re-encoded
    assert ds.PhotometricInterpretation == "RGB"


def test_every_frame_of_a_cine_is_cleaned(corpus: Path, stored: dict[str, Any]) -> None:
    name = "dcm4che_US-PAL-8-10x-echo.dcm"
    data, _, _ = stored[name]
    ds = dcmread(io.BytesIO(data))
    assert int(ds.NumberOfFrames) == 10
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    for frame in range(10):
        levels = gray(decode_image(data, name=name, frame=frame).pixels)
        for box in ENTRIES[name]["ground_truth"]["burned_in_text"]:
            assert marks_in(levels, box) == 0, (frame, box)


def test_the_middle_of_each_view_is_not_touched(stored: dict[str, Any]) -> None:
    """Only the middle half: a sector's bounding box has settings text in its corners.

    Up to 3% may go: where a view proposal misses part of a fan, calliper marks there
    are taken for text outside the views (Mindray).
    """
    for name, (_, pixels, original) in stored.items():
        truth = ENTRIES[name]["ground_truth"]
        for x0, y0, x1, y1 in truth["ultrasound_area"]:
            dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
            x0, y0, x1, y1 = x0 + dx, y0 + dy, x1 - dx, y1 - dy
            if any(
                b[0] < x1 and b[2] > x0 and b[1] < y1 and b[3] > y0 for b in truth["burned_in_text"]
            ):
                continue  # identifying text written inside the image (the Acuson 'DOE')
            changed = np.any(pixels[y0:y1, x0:x1] != original[y0:y1, x0:x1], axis=-1)
            assert changed.mean() < 0.03, name


def test_a_missing_ocr_engine_is_said_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    data = encode_png(_screen([("DOE, JANE", (200, 200))]))
    decoded = decode_image(data, name="screen.png")
    with pytest.raises(ImageReadError, match="Install Tesseract"):
        clean_upload(data, decoded, name="screen.png", pseudonym=PSEUDONYM)


def _screen(lines: list[tuple[str, tuple[int, int]]]) -> np.ndarray:
    """A black 640×480 screen with a gray 'view' and white text at the given places."""
    img = np.zeros((480, 640, 3), np.uint8)
    img[100:400, 150:550] = 90
    for text, (x, y) in lines:
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    return img


PROPOSAL = RegionProposal((Box(150, 100, 400, 300),), None, None, None, "test")


def test_identifying_text_inside_a_view_is_blanked_and_other_text_kept() -> None:
    img = _screen([("DOE, JANE", (200, 200)), ("RIGHT RECTUS", (200, 300))])
    result = clean_pixels(img, proposal=PROPOSAL)
    reasons = {line.text: line.reason for line in result.blanked + result.kept}
    assert reasons.get("DOE, JANE") == "identifying", reasons
    assert reasons.get("RIGHT RECTUS") == "kept: inside a view", reasons
    levels = gray(result.pixels)
    assert (levels[180:210, 190:320] > 200).sum() == 0  # the white glyphs are gone
    assert (levels[280:310, 190:360] > 200).sum() > 0


def test_blanked_text_takes_the_colour_of_its_panel_and_shows_in_the_preview() -> None:
    img = _screen([("DOE, JANE", (200, 200))])  # on the view's gray, not the black screen
    result = clean_pixels(img, proposal=PROPOSAL)
    (line,) = result.blanked
    box = line.box
    assert (result.pixels[box.y : box.y2, box.x : box.x2] == 90).all()
    shown = preview(result)
    assert tuple(shown[box.y, box.x + box.w // 2]) == PREVIEW_COLOURS["blanked"]
    assert tuple(shown[PROPOSAL.views[0].y, 300]) == PREVIEW_COLOURS["view"]


@pytest.mark.parametrize(("bar", "ink"), [(60, 255), (200, 0)])
def test_a_name_on_a_gray_or_light_title_bar_is_blanked(bar: int, ink: int) -> None:
    img = _screen([])
    img[:60] = bar
    cv2.putText(img, "DOE, JANE", (10, 35), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (ink,) * 3, 2)
    result = clean_pixels(img, proposal=PROPOSAL)
    assert [line.text for line in result.blanked] == ["DOE, JANE"]
    np.testing.assert_array_equal(result.pixels[:60], np.full((60, 640, 3), bar, np.uint8))


def test_text_outside_the_views_goes_and_depth_numbers_stay() -> None:
    img = _screen([("Knee Clinic", (10, 450)), ("12", (560, 250)), ("Gain 54", (10, 250))])
    result = clean_pixels(img, proposal=PROPOSAL)
    reasons = {line.text: line.reason for line in result.blanked + result.kept}
    assert reasons.get("Knee Clinic") == "outside the views", reasons
    assert reasons.get("Gain 54") == "outside the views", reasons
    assert reasons.get("12") == "kept: depth scale", reasons


def test_header_words_are_blanked_wherever_they_are() -> None:
    img = _screen([("MARTIN", (250, 250))])
    assert not clean_pixels(img, proposal=PROPOSAL).blanked
    result = clean_pixels(img, proposal=PROPOSAL, tokens={"martin"})
    assert [line.reason for line in result.blanked] == ["identifying"]


def test_the_admins_corrections_blank_more_and_restore_a_line() -> None:
    img = _screen([("Knee Clinic", (10, 450)), ("Gain 54", (10, 250))])
    img[25:45, 605:635] = 255  # a mark the OCR does not read as text
    auto = clean_pixels(img, proposal=PROPOSAL)
    gain = next(line.box for line in auto.blanked if line.text == "Gain 54")
    missed = Box(600, 20, 60, 30)  # reaches past the right edge: cut to the frame
    fixed = clean_pixels(img, proposal=PROPOSAL, corrections=Corrections((missed,), (gain,)))
    reasons = {line.text: line.reason for line in fixed.blanked + fixed.kept}
    assert reasons["Gain 54"] == "kept: by the admin"
    assert reasons["Knee Clinic"] == "outside the views"
    assert reasons[""] == "blanked by the admin"
    assert (fixed.pixels[25:45, 605:635] == 0).all()
    restored = (slice(gain.y, gain.y2), slice(gain.x, gain.x2))
    np.testing.assert_array_equal(fixed.pixels[restored], img[restored])


def test_without_ocr_only_the_admins_rectangles_go_and_a_dicom_claims_nothing(
    corpus: Path,
) -> None:
    img = _screen([("DOE, JANE", (10, 450))])
    assert clean_pixels(img, proposal=PROPOSAL, ocr=False).blanked == ()
    drawn = clean_pixels(
        img, proposal=PROPOSAL, ocr=False, corrections=Corrections((Box(0, 420, 200, 50),))
    )
    assert (drawn.pixels[420:470, :200] == 0).all()
    data = (corpus / "images" / "dcm4che_YBR_FULL-RLE_Acuson.dcm").read_bytes()
    decoded = decode_image(data, name="acuson.dcm", pseudonym=PSEUDONYM)
    skipped = clean_upload(data, decoded, name="acuson.dcm", pseudonym=PSEUDONYM, ocr=False)
    ds = dcmread(io.BytesIO(skipped.dicom))
    assert skipped.cleaning.blanked == () and str(ds.PatientName) == PSEUDONYM
    assert ds.get("BurnedInAnnotation") != "NO"
    assert "113101" not in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


@pytest.mark.parametrize(
    ("text", "identifying"),
    [
        ("18/01/2022", True),
        ("16.11.2013", True),
        ("29 Mar 00", True),
        ("11:25:59", True),
        ("1073100971", True),
        ("CL-285BT-1811492", True),
        ("PID_8rhWVxX5UjVEpFN", True),
        ("Lastname, Firstname", True),
        ("ID: 12", True),
        ("16.0cm", False),
        ("+64.1", False),
        ("Gain 54", False),
        ("PRF 5000 Hz", False),
        ("RIGHT VASTUS LATERALIS", False),
    ],
)
def test_identifying_patterns(text: str, identifying: bool) -> None:
    assert looks_identifying(text) is identifying
