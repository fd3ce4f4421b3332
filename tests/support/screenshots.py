"""Where browser tests save their screenshots: a temporary folder on every run, the README's files in assets/
only when asked, so a test run leaves the work tree clean.

Refresh the README screenshots with:  ASL_UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest -q -m browser
"""

from __future__ import annotations

import os
from pathlib import Path

from .server import ROOT

UPDATE_ENV = "ASL_UPDATE_SCREENSHOTS"


def updating() -> bool:
    return os.environ.get(UPDATE_ENV, "").lower() in ("1", "true", "yes")


def screenshot_path(name: str, scratch: Path) -> Path:
    """assets/NAME when refreshing the README's screenshots, else NAME in the test's scratch folder."""
    return ROOT / "assets" / name if updating() else Path(scratch) / name
