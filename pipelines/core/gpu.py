"""`@gpu_task`: ZeroGPU's `spaces.GPU` when the `spaces` package is installed, a no-op otherwise."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any


def gpu_task(fn: Callable | None = None, *, duration: int | None = None) -> Any:
    """Decorate a handler that does model work; `duration` (s) asks ZeroGPU for a longer slot (training)."""

    def decorate(handler: Callable) -> Callable:
        if importlib.util.find_spec("spaces") is None:
            return handler
        import spaces  # only on Hugging Face Spaces

        return spaces.GPU(duration=duration)(handler) if duration else spaces.GPU(handler)

    return decorate(fn) if fn is not None else decorate
