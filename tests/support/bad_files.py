"""A corpus of broken and unusual files, as a new user or an API client might send them to any file input.

Each entry says whether a reader should accept it (unusual but valid images) and, if not, which words of the
problem a plain answer contains when an input that takes its kind reads it (an image input answers a zip or a
weights file with "not an image we can read"; a file input refuses another kind by name). Used by
tests/test_bad_files.py.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class BadFile:
    name: str
    kind: str  # what it pretends to be: "image", "zip", "safetensors" or "json"
    valid_image: bool  # an unusual but valid image every image input must accept
    problem: str  # the problem as an input of its kind words it, a regular expression ("" for valid images)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_header_png(width: int = 20000, height: int = 20000) -> bytes:
    """A few hundred bytes whose header claims width × height pixels (decoding it would need gigabytes)."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def text_bomb_png(inflated_bytes: int = 4 * 2**20) -> bytes:
    """A valid 48×40 PNG with a zTXt (compressed text) chunk that inflates to `inflated_bytes`, past Pillow's 1 MB
    text limit (ImageFile.SAFEBLOCK): a few KB that make Pillow raise "Decompressed data too large" while opening."""
    png = _png_bytes(_photo())
    bomb = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b" " * inflated_bytes, 9))
    return png[:33] + bomb + png[33:]  # right after the 8-byte signature and the 25-byte IHDR chunk


def deep_json(depth: int = 100_000) -> bytes:
    """JSON nested `depth` lists deep: Python's json module ends in RecursionError on it."""
    return b"[" * depth + b"]" * depth


def _photo(size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8))


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


NOT_AN_IMAGE = r"not an image we can read"
CORPUS: tuple[BadFile, ...] = (
    BadFile("empty.png", "image", False, r"not an image we can read|empty"),
    BadFile("notes_named.png", "image", False, NOT_AN_IMAGE),
    BadFile("truncated.png", "image", False, r"damaged or incomplete|not an image we can read"),
    BadFile("huge_header.png", "image", False, r"too large to open safely|megapixels"),
    BadFile("one_pixel.png", "image", False, r"1×1 pixels; it must be at least|no generation parameters"),
    BadFile("cmyk.jpg", "image", True, ""),
    BadFile("sixteen_bit.png", "image", True, ""),
    BadFile("palette.png", "image", True, ""),
    BadFile("zip_slip.zip", "zip", False, r"unsafe path|holds no images|no usable images"),
    BadFile("zip_bomb.zip", "zip", False, r"zip bomb"),
    BadFile("pickle.safetensors", "safetensors", False, r"not a safetensors file"),
    BadFile("text_bomb.png", "image", False, r"too large to open safely"),
    BadFile("deep_nesting.json", "json", False, r"levels deep"),
    BadFile("width_abc.json", "json", False, r'"width" must be the image width in pixels'),
    BadFile("bad_labels.zip", "zip", False, r"no usable image|no usable images|holds no images|Only 0 usable image"),
)


def _contents(name: str) -> bytes:
    photo = _photo()
    if name == "empty.png":
        return b""
    if name == "notes_named.png":
        return b"These are my notes, not a picture.\n" * 20
    if name == "truncated.png":
        data = _png_bytes(_photo((64, 64)))
        return data[: len(data) // 2]
    if name == "huge_header.png":
        return huge_header_png()
    if name == "one_pixel.png":
        return _png_bytes(Image.new("RGB", (1, 1), "red"))
    if name == "cmyk.jpg":
        buffer = io.BytesIO()
        photo.convert("CMYK").save(buffer, format="JPEG")
        return buffer.getvalue()
    if name == "sixteen_bit.png":
        array = (np.asarray(photo.convert("L"), np.uint16) * 257).astype(np.uint16)
        return _png_bytes(Image.fromarray(array, mode="I;16"))
    if name == "palette.png":
        return _png_bytes(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
    if name == "zip_slip.zip":
        png = _png_bytes(photo)
        return _zip({"../../escaped.png": png, "/etc/absolute.png": png})
    if name == "zip_bomb.zip":  # 40 KB that would unpack to 40 MB, named like a photo
        return _zip({"holiday.png": b"\0" * (40 * 2**20)})
    if name == "pickle.safetensors":
        return pickle.dumps({"weight": [1.0, 2.0, 3.0]})
    if name == "text_bomb.png":
        return text_bomb_png()
    if name == "deep_nesting.json":
        return deep_json()
    if name == "width_abc.json":
        return json.dumps({"width": "abc", "height": 512, "points": [[100, 100]] * 24}).encode()
    if name == "bad_labels.zip":  # what a refused landmark-training zip held: nothing in it may stay on disk
        return _zip({"face.png": huge_header_png(60000, 60000), "face.json": pickle.dumps({"points": []}),
                     "deep.png": text_bomb_png(), "deep.json": deep_json()})
    raise KeyError(name)


def write_corpus(folder: Path) -> dict[str, Path]:
    """Write every corpus file into `folder`; name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for entry in CORPUS:
        path = folder / entry.name
        path.write_bytes(_contents(entry.name))
        paths[entry.name] = path
    return paths


def good_image(folder: Path, name: str = "good.png", size: tuple[int, int] = (48, 40)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    _photo(size).save(path)
    return path
