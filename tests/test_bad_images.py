"""The bad-input corpus: each file is refused with its name and reason, or read correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.imaging.imageio import ImageReadError, decode_image
from scripts.make_bad_corpus import CASES, main, write_corpus
from tests.dicom_factory import gray_pattern

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
REFUSED = {  # file → words its error must contain; shared with test_bad_inputs
    "empty.png": "the file is empty",
    "truncated.png": "truncated or corrupt",
    "truncated.jpg": "truncated or corrupt",
    "text_renamed.png": "looks like a text file",
    "gif_renamed.png": "looks like a GIF",
    "one_pixel.png": "too small to be an ultrasound frame",
    "bomb_100000x100000.png": "decompression bomb",
    "oversized_7000x7000.png": "7000×7000",
    "no_pixel_data.dcm": "no Pixel Data",
    "wrong_transfer_syntax.dcm": "'JPEG Baseline (Process 1)'",
    "unknown_transfer_syntax.dcm": "unknown transfer syntax '1.2.3.4.5.6.7'",
    "undecodable_transfer_syntax.dcm": "'MPEG2 Main Profile / Main Level'",
    "truncated.dcm": "less than expected",
    "no_preamble.dcm": "without the 128-byte preamble",
}
"""filename → a phrase the refusal must contain."""
READ = {"cmyk.jpg", "exif_rotated.jpg", "multiframe.dcm"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    paths = write_corpus(tmp_path_factory.mktemp("bad"))
    return {path.name: path.read_bytes() for path in paths}


def test_every_image_case_has_an_expectation() -> None:
    names = {name for name, _ in CASES if Path(name).suffix in IMAGE_SUFFIXES}
    assert names == set(REFUSED) | READ


@pytest.mark.parametrize(("filename", "reason"), sorted(REFUSED.items()))
def test_bad_file_is_refused_with_name_and_reason(
    corpus: dict[str, bytes], filename: str, reason: str
) -> None:
    with pytest.raises(ImageReadError) as info:
        decode_image(corpus[filename], name=filename)
    message = str(info.value)
    assert f"'{filename}'" in message
    assert reason in message
    assert info.value.remedy in message


def test_cmyk_jpeg_reads_as_rgb(corpus: dict[str, bytes]) -> None:
    image = decode_image(corpus["cmyk.jpg"], name="cmyk.jpg")
    assert image.pixels.shape == (48, 64, 3) and image.pixels.dtype == np.uint8
    y, x = np.mgrid[0:48, 0:64]
    expected = np.stack([4 * x, 5 * y, 255 - 2 * x], axis=-1).clip(0, 255)
    assert np.abs(image.pixels.astype(int) - expected).mean() < 3


def test_exif_rotated_jpeg_reads_upright(corpus: dict[str, bytes]) -> None:
    image = decode_image(corpus["exif_rotated.jpg"], name="exif_rotated.jpg")
    assert (image.width, image.height) == (48, 64)
    red = image.pixels[..., 0].astype(int)
    # Stored red rises left → right; after a 90° clockwise turn it rises top → bottom.
    assert red[-1, :].mean() - red[0, :].mean() > 150
    assert abs(red[:, -1].mean() - red[:, 0].mean()) < 20


def test_multiframe_dicom_reads_the_first_frame(corpus: dict[str, bytes]) -> None:
    image = decode_image(corpus["multiframe.dcm"], name="multiframe.dcm")
    assert image.frame_index == 0
    np.testing.assert_array_equal(image.pixels, gray_pattern(8, frame=0))


def test_corpus_is_small(corpus: dict[str, bytes]) -> None:
    sizes = {name: len(data) for name, data in corpus.items()}
    assert max(sizes.values()) < 100_000, sizes
    assert sum(sizes.values()) < 500_000


def test_corpus_is_deterministic(corpus: dict[str, bytes]) -> None:
    assert {name: builder() for name, builder in CASES} == corpus


def test_script_writes_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", str(tmp_path / "bad")])
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == sorted(n for n, _ in CASES)
    assert f"wrote {len(CASES)} files" in capsys.readouterr().out
