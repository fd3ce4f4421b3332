"""`@gpu_task`: ZeroGPU's `spaces.GPU` when the `spaces` package is installed, a no-op otherwise; and how long the
calls may ask for.

Durations (seconds of GPU a call asks ZeroGPU for), from bench/bench_real_size.py and bench/gpu_smoke.py: one SD 1.5
image at 512 px, 25 steps, takes a few seconds on ZeroGPU's GPU, and the first call of a process also moves the
pipeline (2.1 GB in fp16) to it, so the default 60 s covers generation, ControlNet and IP-Adapter calls. ZeroGPU
grants at most ZEROGPU_MAX_S to one call and refuses a longer request, so a training runs in slices: each call
trains until `training_budget_s()` has passed, writes a checkpoint and returns "paused"; pressing Train again
resumes from it (style_finetune's `time_budget_s`). The reserve covers what a slice does besides its steps:
loading and copying the models before the first step, the final validation and the exports after the last one.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

ZEROGPU_MAX_S = 300  # the longest slot ZeroGPU grants one call ("5 minutes is the maximum", Hugging Face staff)
GENERATE_S = 60  # ZeroGPU's default: one generation, ControlNet or IP-Adapter call
STORYBOARD_S = 120  # up to 8 panels drawn together (a batch of 16 under CFG), with ControlNet and memory attention
TRAIN_SLICE_S = ZEROGPU_MAX_S  # one slice of a training
TRAIN_RESERVE_S = 90  # model loading before the first step + final validation and export after the last


def on_zerogpu() -> bool:
    """True on a ZeroGPU Space (which sets SPACES_ZERO_GPU, read by the `spaces` package the same way); a Space
    with its own GPU has no slot limit."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "true", "yes", "on")


def training_budget_s(slot_s: int = TRAIN_SLICE_S) -> float | None:
    """Seconds a training may run in one call: the slot less the reserve on ZeroGPU, no limit elsewhere."""
    return float(slot_s - TRAIN_RESERVE_S) if on_zerogpu() else None


def gpu_task(fn: Callable | None = None, *, duration: int | None = None) -> Any:
    """Decorate a handler that does model work; `duration` (s) asks ZeroGPU for a longer slot (training)."""

    def decorate(handler: Callable) -> Callable:
        if importlib.util.find_spec("spaces") is None:
            return handler
        import spaces  # only on Hugging Face Spaces

        return spaces.GPU(duration=duration)(handler) if duration else spaces.GPU(handler)

    return decorate(fn) if fn is not None else decorate
