"""Crop box choice, cropping and resizing to the study's input sizes."""

from __future__ import annotations

import numpy as np
import pytest

from core.common.boxes import Box
from core.imaging.crop import (
    GSU_SIZE,
    SWE_SIZE,
    BoxOutsideImageError,
    ChosenBox,
    NoBoxError,
    choose_box,
    crop,
    crop_and_resize,
    resize_crop,
)

CONSENSUS = Box(10, 10, 40, 30)
AUTO = Box(0, 0, 50, 50)
READERS = {"zoe": Box(1, 2, 30, 30), "amir": Box(5, 6, 20, 20)}


def _image(h: int = 60, w: int = 80, channels: int | None = None) -> np.ndarray:
    img = (np.arange(h * w) % 251).astype(np.uint8).reshape(h, w)
    return img if channels is None else np.repeat(img[:, :, None], channels, axis=2)


def test_study_sizes() -> None:
    assert GSU_SIZE == (112, 112)
    assert SWE_SIZE == (84, 84)


def test_consensus_beats_readers_and_auto() -> None:
    assert choose_box(CONSENSUS, READERS, AUTO, image_label="img 1") == ChosenBox(
        CONSENSUS, "consensus"
    )


def test_reader_beats_auto_and_first_reader_by_name_wins() -> None:
    chosen = choose_box(None, READERS, AUTO, image_label="img 1")
    assert chosen == ChosenBox(READERS["amir"], "reader", "amir")
    reversed_order = dict(reversed(list(READERS.items())))
    assert choose_box(None, reversed_order, AUTO, image_label="img 1") == chosen


def test_auto_is_the_last_resort() -> None:
    assert choose_box(None, {}, AUTO, image_label="img 1") == ChosenBox(AUTO, "auto")


def test_no_box_names_the_image() -> None:
    with pytest.raises(NoBoxError, match="P007 GSU"):
        choose_box(None, {}, None, image_label="P007 GSU")


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_crop_returns_the_box_region_as_a_copy(channels: int | None) -> None:
    img = _image(channels=channels)
    out = crop(img, CONSENSUS)
    assert out.shape[:2] == (30, 40) and out.shape[2:] == img.shape[2:]
    assert np.array_equal(out, img[10:40, 10:50])
    out[...] = 0
    assert img[10:40, 10:50].any()


def test_box_exactly_touching_the_edges_is_fine() -> None:
    img = _image(60, 80)
    assert crop(img, Box(0, 0, 80, 60)).shape == (60, 80)
    assert crop(img, Box(60, 40, 20, 20)).shape == (20, 20)


@pytest.mark.parametrize(
    "box", [Box(61, 40, 20, 20), Box(60, 41, 20, 20), Box(-1, 0, 10, 10), Box(0, -1, 10, 10)]
)
def test_one_pixel_outside_raises_naming_image_box_and_size(box: Box) -> None:
    with pytest.raises(BoxOutsideImageError) as err:
        crop(_image(60, 80), box, image_label="P012 SWE")
    message = str(err.value)
    assert "P012 SWE" in message and str(box.as_tuple()) in message and "80×60" in message
    assert err.value.box == box and err.value.image_size == (80, 60)


def test_empty_box_and_bad_array_are_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        crop(_image(), Box(5, 5, 0, 10))
    with pytest.raises(ValueError, match="2-D"):
        crop(np.zeros((2, 3, 4, 5), np.uint8), Box(0, 0, 1, 1))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("channels", [None, 1, 3])
def test_stretch_resizes_to_height_width_and_keeps_dtype_and_channels(
    dtype: type, channels: int | None
) -> None:
    img = _image(50, 70, channels).astype(dtype)
    for size in [(84, 84), (20, 30), (100, 40)]:
        out = resize_crop(img, size)
        assert out.shape[:2] == size and out.shape[2:] == img.shape[2:]
        assert out.dtype == img.dtype


def test_downsampling_averages_instead_of_aliasing() -> None:
    checker = (np.indices((48, 48)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = resize_crop(checker, (16, 16))
    assert np.all(np.abs(out.astype(int) - 128) <= 20)


def test_upsampling_interpolates_between_pixels() -> None:
    two = np.array([[0, 200]], np.float32)
    out = resize_crop(two, (1, 8))
    assert np.all(np.diff(out[0]) >= 0) and 0 < out[0, 3] < 200


def test_pad_letterboxes_centred_with_zeros() -> None:
    wide = np.full((20, 40), 9, np.uint8)
    out = resize_crop(wide, (84, 84), aspect="pad")
    assert out.shape == (84, 84)
    assert (out[21:63] == 9).all()
    assert (out[:21] == 0).all() and (out[63:] == 0).all()
    tall = np.full((40, 20, 3), 0.5, np.float32)
    out = resize_crop(tall, (84, 84), aspect="pad")
    assert out.shape == (84, 84, 3)
    assert (out[:, 21:63] == 0.5).all() and (out[:, :21] == 0).all() and (out[:, 63:] == 0).all()


def test_resize_rejects_bad_size_aspect_and_dtype() -> None:
    with pytest.raises(ValueError, match="size"):
        resize_crop(_image(), (0, 10))
    with pytest.raises(ValueError, match="aspect"):
        resize_crop(_image(), (10, 10), aspect="crop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="convert"):
        resize_crop(_image().astype(bool), (10, 10))


def test_crop_and_resize_is_crop_then_resize() -> None:
    img = _image(channels=3)
    out = crop_and_resize(img, CONSENSUS, GSU_SIZE)
    assert out.shape == (112, 112, 3)
    assert np.array_equal(out, resize_crop(crop(img, CONSENSUS), GSU_SIZE))
    with pytest.raises(BoxOutsideImageError, match="P3"):
        crop_and_resize(img, Box(50, 50, 40, 40), SWE_SIZE, image_label="P3")
