"""What MAGA changes: on versus off on the same seeds and sketches (with consistency numbers from the metrics
pipeline), and the thesis's sweep over the start block L and the start step S (its Fig. 4.3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .request import MemorySettings, StoryboardRequest

if TYPE_CHECKING:
    from PIL import Image

    from pipelines.core.jobs import CancelToken, ProgressCallback
    from pipelines.metrics.report import ComparisonReport

    from .generate import StoryboardOutput

CONSISTENCY_METRICS = ("clip_i", "dino_i", "clip_score")  # DINO-I is skipped, with why, when no DINO is here


@dataclass
class ABResult:
    memory_on: StoryboardOutput
    memory_off: StoryboardOutput
    report: ComparisonReport | None  # A = off, B = on; None for a single panel


@dataclass
class SweepResult:
    image: Image.Image  # rows: start steps; columns: start blocks; each cell the storyboard's strip
    layers: list[int]
    steps_of_50: list[int]
    strips: list[list[Image.Image]]


def consistency_report(on: StoryboardOutput, off: StoryboardOutput, *, models: dict[str, str] | None = None,
                       n_bootstrap: int = 1000) -> ComparisonReport | None:
    """Panels 2..N of each run against panel 1 (the same image with the memory on or off: it has no memory):
    CLIP-I and DINO-I say how much each panel still looks like the first, CLIP score how well it follows its
    prompt.
    B − A is what the memory changes, with its interval."""
    import numpy as np

    from pipelines.metrics import compare

    if len(on.frames) < 2:
        return None

    def stack(frames: Sequence[Any]) -> Any:
        return np.stack([np.asarray(frame.convert("RGB")) for frame in frames])

    first = stack([on.frames[0]] * (len(on.frames) - 1))
    return compare(stack(off.frames[1:]), stack(on.frames[1:]), reference=first, prompts=on.prompts[1:],
                   pairs="order", metrics=list(CONSISTENCY_METRICS), models=models, n_bootstrap=n_bootstrap)


def ab_compare(request: StoryboardRequest, *, callback: ProgressCallback | None = None,
               cancel: CancelToken | None = None, models: dict[str, str] | None = None,
               record: bool = False) -> ABResult:
    """Memory on and off on the same seeds and sketches. `record`: each storyboard is also a recorded run (History
    lists both and can re-run either), as the tab asks; scripts and tests may leave it off."""
    from .generate import generate_storyboard
    from .runs import run_storyboard

    def board(memory: MemorySettings) -> StoryboardOutput:
        wanted = dataclasses.replace(request, memory=memory)
        if record:
            return run_storyboard(wanted, callback=callback, cancel=cancel)[1]
        return generate_storyboard(wanted, callback=callback, cancel=cancel)

    settings = dataclasses.replace(request.memory, enabled=True)
    on = board(settings)
    off = board(dataclasses.replace(settings, enabled=False))
    if models is None and on.test_model:  # test-model frames are scored by the test CLIP: all of it labelled a test
        models = {"clip": "tiny:clip", "dino": "tiny:dino"}
    return ABResult(on, off, consistency_report(on, off, models=models))


def sweep(request: StoryboardRequest, layers: Sequence[int], steps_of_50: Sequence[int], *,
          callback: ProgressCallback | None = None, cancel: CancelToken | None = None) -> SweepResult:
    """One storyboard per (S, L) cell, the same seeds and sketches; the grid has a row per S, a column per L."""
    from .generate import generate_storyboard
    from .outputs import grid, strip

    strips: list[list[Any]] = []
    for row, step in enumerate(steps_of_50):
        strips.append([])
        for column, layer in enumerate(layers):
            memory = MemorySettings(True, int(layer), int(step), request.memory.scope, request.memory.sample_ratio)
            cell = generate_storyboard(dataclasses.replace(request, memory=memory), cancel=cancel)
            strips[-1].append(strip(cell.frames, gutter=4))
            if callback is not None:
                done = row * len(layers) + column + 1
                callback(done, len(layers) * len(steps_of_50), f"Sweep: L={layer}, S={step} of 50")
    image = grid([cell for row in strips for cell in row], columns=len(layers), gutter=24, margin=8)
    return SweepResult(image, [int(value) for value in layers], [int(value) for value in steps_of_50], strips)
