"""Reading an import bundle (a zip or a folder) without trusting the names inside it.

Nothing is ever extracted to disk under a name from the bundle: members are read into
memory by name, after checks for path traversal and zip bombs.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

MANIFEST_NAME = "manifest.csv"
MAX_MEMBER_BYTES = 200 * 1024 * 1024
"""Largest single file accepted (200 MiB): far above an ultrasound DICOM."""
MAX_TOTAL_BYTES = 4 * 1024 * 1024 * 1024
"""Largest uncompressed bundle (4 GiB)."""
MAX_COMPRESSION_RATIO = 200
"""Images barely compress; a member that inflates over 200× is treated as a zip bomb."""
MAX_MEMBERS = 100_000


class BundleError(ValueError):
    """The bundle as a whole cannot be read; nothing from it is imported."""


def safe_member_name(name: str) -> str | None:
    """The normalised relative name, or None when it is absolute or climbs out (``..``)."""
    if not name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = PurePosixPath(name).parts
    if any(part in ("..", "") for part in parts):
        return None
    return PurePosixPath(*parts).as_posix()


class Bundle:
    """Files of an import bundle, addressed by their relative name."""

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def manifest_text(self) -> str:
        name = self.find_manifest()
        try:
            return self.read(name).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BundleError(f"{name} is not UTF-8 text; save it as CSV (UTF-8).") from None

    def find_manifest(self) -> str:
        candidates = [n for n in self.names() if PurePosixPath(n).name == MANIFEST_NAME]
        if not candidates:
            raise BundleError(f"The bundle has no {MANIFEST_NAME}; add one at its top level.")
        return min(candidates, key=lambda n: n.count("/"))

    def resolve(self, manifest_name: str, file_name: str) -> str | None:
        """The member a manifest row names, relative to the manifest's folder."""
        base = PurePosixPath(manifest_name).parent
        candidate = safe_member_name((base / file_name).as_posix())
        return candidate if candidate in set(self.names()) else None


class ZipBundle(Bundle):
    def __init__(self, data: bytes) -> None:
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            raise BundleError("The upload is not a readable zip file; zip it again.") from None
        infos = [i for i in self._zip.infolist() if not i.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise BundleError(f"The zip holds more than {MAX_MEMBERS} files.")
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
        self._infos = {safe_member_name(i.filename): i for i in infos}

    def names(self) -> list[str]:
        return list(self._infos)

    def read(self, name: str) -> bytes:
        info = self._infos[name]
        with self._zip.open(info) as handle:
            data = handle.read(MAX_MEMBER_BYTES + 1)
        if len(data) > MAX_MEMBER_BYTES or len(data) != info.file_size:
            raise BundleError(f"{name!r} does not unpack to its declared size; refused.")
        return data


class FolderBundle(Bundle):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise BundleError(f"{root} is not a folder.")

    def names(self) -> list[str]:
        return [
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.is_symlink()
        ]

    def read(self, name: str) -> bytes:
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise BundleError(f"{name!r} lies outside the import folder; refused.")
        if path.stat().st_size > MAX_MEMBER_BYTES:
            raise BundleError(f"{name!r} is larger than {MAX_MEMBER_BYTES // 2**20} MiB.")
        return path.read_bytes()


def open_bundle(path: Path) -> Bundle:
    """A zip file or a folder holding ``manifest.csv`` and the images it names."""
    path = Path(path)
    if path.is_dir():
        return FolderBundle(path)
    if not path.is_file():
        raise BundleError(f"{path} does not exist.")
    return ZipBundle(path.read_bytes())
