"""Unpacking user zips of images safely: no path escapes, capped count, size and compression ratio (zip bombs).

Everything that can be checked from the zip's directory is checked before a byte is written: the number of
images, their declared total size, and the compression ratio of each member and of the whole archive (a
400 KB upload that would unpack to 400 MB is refused by its ratio). While writing, the bytes are counted
again, so a member whose header lies cannot write more than it declared. If anything is refused part-way,
every file this call wrote is removed again. Files keep the names (and folders) they have inside the zip.

Each file is also checked as soon as it is written (an image by its header and checksums, a .json label by the
bounded JSON reader): one that cannot be read is deleted at once and listed with the reason, so a pickle renamed
.json or a PNG whose header claims 60000×60000 never stays on disk. A job that unpacks into a folder of its own
does so inside `job_unpack_folder`, which removes the folder again when the job is refused or fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from .errors import UserError
from .jobs import JobCancelled
from .userjson import JsonInputError, read_json

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
MAX_FILES = 2000
MAX_TOTAL_BYTES = 2 * 2**30
# Compressed images (PNG, JPEG, WebP) barely shrink in a zip; a member that shrinks more than MAX_RATIO times is
# almost always a bomb. Small members are exempt (a flat-colour BMP compresses a lot, and a few MB harm nobody).
MAX_RATIO = 100
RATIO_FREE_BYTES = 8 * 2**20


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


def _ratio(uncompressed: int, compressed: int) -> float:
    return uncompressed / max(compressed, 1)


def _check_sizes(zip_name: str, members: list[tuple[zipfile.ZipInfo, str]], max_files: int,
                 max_total_bytes: int, max_ratio: float) -> None:
    """Refuse by count, declared total size and compression ratio, from the zip's directory alone."""
    if len(members) > max_files:
        raise ArchiveError(f"{zip_name} holds {len(members)} images; the limit is {max_files}.")
    declared = sum(info.file_size for info, _ in members)
    if declared > max_total_bytes:
        raise ArchiveError(f"{zip_name} would unpack to {declared / 2**20:.0f} MB; the limit is "
                           f"{max_total_bytes / 2**20:.0f} MB.")
    for info, name in members:
        if info.file_size > RATIO_FREE_BYTES and _ratio(info.file_size, info.compress_size) > max_ratio:
            raise ArchiveError(
                f"{zip_name} looks like a zip bomb: {name} would unpack from {info.compress_size / 2**10:.0f} KB "
                f"to {info.file_size / 2**20:.0f} MB ({_ratio(info.file_size, info.compress_size):.0f}×; images "
                f"shrink at most {max_ratio}× in a zip). Nothing was unpacked.")
    compressed = sum(info.compress_size for info, _ in members)
    if declared > RATIO_FREE_BYTES and _ratio(declared, compressed) > max_ratio:
        raise ArchiveError(f"{zip_name} looks like a zip bomb: it would unpack from {compressed / 2**10:.0f} KB to "
                           f"{declared / 2**20:.0f} MB ({_ratio(declared, compressed):.0f}×). Nothing was unpacked.")


def extract_images(zip_path: str | os.PathLike, destination: str | os.PathLike, *, max_files: int = MAX_FILES,
                   max_total_bytes: int = MAX_TOTAL_BYTES, max_ratio: float = MAX_RATIO,
                   extra_suffixes: tuple[str, ...] = ()) -> tuple[list[Path], list[str]]:
    """Extract the image entries of a zip into `destination` under their names in the zip; return
    (paths, skipped-entry messages). `extra_suffixes` (e.g. (".json",)) extracts the labels that go beside the
    images too.

    Entries with `..` or absolute paths are skipped, as are non-image names and repeated names. Count, declared
    size and compression ratio are checked before anything is written; on any refusal nothing stays written.
    Each written file is checked (check_member); one that cannot be read is deleted and listed in the skipped.
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    zip_name = Path(zip_path).name
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ArchiveError(f"{zip_name} is not a valid zip file.") from err
    with archive:
        members, skipped, seen = [], [], set()
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = _safe_member_name(info.filename)
            if name is None:
                skipped.append(f"{info.filename}: unsafe path, skipped")
            elif Path(name).suffix.lower() not in (*IMAGE_SUFFIXES, *extra_suffixes):
                skipped.append(f"{info.filename}: not an image, skipped")
            elif name.lower() in seen:
                skipped.append(f"{info.filename}: a second file of that name, skipped")
            else:
                seen.add(name.lower())
                members.append((info, name))
        _check_sizes(zip_name, members, max_files, max_total_bytes, max_ratio)
        written = _write_members(archive, zip_name, members, destination, max_total_bytes)
    paths = []
    for path in written:
        problem = check_member(path, path.relative_to(destination).as_posix())
        if problem is None:
            paths.append(path)
        else:
            path.unlink(missing_ok=True)
            skipped.append(f"{problem} (skipped)")
    return paths, skipped


def check_member(path: Path, name: str) -> str | None:
    """Why an unpacked file cannot be used (a plain message that names it), or None when it can."""
    from .images import ImageInputError, check_image_file  # Pillow and numpy only when a zip is unpacked

    try:
        if path.suffix.lower() == ".json":
            read_json(path, name)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            check_image_file(path, name)
    except (ImageInputError, JsonInputError) as err:
        return str(err).rstrip(".")
    return None


@contextlib.contextmanager
def job_unpack_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """The folder one job unpacks its uploads into (a training's data, a style's content images), for the length of
    the job: when the job is refused or fails, what it unpacked there is removed, so nothing a refused upload held
    stays on the server. It stays when the job succeeds or pauses, and when the user cancels (pressing Train again
    resumes from the checkpoint, which reads these files). A folder the job did not create or replace (an earlier
    upload under the same name, kept because this one was refused while unpacking) is left alone."""
    folder = Path(folder)
    before = _identity(folder)
    try:
        yield folder
    except Exception as err:
        if not isinstance(err, JobCancelled) and _identity(folder) != before:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing folder: it changes when the folder is created or replaced by a rename."""
    try:
        stat = folder.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _write_members(archive: zipfile.ZipFile, zip_name: str, members: list, destination: Path,
                   budget: int) -> list[Path]:
    written, paths, created, folders = 0, [], [], []
    root = destination.resolve()
    try:
        for info, name in members:
            target = destination / name
            if not target.resolve().is_relative_to(root):  # belt and braces: _safe_member_name already refused
                raise ArchiveError(f"{zip_name}: {name} would be written outside the folder; refusing the zip.")
            new_folders = [folder for folder in (target.parent, *target.parent.parents)
                           if folder.is_relative_to(destination) and not folder.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            folders += new_folders
            member_bytes = 0
            with archive.open(info) as source, open(target, "wb") as sink:
                created.append(target)
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    member_bytes += len(chunk)
                    if written > budget or member_bytes > info.file_size:
                        raise ArchiveError(f"{zip_name}: {name} unpacks to more data than the zip declares; "
                                           "refusing the zip.")
                    sink.write(chunk)
            paths.append(target)
    except (ArchiveError, zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
        for path in created:
            path.unlink(missing_ok=True)
        for folder in sorted(folders, key=lambda folder: len(folder.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(err, ArchiveError):
            raise
        raise ArchiveError(f"{zip_name} is damaged or uses an unsupported format and cannot be unpacked "
                           f"({err}).") from err
    return paths

