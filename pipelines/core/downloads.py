"""Known downloads: fixed URLs of published PyTorch checkpoints (fetched lazily, size-capped, written atomically,
and read with torch.load(weights_only=True) so no code in them runs), and the catalog's Hub models (fetch_entry:
once per repo for all visitors, after a free-disk check, with the job's progress bar). User files never come
through here: they are safetensors only (safeweights.py)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
import urllib.request
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import network
from .catalog import MB, CatalogEntry, is_cached, size_text
from .errors import UserError
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


# ---------------------------------------------------------------------------------------------- catalog models
# progress(bytes_done, bytes_expected, message): the job's callback, set for the current request by the UI (or a
# test) with report_downloads_to(); a download started inside that request drives it.
JobProgress = Callable[[int, int, str], None]
_JOB_PROGRESS: ContextVar[JobProgress | None] = ContextVar("asl_download_progress", default=None)
DISK_HEADROOM = 1.1  # a download needs its size plus 10 % (temporary files, the size being approximate)


def report_downloads_to(progress: JobProgress | None) -> None:
    """Downloads started from now on in this context (this request, and worker threads started from a copy of it)
    report to `progress`."""
    _JOB_PROGRESS.set(progress)


class _RepoLocks:
    """One lock per repo, so that two visitors asking for the same model at once download it once."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, repo: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(repo, threading.Lock())


REPO_LOCKS = _RepoLocks()


def _existing_parent(path: Path) -> Path:
    """The folder itself or its nearest existing parent (the Hub cache may not exist before the first download)."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def check_free_disk(entry: CatalogEntry, folder: Path | None = None) -> None:
    """Refuse, in plain words, a download the disk holding the model cache has no room for."""
    folder = _existing_parent(folder or hub_cache_dir())
    free = shutil.disk_usage(folder).free
    needed = int(entry.size_bytes * DISK_HEADROOM)
    if free < needed:
        raise UserError(f"Not enough free disk space to download {entry.label}: it needs {size_text(needed)} and "
                        f"{folder} has {size_text(free)} free. Free some space, or choose a smaller or "
                        f"already-downloaded model.")


def _progress_bar_class(report: JobProgress, label: str) -> type:
    """A tqdm class for snapshot_download that feeds its byte counts to the job's progress bar (and prints nothing)."""
    from tqdm.auto import tqdm

    class JobProgressBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own tqdm takes a group name; plain tqdm does not
            kwargs["file"] = io.StringIO()
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            # The byte bar (files written), not the file-count bar or the network-transfer bar.
            if self.unit == "B" and not str(self.desc).startswith("Downloading bytes"):
                done, total = int(self.n), int(self.total or 0)
                # in MB, so that the page's "done/total" reads as sizes
                report(done // MB, total // MB, f"Downloading {label}: {done // MB} of {total // MB or '?'} MB")
            return shown

    return JobProgressBar


def fetch_entry(entry: CatalogEntry) -> str | None:
    """Download the files a catalog model needs into the Hugging Face cache, once for all visitors: a lock per repo,
    then (if still missing) a free-disk check and snapshot_download with a progress bar. Returns the snapshot folder,
    or None for entries that are not Hub repos. Offline, nothing is attempted (the loader says why it cannot load)."""
    if not entry.repo:
        return None
    with REPO_LOCKS(entry.repo):
        if is_cached(entry):
            return None
        check_free_disk(entry)
        from huggingface_hub import snapshot_download

        report = _JOB_PROGRESS.get()
        tqdm_class = _progress_bar_class(report, entry.label) if report is not None else None
        if report is not None:
            report(0, entry.size_bytes // MB, f"Downloading {entry.label} ({entry.size_text}), once for this server…")
        return snapshot_download(entry.repo, allow_patterns=list(entry.files) or None, tqdm_class=tqdm_class)
