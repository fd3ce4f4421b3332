"""Fair use on a shared server: what one visitor may keep and queue, and how long anonymous work is kept.

Only multi-user mode has limits (core/owners.py); a local single-user app has none. Settings (environment):
  ASL_VISITOR_STORAGE_MB    what one visitor may keep under their outputs folder (default 1024)
  ASL_VISITOR_QUEUED_JOBS   model jobs one visitor may have waiting or running at once (default 2)
  ASL_ANONYMOUS_DAYS        anonymous visitors' folders untouched this long are deleted (default 7)
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import owners, settings
from .errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    storage_bytes: int
    queued_jobs: int
    anonymous_days: float


def limits() -> Limits:
    def number(name: str, default: float) -> float:
        try:
            return float(os.environ.get(name, default))
        except ValueError:
            return default

    return Limits(storage_bytes=int(number("ASL_VISITOR_STORAGE_MB", 1024) * 2**20),
                  queued_jobs=max(1, int(number("ASL_VISITOR_QUEUED_JOBS", 2))),
                  anonymous_days=number("ASL_ANONYMOUS_DAYS", 7))


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:  # removed while we counted
            continue
    return total


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.0f} MB"


def check_storage() -> None:
    """Refuse new work when the current visitor's outputs folder is over their share (multi-user only)."""
    if not owners.multi_user():
        return
    used, allowed = folder_bytes(settings.outputs_dir()), limits().storage_bytes
    if used >= allowed:
        raise UserError(f"Your saved work here takes {_megabytes(used)}, and each visitor may keep "
                        f"{_megabytes(allowed)} on this shared server. Delete some runs in History "
                        "(download what you want to keep first), then try again.")


def queue_refusal(waiting: int) -> str | None:
    """The message for a visitor who already has `waiting` model jobs queued or running, or None if one more
    is fine (multi-user only)."""
    allowed = limits().queued_jobs
    if not owners.multi_user() or waiting < allowed:
        return None
    return (f"You already have {waiting} jobs waiting or running, the most one visitor may have at once on this "
            "shared server. Wait for one to finish (or cancel it), then try again.")


def _newest_change(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            continue
    return newest


def expire_anonymous(now: float | None = None) -> list[str]:
    """Delete anonymous visitors' folders (browser keys, API sessions) untouched for ASL_ANONYMOUS_DAYS.
    Logged-in visitors' work is kept. Returns the owner keys removed."""
    root = settings.outputs_root() / settings.VISITORS
    if not root.is_dir():
        return []
    cutoff = (now or time.time()) - limits().anonymous_days * 86400
    removed = []
    for folder in root.iterdir():
        anonymous = folder.name.startswith(("browser-", "session-"))
        if folder.is_dir() and anonymous and _newest_change(folder) < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if removed:
        log.info("Removed %d anonymous visitors' folders untouched for %s days", len(removed), limits().anonymous_days)
    return removed
