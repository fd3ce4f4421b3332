"""Long work: progress reporting, cancellation, and atomic file writes for checkpoints and outputs."""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# step, total, message
ProgressCallback = Callable[[int, int, str], None]


class JobCancelled(Exception):
    """Raised inside a job when the user pressed Cancel; checkpoints already written stay valid."""


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise JobCancelled("Cancelled by the user.")


class JobRegistry:
    """Cancel tokens by job id, so a Cancel button in one request can reach a job running in another.

    Tabs use ids such as "stylize:<session>" (one browser page or one API client's session), so the Cancel
    event of that session reaches its running job and no one else's.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, CancelToken] = {}
        self._lock = threading.Lock()

    def start(self, job_id: str | None = None) -> tuple[str, CancelToken]:
        """Register a new token under `job_id` (a fresh id when None); it replaces any older one of that id."""
        job_id, token = job_id or uuid.uuid4().hex, CancelToken()
        with self._lock:
            self._tokens[job_id] = token
        return job_id, token

    def get(self, job_id: str | None) -> CancelToken | None:
        with self._lock:
            return self._tokens.get(job_id or "")

    def cancel(self, job_id: str | None) -> bool:
        with self._lock:
            token = self._tokens.get(job_id or "")
        if token is None:
            return False
        token.cancel()
        return True

    def finish(self, job_id: str, token: CancelToken | None = None) -> None:
        """Forget the job; with `token`, only if that token is still the one registered (not a newer job's)."""
        with self._lock:
            if token is None or self._tokens.get(job_id) is token:
                self._tokens.pop(job_id, None)


JOBS = JobRegistry()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A crash or cancel mid-write leaves the previous file (or none), never half a file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; it becomes `path` only if the block succeeds. When another
    process finished the same folder first, theirs is kept (the folder is complete either way).

    replace=True: an existing `path` is replaced, and only after the new folder is complete (the old one is
    renamed aside, the new one renamed in, then the old one removed), so a crash never leaves neither."""
    import shutil

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = None
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is an ordinary folder
        if replace and target.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rename(target, old / target.name)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


CHECKPOINT_STATE = "state.json"


def write_step_checkpoint(checkpoints: str | Path, step: int, write_files: Callable[[Path], None],
                          state: dict[str, Any], keep: int = 2) -> Path:
    """A training's checkpoint, the one layout every trainer shares: `write_files(folder)` fills a temporary folder
    that becomes checkpoints/step-NNNNNNN (replacing one of that step only once it is complete), then state.json
    — `state` plus "step" and "folder" — is written atomically and last, then step folders beyond the newest
    `keep` are removed. An interrupted write leaves the previous checkpoint and its state.json intact."""
    import json
    import shutil

    root = Path(checkpoints)
    target = root / f"step-{int(step):07d}"
    with atomic_folder(target, replace=True) as tmp:
        write_files(tmp)
    with atomic_path(root / CHECKPOINT_STATE) as tmp:
        tmp.write_text(json.dumps({**state, "step": int(step), "folder": target.name}))
    for old in sorted(path for path in root.glob("step-*") if path.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_step_state(checkpoints: str | Path, required: str) -> dict[str, Any] | None:
    """The last checkpoint's state.json, or None when there is none, it cannot be read, or the step folder it
    names lacks the file `required` (a checkpoint must never point at missing weights)."""
    import json

    path = Path(checkpoints) / CHECKPOINT_STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except ValueError:
        return None
    return state if (path.parent / str(state.get("folder", "?")) / required).is_file() else None


def discard_checkpoints(checkpoints: str | Path) -> None:
    """Remove a training's step-* checkpoint folders and its state file before it starts afresh (other settings or
    no resume), so that "keep the newest two" never keeps an older run's higher-numbered steps over the new ones,
    and a state file never points at another run's weights."""
    import shutil

    root = Path(checkpoints)
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.startswith("step-"):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name == CHECKPOINT_STATE:
            entry.unlink(missing_ok=True)
