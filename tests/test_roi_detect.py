"""Automatic image-area, color-box and scale-bar detection (core.imaging.roi_detect).

Besides the phantom, the tests build their own screenshots here (``build_screenshot``) with
layouts the phantom never uses: other image-area positions and sizes, text on every side,
the scale bar left or right, color boxes anywhere, OpenCV's own jet colormap.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from core.cases.phantom import render_case
from core.common.boxes import Box
from core.imaging.color_box import detect_boxes, detect_color_box
from core.imaging.roi_detect import (
    NoImageContentError,
    detect_scale_bar,
    detect_ultrasound_area,
    to_rgb_u8,
)

FONT = cv2.FONT_HERSHEY_SIMPLEX
PHANTOM_LIKE_US = Box(150, 56, 400, 360)


@dataclass(frozen=True)
class Shot:
    rgb: np.ndarray
    us_box: Box
    color_box: Box | None
    bar_box: Box | None
    t_true: np.ndarray  # (H, W) position along the scale 0–1, NaN where not colored
    bmode: np.ndarray  # (H, W) uint8 gray under the overlay


def cv_jet(values01: np.ndarray) -> np.ndarray:
    """OpenCV's JET (not the MATLAB one the phantom and the decoder's fallback use), RGB."""
    v = np.rint(np.clip(values01, 0, 1) * 255).astype(np.uint8).reshape(-1, 1)
    rgb = cv2.cvtColor(cv2.applyColorMap(v, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return rgb.reshape((*np.shape(values01), 3))


def _bmode(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Speckle with brighter layers and an anechoic (near-black) blob, like muscle B-mode."""
    speckle = rng.rayleigh(1.0, (h, w)).astype(np.float32)
    speckle = cv2.GaussianBlur(speckle, (0, 0), 0.8)
    yy = np.arange(h, dtype=np.float32)[:, None]
    layers = 70 + 40 * (np.sin(yy / h * 9.0) > 0.6)
    gray = speckle / speckle.mean() * layers
    cy, cx = int(h * 0.7), int(w * 0.3)
    cv2.ellipse(gray, (cx, cy), (max(4, w // 10), max(3, h // 14)), 0, 0, 360, 3.0, -1)
    return np.clip(gray, 0, 255).astype(np.uint8)


def _put(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.4) -> None:
    cv2.putText(img, text, (x, y), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def build_screenshot(
    *,
    us: Box = PHANTOM_LIKE_US,
    color: Box | None = None,
    bar: Box | None = None,
    bar_labels: tuple[str, str] | None = ("0", "100"),
    unit: str = "kPa",
    label_scale: float = 0.4,
    labels_left: bool = True,
    alpha: float = 0.6,
    t_range: tuple[float, float] = (0.15, 0.85),
    text: tuple[str, ...] = ("top", "left", "bottom"),
    holes: bool = False,
    size: tuple[int, int] = (480, 640),
    seed: int = 0,
) -> Shot:
    """A scanner-like screenshot: black surround, B-mode area, text, depth ticks, SWE parts."""
    rng = np.random.default_rng(seed)
    height, width = size
    img = np.zeros((height, width, 3), np.uint8)
    bmode = np.zeros((height, width), np.uint8)
    bmode[us.y : us.y2, us.x : us.x2] = _bmode(rng, us.h, us.w)
    img[:] = bmode[:, :, None]
    if "top" in text:
        _put(img, "DEMO HOSPITAL  2020/05/17 10:21:03", 8, 18, 0.45)
    if "bottom" in text:
        _put(img, "RT RF TRANS   ML6-15", us.x + 4, min(height - 4, us.y2 + 20), 0.5)
    if "left" in text:
        for i, line in enumerate(("SWE", "Frq 9.0", "Gn 51", "D 4.0cm")):
            _put(img, line, 6, height - 110 + 16 * i)
    if "right" in text:
        for i, line in enumerate(("MI 1.1", "TIs 0.2", "FR 12")):
            _put(img, line, width - 60, 60 + 16 * i)
    tick_x = us.x2 + 2 if (bar is None or bar.x < us.x) else us.x - 10
    for y in range(us.y, us.y2, 40):
        if tick_x >= 0 and tick_x + 8 < width:
            cv2.line(img, (tick_x, y), (tick_x + 6, y), (200, 200, 200), 1)
    t_true = np.full((height, width), np.nan, np.float32)
    if color is not None:
        coarse = rng.random((5, 6)).astype(np.float32)
        field = cv2.resize(coarse, (color.w, color.h), interpolation=cv2.INTER_CUBIC)
        field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
        t = t_range[0] + field * (t_range[1] - t_range[0])
        if holes:
            cv2.circle(t, (color.w // 3, color.h // 2), max(3, color.h // 8), np.nan, -1)
        painted = np.isfinite(t)
        region = img[color.y : color.y2, color.x : color.x2]
        blended = np.rint(alpha * cv_jet(np.nan_to_num(t)) + (1 - alpha) * region)
        region[painted] = blended.astype(np.uint8)[painted]
        t_true[color.y : color.y2, color.x : color.x2] = t
    if bar is not None:
        ramp = np.linspace(1.0, 0.0, bar.h, dtype=np.float32)
        img[bar.y : bar.y2, bar.x : bar.x2] = cv_jet(ramp)[:, None, :]
        (uw, uh), _ = cv2.getTextSize(unit, FONT, label_scale, 1)
        _put(img, unit, bar.x + bar.w // 2 - uw // 2, bar.y - 6, label_scale)
        if bar_labels is not None:
            for label, y in zip(bar_labels, (bar.y2, bar.y + uh), strict=True):
                (lw, _), _ = cv2.getTextSize(label, FONT, label_scale, 1)
                x = bar.x - 5 - lw if labels_left else bar.x2 + 4
                _put(img, label, x, y, label_scale)
    return Shot(img, us, color, bar, t_true, bmode)


def _iou(found: Box | None, truth: Box) -> float:
    assert found is not None, f"nothing found where {truth} was expected"
    return found.iou(truth)


@pytest.mark.parametrize(("seed", "grade"), [(0, 0), (1, 1), (2, 2), (3, 3), (7, 1)])
def test_phantom_boxes_are_found(seed: int, grade: int) -> None:
    case = render_case(seed, grade, 0.0, 20.0 + 10 * grade)
    assert _iou(detect_ultrasound_area(case.swe), case.us_box) >= 0.9
    assert _iou(detect_ultrasound_area(case.gsu), case.us_box) >= 0.9
    assert _iou(detect_color_box(case.swe), case.color_box) >= 0.9
    assert _iou(detect_scale_bar(case.swe), case.scale_bar_box) >= 0.9
    assert detect_color_box(case.gsu) is None
    assert detect_scale_bar(case.gsu) is None


LAYOUTS = [
    dict(us=Box(150, 56, 400, 360), color=Box(240, 120, 180, 150), bar=Box(112, 96, 12, 200)),
    dict(us=Box(20, 40, 300, 380), color=Box(40, 60, 120, 90), bar=Box(600, 80, 10, 180)),
    dict(
        us=Box(200, 30, 420, 300),
        color=Box(420, 180, 150, 120),
        bar=Box(150, 60, 16, 240),
        text=("right", "bottom"),
    ),
    dict(
        us=Box(90, 80, 260, 200),
        color=Box(100, 90, 60, 50),
        bar=Box(60, 90, 8, 120),
        text=("top", "left", "right", "bottom"),
    ),
    dict(us=Box(160, 60, 440, 400), color=Box(300, 260, 250, 180), bar=Box(120, 100, 14, 220)),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=[f"layout{i}" for i in range(len(LAYOUTS))])
def test_built_layouts_are_found(layout: dict) -> None:
    shot = build_screenshot(seed=len(LAYOUTS), **layout)
    boxes = detect_boxes(shot.rgb)
    assert boxes.ultrasound_area.iou(shot.us_box) >= 0.9
    assert _iou(boxes.color_box, shot.color_box) >= 0.9
    assert _iou(boxes.scale_bar, shot.bar_box) >= 0.9
    assert detect_ultrasound_area(shot.rgb) == boxes.ultrasound_area
    assert detect_color_box(shot.rgb) == boxes.color_box
    assert detect_scale_bar(shot.rgb) == boxes.scale_bar


def test_large_frame_and_image_at_frame_edge() -> None:
    shot = build_screenshot(
        size=(768, 1024),
        us=Box(0, 100, 700, 668),
        color=Box(0, 400, 200, 368),
        bar=Box(980, 200, 20, 360),
        text=("right",),
    )
    assert detect_ultrasound_area(shot.rgb).iou(shot.us_box) >= 0.9
    assert _iou(detect_color_box(shot.rgb), shot.color_box) >= 0.9
    assert _iou(detect_scale_bar(shot.rgb), shot.bar_box) >= 0.9


def test_color_box_with_holes_and_marker_stays_one_box() -> None:
    shot = build_screenshot(color=Box(250, 120, 200, 160), bar=Box(112, 96, 12, 200), holes=True)
    rgb = shot.rgb.copy()
    cv2.drawMarker(rgb, (520, 380), (255, 255, 0), cv2.MARKER_CROSS, 9, 1)  # yellow caliper
    assert _iou(detect_color_box(rgb), shot.color_box) >= 0.9


def test_within_restricts_the_search() -> None:
    shot = build_screenshot(color=Box(240, 120, 180, 150), bar=Box(112, 96, 12, 200))
    assert detect_color_box(shot.rgb, within=Box(450, 300, 90, 100)) is None
    found = detect_color_box(shot.rgb, within=Box(300, 100, 250, 200))
    assert found is not None and found.x >= 300 and found.x2 == shot.color_box.x2
    with pytest.raises(ValueError, match="outside"):
        detect_color_box(shot.rgb, within=Box(600, 400, 100, 100))


def test_gray_and_16_bit_inputs() -> None:
    shot = build_screenshot(color=Box(240, 120, 180, 150), bar=Box(112, 96, 12, 200))
    gray = cv2.cvtColor(shot.rgb, cv2.COLOR_RGB2GRAY)
    assert detect_ultrasound_area(gray).iou(shot.us_box) >= 0.9
    assert detect_color_box(gray) is None
    assert detect_scale_bar(gray) is None
    deep = shot.rgb.astype(np.uint16) * 257
    assert detect_ultrasound_area(deep) == detect_ultrasound_area(shot.rgb)
    assert detect_color_box(deep) == detect_color_box(shot.rgb)
    assert detect_scale_bar(deep) == detect_scale_bar(shot.rgb)
    twelve_bit_gray = (gray.astype(np.uint16) * 16)[:, :, None]
    assert detect_ultrasound_area(twelve_bit_gray).iou(shot.us_box) >= 0.9


def test_no_colors_means_no_color_box_or_bar() -> None:
    shot = build_screenshot(text=("top", "left", "right", "bottom"))
    assert detect_color_box(shot.rgb) is None
    assert detect_scale_bar(shot.rgb) is None
    assert detect_boxes(shot.rgb).color_box is None


def test_all_black_and_text_only_frames_raise_clearly() -> None:
    black = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(NoImageContentError, match="all black"):
        detect_ultrasound_area(black)
    with pytest.raises(NoImageContentError, match="all black"):
        detect_color_box(black)
    text_only = black.copy()
    _put(text_only, "DEMO HOSPITAL", 10, 20)
    with pytest.raises(NoImageContentError, match="No ultrasound image area"):
        detect_ultrasound_area(text_only)
    assert detect_scale_bar(black) is None


def test_uniform_gray_panel_is_not_the_image_area() -> None:
    shot = build_screenshot(us=Box(300, 60, 300, 300))
    rgb = shot.rgb.copy()
    rgb[40:460, 10:280] = 60  # a flat UI panel larger than the image area
    assert detect_ultrasound_area(rgb).iou(shot.us_box) >= 0.9


@pytest.mark.parametrize("jpeg_quality", [None, 60])
def test_text_block_touching_the_image_is_left_out(jpeg_quality: int | None) -> None:
    """Settings text over the image's top-left corner (Esaote-like) merges into the image's
    dense region; a line across the text is mostly empty, so the box stops at the image."""
    rng = np.random.default_rng(0)
    screen = np.zeros((360, 480, 3), np.uint8)
    screen[70:330, 140:460] = rng.integers(40, 160, (260, 320, 1), dtype=np.uint8)
    for i, line in enumerate(["B RES-A  G 54%", "P 30mm  XV C3", "PRC 16/4/1 PRS 4", "PST 0"]):
        cv2.putText(screen, line, (100, 16 + 17 * i), cv2.FONT_HERSHEY_PLAIN, 1.1, (255,) * 3)
    if jpeg_quality is not None:
        _, data = cv2.imencode(".jpg", screen, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        screen = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert detect_ultrasound_area(screen).iou(Box(140, 70, 320, 260)) >= 0.9


def test_gradient_strip_and_colored_icon_are_not_a_scale_bar() -> None:
    shot = build_screenshot()
    rgb = shot.rgb.copy()
    rgb[70:250, 600:610] = np.linspace(255, 0, 180).astype(np.uint8)[:, None, None]
    rgb[300:420, 600:612] = (0, 200, 0)  # a tall single-hue strip (a UI element)
    assert detect_scale_bar(rgb) is None


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros(10, np.uint8), "shape"),
        (np.full((8, 8), -1, np.int16), "negative"),
        (np.full((8, 8), 300.0), "float"),
        (np.zeros((8, 8), np.complex64), "Unsupported"),
    ],
)
def test_bad_inputs_are_rejected(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_rgb_u8(image)


def test_to_rgb_u8_conversions() -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert to_rgb_u8(gray).shape == (8, 8, 3)
    assert np.array_equal(to_rgb_u8(gray)[:, :, 1], gray)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 7)])
    assert np.array_equal(to_rgb_u8(rgba), to_rgb_u8(gray))
    assert to_rgb_u8(gray.astype(np.float32) / 255.0)[7, 7, 0] == 63
    assert to_rgb_u8(np.full((4, 4), 4095, np.uint16)).max() == 255
    assert to_rgb_u8(np.full((4, 4), 200, np.uint16)).max() == 200
