"""AppTest of the Grading page, with a simulated canvas drawing."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from core.cases.staging import encode_png
from core.common.boxes import Box
from core.common.store import ImageStore, sha256_hex
from core.imaging.canvas_boxes import box_to_rect
from core.imaging.images import load_pixels
from core.imaging.regions import propose_regions
from db.engine import Database
from db.models import AuditEvent, CropBox, Grade, Image, Reader
from tests.apptest_helpers import open_page


def _draw(at, image_id: int, box: Box) -> None:
    """What the canvas component sends after the reader drags a rectangle."""
    canvas = at.session_state["grading_canvases"][image_id]
    drawing = {"objects": [box_to_rect(box, canvas["scale"])]}
    at.session_state[canvas["key"]] = {
        "drawing": {"raw": drawing, "data": None},
        "backgroundFit": None,
    }


def _grade(at, grade: int):
    return at.button(key=f"gradebtn-{grade}").click().run()


def _reader_rows(username: str):
    with Database().read() as s:
        reader = s.scalar(select(Reader).where(Reader.username == username))
        grades = {
            g.image_id: g.grade for g in s.scalars(select(Grade).filter_by(reader_id=reader.id))
        }
        boxes = {
            b.image_id: Box(b.x, b.y, b.w, b.h)
            for b in s.scalars(select(CropBox).filter_by(reader_id=reader.id))
        }
    return grades, boxes


def test_grade_draw_save_and_next(demo_env):
    at = open_page("pages/grading.py", "radiologist1")
    assert not at.exception
    first = at.session_state["grading_image"]
    _draw(at, first, Box(160, 70, 300, 200))
    _grade(at, 2)
    at.button(key="save_next").click().run()
    assert not at.exception
    grades, boxes = _reader_rows("radiologist1")
    assert grades == {first: 2}
    assert boxes == {first: Box(160, 70, 300, 200)}
    assert at.session_state["grading_image"] != first


def test_a_tiny_box_is_refused_with_a_message_and_nothing_saved(demo_env):
    at = open_page("pages/grading.py", "radiologist1")
    first = at.session_state["grading_image"]
    _draw(at, first, Box(100, 100, 10, 10))
    _grade(at, 1)
    at.button(key="save_next").click().run()
    assert not at.exception
    assert any("at least 16" in e.value for e in at.error)
    assert _reader_rows("radiologist1") == ({}, {})


def test_saving_without_a_grade_asks_for_one(demo_env):
    at = open_page("pages/grading.py", "radiologist1")
    at.button(key="save_next").click().run()
    assert any("Pick a grade" in e.value for e in at.error)


def test_proposed_box_is_stored_with_save_and_next_like_a_drawn_one(demo_env):
    at = open_page("pages/grading.py", "radiologist2")
    first = at.session_state["grading_image"]
    at.button(key=f"auto-{first}").click().run()
    assert not at.exception
    assert _reader_rows("radiologist2") == ({}, {})
    _grade(at, 1)
    at.button(key="save_next").click().run()
    assert not at.exception
    _, boxes = _reader_rows("radiologist2")
    with Database().read() as s:
        row = s.scalar(select(CropBox).where(CropBox.image_id == first, CropBox.auto_accepted))
        path = s.get(Image, first).path
    proposed = propose_regions(load_pixels(ImageStore(demo_env / "images"), path)).views[0]
    assert boxes == {first: proposed}
    assert row is not None and row.owner_key.startswith("reader:")


def test_blinding_on_the_page(demo_env):
    at = open_page("pages/grading.py", "radiologist1")
    texts = " ".join(t.value for t in at.text)
    assert "sim_reader" not in texts and "Simulated reader" not in texts
    _grade(at, 3)
    at.button(key="save_next").click().run()
    at.selectbox(key="jump").set_value(at.selectbox(key="jump").options[0]).run()
    assert not at.exception
    texts = " ".join(t.value for t in at.text)
    assert "Simulated reader A" in texts


def test_changing_a_grade_is_audited(demo_env):
    at = open_page("pages/grading.py", "radiologist1")
    _grade(at, 1)
    at.button(key="save_next").click().run()
    at.selectbox(key="jump").set_value(at.selectbox(key="jump").options[0]).run()
    _grade(at, 2)
    at.button(key="save_next").click().run()
    assert not at.exception
    with Database().read() as s:
        actions = [
            (e.action, e.before, e.after["grade"])
            for e in s.scalars(
                select(AuditEvent).where(
                    AuditEvent.actor == "radiologist1", AuditEvent.entity == "grade"
                )
            )
        ]
    assert actions == [("grade.create", None, 1), ("grade.update", {"grade": 1}, 2)]


def test_uncertain_and_comment_are_stored_and_counted(demo_env):
    at = open_page("pages/grading.py", "radiologist1")
    first = at.session_state["grading_image"]
    _grade(at, 2)
    at.checkbox(key=f"uncertain-{first}").check().run()
    at.text_input(key=f"comment-{first}").input("probe tilted").run()
    at.button(key="save_next").click().run()
    assert not at.exception
    with Database().read() as s:
        row = s.scalar(select(Grade).where(Grade.image_id == first))
    assert (row.grade, row.uncertain, row.comment) == (2, True, "probe tilted")
    assert "1 marked uncertain" in at.get("progress")[0].proto.text


def test_a_drag_past_the_edge_is_clamped_with_a_note(demo_env):
    at = open_page("pages/grading.py", "radiologist1")
    first = at.session_state["grading_image"]
    _draw(at, first, Box(500, 300, 200, 250))
    at.run()
    assert any("stops at the edge" in i.value for i in at.info)
    _grade(at, 1)
    at.button(key="save_next").click().run()
    assert not at.exception
    assert _reader_rows("radiologist1")[1] == {first: Box(500, 300, 140, 180)}


def test_previous_next_and_the_jump_box_follow_the_case_on_screen(demo_env):
    at = open_page("pages/grading.py", "radiologist1")
    assert at.selectbox(key="jump").value == "DEMO-001"
    _grade(at, 0)
    at.button(key="save_next").click().run()
    assert at.selectbox(key="jump").value == "DEMO-002"
    at.button(key="prev_case").click().run()
    assert at.selectbox(key="jump").value == "DEMO-001"
    assert at.button(key="gradebtn-0").proto.type == "primary"
    at.button(key="next_case").click().run()
    assert at.selectbox(key="jump").value == "DEMO-002"
    assert not at.exception


def _region(box: Box, mm: float) -> dict:
    """A 2D tissue item of SequenceOfUltrasoundRegions, calibrated in cm per pixel."""
    return {
        "RegionLocationMinX0": box.x,
        "RegionLocationMinY0": box.y,
        "RegionLocationMaxX1": box.x2 - 1,
        "RegionLocationMaxY1": box.y2 - 1,
        "RegionSpatialFormat": 1,
        "RegionDataType": 1,
        "PhysicalUnitsXDirection": 3,
        "PhysicalUnitsYDirection": 3,
        "PhysicalDeltaX": mm / 10,
        "PhysicalDeltaY": mm / 10,
    }


UPPER, LOWER = Box(100, 40, 400, 200), Box(100, 250, 400, 200)


def _make_dual_view_dicom(demo_env, image_id: int) -> None:
    """Replace the demo image with a screen of two views whose header declares both."""
    rng = np.random.default_rng(1)
    screen = np.zeros((480, 600, 3), np.uint8)
    for view in (UPPER, LOWER):
        speckle = rng.integers(40, 200, (view.h, view.w, 1), dtype=np.uint8)
        screen[view.y : view.y2, view.x : view.x2] = speckle
    data = encode_png(screen)
    relpath, _ = ImageStore(demo_env / "images").put(data, sha256_hex(data), ".png")

    def work(session) -> None:
        image = session.get(Image, image_id)
        image.path, image.sha256, image.width, image.height = relpath, sha256_hex(data), 600, 480
        image.dicom_header = {
            "SequenceOfUltrasoundRegions": [_region(UPPER, 0.08), _region(LOWER, 0.08)]
        }

    Database().write(work)


def test_calibration_and_the_view_a_box_belongs_to(demo_env):
    at = open_page("pages/grading.py", "radiologist1")
    first = at.session_state["grading_image"]
    assert not any("Calibration" in c.value for c in at.caption)  # the demo's PNGs have none
    _make_dual_view_dicom(demo_env, first)
    at = open_page("pages/grading.py", "radiologist1")
    assert at.session_state["grading_image"] == first
    assert any(
        c.value == "Calibration: 0.08 mm per pixel (DICOM ultrasound regions)" for c in at.caption
    )
    choice = at.radio(key=f"view-{first}")
    assert choice.options == ["View 1 of 2 (upper)", "View 2 of 2 (lower)"]
    choice.set_value("View 2 of 2 (lower)").run()
    at.button(key=f"auto-{first}").click().run()
    _grade(at, 2)
    at.button(key="save_next").click().run()
    assert not at.exception
    assert _reader_rows("radiologist1")[1] == {first: LOWER}
