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


# A Hugging Face Space with persistent storage mounts it here; what is written elsewhere vanishes on restart.
PERSISTENT_MOUNT = Path("/data")


def persistent_storage() -> Path | None:
    """/data on a Space that has persistent storage (writable), else None."""
    mount = Path(os.environ.get("ASL_PERSISTENT_MOUNT", PERSISTENT_MOUNT))
    return mount if mount.is_dir() and os.access(mount, os.W_OK) else None


def outputs_root() -> Path:
    """The folder that holds every owner's outputs: ASL_OUTPUTS, else /data/outputs on a Space with persistent
    storage, else ./outputs. Only the core reads it directly; work goes to outputs_dir()."""
    default = (persistent_storage() / "outputs") if persistent_storage() and os.environ.get("SPACE_ID") else "outputs"
    path = Path(os.environ.get(ENV_OUTPUTS, default)).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


VISITORS = "visitors"


def outputs_dir() -> Path:
    """Where the current owner's images, run records and trained models go (created on demand).

    Single-user mode: the outputs root itself. Multi-user mode: outputs_root()/visitors/<owner key>, so every
    list (History, trained models, studies) shows only the visitor's own work (see core/owners.py)."""
    from . import owners

    root = outputs_root()
    if not owners.multi_user():
        return root
    path = root / VISITORS / owners.current_owner().key
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where built tiny models and converted pretrained weights are kept (on a Space's persistent storage when
    there is one, so downloads happen once)."""
    storage = persistent_storage() if os.environ.get("SPACE_ID") else None
    base = storage / "cache" if storage else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = Path(os.environ.get(ENV_CACHE, base / "anime-style-lab")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_preference() -> str | None:
    return os.environ.get(ENV_DEVICE) or None


def dtype_preference() -> str | None:
    return os.environ.get(ENV_DTYPE) or None


def cache_budget_bytes() -> int | None:
    value = os.environ.get(ENV_CACHE_BUDGET_GB)
    return int(float(value) * 2**30) if value else None
