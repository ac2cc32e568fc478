import numpy as np

from core.imaging.display import GRADING_PANEL_PX, grading_layout, png_bytes, reading_view
from core.imaging.images import decode_stored


def test_neutral_view_keeps_every_pixel():
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert np.array_equal(reading_view(rgb, 1.0), rgb)
    assert np.array_equal(decode_stored(png_bytes(rgb), "x.png"), rgb)


def test_zoom_is_nearest_neighbour_without_new_values():
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    big = reading_view(rgb, 2.0)
    assert big.shape == (32, 32, 3)
    assert np.array_equal(big[::2, ::2], rgb)


def test_window_level_changes_display_only():
    rgb = np.full((8, 8, 3), 100, np.uint8)
    darker = reading_view(rgb, 1.0, level=0.7, window=1.0)
    assert darker.max() < 100
    assert rgb.max() == 100


def test_wide_screens_show_gsu_and_swe_side_by_side_and_narrow_ones_tabs():
    wide = grading_layout(1220, 1100)
    narrow = grading_layout(600, 800)
    assert wide.side_by_side and not narrow.side_by_side
    assert 2 * wide.image_width + GRADING_PANEL_PX < 1220
    assert narrow.image_width + GRADING_PANEL_PX < 600
    assert wide.image_height == 840
