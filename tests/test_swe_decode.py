"""SWE decoding: overlay/underlay separation, scale reading, stiffness (core.imaging.swe_decode).

The phantom carries the painted kPa, so the decoder is scored against it; the screenshots
built in tests/test_roi_detect.py use OpenCV's jet, other alphas and other label layouts.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from core.cases.phantom import render_case
from core.common.boxes import Box
from core.imaging.swe_decode import (
    KPA_UNITS,
    RELATIVE_UNITS,
    decode_swe,
    read_color_scale,
    read_scale_labels,
    stiffness_stats,
)
from tests.test_roi_detect import FONT, build_screenshot

BAR = Box(112, 96, 12, 200)
COLOR = Box(240, 120, 180, 150)


def _error_pct(found: np.ndarray, truth: np.ndarray, span: float) -> np.ndarray:
    both = np.isfinite(found) & np.isfinite(truth)
    assert both.sum() > 0.95 * np.isfinite(truth).sum(), "most painted pixels must decode"
    return np.abs(found[both] - truth[both]) / span * 100


@pytest.mark.parametrize(
    ("seed", "grade", "median_kpa"), [(0, 0, 8.0), (1, 1, 25.0), (2, 2, 45.0), (3, 3, 70.0)]
)
def test_phantom_stiffness_within_5_percent_of_range(
    seed: int, grade: int, median_kpa: float
) -> None:
    case = render_case(seed, grade, 0.5, median_kpa)
    result = decode_swe(case.swe)
    assert result.units == KPA_UNITS
    assert result.warning is None
    lo, hi = case.scale_kpa
    err = _error_pct(result.stiffness, case.stiffness_kpa, hi - lo)
    assert np.median(err) < 5.0
    assert np.percentile(err, 90) < 5.0
    assert not (np.isfinite(result.stiffness) & np.isnan(case.stiffness_kpa)).any()
    assert result.color_box is not None and result.color_box.iou(case.color_box) >= 0.9
    gsu_gray = cv2.cvtColor(case.gsu, cv2.COLOR_RGB2GRAY).astype(np.float32)
    assert np.median(np.abs(result.underlay_gray - gsu_gray)[result.overlay_mask]) < 3.0


def test_phantom_scale_is_read_from_labels() -> None:
    case = render_case(4, 1, 0.0, 60.0)
    scale = read_color_scale(case.swe)
    assert scale is not None
    assert scale.source == "read from labels"
    assert scale.kpa_range == case.scale_kpa
    assert scale.colors_lab.shape[1] == 3
    assert abs(scale.colors_lab.shape[0] - case.scale_bar_box.h) <= 2
    bottom, top = scale.colors_lab[0], scale.colors_lab[-1]
    assert bottom[2] < -30  # blue: strongly negative b*
    assert top[1] > 30  # red: strongly positive a*


def test_phantom_jpeg_still_decodes() -> None:
    case = render_case(5, 2, 0.0, 30.0)
    bgr = cv2.cvtColor(case.swe, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    jpeg = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    result = decode_swe(jpeg)
    assert result.units == KPA_UNITS
    lo, hi = case.scale_kpa
    assert np.median(_error_pct(result.stiffness, case.stiffness_kpa, hi - lo)) < 5.0


def test_gsu_frame_supplies_the_underlay() -> None:
    case = render_case(6, 0, 0.0, 20.0)
    result = decode_swe(case.swe, gsu=case.gsu)
    gsu_gray = cv2.cvtColor(case.gsu, cv2.COLOR_RGB2GRAY).astype(np.float32)
    assert np.array_equal(result.underlay_gray, gsu_gray)
    with pytest.raises(ValueError, match="GSU frame"):
        decode_swe(case.swe, gsu=case.gsu[:-10])


@pytest.mark.parametrize("alpha", [0.35, 0.6, 0.85, 1.0])
@pytest.mark.parametrize("t_range", [(0.1, 0.9), (0.03, 0.08), (0.9, 0.96)])
def test_built_frames_decode_at_any_opacity(alpha: float, t_range: tuple[float, float]) -> None:
    """Narrow ranges at the jet ends hold one hue: opacity then comes from the box border."""
    shot = build_screenshot(
        color=COLOR, bar=BAR, bar_labels=("0", "80"), alpha=alpha, t_range=t_range
    )
    result = decode_swe(shot.rgb, kpa_range=(0.0, 80.0))  # two end labels: never read
    assert result.units == KPA_UNITS
    assert result.alpha == pytest.approx(alpha, abs=0.03)
    assert np.median(_error_pct(result.stiffness, shot.t_true * 80, 80.0)) < 2.0
    if alpha <= 0.85:
        under_err = np.abs(result.underlay_gray - shot.bmode)[result.overlay_mask]
        assert np.median(under_err) < 4.0
    assert np.isfinite(result.underlay_gray).all()


def test_configured_range_wins_over_labels() -> None:
    shot = build_screenshot(color=COLOR, bar=BAR, bar_labels=("0", "100"))
    read = decode_swe(shot.rgb, kpa_range=(0.0, 100.0))
    configured = decode_swe(shot.rgb, kpa_range=(10.0, 250.0))
    assert read.units == configured.units == KPA_UNITS
    finite = np.isfinite(read.stiffness)
    expected = 10.0 + read.stiffness[finite] / 100.0 * 240.0
    assert np.allclose(configured.stiffness[finite], expected, atol=1e-3)
    scale = read_color_scale(shot.rgb, kpa_range=(10.0, 250.0))
    assert scale is not None and scale.source == "configured"
    assert scale.kpa_range == (10.0, 250.0)


def test_bar_without_readable_labels_gives_relative_units() -> None:
    for shot in (
        build_screenshot(color=COLOR, bar=BAR, bar_labels=None),
        build_screenshot(color=COLOR, bar=BAR, unit="m/s"),  # never taken for kPa
    ):
        scale = read_color_scale(shot.rgb)
        assert scale is not None and scale.kpa_range is None and scale.source == "none"
        result = decode_swe(shot.rgb)
        assert result.units == RELATIVE_UNITS
        assert result.warning is not None and "relative units" in result.warning
        values = result.stiffness[np.isfinite(result.stiffness)]
        assert values.min() >= 0.0 and values.max() <= 1.0
        assert np.median(_error_pct(result.stiffness, shot.t_true, 1.0)) < 2.0


def test_no_scale_bar_gives_relative_units_and_warning() -> None:
    shot = build_screenshot(color=COLOR, alpha=0.6)
    assert read_color_scale(shot.rgb) is None
    result = decode_swe(shot.rgb)
    assert result.units == RELATIVE_UNITS
    assert result.warning is not None
    assert "No color scale bar" in result.warning and "not kPa" in result.warning
    # Matched against an assumed MATLAB jet; the frame used OpenCV's, which is close.
    assert np.median(_error_pct(result.stiffness, shot.t_true, 1.0)) < 5.0
    configured = decode_swe(shot.rgb, kpa_range=(0.0, 50.0))
    assert configured.units == KPA_UNITS
    assert configured.warning is not None and "assumed jet" in configured.warning


def test_empty_color_box_gives_nan_and_zero_fraction() -> None:
    shot = build_screenshot(color=COLOR, bar=BAR)
    gray_part = Box(160, 330, 120, 60)  # inside the image area, away from the colors
    result = decode_swe(shot.rgb, color_box=gray_part)
    assert result.color_box == gray_part
    assert not result.overlay_mask.any()
    assert np.isnan(result.stiffness).all()
    assert result.alpha is None
    stats = stiffness_stats(result.stiffness, gray_part)
    assert stats["fraction_colored"] == 0.0
    assert all(math.isnan(stats[k]) for k in ("mean", "median", "q1", "q3", "iqr"))


def test_gray_only_input() -> None:
    shot = build_screenshot(color=COLOR, bar=BAR)
    gray = cv2.cvtColor(shot.rgb, cv2.COLOR_RGB2GRAY)
    result = decode_swe(gray)
    assert result.color_box is None
    assert not result.overlay_mask.any()
    assert np.isnan(result.stiffness).all()
    assert result.units == RELATIVE_UNITS and result.warning is not None
    assert np.array_equal(result.underlay_gray, gray.astype(np.float32))
    assert read_color_scale(gray) is None


def test_off_scale_colors_are_not_given_a_stiffness() -> None:
    shot = build_screenshot(color=COLOR, bar=BAR)
    rgb = shot.rgb.copy()
    rgb[180:190, 300:340] = (255, 0, 255)  # magenta annotation: not a jet color
    result = decode_swe(rgb)
    assert result.overlay_mask[180:190, 300:340].all()
    assert np.isnan(result.stiffness[180:190, 300:340]).all()
    assert np.isfinite(result.stiffness[200:260, 300:340]).all()


def test_configured_alpha_is_used() -> None:
    shot = build_screenshot(color=COLOR, bar=BAR, alpha=0.5, t_range=(0.02, 0.07))
    result = decode_swe(shot.rgb, alpha=0.5, kpa_range=(0.0, 100.0))
    assert result.alpha == 0.5
    assert np.median(_error_pct(result.stiffness, shot.t_true * 100, 100.0)) < 1.0


@pytest.mark.parametrize(
    ("labels", "scale"),
    [
        (("0", "40"), 0.35),
        (("0.0", "12.5"), 0.4),
        (("5", "150"), 0.5),
        (("2.5", "7.5"), 0.6),
        (("10", "300"), 0.8),
        (("16", "78"), 0.45),
    ],
)
def test_two_end_labels_are_read_right_or_refused_never_guessed(
    labels: tuple[str, str], scale: float
) -> None:
    """Two numbers are accepted only when every check agrees (swe_scale_labels); else entered."""
    truth = (float(labels[0]), float(labels[1]))
    for bar, left in ((BAR, True), (Box(566, 80, 10, 180), False)):
        shot = build_screenshot(
            color=COLOR, bar=bar, bar_labels=labels, label_scale=scale, labels_left=left
        )
        assert read_scale_labels(shot.rgb, bar) in (None, truth)
        scale_read = read_color_scale(shot.rgb, bar)
        assert scale_read is not None
        assert scale_read.kpa_range == truth or (
            scale_read.kpa_range is None and scale_read.refusal
        )


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        ("1 0", None),  # a space inside: not one number
        ("cm", None),  # lower-case letters, shorter than the digits
        ("1000", 4),  # the left end cut off: "000"-like remains
        ("1000", 6),
        ("8O", None),  # a letter O among digits
        ("90", None),  # a plain wrong number: off the line through the other labels
    ],
)
def test_labels_are_never_misread(text: str, cut: int | None) -> None:
    """A phantom whose top label is replaced: None, never a wrong range."""
    case = render_case(4, 1, 0.0, 60.0)
    bar = case.scale_bar_box
    assert read_scale_labels(case.swe, bar) == case.scale_kpa
    rgb = case.swe.copy()
    rgb[bar.y - 2 : bar.y + 12, 40 : bar.x - 1] = 0
    (width, _), _ = cv2.getTextSize(text, FONT, 0.4, 1)
    left = bar.x - 4 - width
    cv2.putText(rgb, text, (left, bar.y + 9), FONT, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    if cut is not None:
        rgb[bar.y - 2 : bar.y + 12, left : left + cut] = 0
    assert read_scale_labels(rgb, bar) is None


def test_m_per_s_scale_decodes_to_kpa() -> None:
    """A bar printed in m/s is linear in speed: each pixel becomes 3·c² kPa (ρ = 1000 kg/m³)."""
    shot = build_screenshot(color=COLOR, bar=BAR, bar_labels=None, unit="m/s", label_scale=0.6)
    rgb = shot.rgb.copy()
    for text, y in (("10", BAR.y + 13), ("5", BAR.y + 106), ("0", BAR.y2)):
        (width, _), _ = cv2.getTextSize(text, FONT, 0.6, 1)
        cv2.putText(rgb, text, (BAR.x - 5 - width, y), FONT, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    scale = read_color_scale(rgb, BAR)
    assert scale is not None and (scale.kpa_range, scale.units) == ((0.0, 10.0), "m/s")
    result = decode_swe(rgb)
    assert result.units == KPA_UNITS
    expected = 3.0 * (10.0 * shot.t_true) ** 2
    both = np.isfinite(result.stiffness) & np.isfinite(expected)
    assert np.median(np.abs(result.stiffness[both] - expected[both])) < 0.03 * expected[both].max()


def test_stiffness_stats_values() -> None:
    rng = np.random.default_rng(3)
    arr = rng.uniform(5, 50, (40, 60)).astype(np.float32)
    arr[:10] = np.nan
    stats = stiffness_stats(arr)
    finite = arr[np.isfinite(arr)]
    assert stats["median"] == pytest.approx(float(np.median(finite)))
    assert stats["mean"] == pytest.approx(float(finite.mean()), rel=1e-6)
    q1, q3 = np.percentile(finite, [25, 75])
    assert stats["q1"] == pytest.approx(q1) and stats["q3"] == pytest.approx(q3)
    assert stats["iqr"] == pytest.approx(q3 - q1)
    assert stats["fraction_colored"] == pytest.approx(0.75)
    roi = stiffness_stats(arr, Box(0, 5, 60, 10))
    assert roi["fraction_colored"] == pytest.approx(0.5)
    assert roi["median"] == pytest.approx(float(np.median(arr[10:15])))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: decode_swe(s, kpa_range=(50.0, 10.0)), "min < max"),
        (lambda s: decode_swe(s, kpa_range=(0.0, float("nan"))), "finite"),
        (lambda s: decode_swe(s, kpa_range=("a", 3)), "two numbers"),
        (lambda s: decode_swe(s, alpha=1.5), "opacity"),
        (lambda s: decode_swe(s, color_box=Box(600, 400, 100, 100)), "outside"),
        (lambda s: read_color_scale(s, bar=Box(0, 0, 4, 4)), "colored rows"),
        (lambda s: stiffness_stats(np.zeros((2, 2, 2))), "2-D"),
        (lambda s: stiffness_stats(np.zeros((8, 8)), Box(4, 4, 8, 8)), "outside"),
        (lambda s: decode_swe(np.zeros((480, 640, 3), np.uint8)), "all black"),
    ],
)
def test_bad_input_is_rejected(call, message: str) -> None:
    shot = build_screenshot(color=COLOR, bar=BAR)
    with pytest.raises(ValueError, match=message):
        call(shot.rgb)
