"""Stage 2: the frames, drawn over the sketches by the diffusion core with cross-frame memory attention.

All panels denoise in one batch (lockstep, panel i with seed + i), which is what MAGA's causal frame order needs
(memory.py). A panel without a sketch is drawn from its text alone: its ControlNet residuals are zeroed for that
panel only, by a forward hook held for the call. The memory attention goes onto the shared cached UNet only
inside the pipeline's call lock and comes off again after.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import UserError

from .request import CONTROL_TYPES, StoryboardRequest, check

if TYPE_CHECKING:
    from PIL import Image

    from pipelines.core.jobs import CancelToken, ProgressCallback
    from pipelines.diffusion.generate import GenerateOutput, GenerateRequest


@dataclass
class StoryboardOutput:
    frames: list[Image.Image]
    prompts: list[str]
    seeds: list[int]
    seconds: float
    seconds_per_frame: float
    peak_memory_mb: float  # CUDA: peak allocated; CPU: the process's peak resident memory
    memory_on: bool
    notes: list[str] = field(default_factory=list)
    test_model: bool = False
    generated: GenerateOutput | None = None  # the core's output (infotexts, models) for saving and records


def control_source(control: str) -> str:
    """A CONTROL_TYPES name -> its hub id; anything else is a ControlNet source as given."""
    return CONTROL_TYPES.get(control, control)


def _control_kind(control: str) -> str:
    return control if control in CONTROL_TYPES else ("canny" if "canny" in control.lower() else "anime line art")


def frames_request(request: StoryboardRequest, notes: list[str]) -> GenerateRequest:
    """The diffusion core's request for all panels at once (sketches as the ControlNet's per-panel images)."""
    from PIL import Image

    from pipelines.diffusion.generate import ControlUnit, GenerateRequest

    from .sketches import control_image

    sketches = list(request.sketches) or [None] * len(request.prompts)
    missing = [index for index, sketch in enumerate(sketches) if sketch is None]
    units: tuple[ControlUnit, ...] = ()
    if len(missing) < len(sketches):
        kind = _control_kind(request.control)
        blank = Image.new("RGB", (request.width, request.height), "black")
        images = tuple(blank if sketch is None else control_image(sketch, kind) for sketch in sketches)
        units = (ControlUnit(control_source(request.control), images, scale=float(request.control_scale),
                             module=kind),)
    if missing:
        panels = ", ".join(str(index + 1) for index in missing)
        notes.append(f"Panel {panels} has no sketch, so it is drawn from its text alone.")
    return GenerateRequest(prompts=request.panel_prompts(), negative_prompt=request.negative_prompt,
                           model=request.model, sampler=request.sampler, schedule=request.schedule,
                           steps=int(request.steps), cfg_scale=float(request.cfg_scale), seed=int(request.seed),
                           batch_size=len(request.prompts), width=int(request.width), height=int(request.height),
                           clip_skip=int(request.clip_skip), controlnets=units, memory=request.memory_preset)


@contextlib.contextmanager
def _text_only_panels(controlnet: Any, panels: Sequence[int], frames: int) -> Iterator[None]:
    """Zero the ControlNet's residuals for `panels` (its batch is [uncond frames | cond frames])."""
    if controlnet is None or not panels:
        yield
        return

    def zero_panels(_module: Any, _inputs: Any, output: Any) -> Any:
        down, mid = output[0], output[1]
        keep = _panel_mask(panels, frames, down[0].shape[0], down[0])
        return ([sample * keep for sample in down], mid * keep, *output[2:])

    handle = controlnet.register_forward_hook(zero_panels)
    try:
        yield
    finally:
        handle.remove()


def _panel_mask(panels: Sequence[int], frames: int, batch: int, like: Any) -> Any:
    import torch

    mask = torch.ones(frames, dtype=like.dtype, device=like.device)
    mask[list(panels)] = 0
    return mask.repeat(batch // frames).view(-1, 1, 1, 1)


def generate_storyboard(request: StoryboardRequest, *, callback: ProgressCallback | None = None,
                        cancel: CancelToken | None = None, run: Any = None) -> StoryboardOutput:
    """The frames. `run`, if given, replaces the core's `generate` (diffusion.runs.run_generate for a recorded
    run) and must take the same arguments plus return (anything, GenerateOutput) — see runs.py."""
    from pipelines.diffusion.generate import call_lock, generate
    from pipelines.diffusion.models import controlnet_for, load_pipeline

    from .memory import FrameMemory, frame_attention, memory_layers, scaled_start_layer, scaled_start_step

    problems = check(request)
    if problems:
        raise UserError(" ".join(problems))
    notes: list[str] = []
    core_request = frames_request(request, notes)
    pipe = load_pipeline(request.model, memory=request.memory_preset)
    controlnet = controlnet_for(pipe, core_request.controlnets[0].model) if core_request.controlnets else None
    missing = [index for index, sketch in enumerate(request.sketches) if sketch is None]
    settings = request.memory
    memory = FrameMemory(frames=len(request.prompts), guided=float(request.cfg_scale) > 1,
                         layers=memory_layers(pipe.unet, scaled_start_layer(pipe.unet, settings.start_layer)),
                         start_step=scaled_start_step(int(request.steps), settings.start_step_of_50),
                         scope=settings.scope, sample_ratio=settings.sample_ratio,
                         rng=_rng(request.seed)) if settings.enabled else None
    started = time.perf_counter()
    _reset_peak_memory()
    with call_lock(pipe), frame_attention(pipe.unet), _text_only_panels(controlnet, missing, len(request.prompts)):
        kwargs = {"callback": callback, "cancel": cancel, "state": memory,
                  "cross_attention_kwargs": {"memory": memory} if memory else None}
        output = run(core_request, **kwargs)[1] if run is not None else generate(core_request, **kwargs)
    seconds = time.perf_counter() - started
    return StoryboardOutput(frames=output.images, prompts=output.prompts, seeds=output.seeds, seconds=seconds,
                            seconds_per_frame=seconds / len(request.prompts), peak_memory_mb=_peak_memory_mb(pipe),
                            memory_on=memory is not None, notes=notes + output.notes, test_model=output.test_model,
                            generated=output)


def _rng(seed: int) -> Any:
    from pipelines.core.seeds import cpu_generator

    return cpu_generator(int(seed))


def _reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_mb(pipe: Any) -> float:
    import resource

    import torch

    if getattr(pipe.device, "type", "cpu") == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
