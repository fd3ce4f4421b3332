"""Image sets for comparison: from files, zips, History runs or (admin-enabled) folders, and their pairing.

A path typed into the UI's folder field comes from the client, not from an upload: the tab marks it with
`server_path()`, and such a source is read only when the host switched folder inputs on. Otherwise it is refused
before the disk is touched, with one answer for every path (an existing file, a folder, /etc/passwd or nothing
at all), so the field can neither read the server's files nor tell which exist.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.core.archives import IMAGE_SUFFIXES, ArchiveError, extract_images
from pipelines.core.images import ImageInputError, load_image, to_array

RUN_PREFIX = "run:"
MAX_IMAGES = 5000
MAX_SIDE = 1024  # long side kept for metrics; larger inputs are downscaled (and flagged)
ENV_ALLOW_FOLDERS = "ASL_ALLOW_FOLDER_INPUTS"
SERVER_PATH_PREFIX = "server-path:"
FOLDERS_OFF = ("Paths on the server are switched off here (the host can enable them with ASL_ALLOW_FOLDER_INPUTS); "
               "upload the images or a zip instead.")


def set_hash(images: Sequence[np.ndarray]) -> str:
    """sha256 of every image's dtype, shape and bytes, in order: the key of a set's features."""
    digest = hashlib.sha256(f"{len(images)}".encode())
    for image in images:
        array = np.ascontiguousarray(image)
        digest.update(f"|{array.dtype.str}{array.shape}|".encode())
        digest.update(array.data)
    return digest.hexdigest()


def rgb_array(image: np.ndarray, index: int) -> np.ndarray:
    """The image as height x width x 3: grey repeated, alpha dropped; ValueError for other shapes."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"Image {index + 1} has shape {array.shape}; expected height x width x 3 (RGB).")
    return array


def _integers_as_uint8(array: np.ndarray, index: int) -> np.ndarray:
    """Integer images (e.g. int64 from arithmetic) in [0, 255] as uint8; other integer ranges are refused."""
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"Image {index + 1} is {array.dtype} with values outside [0, 255]; give uint8 [0, 255] or "
                         "float [0, 1] images.")
    return array.astype(np.uint8)


def unit_float(image: np.ndarray, index: int) -> np.ndarray:
    """An RGB image as float64 in [0, 1]: integers in [0, 255] are divided by 255, floats must be in [0, 1]."""
    array = rgb_array(image, index)
    if np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8:
        array = _integers_as_uint8(array, index)
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"Image {index + 1} is {array.dtype}; give uint8 [0, 255] or float [0, 1] images.")
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(f"Image {index + 1} is a float image outside [0, 1]; give floats in [0, 1] or uint8 "
                         "images in [0, 255].")
    return array.astype(np.float64)


def uint8_rgb(image: np.ndarray, index: int) -> np.ndarray:
    """The image as uint8 RGB: uint8 kept, floats in [0, 1] scaled and rounded, anything else refused."""
    array = rgb_array(image, index)
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        return _integers_as_uint8(array, index)
    return np.round(unit_float(array, index) * 255.0).astype(np.uint8)


@dataclass
class ImageSet:
    """uint8 H×W×3 images with the names used for pairing (file stems), and what was skipped and why."""

    label: str
    images: list[np.ndarray]
    names: list[str]
    skipped: list[str] = field(default_factory=list)
    downscaled: int = 0
    _hash: str | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.images)

    def content_hash(self) -> str:
        """set_hash of the images, computed once (a set's images are not changed after it is made)."""
        if self._hash is None:
            self._hash = set_hash(self.images)
        return self._hash


def folders_allowed() -> bool:
    """Folder paths read the server's disk, so they are off unless the host switches them on."""
    return os.environ.get(ENV_ALLOW_FOLDERS, "").lower() in ("1", "true", "yes", "on")


def server_path(text: str) -> str:
    """A path a client typed (a folder, or a file, on the server): a source load_image_set reads only when folder
    inputs are on. Recorded runs keep the mark, so History's re-run is held to the same rule."""
    return SERVER_PATH_PREFIX + str(text).strip()


def _expand(source: str | os.PathLike, work_dir: Path, skipped: list[str], allow_folders: bool) -> list[Path]:
    text = str(source)
    if text.startswith(SERVER_PATH_PREFIX):
        if not allow_folders:
            raise ValueError(FOLDERS_OFF)  # before any look at the disk: no answer depends on what exists
        text = text.removeprefix(SERVER_PATH_PREFIX)
    if text.startswith(RUN_PREFIX):
        from pipelines.core.records import default_store

        record = default_store().get(text.removeprefix(RUN_PREFIX))
        if record is None:
            raise ValueError(f"No run with id {text.removeprefix(RUN_PREFIX)!r} in History.")
        return [Path(path) for path in record.outputs if Path(path).suffix.lower() in IMAGE_SUFFIXES]
    path = Path(text)
    if path.is_dir():
        if not allow_folders:
            raise ValueError(f"Folder paths are switched off on this server ({path.name}); upload files or a zip.")
        return sorted(item for item in path.iterdir() if item.suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix.lower() == ".zip":
        paths, notes = extract_images(path, Path(tempfile.mkdtemp(prefix="zip-", dir=work_dir)))
        skipped += [f"{path.name}: {note}" for note in notes]
        return paths
    return [path]


def load_image_set(sources: list | str | os.PathLike, label: str, max_side: int = MAX_SIDE,
                   allow_folders: bool | None = None) -> ImageSet:
    """Read every usable image of `sources` (files, zips, "run:ID", folders when allowed).

    Folders are allowed when `allow_folders` is True, or when it is None and the server enables them.

    Unreadable files are skipped with a reason; a set with no usable image raises ValueError.
    """
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources or [])
    images, names, skipped, downscaled = [], [], [], 0
    allow_folders = folders_allowed() if allow_folders is None else allow_folders
    with tempfile.TemporaryDirectory(prefix="asl-set-") as folder:
        paths: list[Path] = []
        for source in items:
            try:
                paths += _expand(source, Path(folder), skipped, allow_folders)
            except ArchiveError as err:
                skipped.append(str(err))
        if len(paths) > MAX_IMAGES:
            raise ValueError(f"Set {label} has {len(paths)} images; the limit is {MAX_IMAGES}.")
        for path in paths:
            try:
                image = load_image(path)
                if max(image.size) > max_side:
                    image, downscaled = load_image(path, max_side=max_side), downscaled + 1
            except ImageInputError as err:
                skipped.append(str(err))
                continue
            images.append(to_array(image))
            names.append(path.stem)  # zip entries keep their names too
    if not images:
        reason = "; ".join(skipped[:5]) if skipped else "no files were given"
        raise ValueError(f"Set {label} has no usable images ({reason}).")
    return ImageSet(label, images, names, skipped, downscaled)


def as_image_set(value, label: str, allow_folders: bool | None = None) -> ImageSet:
    if isinstance(value, ImageSet):
        return value
    if isinstance(value, np.ndarray) or (isinstance(value, list) and value and isinstance(value[0], np.ndarray)):
        # one image, a stack N×H×W×C, or a list of images; uint8 or floats in [0, 1]
        arrays = list(value) if isinstance(value, np.ndarray) and value.ndim == 4 else \
            [value] if isinstance(value, np.ndarray) else value
        try:
            images = [uint8_rgb(array, index) for index, array in enumerate(arrays)]
        except ValueError as err:
            raise ValueError(f"Set {label}: {err}") from err
        if not images:
            raise ValueError(f"Set {label} has no images.")
        return ImageSet(label, images, [str(i) for i in range(len(arrays))])
    return load_image_set(value, label, allow_folders=allow_folders)


def pair_indices(a: ImageSet, b: ImageSet, pairing: str | list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Pairs of (index in a, index in b): by file name, by order, or given explicitly."""
    if isinstance(pairing, list):
        bad = [(i, j) for i, j in pairing if not (0 <= i < len(a) and 0 <= j < len(b))]
        if bad:
            raise ValueError(f"Pairs refer to images that do not exist: {bad[:3]}.")
        return pairing
    if pairing == "order":
        if len(a) != len(b):
            raise ValueError(f"Pairing by order needs sets of equal size; {a.label} has {len(a)} images and "
                             f"{b.label} has {len(b)}.")
        return [(i, i) for i in range(len(a))]
    if pairing == "name":
        index_b = {name: j for j, name in enumerate(b.names)}
        pairs = [(i, index_b[name]) for i, name in enumerate(a.names) if name in index_b]
        if not pairs:
            raise ValueError(f"No file names are shared by {a.label} and {b.label}, so no pairs can be formed.")
        return pairs
    raise ValueError(f"Unknown pairing {pairing!r}: use 'name' or 'order'.")
