from core.common.boxes import Box
from core.imaging.canvas_boxes import (
    BOX_FILL,
    NO_FILL,
    box_to_rect,
    canvas_key,
    drawing_with,
    drawn_in_image,
    fit_scale,
    last_drawn_box,
    rect_to_box,
)


def test_native_size_when_it_fits_and_shrunk_otherwise():
    assert fit_scale(640, 480, 900, 700) == 1.0
    assert fit_scale(1280, 960, 640, 700) == 0.5
    assert fit_scale(640, 480, 900, 700, zoom=2.0) == 2.0


def test_scaled_rect_maps_back_to_source_pixels():
    obj = {
        "type": "rect",
        "left": 50,
        "top": 30,
        "width": 100,
        "height": 40,
        "scaleX": 1.5,
        "scaleY": 2.0,
    }
    assert rect_to_box(obj, 0.5) == Box(100, 60, 300, 160)


def test_center_origin_is_handled():
    obj = {
        "type": "rect",
        "left": 100,
        "top": 100,
        "width": 40,
        "height": 20,
        "originX": "center",
        "originY": "center",
    }
    assert rect_to_box(obj, 1.0) == Box(80, 90, 40, 20)


def test_round_trip_through_the_canvas():
    box = Box(123, 45, 301, 222)
    for scale in (0.37, 0.5, 1.0, 1.75):
        assert rect_to_box(box_to_rect(box, scale), scale) == box


def test_last_rectangle_wins_and_other_shapes_are_ignored():
    drawing = drawing_with(Box(1, 2, 30, 40), 1.0)
    drawing["objects"].append({"type": "path"})
    fabric6 = box_to_rect(Box(5, 6, 70, 80), 1.0) | {"type": "Rect"}
    drawing["objects"].append(fabric6)
    assert last_drawn_box(drawing, 1.0) == Box(5, 6, 70, 80)
    assert last_drawn_box({"objects": [{"type": "circle"}]}, 1.0) is None
    assert last_drawn_box(None, 1.0) is None


def test_enlarged_fit_uses_the_space_the_layout_has():
    assert fit_scale(640, 480, 1280, 2000, enlarge=True) == 2.0
    assert fit_scale(640, 480, 1280, 2000, zoom=1.5, enlarge=True) == 3.0
    assert fit_scale(640, 480, 320, 2000, enlarge=True) == 0.5


def test_a_drag_past_the_edge_is_clamped_to_the_image():
    drawing = drawing_with(Box(-20, 400, 300, 200), 1.5)
    assert drawn_in_image(drawing, 1.5, 640, 480) == (Box(0, 400, 280, 80), True)
    inside = drawing_with(Box(10, 20, 100, 80), 1.5)
    assert drawn_in_image(inside, 1.5, 640, 480) == (Box(10, 20, 100, 80), False)
    assert drawn_in_image(None, 1.5, 640, 480) == (None, False)


def test_the_last_of_several_drawn_rectangles_wins():
    drawing = {
        "objects": [box_to_rect(Box(1, 2, 30, 40), 2.0), box_to_rect(Box(50, 60, 70, 80), 2.0)]
    }
    assert last_drawn_box(drawing, 2.0) == Box(50, 60, 70, 80)


def test_a_box_redrawn_at_a_new_zoom_reads_back_unchanged():
    box = Box(151, 56, 187, 248)
    for scale in (0.69375, 1.040625, 1.3875, 1.5, 2.0):
        assert last_drawn_box(drawing_with(box, scale), scale) == box
    assert canvas_key(3, 1.5) != canvas_key(3, 2.0)


def test_outline_only_unless_the_fill_is_asked_for():
    assert box_to_rect(Box(1, 2, 30, 40), 1.0, fill=NO_FILL)["fill"] == NO_FILL
    assert box_to_rect(Box(1, 2, 30, 40), 1.0)["fill"] == BOX_FILL
