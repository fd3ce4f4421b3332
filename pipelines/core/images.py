"""Reading user images safely: any common mode becomes 8-bit RGB, and bad files get a plain message."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

MIN_SIDE = 16
# Decoding beyond this many pixels could exhaust memory on a small Space, so such files are refused
# (JPEGs are decoded at a reduced scale first via Image.draft, so large photos still work).
MAX_DECODE_PIXELS = 64_000_000

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray


class ImageInputError(UserError, ValueError):
    """A user image that cannot be used, with a message meant for the user."""


def _open(source: ImageSource, name: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError as err:
        raise ImageInputError(f"{name}: the file does not exist.") from err
    except UnidentifiedImageError as err:
        raise ImageInputError(f"{name} is not an image we can read (use PNG, JPEG, WebP, BMP or TIFF).") from err
    except Image.DecompressionBombError as err:
        raise ImageInputError(f"{name} is too large to open safely. Please downscale it first.") from err
    except (OSError, SyntaxError, EOFError) as err:  # e.g. a header cut short: PIL raises it from Image.open itself
        raise ImageInputError(f"{name} is damaged or incomplete and cannot be read ({err}).") from err
    except ValueError as err:  # Pillow refuses a compressed text chunk that inflates past its limit (a bomb)
        raise _value_error(name, err) from err


def _value_error(name: str, err: ValueError) -> ImageInputError:
    return ImageInputError(metadata_bomb_message(name, err) or
                           f"{name} is damaged or incomplete and cannot be read ({err}).")


def metadata_bomb_message(name: str, err: ValueError) -> str | None:
    """The plain message for Pillow's refusal of a PNG text chunk that inflates past its limit (a metadata bomb);
    None for any other ValueError."""
    if "Decompressed data too large" in str(err) or "Too much memory used in text chunks" in str(err):
        return (f"{name} is too large to open safely: its embedded text (metadata) would unpack to more than "
                "Pillow's safety limit. Save the image again without metadata.")
    return None


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        if array.dtype != np.uint8:
            array = _to_uint8(array)
        return Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[2] == 1 else array)
    raise ImageInputError(f"{name}: expected an H×W or H×W×3 image array, got shape {array.shape}.")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        return np.clip(array * scale, 0, 255).round().astype(np.uint8)
    high = np.iinfo(array.dtype).max if array.dtype.itemsize <= 2 else max(int(array.max(initial=0)), 1)
    return (array.astype(np.float64) * 255.0 / high).clip(0, 255).round().astype(np.uint8)


def _downscale_factor(size: tuple[int, int], max_side: int | None) -> float:
    if not max_side:
        return 1.0
    return min(1.0, max_side / max(size))


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from 16-bit, CMYK, palette, grayscale and alpha images (alpha composited on white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image)
        image = Image.fromarray(_to_uint8(array) if image.mode != "F" else _to_uint8(array.astype(np.float32)))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("LA", "RGBA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageSource, max_side: int | None = None, name: str | None = None) -> Image.Image:
    """Open `source` as 8-bit RGB, downscaled so its long side is at most `max_side`.

    Raises ImageInputError with a message for the user for anything unusable: not an image, truncated,
    too small, or too large to decode safely.
    """
    label = name or (Path(source).name if isinstance(source, (str, os.PathLike)) else "The image")
    image = _open(source, label)
    width, height = image.size
    _check_side(label, width, height)
    factor = _downscale_factor(image.size, max_side)
    if image.format == "JPEG" and factor < 1.0:
        image.draft("RGB", (max(1, int(width * factor)), max(1, int(height * factor))))
    if image.size[0] * image.size[1] > MAX_DECODE_PIXELS:
        raise _too_many_pixels(label, width, height)
    try:
        image = ImageOps.exif_transpose(image) or image
        image.load()
        image = _to_rgb(image)
    except (OSError, SyntaxError, EOFError) as err:
        raise ImageInputError(f"{label} is damaged or incomplete and cannot be read ({err}).") from err
    except ValueError as err:
        raise _value_error(label, err) from err
    factor = _downscale_factor(image.size, max_side)
    if factor < 1.0:
        new_size = (max(1, round(image.size[0] * factor)), max(1, round(image.size[1] * factor)))
        image = image.resize(new_size, Image.Resampling.LANCZOS)
    return image


def _check_side(label: str, width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(f"{label} is {width}×{height} pixels; it must be at least {MIN_SIDE}×{MIN_SIDE}.")


def _too_many_pixels(label: str, width: int, height: int) -> ImageInputError:
    return ImageInputError(f"{label} is {width}×{height} ({width * height / 1e6:.0f} megapixels), more than the "
                           f"{MAX_DECODE_PIXELS // 1_000_000} megapixels this app will decode. Please downscale it "
                           "first.")


def check_image_file(path: str | os.PathLike, name: str | None = None) -> None:
    """Raise ImageInputError unless `path` is an image load_image can read, judged from its header and (PNG) chunk
    checksums without decoding the pixels: what unpacking checks for each file, so a bad one never stays."""
    label = name or Path(path).name
    image = _open(path, label)
    with image:
        width, height = image.size
        _check_side(label, width, height)
        # A JPEG is decoded at up to 1/8 scale when a smaller size is asked for (Image.draft in load_image).
        limit = MAX_DECODE_PIXELS * (64 if image.format == "JPEG" else 1)
        if width * height > limit:
            raise _too_many_pixels(label, width, height)
        try:
            image.verify()
        except (OSError, SyntaxError, EOFError, struct.error) as err:
            raise ImageInputError(f"{label} is damaged or incomplete and cannot be read ({err}).") from err
        except ValueError as err:
            raise _value_error(label, err) from err


def to_array(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8 array of an RGB image."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
