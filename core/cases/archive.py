"""Reading an import bundle (a zip or a folder) without trusting the names inside it.

Nothing is ever extracted to disk under a name from the bundle: members are read into
memory one at a time, by name, after checks for path traversal, zip bombs and symbolic
links. The bundle is listed once, when it is opened, so looking up the files of a
10,000-row manifest costs one set lookup each, in a folder as in a zip.

Every refusal is a :class:`BundleError` whose message names the file, says what is wrong
and what to do, in words for the radiologist who made the zip, not the zip library's.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

MANIFEST_NAME = "manifest.csv"
MAX_MEMBER_BYTES = 200 * 1024 * 1024
"""Largest single file accepted (200 MiB): far above an ultrasound DICOM."""
MAX_TOTAL_BYTES = 4 * 1024 * 1024 * 1024
"""Largest uncompressed bundle (4 GiB)."""
MAX_COMPRESSION_RATIO = 200
"""Images barely compress; a member that inflates over 200× is treated as a zip bomb."""
MAX_MEMBERS = 100_000
READABLE_METHODS = {
    zipfile.ZIP_STORED,
    zipfile.ZIP_DEFLATED,
    zipfile.ZIP_BZIP2,
    zipfile.ZIP_LZMA,
}
"""Compression methods Python's zipfile unpacks."""
METHOD_NAMES = {
    1: "Shrink",
    6: "Implode",
    9: "Deflate64 (Enhanced Deflate)",
    93: "Zstandard",
    95: "XZ",
    98: "PPMd",
    99: "WinZip AES encryption",
}
"""Names of the methods that tools write and zipfile cannot unpack, for the message."""
_REZIP = (
    "Create the zip again from the original files (zip format, ordinary Deflate compression, "
    "no password: e.g. 7-Zip or the system's Compress command) and import the new zip."
)
SYMLINK_REFUSED = (
    "symbolic links are not accepted; put the file itself in the bundle instead of a link to it."
)


class BundleError(ValueError):
    """The bundle, or one file of it, cannot be read; the message says why and what to do."""


def safe_member_name(name: str) -> str | None:
    """The normalised relative name, or None when it is absolute or climbs out (``..``)."""
    if not name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = PurePosixPath(name).parts
    if any(part in ("..", "") for part in parts):
        return None
    return PurePosixPath(*parts).as_posix()


class Bundle:
    """Files of an import bundle, addressed by their relative name and indexed once."""

    def __init__(self, files: Iterable[str], links: Iterable[str] = ()) -> None:
        self._files = frozenset(files)
        self._links = frozenset(links)

    def names(self) -> list[str]:
        return sorted(self._files)

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release the open file, if any."""

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def manifest_text(self) -> str:
        name = self.find_manifest()
        try:
            return self.read(name).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BundleError(f"{name} is not UTF-8 text; save it as CSV (UTF-8).") from None

    def find_manifest(self) -> str:
        candidates = [n for n in self._files if PurePosixPath(n).name == MANIFEST_NAME]
        if not candidates:
            if any(PurePosixPath(n).name == MANIFEST_NAME for n in self._links):
                raise BundleError(f"The bundle's {MANIFEST_NAME} is a link: {SYMLINK_REFUSED}")
            raise BundleError(f"The bundle has no {MANIFEST_NAME}; add one at its top level.")
        return min(candidates, key=lambda n: (n.count("/"), n))

    def resolve(self, manifest_name: str, file_name: str) -> str | None:
        """The member a manifest row names, relative to the manifest's folder.

        None when there is no such file; raises BundleError when it is a symbolic link or
        lies in a linked folder.
        """
        base = PurePosixPath(manifest_name).parent
        candidate = safe_member_name((base / file_name).as_posix())
        if candidate is None:
            return None
        if candidate in self._files:
            return candidate
        parts = PurePosixPath(candidate).parts
        prefixes = {PurePosixPath(*parts[: i + 1]).as_posix() for i in range(len(parts))}
        if prefixes & self._links:
            raise BundleError(SYMLINK_REFUSED)
        return None


def _checked_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The zip's files, after the checks on names, count, sizes and compression ratios."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    if len(infos) > MAX_MEMBERS:
        raise BundleError(f"The zip holds more than {MAX_MEMBERS} files; split it.")
    unsafe = [i.filename for i in infos if safe_member_name(i.filename) is None]
    if unsafe:
        raise BundleError(
            f"The zip contains unsafe path(s) {', '.join(map(repr, unsafe[:5]))}; "
            "re-create it with plain relative names."
        )
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        raise BundleError(f"The zip would unpack to {total / 2**30:.1f} GiB, over 4 GiB.")
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > MAX_MEMBER_BYTES or ratio > MAX_COMPRESSION_RATIO:
            raise BundleError(
                f"{info.filename!r} would unpack to {info.file_size} bytes "
                f"({ratio:.0f}× its packed size): refused as a possible zip bomb."
            )
    return infos


def _is_link(info: zipfile.ZipInfo) -> bool:
    """Whether a zip member records a Unix symbolic link (its target as content)."""
    return stat.S_ISLNK(info.external_attr >> 16)


class ZipBundle(Bundle):
    """A zip, from its bytes (an upload) or its path (the command line: not read whole)."""

    def __init__(self, source: bytes | Path) -> None:
        handle: BinaryIO | Path = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            self._zip = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, EOFError):
            raise BundleError(
                "The upload is not a readable zip file, or it was cut short while copying. "
                + _REZIP
            ) from None
        try:
            infos = _checked_members(self._zip)
        except BundleError:
            self.close()
            raise
        self._infos = {safe_member_name(i.filename): i for i in infos if not _is_link(i)}
        links = [safe_member_name(i.filename) for i in infos if _is_link(i)]
        super().__init__(self._infos, links)

    def close(self) -> None:
        self._zip.close()

    def read(self, name: str) -> bytes:
        info = self._infos[name]
        if info.flag_bits & 0x1:
            raise BundleError(
                f"{name!r} is password-protected (encrypted) in the zip, and this app does not "
                "take zip passwords. Create the zip again without a password."
            )
        if info.compress_type not in READABLE_METHODS:
            method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise BundleError(
                f"{name!r} is packed with {method}, a compression this app cannot unpack. " + _REZIP
            )
        try:
            with self._zip.open(info) as handle:
                data = handle.read(MAX_MEMBER_BYTES + 1)
        except zipfile.BadZipFile as exc:
            if "CRC" in str(exc):
                raise BundleError(
                    f"{name!r} is damaged in the zip: its content does not match the checksum "
                    "the zip recorded, so the zip was probably corrupted while it was copied "
                    "or downloaded. " + _REZIP
                ) from None
            raise BundleError(_damaged(name)) from None
        except (zlib.error, EOFError, OSError, ValueError, NotImplementedError):
            raise BundleError(_damaged(name)) from None
        if len(data) > MAX_MEMBER_BYTES or len(data) != info.file_size:
            raise BundleError(f"{name!r} does not unpack to its declared size; refused.")
        return data


def _damaged(name: str) -> str:
    return (
        f"{name!r} is damaged in the zip: its packed data cannot be unpacked, so the zip "
        "was probably corrupted while it was copied or downloaded. " + _REZIP
    )


class FolderBundle(Bundle):
    """A folder, listed once with ``os.walk``; links are recorded, never followed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise BundleError(f"{root} is not a folder.")
        files, links = [], []
        for folder, dirs, names in os.walk(self.root):
            base = Path(folder).relative_to(self.root)
            for name in dirs + names:
                path = Path(folder, name)
                relative = (base / name).as_posix()
                if path.is_symlink():
                    links.append(relative)
                elif name in names and path.is_file():
                    files.append(relative)
        super().__init__(files, links)

    def read(self, name: str) -> bytes:
        path = self.root / name
        if self.root not in path.resolve().parents:
            raise BundleError(f"{name!r} lies outside the import folder; refused.")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            if path.is_symlink():
                raise BundleError(f"{name!r}: {SYMLINK_REFUSED}") from None
            raise BundleError(f"{name!r} cannot be opened; check that it is still there.") from None
        with os.fdopen(fd, "rb") as handle:
            if os.fstat(handle.fileno()).st_size > MAX_MEMBER_BYTES:
                raise BundleError(f"{name!r} is larger than {MAX_MEMBER_BYTES // 2**20} MiB.")
            return handle.read()


def open_bundle(path: Path) -> Bundle:
    """A zip file or a folder holding ``manifest.csv`` and the images it names."""
    path = Path(path)
    if path.is_dir():
        return FolderBundle(path)
    if not path.is_file():
        raise BundleError(f"{path} does not exist.")
    return ZipBundle(path)
