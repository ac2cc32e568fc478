"""The import preview (core.cases.preview): each image shown as it will be stored, with the
admin's corrections carried into the import, so what was checked is what is stored."""

from __future__ import annotations

import cv2
import numpy as np
from sqlalchemy import select

from core.cases.archive import ZipBundle
from core.cases.importer import Cleaning, import_bundle
from core.cases.preview import bundle_images, preview_image
from core.common.boxes import Box
from core.imaging.images import load_pixels
from core.imaging.pixel_deid import Corrections
from core.imaging.upload_cleaning import PREVIEW_COLOURS
from db.models import Image
from tests.bundles import make_zip, row


def _screen() -> bytes:
    """A 640×480 screen: a speckled view, a patient name in the title bar."""
    rng = np.random.default_rng(2)
    img = np.zeros((480, 640, 3), np.uint8)
    img[100:400, 150:550] = rng.integers(40, 160, (300, 400, 1), dtype=np.uint8)
    cv2.putText(img, "DOE, JANE", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    ok, buffer = cv2.imencode(".png", img)
    assert ok
    return buffer.tobytes()


def _zip() -> bytes:
    return make_zip([row("P001", "g.png", "gone.png")], {"g.png": _screen()})


def test_every_named_image_is_listed_and_a_missing_one_said() -> None:
    images, problems = bundle_images(_zip())
    assert problems == []
    assert [(i.row, i.code, i.modality, i.file) for i in images] == [
        (2, "P001", "GSU", "g.png"),
        (2, "P001", "SWE", "gone.png"),
    ]
    assert preview_image(_zip(), images[1]).problem == "The file is not in the bundle."
    assert bundle_images(b"not a zip")[1] != []


def test_the_preview_outlines_what_is_blanked_and_proposed() -> None:
    gsu = bundle_images(_zip())[0][0]
    shown = preview_image(_zip(), gsu)
    (name,) = [line for line in shown.blanked if line.text == "DOE, JANE"]
    assert name.reason in {"identifying", "title bar", "outside the views"}
    assert shown.proposal.views[0].iou(Box(150, 100, 400, 300)) >= 0.9
    assert tuple(shown.picture[name.box.y, name.box.x + 5]) == PREVIEW_COLOURS["blanked"]
    assert tuple(shown.picture[100, 300]) == PREVIEW_COLOURS["view"]
    assert preview_image(_zip(), gsu, pixel_ocr=False).blanked == ()


def test_the_admins_corrections_are_what_the_import_stores(db, store) -> None:
    data = _zip()
    gsu = bundle_images(data)[0][0]
    name = next(line.box for line in preview_image(data, gsu).blanked if line.text)
    drawn = Box(200, 200, 40, 30)  # speckle the OCR leaves alone
    fixes = Corrections(blank=(drawn,), keep=(name,))
    corrected = preview_image(data, gsu, fixes)
    assert [line.reason for line in corrected.kept] == ["kept: by the admin"]
    bundle = make_zip([row("P001", "g.png")], {"g.png": _screen()})
    report = import_bundle(ZipBundle(bundle), db, store, cleaning=Cleaning({"g.png": fixes}))
    assert report.ok, report.problems
    with db.read() as session:
        path = session.scalar(select(Image.path))
    stored = load_pixels(store, path)
    assert (stored[name.y : name.y2, name.x : name.x2] == 255).any()  # the name stayed
    patch = stored[drawn.y : drawn.y2, drawn.x : drawn.x2]
    assert patch.min() == patch.max()  # one fill colour where the speckle was


def test_known_clean_import_skips_the_text_search(db, store, tmp_path) -> None:
    """``import --known-clean``: nothing is blanked, so the name stays (for images that
    truly carry none, this saves the OCR's second per image)."""
    from core.cli import main as cli_main

    bundle = tmp_path / "clean.zip"
    bundle.write_bytes(make_zip([row("P001", "g.png")], {"g.png": _screen()}))
    assert cli_main(["import", str(bundle), "--known-clean"]) == 0
    with db.read() as session:
        path = session.scalar(select(Image.path))
    original = cv2.cvtColor(cv2.imdecode(np.frombuffer(_screen(), np.uint8), 1), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(load_pixels(store, path), original)
