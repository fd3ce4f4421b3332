"""Stage 1: a line-art sketch per panel from its prompt, cleaned to black lines on white with OpenCV, and the
image each ControlNet type takes from a (possibly hand-edited) sketch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import UserError

from .request import SKETCH_NEGATIVE, SKETCH_TEMPLATE, LineSettings, SketchRequest, check_sketches, with_prefix

if TYPE_CHECKING:
    from PIL import Image

    from pipelines.core.jobs import CancelToken, ProgressCallback


@dataclass
class SketchOutput:
    sketches: list[Image.Image]  # clean lines, black on white, one per requested panel
    drawn: list[Image.Image]  # what the sketch model drew, before cleaning
    panels: list[int]  # which panels these are (0-based)
    seeds: list[int]
    seconds: float
    notes: list[str] = field(default_factory=list)
    test_model: bool = False


def clean_lines(image: Image.Image, lines: LineSettings = LineSettings()) -> Image.Image:
    """Black lines on white from any drawing: adaptive mean threshold (keeps pencil strokes of any darkness)
    or Canny edges (outlines of filled shapes), as RGB."""
    import cv2
    import numpy as np
    from PIL import Image

    grey = np.asarray(image.convert("L"))
    if lines.method == "canny":
        mask = cv2.Canny(grey, lines.canny_low, lines.canny_high) > 0
    else:
        mask = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV,
                                     lines.block_size, lines.c) > 0
    return Image.fromarray(np.where(mask, 0, 255).astype(np.uint8)).convert("RGB")


def control_image(sketch: Image.Image, control: str) -> Image.Image:
    """What the ControlNet sees: white lines on black for line art and scribble (the sketch inverted), Canny
    edges of the sketch for canny."""
    import cv2
    import numpy as np
    from PIL import Image

    grey = np.asarray(sketch.convert("L"))
    lines = cv2.Canny(grey, 100, 200) if control == "canny" else 255 - grey
    return Image.fromarray(lines.astype(np.uint8)).convert("RGB")


def generate_sketches(request: SketchRequest, panels: Sequence[int] | None = None, *,
                      callback: ProgressCallback | None = None, cancel: CancelToken | None = None) -> SketchOutput:
    """Sketches for `panels` (default all; one panel to regenerate it). Panel i uses seed + i, so regenerating a
    panel with the same seed gives the same sketch and another seed gives a new one."""
    from pipelines.diffusion.generate import GenerateRequest, generate

    problems = check_sketches(request)
    if problems:
        raise UserError(" ".join(problems))
    chosen = list(range(len(request.prompts))) if panels is None else [int(panel) for panel in panels]
    if any(not 0 <= panel < len(request.prompts) for panel in chosen):
        raise UserError(f"Panels are numbered 1 to {len(request.prompts)}.")
    started = time.perf_counter()
    drawn, seeds, notes, test_model = [], [], [], False
    for count, panel in enumerate(chosen):
        prompt = SKETCH_TEMPLATE.format(prompt=with_prefix(request.prefix, request.prompts[panel]))
        one = GenerateRequest(prompt=prompt, negative_prompt=SKETCH_NEGATIVE, model=request.model,
                              sampler=request.sampler, schedule="Automatic", steps=request.steps,
                              cfg_scale=request.cfg_scale, seed=request.seed + panel, width=request.width,
                              height=request.height, clip_skip=request.clip_skip)
        step_callback = None if callback is None else _sketch_progress(callback, count, len(chosen))
        output = generate(one, callback=step_callback, cancel=cancel)
        drawn.append(output.images[0])
        seeds.append(one.seed)
        notes += output.notes
        test_model = test_model or output.test_model
    sketches = [clean_lines(image, request.lines) for image in drawn]
    return SketchOutput(sketches, drawn, chosen, seeds, time.perf_counter() - started, notes, test_model)


def _sketch_progress(callback: ProgressCallback, count: int, sketches: int) -> ProgressCallback:
    """One sketch's steps as progress over all the sketches asked for ("Sketch 2 of 4, step 5/25")."""

    def report(step: int, total: int, _message: str) -> None:
        callback(count * total + step, sketches * total, f"Sketch {count + 1} of {sketches}, step {step}/{total}")

    return report


def reordered(items: Sequence[Any], order: Sequence[int]) -> list[Any]:
    """`items` in the panel order the user chose (a permutation of 0..n-1)."""
    if sorted(order) != list(range(len(items))):
        raise UserError(f"The order must name each panel 1 to {len(items)} once, got "
                        f"{', '.join(str(index + 1) for index in order)}.")
    return [items[index] for index in order]

