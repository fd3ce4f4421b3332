"""Sharing a run: the one explicit act that lets another visitor see a visitor's work (core/owners.py).

`share_run(run_id)` copies the run's record and output images into outputs_root()/shared/<token>/ and returns the
token; anyone given the token can open it with `open_shared(token)` (read-only: the images and settings). The
token is random (not the run id), so a shared run cannot be found by guessing; `unshare(token)` takes it back.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import settings
from .errors import UserError
from .jobs import atomic_folder, atomic_write_bytes
from .records import RunStore, default_store

TOKEN_PATTERN = r"[A-Za-z0-9_\-]{16,64}"
RECORD_FILE = "run.json"
OWNER_FILE = "owner"  # never shown: only the owner may take a share back


@dataclass(frozen=True)
class SharedRun:
    token: str
    record: dict[str, Any]
    images: list[Path]


def _shared_root() -> Path:
    return settings.outputs_root() / "shared"


def _folder(token: str) -> Path:
    if not re.fullmatch(TOKEN_PATTERN, str(token or "").strip()):
        raise UserError("That is not a share link's code: paste the code the run's owner gave you.")
    return _shared_root() / str(token).strip()


def share_run(run_id: str, store: RunStore | None = None) -> str:
    """Publish one of the current owner's runs; returns the token to give to others."""
    store = store or default_store()
    record = store.get((run_id or "").strip())
    if record is None:
        raise UserError(f"No run of yours has the id {run_id!r}: pick one from the table.")
    token = secrets.token_urlsafe(16)
    with atomic_folder(_shared_root() / token) as folder:
        images = []
        for index, output in enumerate(record.outputs):
            source = Path(output)
            if source.is_file() and source.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif"):
                target = folder / f"{index:03d}{source.suffix.lower()}"
                shutil.copyfile(source, target)
                images.append(target.name)
        public = {key: value for key, value in asdict(record).items() if key not in ("outputs", "owner")}
        atomic_write_bytes(folder / RECORD_FILE, json.dumps({**public, "images": images}, default=str).encode())
        atomic_write_bytes(folder / OWNER_FILE, record.owner.encode())
    return token


def open_shared(token: str) -> SharedRun:
    folder = _folder(token)
    if not (folder / RECORD_FILE).is_file():
        raise UserError("No shared run has that code (its owner may have stopped sharing it).")
    data = json.loads((folder / RECORD_FILE).read_text())
    images = [folder / name for name in data.pop("images", []) if (folder / name).is_file()]
    return SharedRun(str(token).strip(), data, images)


def unshare(token: str) -> None:
    """Stop sharing (the owner only)."""
    from .owners import current_owner

    folder = _folder(token)
    if not (folder / OWNER_FILE).is_file():
        raise UserError("No shared run has that code.")
    if (folder / OWNER_FILE).read_text() != current_owner().key:
        raise UserError("Only the visitor who shared this run can stop sharing it.")
    shutil.rmtree(folder)
