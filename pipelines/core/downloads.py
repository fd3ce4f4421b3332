"""Known downloads (fixed URLs of published PyTorch checkpoints): fetched lazily, size-capped, written
atomically, and read with torch.load(weights_only=True) so no code in them runs. User files never come
through here: they are safetensors only (safeweights.py)."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import network
from .jobs import atomic_path

if TYPE_CHECKING:
    import torch

DOWNLOAD_TIMEOUT_S = 30


def offline_reason(url: str) -> str | None:
    """Why `url` cannot be fetched now, in plain words, or None. Checked lazily, never at start-up."""
    status = network.url_status(url)
    return status.reason if status.offline else None


# progress(bytes_done, bytes_expected or None when the server does not say)
DownloadProgress = Callable[[int, int | None], None]


def download_file(url: str, target: str | os.PathLike, max_bytes: int, *,
                  progress: DownloadProgress | None = None) -> str:
    """Stream `url` to `target` atomically, refusing more than `max_bytes`; returns the sha256 hex digest.

    `progress` is called after every chunk (and once at the start) with the bytes so far and the size the
    server announced."""
    request = urllib.request.Request(url, headers={"User-Agent": "anime-style-lab"})
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, atomic_path(target) as tmp:
        announced = response.headers.get("Content-Length")
        expected = int(announced) if announced and announced.isdigit() else None
        if expected is not None and expected > max_bytes:
            raise ValueError(f"the download is larger than expected ({max_bytes // 2**20} MB); refused")
        total = 0
        if progress is not None:
            progress(0, expected)
        with tmp.open("wb") as handle:
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise ValueError(f"the download is larger than expected ({max_bytes // 2**20} MB); refused")
                digest.update(chunk)
                handle.write(chunk)
                if progress is not None:
                    progress(total, expected)
    return digest.hexdigest()


def read_pth_state_dict(source: str | os.PathLike | bytes) -> dict[str, torch.Tensor]:
    """The tensors of a known checkpoint (a path or its bytes), read with weights_only=True."""
    import torch

    handle = io.BytesIO(source) if isinstance(source, bytes) else str(Path(source))
    state = torch.load(handle, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError("the download does not hold a state dict")
    return {str(key): value for key, value in state.items() if isinstance(value, torch.Tensor)}
