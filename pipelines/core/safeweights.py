"""Loading weights from users: safetensors only, checked by content, never unpickled."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .userjson import JsonInputError, parse_json

if TYPE_CHECKING:
    import torch

MAX_HEADER_BYTES = 100 * 2**20
# Files in PyTorch's pickle format: opening one can run code hidden in it, so none is ever opened.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


class UnsafeWeightsError(UserError, ValueError):
    """The file is not a valid safetensors file (whatever its extension says)."""


def refuse_pickle_name(path: str | os.PathLike, what: str = "weights") -> None:
    """Refuse a pickle-format file by its name, before anything opens it, saying why (content is checked later)."""
    suffix = Path(str(path)).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise UnsafeWeightsError(
            f"'{Path(str(path)).name}' is a pickle file ({suffix}). Opening a pickle can run any code hidden in it, "
            f"so this app accepts {what} only as .safetensors. Most are also published as .safetensors; otherwise "
            "convert it once, on a machine you trust, with the safetensors library.")


def check_safetensors(path: str | os.PathLike) -> dict:
    """Validate the safetensors header by content and return it; raise UnsafeWeightsError otherwise.

    A pickle renamed `.safetensors` starts with b"\\x80" and fails the header-length/JSON check here,
    before any loader sees it.
    """
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise UnsafeWeightsError(f"{name} is too short to be a safetensors file.")
            (header_len,) = struct.unpack("<Q", head)
            if header_len == 0 or header_len > min(MAX_HEADER_BYTES, size - 8):
                raise UnsafeWeightsError(
                    f"{name} is not a safetensors file (it may be a pickle/.pt/.ckpt file renamed). "
                    "Only .safetensors weights are accepted: convert it with the safetensors library first."
                )
            header_bytes = handle.read(header_len)
    except OSError as err:
        raise UnsafeWeightsError(f"Cannot read {name}: {err.strerror or err}.") from err
    try:
        header = parse_json(header_bytes, name, max_bytes=MAX_HEADER_BYTES)  # bounded nesting, too
    except JsonInputError as err:
        raise UnsafeWeightsError(f"{name} is not a safetensors file: its header is not valid JSON.") from err
    if not isinstance(header, dict):
        raise UnsafeWeightsError(f"{name} is not a safetensors file: unexpected header.")
    return header


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Return (state_dict, metadata) from a checked safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = check_safetensors(path)
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise UnsafeWeightsError(f"{Path(path).name} is a damaged safetensors file: {err}") from err
    return tensors, dict(header.get("__metadata__") or {})


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write tensors atomically (temporary name, then rename)."""
    from safetensors.torch import save_file

    from .jobs import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)
