"""`@gpu_task`: ZeroGPU's `spaces.GPU` when the `spaces` package is installed, a no-op otherwise."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def gpu_task(fn: F) -> F:
    if importlib.util.find_spec("spaces") is None:
        return fn
    import spaces  # only on Hugging Face Spaces

    return spaces.GPU(fn)
