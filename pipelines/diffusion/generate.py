"""Text-to-image (with optional ControlNets, LoRAs and embeddings) the way A1111 users expect it to behave.

`generate(request)` in the stages DESIGN.md lays out: check the request before any model loads, load (cached),
encode the prompts with A1111's rules, build the conditions, denoise with the step hook, decode, and return a
dataclass. Seeds follow A1111's CPU RNG source: image i of a batch starts from noise drawn on the CPU from
seed + i and its sampler noise comes from the same generator, so it equals generating seed + i alone, on any
device. Nothing here changes the shared cached pipeline: LoRAs come off again after the call, embeddings go in
through a hook for the call only, and the scheduler and ControlNets live on a per-call copy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import UserError
from pipelines.core.seeds import MAX_SEED

from .prompts import MAX_LORA_WEIGHT, extract_lora_tags

if TYPE_CHECKING:
    from PIL import Image

    from pipelines.core.jobs import CancelToken, ProgressCallback

    from .ip_adapter import LoadedAdapter, ReferenceImage
    from .steps import LatentsCallback, PreviewCallback

MIN_SIZE, MAX_SIZE, SIZE_STEP = 64, 2048, 8
MIN_STEPS, MAX_STEPS = 1, 150
MIN_CFG, MAX_CFG = 1.0, 30.0
MAX_BATCH = 8
MAX_CLIP_SKIP = 12
MAX_CONTROLNETS = 3


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet: its model, its condition image (already preprocessed), scale and active fraction."""

    model: str
    image: Any  # a PIL image, or one per image of the batch (a tuple: a storyboard's sketches)
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    module: str = "none"  # the preprocessor that made the image (A1111's "Module"), for the infotext


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str = ""
    negative_prompt: str = ""
    prompts: tuple[str, ...] = ()  # one prompt per image instead of `prompt` (batch_size = their number)
    model: str = "tiny:sd15"
    vae: str | None = None
    sampler: str = "DPM++ 2M"
    schedule: str = "Karras"
    steps: int = 25
    cfg_scale: float = 7.0
    seed: int = 0
    batch_size: int = 1
    width: int = 512
    height: int = 512
    clip_skip: int = 1
    loras: tuple[tuple[str, float], ...] = ()  # (name or .safetensors path, weight), besides <lora:…> tags
    controlnets: tuple[ControlUnit, ...] = ()
    reference: ReferenceImage | None = None  # IP-Adapter: a reference image the output takes after
    memory: str = "auto"


@dataclass
class GenerateOutput:
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[dict[str, Any]]  # A1111 settings per image (their seeds differ)
    prompt: str  # as written into the PNGs (with <lora:…> tags for LoRAs given outside it); the first image's
    negative_prompt: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    test_model: bool = False
    models: list[dict[str, Any]] = field(default_factory=list)  # for the run record
    device: str = ""
    prompts: list[str] = field(default_factory=list)  # each image's prompt as written


def check(request: GenerateRequest) -> list[str]:
    """Plain messages for every problem in the request; empty when it can run. Loads nothing."""
    from .ip_adapter import check_reference
    from .samplers import check_sampler

    problems = check_sampler(request.sampler, request.schedule) + check_reference(request.reference)
    for name, value in (("Width", request.width), ("Height", request.height)):
        if not MIN_SIZE <= int(value) <= MAX_SIZE:
            problems.append(f"{name} must be between {MIN_SIZE} and {MAX_SIZE} px, got {value}.")
        elif int(value) % SIZE_STEP:
            problems.append(f"{name} must be a multiple of {SIZE_STEP} (the VAE works in 8-pixel blocks), got "
                            f"{value}; {int(value) // SIZE_STEP * SIZE_STEP} would work.")
    if not MIN_STEPS <= int(request.steps) <= MAX_STEPS:
        problems.append(f"Steps must be between {MIN_STEPS} and {MAX_STEPS}, got {request.steps}.")
    if not MIN_CFG <= float(request.cfg_scale) <= MAX_CFG:
        problems.append(f"CFG scale must be between {MIN_CFG:g} and {MAX_CFG:g}, got {request.cfg_scale}.")
    if not 0 <= int(request.seed) <= MAX_SEED:
        problems.append(f"Seed must be between 0 and {MAX_SEED}, got {request.seed}.")
    if not 1 <= int(request.batch_size) <= MAX_BATCH:
        problems.append(f"Batch size must be between 1 and {MAX_BATCH}, got {request.batch_size}.")
    elif int(request.seed) + max(int(request.batch_size), 1) - 1 > MAX_SEED:
        problems.append(f"Seed + batch size goes past the largest seed ({MAX_SEED}).")
    if not 1 <= int(request.clip_skip) <= MAX_CLIP_SKIP:
        problems.append(f"Clip skip must be between 1 and {MAX_CLIP_SKIP}, got {request.clip_skip}.")
    if request.prompts and request.prompt.strip():
        problems.append("Give either one prompt for every image or a prompt per image, not both.")
    if request.prompts and len(request.prompts) != int(request.batch_size):
        problems.append(f"There are {len(request.prompts)} prompts for {request.batch_size} images; give one each.")
    if len(request.controlnets) > MAX_CONTROLNETS:
        problems.append(f"At most {MAX_CONTROLNETS} ControlNets at once, got {len(request.controlnets)}.")
    for index, unit in enumerate(request.controlnets):
        if unit.image is None:
            problems.append(f"ControlNet {index}: it has no condition image.")
        elif isinstance(unit.image, (tuple, list)) and len(unit.image) != int(request.batch_size):
            problems.append(f"ControlNet {index}: {len(unit.image)} condition images for {request.batch_size} "
                            "images; give one each, or one for all.")
        if not 0.0 <= float(unit.scale) <= 2.0:
            problems.append(f"ControlNet {index}: conditioning scale must be between 0 and 2, got {unit.scale}.")
        if not 0.0 <= float(unit.start) < float(unit.end) <= 1.0:
            problems.append(f"ControlNet {index}: start and end must satisfy 0 ≤ start < end ≤ 1, "
                            f"got {unit.start} and {unit.end}.")
    for name, weight in request.loras:
        if not -MAX_LORA_WEIGHT <= float(weight) <= MAX_LORA_WEIGHT:  # also refuses nan
            problems.append(f"LoRA {name}: weight must be between -{MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}.")
    problems += _prompt_tag_problems(request)
    return problems


def _prompt_tag_problems(request: GenerateRequest) -> list[str]:
    """What is wrong with the `<lora:…>` tags of the prompts (a weight past the limit, no name), before loading."""
    problems = []
    for text in dict.fromkeys([request.prompt, *request.prompts]):
        try:
            extract_lora_tags(text)
        except UserError as err:
            problems.append(str(err))
    return problems


def raise_for_problems(request: GenerateRequest) -> None:
    problems = check(request)
    if problems:
        raise UserError(" ".join(problems))


# ---------------------------------------------------------------------------------------------- stages
@dataclass
class _Resources:
    """What one call has loaded: the cached pipeline, its ControlNets, the LoRAs and embeddings it named."""

    pipe: Any
    controlnets: list[Any]
    loras: list[tuple[Any, dict, float]]
    embeddings: dict[str, Any]
    prompts: list[str]  # each image's prompt, without <lora:…> tags
    negative_prompt: str  # without them too (A1111 applies the tags of the positive prompt only)
    notes: list[str]
    adapter: LoadedAdapter | None = None  # the reference image's IP-Adapter


def _load(request: GenerateRequest, pipe: Any = None) -> _Resources:
    from .library import find_embeddings, resolve_loras
    from .models import controlnet_for, load_pipeline
    from .prompts import extract_lora_tags

    if pipe is None:
        pipe = load_pipeline(request.model, vae=request.vae, memory=request.memory)
    controlnets = [controlnet_for(pipe, unit.model) for unit in request.controlnets]
    prompts, tags = [], {}
    for text in request.prompts or [request.prompt] * int(request.batch_size):
        prompt, found = extract_lora_tags(text)
        prompts.append(prompt)
        for tag in found:  # LoRAs act on the whole batch: a name must have one weight
            if tags.setdefault(tag.name, tag.weight) != tag.weight:
                raise UserError(f"The LoRA '{tag.name}' is given two weights ({tags[tag.name]:g} and {tag.weight:g}) "
                                "in one batch; LoRAs apply to every image of it, so give it one.")
    negative, _ = extract_lora_tags(request.negative_prompt)
    loras = resolve_loras(list(tags.items()), [(name, float(w)) for name, w in request.loras])
    embeddings = find_embeddings("\n".join([*prompts, negative]))
    adapter = None
    if request.reference is not None:
        from .ip_adapter import load_adapter

        adapter = load_adapter(request.reference, pipe)
    return _Resources(pipe, controlnets, loras, embeddings, prompts, negative, [], adapter)


def _control_images(request: GenerateRequest, notes: list[str]) -> list[Any]:
    """Condition images at the output size; a different size is stretched to it (sd-webui-controlnet's "Just
    Resize": a sketch drawn for this frame keeps every line) and the user told."""

    images = []
    for index, unit in enumerate(request.controlnets):
        given = list(unit.image) if isinstance(unit.image, (tuple, list)) else [unit.image]
        what = "The guide image (sketch, pose or points)" if len(request.controlnets) == 1 else \
            f"The guide image of ControlNet {index + 1}"
        fitted = [_fit(image, request, what, notes) for image in given]
        images.append(fitted if isinstance(unit.image, (tuple, list)) else fitted[0])
    return images


def _fit(image: Any, request: GenerateRequest, what: str, notes: list[str]) -> Any:
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (request.width, request.height):
        # In words a visitor knows: which image, and what stretching means for it.
        note = (f"{what} was {image.width}×{image.height} px and was resized to the picture's "
                f"{request.width}×{request.height} px (stretched, so its proportions may have changed).")
        if note not in notes:
            notes.append(note)
        image = image.resize((request.width, request.height), Image.LANCZOS)
    return image


def _initial_noise(request: GenerateRequest, pipe: Any) -> tuple[Any, list[Any]]:
    """Latents drawn on the CPU from seed + i, and the same generators for the sampler's own noise."""
    import torch

    from pipelines.core.seeds import cpu_generator

    scale = getattr(pipe, "vae_scale_factor", 8)
    channels = pipe.unet.config.in_channels
    shape = (1, channels, request.height // scale, request.width // scale)
    generators = [cpu_generator(int(request.seed) + index) for index in range(int(request.batch_size))]
    latents = torch.cat([torch.randn(shape, generator=generator, dtype=torch.float32) for generator in generators])
    return latents.to(device=pipe.device, dtype=pipe.dtype), generators


def _embeds_for_batch(embeds: Any) -> dict[str, Any]:
    """Pipeline keyword arguments from a batch of prompt embeddings (one row per image)."""
    kwargs = {"prompt_embeds": embeds.cond, "negative_prompt_embeds": embeds.uncond}
    if getattr(embeds, "cond_pooled", None) is not None:  # SDXL
        kwargs["pooled_prompt_embeds"] = embeds.cond_pooled
        kwargs["negative_pooled_prompt_embeds"] = embeds.uncond_pooled
    return kwargs


def _control_kwargs(request: GenerateRequest, images: list[Any]) -> dict[str, Any]:
    if not images:
        return {}
    units = request.controlnets
    single = len(units) == 1
    return {"image": images[0] if single else images,
            "controlnet_conditioning_scale": float(units[0].scale) if single else [float(u.scale) for u in units],
            "control_guidance_start": [float(u.start) for u in units],
            "control_guidance_end": [float(u.end) for u in units]}


def _reference_kwargs(request: GenerateRequest) -> dict[str, Any]:
    if request.reference is None:
        return {}
    return {"ip_adapter_image": request.reference.image.convert("RGB")}


def generate(request: GenerateRequest, *, callback: ProgressCallback | None = None,
             cancel: CancelToken | None = None, on_preview: PreviewCallback | None = None,
             preview_every: int = 0, state: Any = None,
             cross_attention_kwargs: Mapping[str, Any] | None = None,
             on_latents: LatentsCallback | None = None, pipe: Any = None) -> GenerateOutput:
    """Generate `request.batch_size` images. `state` and `cross_attention_kwargs` let a method (storyboard's
    MAGA) carry per-call state into its attention processors; the step hook moves `state.step` on. `pipe`: the
    cached pipeline to draw with when the caller already loaded it for this request (and put its processors on
    it); otherwise it is loaded here."""
    from . import steps
    from .ip_adapter import applied_ip_adapter
    from .lora import applied_loras
    from .models import base_of, pipeline_for_call
    from .prompts import encode_prompt_batch
    from .samplers import make_scheduler

    raise_for_problems(request)
    started = time.perf_counter()
    res = _load(request, pipe)
    control_images = _control_images(request, res.notes)
    seeds = seeds_for(request)
    scheduler = make_scheduler(request.sampler, request.schedule, res.pipe.scheduler.config, seeds=seeds)
    call_pipe = pipeline_for_call(res.pipe, scheduler, res.controlnets)
    latents, generators = _initial_noise(request, res.pipe)
    # total=None: the hook reads the pipeline's own count, which second-order samplers (Heun, DPM2, DPM++ SDE)
    # make about twice the steps; `state.step` counts sampler steps, `state.unet_pass` UNet passes.
    step_hook = steps.hook(callback, cancel, state, total=None, preview_every=preview_every,
                           on_preview=on_preview, sdxl=base_of(res.pipe) == "sdxl", on_latents=on_latents)
    # The lock: LoRAs and an IP-Adapter go into the shared cached modules for this call, so calls on one pipeline
    # take turns.
    reference_scale = float(request.reference.scale) if request.reference is not None else 0.0
    with (call_lock(res.pipe), _plain_out_of_memory(request), applied_loras(res.pipe, res.loras),
          applied_ip_adapter(call_pipe, res.adapter, reference_scale)):
        embeds = encode_prompt_batch(res.pipe, res.prompts, res.negative_prompt,
                                     clip_skip=int(request.clip_skip), embeddings=res.embeddings)
        images = call_pipe(**_embeds_for_batch(embeds), **_control_kwargs(request, control_images),
                           **_reference_kwargs(request),
                           num_inference_steps=int(request.steps), guidance_scale=float(request.cfg_scale),
                           width=int(request.width), height=int(request.height), latents=latents,
                           generator=generators, callback_on_step_end=step_hook,
                           cross_attention_kwargs=dict(cross_attention_kwargs) if cross_attention_kwargs else None,
                           output_type="pil").images
    seconds = time.perf_counter() - started
    return _output(request, res, images, seeds, seconds)


def call_lock(pipe: Any) -> Any:
    """The lock the core loader gave this pipeline (a pipeline built elsewhere gets none)."""
    return getattr(pipe, "asl_lock", None) or contextlib.nullcontext()


@contextlib.contextmanager
def _plain_out_of_memory(request: GenerateRequest) -> Iterator[None]:
    """Out-of-memory errors become a message that names the setting to change."""
    try:
        yield
    except Exception as err:
        if not _is_out_of_memory(err):
            raise
        raise DeviceOutOfMemory(
            f"The device ran out of memory generating {request.batch_size} image(s) at {request.width}×"
            f"{request.height}. Set Memory to 'low' (attention slicing, VAE tiling) or 'lowest' (also moves "
            "idle models to the CPU), or use a smaller size or batch.") from err


class DeviceOutOfMemory(UserError):
    """The device ran out of memory during a call; the message names the setting to change. A method that can
    do the work in smaller pieces (storyboard's chunks) catches this one."""


def _is_out_of_memory(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _output(request: GenerateRequest, res: _Resources, images: list[Any], seeds: list[int],
            seconds: float) -> GenerateOutput:
    from pipelines.core import devices
    from pipelines.core.loader import model_info

    from .library import installed
    from .models import describe_source
    from .output import embedding_short_hash, infotext_settings
    from .samplers import effective_schedule, split_sampler_name

    adapter_models = [res.adapter.image_encoder] if res.adapter is not None else []
    models = [model_info(model).as_record() for model in (res.pipe, *res.controlnets, *adapter_models)]  # cached
    test_model = any(model["test_model"] for model in models)
    source = describe_source(request.model)
    loras = [(lora_file.name, lora_file.short_hash) for lora_file, _, _ in res.loras]
    embedding_files = installed("embedding") if res.embeddings else {}
    embeddings = [(name, embedding_short_hash(embedding_files[name])) for name in res.embeddings]
    controlnets = [{"module": unit.module, "model": Path(unit.model).stem if Path(unit.model).suffix else unit.model,
                    "weight": unit.scale, "start": unit.start, "end": unit.end} for unit in request.controlnets]
    extra = {"VAE": Path(request.vae).name if request.vae else None,
             "Test model": "random weights, output is noise" if test_model else None,
             "IP-Adapter": (f"{res.adapter.name} ({Path(request.reference.model).name}), weight "
                            f"{float(request.reference.scale):g}") if res.adapter is not None else None}
    sampler = split_sampler_name(request.sampler)[0]
    schedule = effective_schedule(request.sampler, request.schedule)
    infotexts = [infotext_settings(steps=int(request.steps), sampler=sampler, schedule=schedule,
                                   cfg_scale=float(request.cfg_scale), seed=seed, width=int(request.width),
                                   height=int(request.height), model_name=source["name"],
                                   model_hash=_model_hash(source["file"]), clip_skip=int(request.clip_skip),
                                   loras=loras, controlnets=controlnets, extra=extra, embeddings=embeddings)
                 for seed in seeds]
    written = [_prompt_as_written(text, request.loras) for text in request.prompts or [request.prompt] * len(seeds)]
    return GenerateOutput(images=list(images), seeds=seeds, infotexts=infotexts, prompt=written[0], prompts=written,
                          negative_prompt=request.negative_prompt, seconds=seconds, notes=res.notes,
                          test_model=test_model, models=models,
                          device=devices.describe(res.pipe.device, res.pipe.dtype))


def _prompt_as_written(prompt: str, loras: tuple[tuple[str, float], ...]) -> str:
    """The prompt with a `<lora:name:w>` tag for each LoRA given outside it, so that A1111, Civitai and our own
    PNG reader repeat the image with them."""
    tags = [f"<lora:{Path(name).stem}:{float(weight):g}>" for name, weight in loras]
    return ", ".join(part for part in (prompt.strip(), " ".join(tags)) if part) if tags else prompt


def _model_hash(path: str | None) -> str | None:
    if not path:
        return None
    from .output import file_short_hash

    return file_short_hash(path)


def request_from_settings(params: Mapping[str, Any]) -> GenerateRequest:
    """A request from stored run parameters (a run record), ignoring keys it does not know."""
    import dataclasses

    known = {item.name for item in dataclasses.fields(GenerateRequest)}
    values = {key: value for key, value in params.items() if key in known and key not in ("controlnets", "reference")}
    if "loras" in values:
        values["loras"] = tuple((str(name), float(weight)) for name, weight in values["loras"])
    if "prompts" in values:
        values["prompts"] = tuple(str(text) for text in values["prompts"])
    return GenerateRequest(**values)


def seeds_for(request: GenerateRequest) -> list[int]:
    return [int(request.seed) + index for index in range(int(request.batch_size))]


# Infotext keys read but not repeated, with the reason shown to the user.
_HIRES = "hires-fix passes are not repeated"
_NOT_REPEATED = {
    "Denoising strength": "img2img and hires-fix passes are not repeated", "Hires upscale": _HIRES,
    "Hires steps": _HIRES, "Hires upscaler": _HIRES,
    "ControlNet": "ControlNet units need their condition images, which a PNG does not hold",
    "VAE": "the VAE is not taken from a PNG; choose it yourself",
    "Variation seed": "variation seeds are not supported", "Eta": "a custom eta is not supported",
    "ENSD": "A1111's eta noise seed delta is not supported",
    "RNG": "noise is always drawn on the CPU here (A1111's RNG source 'CPU')",
    "ADetailer model": "ADetailer passes are not repeated", "Refiner": "refiner passes are not repeated",
}
# Schedulers other tools name that have no A1111 schedule type here (ComfyUI's "normal"/"simple" space sigmas
# uniformly in time, which is A1111's "Uniform"; the others fall back to the sampler's own choice).
_SCHEDULE_FALLBACKS = {"normal": "Uniform", "simple": "Uniform", "sgm_uniform": "Automatic",
                       "ddim_uniform": "Automatic", "beta": "Automatic"}


def _number(settings: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = settings.get(key)
    if value in (None, ""):
        return default
    try:
        number = float(str(value).strip())
    except ValueError as err:
        raise UserError(f"The image's {key!r} setting is not a number: {value!r}.") from err
    return int(number) if kind is int else number


def _size(settings: Mapping[str, Any], default: tuple[int, int]) -> tuple[int, int]:
    text = str(settings.get("Size") or "").strip().lower()
    if not text:
        return default
    width, sep, height = text.partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise UserError(f"The image's Size setting should look like 512x768, got {text!r}.")
    return int(width), int(height)


def request_from_infotext(prompt: str, negative_prompt: str, settings: Mapping[str, Any],
                          model: str) -> tuple[GenerateRequest, list[str]]:
    """A request from the settings of a read PNG (A1111 names, values as text or numbers), for `model`.

    Returns the notes to show: what could not be repeated, and what was adapted, and why."""
    from .samplers import SCHEDULE_TYPES, split_sampler_name

    defaults, notes = GenerateRequest(), set()
    sampler = str(settings.get("Sampler") or defaults.sampler)
    schedule = str(settings.get("Schedule type") or "")
    if not schedule:  # an old infotext: the schedule may be part of the sampler's name
        sampler, schedule = split_sampler_name(sampler)
    if schedule not in SCHEDULE_TYPES:
        fallback = _SCHEDULE_FALLBACKS.get(schedule.lower(), "Automatic")
        notes.add(f"the schedule {schedule!r} is not available here; {fallback!r} is used instead")
        schedule = fallback
    seed = _number(settings, "Seed", int, None)
    if seed is None:
        notes.add("the image records no seed; seed 0 is used")
        seed = 0
    elif not 0 <= seed <= MAX_SEED:  # ComfyUI seeds go up to 2**64
        notes.add(f"its seed {seed} is beyond the largest seed here ({MAX_SEED}); {seed % (MAX_SEED + 1)} is used, "
                  "so the image will differ")
        seed %= MAX_SEED + 1
    width, height = _size(settings, (defaults.width, defaults.height))
    request = GenerateRequest(prompt=prompt or "", negative_prompt=negative_prompt or "", model=model,
                              sampler=sampler, schedule=schedule, steps=_number(settings, "Steps", int, defaults.steps),
                              cfg_scale=_number(settings, "CFG scale", float, defaults.cfg_scale), seed=seed,
                              width=width, height=height, clip_skip=_number(settings, "Clip skip", int, 1))
    for key in settings:
        reason = next((text for prefix, text in _NOT_REPEATED.items() if str(key).startswith(prefix)), None)
        if reason:
            notes.add(f"{reason} ({key})")
    if settings.get("Lora hashes") and "<lora:" not in (prompt or ""):
        notes.add("the image lists LoRAs (Lora hashes) but its prompt has no <lora:…> tags; add them to use them")
    return request, sorted(notes)
