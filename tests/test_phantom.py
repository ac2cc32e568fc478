"""The phantom screenshots: deterministic, laid out like a scanner, with exact ground truth."""

from __future__ import annotations

import datetime

import cv2
import numpy as np
import pytest

from core.cases.phantom import (
    FRAME_H,
    FRAME_W,
    SWE_ALPHA,
    PhantomCase,
    PhantomError,
    jet_colormap,
    render_case,
)


@pytest.fixture(scope="module")
def case() -> PhantomCase:
    return render_case(3, 1, 0.2, 18.0, scan_date=datetime.date(2019, 3, 14))


def _saturated(rgb: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    return (hsv[..., 1] > 80) & (hsv[..., 2] > 40)


def _box_mask(box) -> np.ndarray:
    mask = np.zeros((FRAME_H, FRAME_W), bool)
    mask[box.y : box.y2, box.x : box.x2] = True
    return mask


def _rf_to_fat_brightness(c: PhantomCase) -> float:
    gray = c.gsu[..., 0].astype(float)
    cx = int(np.flatnonzero(c.rf_mask.any(axis=0)).mean())
    rf_top = int(np.flatnonzero(c.rf_mask[:, cx])[0])
    fat = gray[c.us_box.y + 12 : rf_top - 12, cx - 60 : cx + 60]
    return float(gray[c.rf_mask].mean() / fat.mean())


def test_same_inputs_give_byte_identical_frames() -> None:
    a = render_case(11, 2, -0.5, 25.0)
    b = render_case(11, 2, -0.5, 25.0)
    assert a.gsu.tobytes() == b.gsu.tobytes()
    assert a.swe.tobytes() == b.swe.tobytes()
    assert a.stiffness_kpa.tobytes() == b.stiffness_kpa.tobytes()
    assert a.rf_mask.tobytes() == b.rf_mask.tobytes()
    assert (a.color_box, a.scale_kpa) == (b.color_box, b.scale_kpa)
    other = render_case(12, 2, -0.5, 25.0)
    assert not np.array_equal(a.gsu, other.gsu)


def test_shapes_and_dtypes(case: PhantomCase) -> None:
    assert case.gsu.shape == case.swe.shape == (480, 640, 3)
    assert case.gsu.dtype == case.swe.dtype == np.uint8
    assert case.stiffness_kpa.shape == case.rf_mask.shape == (480, 640)
    assert case.stiffness_kpa.dtype == np.float32
    assert case.rf_mask.dtype == bool
    assert case.rf_mask.sum() > 10_000


def test_boxes_sit_where_a_scanner_puts_them(case: PhantomCase) -> None:
    us = case.us_box
    assert us.inside(FRAME_W, FRAME_H)
    cb = case.color_box
    assert us.x < cb.x and us.y < cb.y and cb.x2 < us.x2 and cb.y2 < us.y2
    bar = case.scale_bar_box
    assert bar.x2 <= us.x, "the color scale bar sits left of the image area"
    assert cb.iou(us) < 0.5
    # The color box covers most of the RF belly.
    assert case.rf_mask[_box_mask(cb)].sum() > 0.6 * case.rf_mask.sum()


def test_burned_in_text_lies_outside_the_image_area(case: PhantomCase) -> None:
    outside = ~_box_mask(case.us_box)
    for frame in (case.gsu, case.swe):
        assert (frame.max(axis=2)[outside] > 100).sum() > 1_000
    other = render_case(3, 1, 0.2, 18.0, scan_date=datetime.date(2020, 12, 31))
    changed = (other.gsu != case.gsu).any(axis=2)
    assert changed.any(), "the scan date is burned in"
    assert not changed[~outside].any(), "the date changes only the text, not the image"


def test_grade_raises_muscle_brightness_relative_to_fat() -> None:
    means = [
        np.mean([_rf_to_fat_brightness(render_case(seed, grade, 0.0, 18.0)) for seed in range(4)])
        for grade in range(4)
    ]
    assert means == sorted(means) and means[3] - means[0] > 0.15, means
    assert means[0] < 1.0 < means[3] + 0.1


def test_quality_darkens_muscle_within_a_grade() -> None:
    poor = np.mean([_rf_to_fat_brightness(render_case(s, 1, -2.0, 18.0)) for s in range(4)])
    good = np.mean([_rf_to_fat_brightness(render_case(s, 1, 2.0, 18.0)) for s in range(4)])
    assert poor > good


def test_colored_pixels_only_in_color_box_and_scale_bar(case: PhantomCase) -> None:
    allowed = _box_mask(case.color_box) | _box_mask(case.scale_bar_box)
    colored = _saturated(case.swe)
    assert not colored[~allowed].any()
    assert not _saturated(case.gsu).any()
    painted = np.isfinite(case.stiffness_kpa)
    assert colored[painted].mean() > 0.95
    bar = case.swe[case.scale_bar_box.y : case.scale_bar_box.y2, case.scale_bar_box.x]
    assert bar[0, 0] > bar[0, 2] and bar[-1, 2] > bar[-1, 0], "red on top, blue at the bottom"


def test_stiffness_is_exactly_what_was_painted(case: PhantomCase) -> None:
    painted = np.isfinite(case.stiffness_kpa)
    assert not painted[~_box_mask(case.color_box)].any()
    assert 0 < (~painted[_box_mask(case.color_box)]).sum() < 0.1 * case.color_box.area
    lo, hi = case.scale_kpa
    values = case.stiffness_kpa[painted]
    assert values.min() >= lo and values.max() <= hi
    colors = jet_colormap((values - lo) / (hi - lo)).astype(float)
    expected = np.rint(SWE_ALPHA * colors + (1 - SWE_ALPHA) * case.gsu[painted])
    assert np.array_equal(expected.astype(np.uint8), case.swe[painted])
    holes = _box_mask(case.color_box) & ~painted
    assert np.array_equal(case.swe[holes], case.gsu[holes])


def test_stiffness_median_over_the_rf_matches_the_request() -> None:
    for kpa in (12.0, 30.0, 70.0):
        c = render_case(5, 2, 0.0, kpa)
        inside = c.rf_mask & np.isfinite(c.stiffness_kpa)
        assert np.median(c.stiffness_kpa[inside]) == pytest.approx(kpa, rel=0.1)
        assert c.scale_kpa[0] == 0 and c.scale_kpa[1] >= 2 * kpa


def test_swe_frame_is_the_same_bmode_outside_the_color_box(case: PhantomCase) -> None:
    us = _box_mask(case.us_box)
    cb = case.color_box
    ring = np.zeros_like(us)
    ring[cb.y - 1 : cb.y2 + 1, cb.x - 1 : cb.x2 + 1] = True
    same = us & ~ring
    assert np.array_equal(case.swe[same], case.gsu[same])


def test_jet_colormap_runs_blue_to_red() -> None:
    rgb = jet_colormap(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]))
    assert rgb.shape == (5, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0]) == tuple(rgb[1]) == (0, 0, 128)
    assert tuple(rgb[3]) == tuple(rgb[4]) == (128, 0, 0)
    assert rgb[2, 1] == 255
    assert jet_colormap(np.zeros((4, 5))).shape == (4, 5, 3)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"seed": -1}, "seed"),
        ({"grade": 4}, "grade"),
        ({"quality": float("nan")}, "quality"),
        ({"swe_median_kpa": 0.0}, "swe_median_kpa"),
    ],
)
def test_bad_inputs_are_refused(kwargs: dict, word: str) -> None:
    args = {"seed": 1, "grade": 0, "quality": 0.0, "swe_median_kpa": 15.0} | kwargs
    with pytest.raises(PhantomError, match=word):
        render_case(**args)
