"""Decoding PNG, JPEG and every DICOM kind a scanner exports into the module's conventions."""

from __future__ import annotations

import datetime
import io
import pickle

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from core.imaging.decoded import MIN_SIDE
from core.imaging.dicom_read import parse_dicom_date
from core.imaging.imageio import MAX_PIXELS, ImageReadError, decode_image, sniff_format
from scripts.make_bad_corpus import forged_png
from tests.dicom_factory import COLS, ROWS, expected_pixels, make_dicom

JPEG_MAX_ERROR = 12
JPEG_MEAN_ERROR = 2.5


def _encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def _ramp_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([3 * x, 4 * y, 250 - x - y], axis=-1).astype(np.uint8)


def _errors(actual: np.ndarray, expected: np.ndarray) -> tuple[int, float]:
    diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    return int(diff.max()), float(diff.mean())


DICOM_KINDS = [
    # (photometric, bits, transfer syntax, lossy)
    ("RGB", 8, ExplicitVRLittleEndian, False),
    ("YBR_FULL", 8, ExplicitVRLittleEndian, True),  # YCbCr → RGB rounds by ±1
    ("YBR_FULL_422", 8, JPEGBaseline8Bit, True),
    ("MONOCHROME2", 8, JPEGBaseline8Bit, True),
    ("MONOCHROME1", 8, ExplicitVRLittleEndian, False),
    ("MONOCHROME1", 16, ExplicitVRLittleEndian, False),
    ("MONOCHROME2", 8, ExplicitVRLittleEndian, False),
    ("MONOCHROME2", 16, ExplicitVRLittleEndian, False),
    ("PALETTE COLOR", 8, ExplicitVRLittleEndian, False),
    ("PALETTE COLOR", 8, RLELossless, False),
    ("RGB", 8, JPEG2000Lossless, False),
    ("YBR_RCT", 8, JPEG2000Lossless, False),
    ("MONOCHROME2", 16, JPEG2000Lossless, False),
    ("RGB", 8, RLELossless, False),
    ("MONOCHROME2", 16, RLELossless, False),
]


@pytest.mark.parametrize(("photometric", "bits", "syntax", "lossy"), DICOM_KINDS)
def test_dicom_kinds_decode_to_expected_pixels(
    photometric: str, bits: int, syntax: str, lossy: bool
) -> None:
    data = make_dicom(photometric, bits=bits, transfer_syntax=syntax)
    image = decode_image(data, name="scan.dcm", pseudonym="RF-0001")
    expected = expected_pixels(photometric, bits)
    assert image.source_format == "dicom"
    assert image.pixels.shape == expected.shape
    assert image.pixels.dtype == expected.dtype
    assert (image.width, image.height) == (COLS, ROWS)
    assert image.frame_index is None
    worst, mean = _errors(image.pixels, expected)
    if lossy:
        assert worst <= JPEG_MAX_ERROR and mean <= JPEG_MEAN_ERROR
    else:
        assert worst == 0


def test_color_dicoms_come_back_as_rgb_not_ycbcr() -> None:
    image = decode_image(make_dicom("YBR_FULL"), name="ybr.dcm")
    red_ramp = image.pixels[0, :, 0].astype(int)
    assert red_ramp[-1] - red_ramp[0] > 100  # RGB red rises with x; the stored Y channel rises less


def test_monochrome1_is_inverted_so_bright_means_echogenic() -> None:
    image = decode_image(make_dicom("MONOCHROME1"), name="m1.dcm")
    assert image.pixels[0, -1] > image.pixels[0, 0]  # the stored ramp falls; the shown one rises


def test_sixteen_bit_gray_keeps_values_above_255() -> None:
    image = decode_image(make_dicom("MONOCHROME2", bits=16), name="m2.dcm")
    assert image.pixels.dtype == np.uint16
    assert int(image.pixels.max()) > 255


@pytest.mark.parametrize(
    ("syntax", "photometric"),
    [
        (ExplicitVRLittleEndian, "RGB"),
        (RLELossless, "MONOCHROME2"),
        (JPEGBaseline8Bit, "YBR_FULL_422"),
    ],
)
def test_multiframe_reads_the_asked_frame(syntax: str, photometric: str) -> None:
    data = make_dicom(photometric, transfer_syntax=syntax, frames=3)
    first = decode_image(data, name="cine.dcm")
    third = decode_image(data, name="cine.dcm", frame=2)
    assert first.frame_index == 0 and third.frame_index == 2
    tolerance = JPEG_MAX_ERROR if syntax == JPEGBaseline8Bit else 0
    assert _errors(first.pixels, expected_pixels(photometric, frame=0))[0] <= tolerance
    assert _errors(third.pixels, expected_pixels(photometric, frame=2))[0] <= tolerance
    assert not np.array_equal(first.pixels, third.pixels)


def test_multiframe_refuses_a_frame_past_the_end() -> None:
    with pytest.raises(ImageReadError, match=r"frame 3 .* has 3 frame"):
        decode_image(make_dicom("MONOCHROME2", frames=3), name="cine.dcm", frame=3)


def test_dicom_acquisition_date_and_header() -> None:
    image = decode_image(make_dicom("RGB"), name="scan.dcm", pseudonym="RF-0007")
    assert image.acquisition_date == datetime.date(2024, 3, 16)
    assert image.dicom_header is not None
    assert image.dicom_header["PatientID"] == "RF-0007"
    assert image.dicom_header["Modality"] == "US"
    assert "PixelData" not in image.dicom_header


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        ({"AcquisitionDate": None, "ContentDate": "20240317"}, datetime.date(2024, 3, 17)),
        ({"AcquisitionDate": None, "ContentDate": None}, datetime.date(2024, 3, 15)),
        (
            {"AcquisitionDate": None, "ContentDate": None, "SeriesDate": None},
            datetime.date(2024, 3, 15),
        ),
        ({"AcquisitionDate": "2019.11.05"}, datetime.date(2019, 11, 5)),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_dicom_date_falls_back_to_content_series_then_study(
    dates: dict[str, str | None], expected: datetime.date
) -> None:
    ds = dcmread(io.BytesIO(make_dicom("RGB")))
    for keyword, value in dates.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    assert decode_image(buf.getvalue(), name="old.dcm").acquisition_date == expected


@pytest.mark.parametrize(
    ("mode", "dtype"),
    [("L", np.uint8), ("I;16", np.uint16), ("RGB", np.uint8), ("RGBA", np.uint8)],
)
def test_tiff_kinds_follow_the_array_conventions(mode: str, dtype: type) -> None:
    rgb = _ramp_rgb()
    if mode == "L":
        img, expected = Image.fromarray(rgb[..., 0]), rgb[..., 0]
    elif mode == "I;16":
        values = (rgb[..., 0].astype(np.uint16) * 257).astype(np.uint16)
        img, expected = Image.fromarray(values), values
    elif mode == "RGB":
        img, expected = Image.fromarray(rgb), rgb
    else:
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        alpha[:, :8] = 0  # transparent strip: composited onto black
        img = Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")
        expected = rgb.copy()
        expected[:, :8] = 0
    image = decode_image(_encode(img, "TIFF", compression="tiff_lzw"), name="scan.tif")
    assert image.source_format == "tiff"
    assert image.pixels.dtype == dtype
    np.testing.assert_array_equal(image.pixels, expected)


def test_multipage_tiff_reads_the_first_or_the_asked_page() -> None:
    pages = [Image.fromarray(np.full((48, 64), value, np.uint8)) for value in (10, 20, 30)]
    data = _encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    first = decode_image(data, name="cine.tif")
    assert int(first.pixels[0, 0]) == 10 and first.frame_index == 0
    assert int(decode_image(data, name="cine.tif", frame=2).pixels[0, 0]) == 30
    with pytest.raises(ImageReadError, match=r"page 3 .* has 3 page"):
        decode_image(data, name="cine.tif", frame=3)


def test_truncated_tiff_is_refused_clearly() -> None:
    data = _encode(Image.fromarray(_ramp_rgb()), "TIFF")
    with pytest.raises(ImageReadError, match="TIFF file is truncated or corrupt"):
        decode_image(data[: len(data) // 2], name="cut.tif")


def test_dicom_without_pseudonym_blanks_the_identity() -> None:
    image = decode_image(make_dicom("RGB"), name="scan.dcm")
    assert image.dicom_header is not None
    assert image.dicom_header["PatientName"] == ""
    assert image.dicom_header["PatientID"] == ""


def test_dicom_without_pixels_is_refused() -> None:
    with pytest.raises(ImageReadError, match="no image"):
        decode_image(make_dicom("RGB", with_pixels=False), name="report.dcm")


@pytest.mark.parametrize(
    ("declared", "reason"),
    [
        (JPEGBaseline8Bit, "JPEG Baseline"),
        ("1.2.3.4.5", "unknown transfer syntax '1.2.3.4.5'"),
    ],
)
def test_dicom_with_wrong_transfer_syntax_names_it(declared: str, reason: str) -> None:
    data = make_dicom("RGB", declared_transfer_syntax=declared)
    with pytest.raises(ImageReadError, match=reason):
        decode_image(data, name="odd.dcm")


def test_png_rgb_is_exact() -> None:
    rgb = _ramp_rgb()
    image = decode_image(_encode(Image.fromarray(rgb), "PNG"), name="a.png")
    assert image.source_format == "png"
    assert image.dicom_header is None and image.frame_index is None
    np.testing.assert_array_equal(image.pixels, rgb)


def test_png_16_bit_gray_stays_uint16() -> None:
    y, x = np.mgrid[0:40, 0:50]
    gray = (x * 1200 + y).astype(np.uint16)
    image = decode_image(_encode(Image.fromarray(gray), "PNG"), name="g16.png")
    assert image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.pixels, gray)


def test_png_palette_becomes_rgb() -> None:
    rgb = _ramp_rgb()
    paletted = Image.fromarray(rgb).quantize(colors=64)
    image = decode_image(_encode(paletted, "PNG"), name="p.png")
    np.testing.assert_array_equal(image.pixels, np.asarray(paletted.convert("RGB")))
    assert image.pixels.shape == (48, 64, 3)


def test_png_gray_palette_becomes_gray() -> None:
    gray = _ramp_rgb()[..., 0]
    image = decode_image(_encode(Image.fromarray(gray).convert("P"), "PNG"), name="pg.png")
    assert image.pixels.shape == gray.shape
    np.testing.assert_array_equal(image.pixels, gray)


def test_png_rgba_is_composited_on_black() -> None:
    rgb = _ramp_rgb()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :32] = 0
    image = decode_image(_encode(Image.fromarray(np.dstack([rgb, alpha])), "PNG"), name="t.png")
    assert image.pixels.shape == rgb.shape
    assert not image.pixels[:, :32].any()
    np.testing.assert_array_equal(image.pixels[:, 32:], rgb[:, 32:])


def test_jpeg_is_close() -> None:
    rgb = _ramp_rgb()
    image = decode_image(_encode(Image.fromarray(rgb), "JPEG", quality=95), name="a.jpg")
    assert image.source_format == "jpeg"
    worst, mean = _errors(image.pixels, rgb)
    assert worst <= JPEG_MAX_ERROR and mean <= JPEG_MEAN_ERROR


def test_exif_rotation_is_respected() -> None:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:8, :8] = 255  # a white mark in the stored top-left corner
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    image = decode_image(_encode(img, "JPEG", quality=95, exif=exif), name="rot.jpg")
    assert (image.width, image.height) == (48, 64)
    assert image.pixels[:8, -8:].mean() > 200  # the mark is now top-right
    assert image.pixels[:8, :8].mean() < 50


def test_jpeg_exif_date_is_the_acquisition_date() -> None:
    img = Image.fromarray(_ramp_rgb())
    exif = img.getexif()
    exif.get_ifd(0x8769)[0x9003] = "2023:05:06 10:11:12"
    image = decode_image(_encode(img, "JPEG", exif=exif), name="dated.jpg")
    assert image.acquisition_date == datetime.date(2023, 5, 6)


def test_cmyk_jpeg_becomes_rgb() -> None:
    rgb = _ramp_rgb()
    image = decode_image(
        _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), name="c.jpg"
    )
    assert image.pixels.shape == rgb.shape
    worst, mean = _errors(image.pixels, rgb)
    assert worst <= JPEG_MAX_ERROR and mean <= JPEG_MEAN_ERROR


def test_pixels_are_read_only() -> None:
    image = decode_image(_encode(Image.fromarray(_ramp_rgb()), "PNG"), name="a.png")
    with pytest.raises(ValueError, match="read-only"):
        image.pixels[0, 0, 0] = 1


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 8, "jpeg"),
        (b"\0" * 128 + b"DICM" + b"\0" * 8, "dicom"),
        (b"II*\x00" + b"\0" * 8, "tiff"),
        (b"MM\x00*" + b"\0" * 8, "tiff"),
    ],
)
def test_sniff_format_reads_magic_bytes(head: bytes, expected: str) -> None:
    assert sniff_format(head) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, I am text\n", "text file"),
        (b"GIF89a" + b"\0" * 20, "GIF"),
        (b"\0" * 127 + b"DICM", "not a PNG, JPEG, TIFF or DICOM"),
    ],
)
def test_sniff_format_refuses_others(data: bytes, reason: str) -> None:
    with pytest.raises(ImageReadError, match=reason) as info:
        sniff_format(data, name="thing.png")
    assert "'thing.png'" in str(info.value)


def test_too_small_image_is_refused() -> None:
    small = Image.new("L", (MIN_SIDE - 1, 100))
    with pytest.raises(ImageReadError, match="too small"):
        decode_image(_encode(small, "PNG"), name="icon.png")


def test_image_at_the_minimum_size_is_read() -> None:
    image = decode_image(_encode(Image.new("L", (MIN_SIDE, MIN_SIDE)), "PNG"), name="s.png")
    assert image.pixels.shape == (MIN_SIDE, MIN_SIDE)


def test_dicom_above_the_pixel_limit_is_refused_before_decoding() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    data = make_dicom("MONOCHROME2")
    ds = dcmread(io.BytesIO(data))
    ds.Rows = ds.Columns = side  # header claims far more than the data holds
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        decode_image(buf.getvalue(), name="big.dcm")


def test_bomb_between_pillows_warning_and_error_limits_is_refused() -> None:
    # 100 MP: Pillow only warns here (its error starts at twice its 89 MP limit).
    with pytest.raises(ImageReadError, match="decompression bomb"):
        decode_image(forged_png(10_000, 10_000), name="w.png")


def test_image_read_error_survives_pickling() -> None:
    error = ImageReadError("a.png", "the file is odd", "Try again.")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.name, copy.problem, copy.remedy) == ("a.png", "the file is odd", "Try again.")
    assert str(copy) == str(error)


def test_error_names_the_file_without_control_characters() -> None:
    with pytest.raises(ImageReadError) as info:
        decode_image(b"", name="bad\nname\x00.png")
    assert info.value.name == "badname.png"
    assert str(info.value).startswith("'badname.png': the file is empty")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20000329", datetime.date(2000, 3, 29)),
        ("2000.03.29", datetime.date(2000, 3, 29)),
        ("20000329120000", datetime.date(2000, 3, 29)),
        ("", None),
        ("29/03/2000", None),
    ],
)
def test_dicom_date_values_parse_in_both_forms(value: str, expected) -> None:
    assert parse_dicom_date(value) == expected
