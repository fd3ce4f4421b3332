"""What a storyboard call takes, its limits (the tab's sliders import them), and plain checks before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.diffusion.generate import MAX_SIZE, MIN_SIZE, SIZE_STEP

from .memory import DEFAULT_START_LAYER, DEFAULT_START_STEP_OF_50, SCOPES, SD15_TRANSFORMER_BLOCKS

MIN_PANELS, MAX_PANELS, DEFAULT_PANELS = 1, 8, 4
DEFAULT_STEPS = 50
DEFAULT_SKETCH_STEPS = 25
# The sketch model draws line art when asked like this (the usual anime line-art prompt), then OpenCV cleans it.
SKETCH_TEMPLATE = "monochrome, greyscale, lineart, sketch, clean line drawing, white background, {prompt}"
SKETCH_NEGATIVE = ("color, colored, shading, gradient, photo, realistic, 3d, lowres, blurry, jpeg artifacts, "
                   "text, watermark, signature")
FRAME_NEGATIVE = "lowres, bad anatomy, bad hands, worst quality, low quality, blurry, text, watermark"
LINE_METHODS = ("adaptive", "canny")
# What each ControlNet type sees: anime line art and scribble take white lines on black (the sketch inverted),
# canny takes Canny edges of the sketch. Hub ids of the SD 1.5 v1.1 ControlNets.
CONTROL_TYPES = {
    "anime line art": "lllyasviel/control_v11p_sd15s2_lineart_anime",
    "canny": "lllyasviel/control_v11p_sd15_canny",
    "scribble": "lllyasviel/control_v11p_sd15_scribble",
}
DEFAULT_CONTROL = "anime line art"

# The thesis's examples (seed 001, Figs. 4.3, 4.4 and 5.3).
EXAMPLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "The young wizard (4 panels)": ("anime style, 1boy, young wizard, ", (
        "A young wizard stands in a lush forest, holding a magical staff.",
        "The wizard finds a blue high tall hat and put it on.",
        "The wizard encounters a mystical creature. They engage in a friendly conversation.",
        "As the wizard touches the mystical creature, he turns into crystal.")),
    "1boy on a bench (cumulative tags)": ("", (
        "1boy, outdoors,",
        "1boy, outdoors, sitting, on a bench",
        "1boy, outdoors, sitting, on a bench, surrounded by flowers",
        "1boy, outdoors, sitting, on a bench, surrounded by flowers, in a rainy day")),
    "A little girl (1 panel, erase the window)": ("", ("a little girl sitting next to a table",)),
}


@dataclass(frozen=True)
class LineSettings:
    """How clean lines are taken from a drawn sketch: adaptive threshold (block size, C) or Canny (thresholds)."""

    method: str = "adaptive"
    block_size: int = 15
    c: int = 8
    canny_low: int = 100
    canny_high: int = 200


@dataclass(frozen=True)
class SketchRequest:
    prompts: tuple[str, ...]
    prefix: str = ""
    model: str = "tiny:sd15"
    seed: int = 0
    steps: int = DEFAULT_SKETCH_STEPS
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    width: int = 512
    height: int = 512
    clip_skip: int = 2
    lines: LineSettings = LineSettings()


@dataclass(frozen=True)
class MemorySettings:
    """MAGA, our formulation (memory.py): on or off, from block L and step S (of 50, scaled), scope, sampling."""

    enabled: bool = True
    start_layer: int = DEFAULT_START_LAYER
    start_step_of_50: int = DEFAULT_START_STEP_OF_50
    scope: str = "all"
    sample_ratio: float = 1.0


@dataclass(frozen=True)
class StoryboardRequest:
    prompts: tuple[str, ...]
    sketches: tuple[Any, ...] = ()  # one per panel: a PIL sketch (black lines on white) or None (text only)
    prefix: str = ""  # the shared character/style description, put before every panel's prompt
    negative_prompt: str = FRAME_NEGATIVE
    model: str = "tiny:sd15"
    control: str = DEFAULT_CONTROL  # a CONTROL_TYPES name, or a ControlNet source ("tiny:controlnet", a folder)
    control_scale: float = 1.0
    seed: int = 0
    steps: int = DEFAULT_STEPS
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    schedule: str = "Automatic"
    width: int = 512
    height: int = 512
    clip_skip: int = 2
    memory: MemorySettings = MemorySettings()
    memory_preset: str = "auto"

    def panel_prompts(self) -> tuple[str, ...]:
        return tuple(with_prefix(self.prefix, prompt) for prompt in self.prompts)


def with_prefix(prefix: str, prompt: str) -> str:
    """The character line, then the panel's prompt, with a comma between them unless the character line already
    ends in a separator ("anime style" + "she wakes up" -> "anime style, she wakes up")."""
    prefix, prompt = str(prefix).strip(), str(prompt).strip()
    if not prefix or not prompt:
        return prefix or prompt
    return f"{prefix} {prompt}" if prefix.endswith((",", ".", ";", ":", "BREAK")) else f"{prefix}, {prompt}"


def _check_panels(prompts: tuple[str, ...]) -> list[str]:
    problems = []
    if not MIN_PANELS <= len(prompts) <= MAX_PANELS:
        problems.append(f"A storyboard has {MIN_PANELS} to {MAX_PANELS} panels; got {len(prompts)}.")
    empty = [str(index + 1) for index, prompt in enumerate(prompts) if not str(prompt).strip()]
    if empty:
        problems.append(f"Panel {', '.join(empty)} has no prompt: write what happens in it.")
    return problems


def _check_size(width: int, height: int) -> list[str]:
    problems = []
    for name, value in (("Width", width), ("Height", height)):
        if not MIN_SIZE <= int(value) <= MAX_SIZE or int(value) % SIZE_STEP:
            problems.append(f"{name} must be a multiple of {SIZE_STEP} from {MIN_SIZE} to {MAX_SIZE}, got {value}.")
    return problems


def check_sketches(request: SketchRequest) -> list[str]:
    problems = _check_panels(request.prompts) + _check_size(request.width, request.height)
    lines = request.lines
    if lines.method not in LINE_METHODS:
        problems.append(f"Unknown line method {lines.method!r}; use {' or '.join(LINE_METHODS)}.")
    if lines.block_size < 3 or lines.block_size % 2 == 0:
        problems.append(f"The adaptive block size must be an odd number of at least 3, got {lines.block_size}.")
    if not 0 <= lines.canny_low < lines.canny_high <= 1000:
        problems.append("Canny thresholds must satisfy 0 ≤ low < high ≤ 1000.")
    return problems


def check(request: StoryboardRequest) -> list[str]:
    problems = _check_panels(request.prompts) + _check_size(request.width, request.height)
    if request.sketches and len(request.sketches) != len(request.prompts):
        problems.append(f"There are {len(request.sketches)} sketches for {len(request.prompts)} panels.")
    memory = request.memory
    if memory.scope not in SCOPES:
        problems.append(f"Unknown memory scope {memory.scope!r}; use one of {', '.join(SCOPES)}.")
    if not 0 <= memory.start_layer < SD15_TRANSFORMER_BLOCKS:
        problems.append(f"The start block must be from 0 to {SD15_TRANSFORMER_BLOCKS - 1}, got {memory.start_layer}.")
    if not 0 <= memory.start_step_of_50 <= 50:
        problems.append(f"The start step must be from 0 to 50 (of 50), got {memory.start_step_of_50}.")
    if not 0 < memory.sample_ratio <= 1:
        problems.append(f"The memory sampling ratio must be above 0 and at most 1, got {memory.sample_ratio}.")
    if not 0 <= request.control_scale <= 2:
        problems.append(f"The sketch's conditioning scale must be from 0 to 2, got {request.control_scale}.")
    return problems + _refused_sources(request)


def _refused_sources(request: StoryboardRequest) -> list[str]:
    """A model or ControlNet a multi-user server does not offer is refused up front, even when no sketch would
    make the ControlNet load (the core's one source gate, core.loader.check_source)."""
    from pipelines.core.loader import ModelLoadError, check_source

    problems = []
    for source in (request.model, CONTROL_TYPES.get(request.control, request.control)):
        try:
            check_source(str(source))
        except ModelLoadError as err:
            problems.append(str(err))
    return problems
