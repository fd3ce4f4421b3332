"""Process settings read from environment variables (the app's flags set these too)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_OUTPUTS = "ASL_OUTPUTS"
ENV_CACHE = "ASL_CACHE"
ENV_DEVICE = "ASL_DEVICE"
ENV_DTYPE = "ASL_DTYPE"
ENV_CACHE_BUDGET_GB = "ASL_MODEL_CACHE_GB"
ENV_ALLOW_TINY_ONLY = "ASL_TINY_ONLY"


def outputs_dir() -> Path:
    """Where images, run records and trained styles go (created on demand)."""
    path = Path(os.environ.get(ENV_OUTPUTS, "outputs")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where built tiny models and converted pretrained weights are kept."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "anime-style-lab"
    path = Path(os.environ.get(ENV_CACHE, default)).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_preference() -> str | None:
    return os.environ.get(ENV_DEVICE) or None


def dtype_preference() -> str | None:
    return os.environ.get(ENV_DTYPE) or None


def cache_budget_bytes() -> int | None:
    value = os.environ.get(ENV_CACHE_BUDGET_GB)
    return int(float(value) * 2**30) if value else None
