"""Stage 2: the frames, drawn over the sketches by the diffusion core with cross-frame memory attention.

All panels denoise in one batch (lockstep, panel i with seed + i), which is what MAGA's causal frame order needs
(memory.py). A panel without a sketch is drawn from its text alone: its ControlNet residuals are zeroed for that
panel only, by a forward hook held for the call (the ControlNet is cached per source and may serve several base
pipelines at once, so the hook acts only in the thread that holds it). The memory attention goes onto the shared
cached UNet only inside the pipeline's call lock and comes off again after.

The memory preset is resolved once ("auto" looks at free GPU memory, which may change between two loads), the
pipeline loaded with it is the one the processors go on, and that same pipeline draws the frames; a call in which
the memory should have acted and did not fails rather than return frames without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import UserError

from .memory import DEFAULT_BANK_RAM_MB
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


def resolved_preset(preset: str) -> str:
    """The memory preset "auto" stands for now (decided once per storyboard, so every load gets the same one)."""
    if preset != "auto":
        return preset
    from pipelines.core import devices
    from pipelines.core.loader import choose_memory_preset

    return choose_memory_preset(devices.resolve_device())


@contextlib.contextmanager
def _text_only_panels(controlnet: Any, panels: Sequence[int], frames: int) -> Iterator[None]:
    """Zero the ControlNet's residuals for `panels` (its batch is [uncond frames | cond frames])."""
    if controlnet is None or not panels:
        yield
        return

    owner = threading.get_ident()

    def zero_panels(_module: Any, _inputs: Any, output: Any) -> Any:
        if threading.get_ident() != owner:  # another pipeline's call on the shared ControlNet: not ours to change
            return None
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
    """The frames: all panels in one lockstep batch, or, when that runs out of device memory, in smaller chunks
    (halved until they fit) that pass the memory on through a key/value bank — the same frames either way.
    `run`, if given, records the call (diffusion.runs.run_generate): it gets the core request, `produce` (what
    draws it) and the progress/cancel hooks, and returns (anything, GenerateOutput) — see runs.py."""
    from pipelines.diffusion.models import controlnet_for, load_pipeline

    problems = check(request)
    if problems:
        raise UserError(" ".join(problems))
    notes: list[str] = []
    core_request = dataclasses.replace(frames_request(request, notes), memory=resolved_preset(request.memory_preset))
    pipe = load_pipeline(request.model, memory=core_request.memory)
    controlnet = controlnet_for(pipe, core_request.controlnets[0].model) if core_request.controlnets else None
    drawer = _FrameDrawer(request, pipe, controlnet, notes)
    started = time.perf_counter()
    _reset_peak_memory()
    if run is not None:
        output = run(core_request, produce=drawer.draw, callback=callback, cancel=cancel)[1]
    else:
        output = drawer.draw(core_request, callback=callback, cancel=cancel)
    seconds = time.perf_counter() - started
    return StoryboardOutput(frames=output.images, prompts=output.prompts, seeds=output.seeds, seconds=seconds,
                            seconds_per_frame=seconds / len(request.prompts), peak_memory_mb=_peak_memory_mb(pipe),
                            memory_on=request.memory.enabled, notes=notes + output.notes,
                            test_model=output.test_model, generated=output)


@dataclass
class _FrameDrawer:
    """Draws a storyboard's core request, in chunks when the device's memory is short (one per call)."""

    request: StoryboardRequest
    pipe: Any
    controlnet: Any
    notes: list[str]
    chunk: int = 0  # frames per call; 0: all at once
    bank_ram_mb: float = DEFAULT_BANK_RAM_MB  # RAM for earlier chunks' keys and values; the rest goes to disk
    bank: Any = None  # the last draw's KeyValueBank (closed; its byte counts stay), for the notes and the bench

    def draw(self, core_request: GenerateRequest, *, callback: ProgressCallback | None = None,
             cancel: CancelToken | None = None, **_unused: Any) -> GenerateOutput:
        from pipelines.diffusion.generate import DeviceOutOfMemory

        frames = len(core_request.prompts)
        self.chunk = self.chunk or frames
        while True:
            try:
                output = self._draw_in_chunks(core_request, callback, cancel)
            except DeviceOutOfMemory:
                if self.chunk == 1:
                    raise
                self.chunk = (self.chunk + 1) // 2
                _free_device_memory()
                continue
            if self.chunk < frames:
                self.notes.append(f"The device ran out of memory drawing {frames} frames at once, so they were "
                                  f"drawn {self.chunk} at a time (the memory attention carries over between "
                                  "chunks, so the frames are the same; it takes longer).")
            return output

    def _draw_in_chunks(self, core_request: GenerateRequest, callback: ProgressCallback | None,
                        cancel: CancelToken | None) -> GenerateOutput:
        from pipelines.diffusion.generate import call_lock, generate

        from .memory import KeyValueBank, frame_attention

        frames, outputs = len(core_request.prompts), []
        bank = self.bank = KeyValueBank(self.bank_ram_mb,
                                        device="cpu" if getattr(self.pipe.device, "type", "cpu") != "cpu" else None)
        with contextlib.closing(bank), call_lock(self.pipe), frame_attention(self.pipe.unet):
            for first in range(0, frames, self.chunk):
                last = min(first + self.chunk, frames)
                memory = self._memory(first, last, frames, bank)
                with _text_only_panels(self.controlnet, self._missing(first, last), last - first):
                    outputs.append(generate(_chunk_request(core_request, first, last),
                                            callback=_chunk_progress(callback, first, last, frames), cancel=cancel,
                                            state=memory, pipe=self.pipe,
                                            cross_attention_kwargs={"memory": memory} if memory else None))
                _check_memory_acted(memory, int(self.request.steps))
            if bank.disk_bytes:
                self.notes.append(f"The earlier frames' attention memory outgrew its {self.bank_ram_mb:g} MB of RAM: "
                                  f"at most {bank.peak_ram_bytes / 2**20:.0f} MB stayed in RAM and "
                                  f"{bank.disk_bytes / 2**20:.0f} MB went to a temporary file (same frames, slower; "
                                  "deleted now).")
        return outputs[0] if len(outputs) == 1 else _joined(outputs)

    def _memory(self, first: int, last: int, frames: int, bank: Any) -> Any:
        from .memory import FrameMemory, memory_layers, scaled_start_layer, scaled_start_step

        settings = self.request.memory
        if not settings.enabled:
            return None
        unet = self.pipe.unet
        return FrameMemory(frames=last - first, guided=float(self.request.cfg_scale) > 1,
                           layers=memory_layers(unet, scaled_start_layer(unet, settings.start_layer)),
                           start_step=scaled_start_step(int(self.request.steps), settings.start_step_of_50),
                           scope=settings.scope, sample_ratio=settings.sample_ratio, seed=int(self.request.seed),
                           first_frame=first, keep=last < frames, bank=bank)

    def _missing(self, first: int, last: int) -> list[int]:
        return [index - first for index, sketch in enumerate(self.request.sketches)
                if sketch is None and first <= index < last]


def _check_memory_acted(memory: Any, steps: int) -> None:
    """Fail loudly when the memory attention should have run and never did (its processors were not on the
    pipeline that drew the frames): frames without it must not pass for frames with it."""
    if memory is None or not memory.layers or memory.start_step >= steps or memory.attended:
        return
    raise RuntimeError("The memory attention did not act on the pipeline that drew the frames (its processors were "
                       "not installed there); nothing was saved. Please try again.")


def _chunk_request(core_request: GenerateRequest, first: int, last: int) -> GenerateRequest:
    """Frames first…last-1 of the request: their prompts and sketches, and the seeds they have in the whole batch
    (the core gives image i the seed + i)."""
    if (first, last) == (0, len(core_request.prompts)):
        return core_request
    units = tuple(dataclasses.replace(unit, image=tuple(unit.image)[first:last]) for unit in core_request.controlnets)
    return dataclasses.replace(core_request, prompts=core_request.prompts[first:last], batch_size=last - first,
                               seed=int(core_request.seed) + first, controlnets=units)


def _chunk_progress(callback: ProgressCallback | None, first: int, last: int,
                    frames: int) -> ProgressCallback | None:
    """A chunk's step progress as progress over the whole storyboard."""
    if callback is None or (first, last) == (0, frames):
        return callback

    def report(done: int, total: int, message: str) -> None:
        callback(first * total + done * (last - first), frames * total,
                 f"frames {first + 1}–{last} of {frames}: {message}")

    return report


def _joined(outputs: list[GenerateOutput]) -> GenerateOutput:
    head = outputs[0]
    notes = list(dict.fromkeys(note for output in outputs for note in output.notes))
    return dataclasses.replace(
        head, images=[image for output in outputs for image in output.images],
        seeds=[seed for output in outputs for seed in output.seeds],
        infotexts=[info for output in outputs for info in output.infotexts],
        prompts=[prompt for output in outputs for prompt in output.prompts],
        seconds=sum(output.seconds for output in outputs), notes=notes)


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
