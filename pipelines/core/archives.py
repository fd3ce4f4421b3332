"""Unpacking user zips of images safely: no path escapes, capped count and size (zip bombs)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path, PurePosixPath

from .errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
MAX_FILES = 2000
MAX_TOTAL_BYTES = 2 * 2**30


class ArchiveError(UserError, ValueError):
    """A zip that cannot be used, with a message meant for the user."""


def _safe_member_name(name: str) -> str | None:
    """The member's relative path, or None for entries that would escape the folder or are not files."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or name.endswith("/") or ":" in (path.parts or ("",))[0]:
        return None
    if any(part.startswith("__MACOSX") for part in path.parts) or path.name.startswith("."):
        return None
    return str(path)


def extract_images(zip_path: str | os.PathLike, destination: str | os.PathLike, *, max_files: int = MAX_FILES,
                   max_total_bytes: int = MAX_TOTAL_BYTES) -> tuple[list[Path], list[str]]:
    """Extract image entries of a zip into `destination`; return (paths, skipped-entry messages).

    Entries with `..` or absolute paths are skipped, as are non-image names. The declared total size
    and count are checked before anything is written, and the bytes actually written are counted too
    (a lying header cannot exceed the cap).
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ArchiveError(f"{Path(zip_path).name} is not a valid zip file.") from err
    with archive:
        members, skipped = [], []
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = _safe_member_name(info.filename)
            if name is None:
                skipped.append(f"{info.filename}: unsafe path, skipped")
            elif Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(f"{info.filename}: not an image, skipped")
            else:
                members.append((info, name))
        if len(members) > max_files:
            raise ArchiveError(f"The zip holds {len(members)} images; the limit is {max_files}.")
        declared = sum(info.file_size for info, _ in members)
        if declared > max_total_bytes:
            raise ArchiveError(f"The zip would unpack to {declared / 2**20:.0f} MB; the limit is "
                               f"{max_total_bytes / 2**20:.0f} MB.")
        return _write_members(archive, members, destination, max_total_bytes), skipped


def _write_members(archive: zipfile.ZipFile, members: list, destination: Path, budget: int) -> list[Path]:
    written, paths = 0, []
    for index, (info, name) in enumerate(members):
        target = destination / f"{index:05d}_{Path(name).name}"
        with archive.open(info) as source, open(target, "wb") as sink:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > budget:
                    raise ArchiveError("The zip unpacks to more data than it declares; refusing it.")
                sink.write(chunk)
        paths.append(target)
    return paths
