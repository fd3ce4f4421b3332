"""Sampling the multi-scale model: variations, the image at every scale, reconstruction and text edits.

Each scale runs the reverse of model.py's forward process with a DDIM update written for it (diffusers' schedulers
step a plain x_t; here the clean estimate must also be un-blended with the known coarser image, so the step is our
own): from x_t predict ε, get x̂_n = x̃_n + (m̂ − x̃_n)/(1 − γ_t), re-blend at t_prev, add the noise (eta = 1 is
DDPM-like, 0 deterministic). The coarsest scale starts from pure noise; a finer one from its blurred input x̃_n
noised to T_n. Noise is drawn on the CPU from the seed (variation i uses seed + i), so a seed gives the same image
on any device.

Text edits (seed §III-D): the prompt's augmentations are encoded by CLIP and averaged (eq. 14); at every step the
clean estimate is pushed up the gradient of its CLIP similarity to that average (eq. 15) by `guidance`; with a
region mask, everything outside the region is the source at every scale and exactly the source in the output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.core.errors import UserError
from pipelines.core.jobs import CancelToken, ProgressCallback

from .model import (
    MultiScaleDenoiser,
    alphas_cumprod,
    blend_weight,
    blurred,
    clean_estimate,
    implied_noise,
    pyramid,
    resize,
)
from .request import DETAIL_CHOICES, DETAIL_GPNN, DETAIL_MODEL, MAX_COUNT, MAX_SIZE_MULTIPLIER
from .train import MILESTONES, load_milestone, tensor_image

DEFAULT_STEPS_PER_SCALE = 20
MAX_OUTPUT_PIXELS = 512 * 512


@dataclass(frozen=True)
class VariationRequest:
    count: int = 4
    seed: int = 0
    start_scale: int = 0  # 0: from noise at the coarsest scale; k: from the source's scale k−1 (keeps the layout)
    width_scale: float = 1.0  # output size multipliers (any aspect)
    height_scale: float = 1.0
    milestone: int = MILESTONES  # the seed's LM: 1 (early weights, more varied) … 10 (the finished model)
    steps_per_scale: int = DEFAULT_STEPS_PER_SCALE
    eta: float = 1.0
    # "model": every scale from the model; "gpnn": the model's output at the start scale is the layout GPNN draws
    # with the photo's patches, from its coarsest level up (a model trained for minutes on a CPU adds soft detail).
    detail: str = DETAIL_MODEL


@dataclass(frozen=True)
class EditRequest:
    prompt: str
    seed: int = 0
    count: int = 1
    guidance: float = 20.0  # CLIP guidance strength
    augmentations: int = 4
    start_scale: int = 1
    mask: Any = None  # H×W array/PIL (nonzero = edit here), the source's size; None = whole image
    fill: float = 1.0  # how much of the edit goes into the region (1 = all of it)
    milestone: int = MILESTONES
    steps_per_scale: int = DEFAULT_STEPS_PER_SCALE
    clip_model: str = ""  # "" = the model's own text encoder when it has one, else the default CLIP


@dataclass
class SampleOutput:
    images: list[Any]
    per_scale: list[list[Any]]  # per image: the result at every scale, coarsest first
    seeds: list[int]
    seconds: float
    prompts: list[str] = field(default_factory=list)  # the augmented prompts of an edit
    notes: list[str] = field(default_factory=list)


def load(model: MultiScaleDenoiser | str | os.PathLike, milestone: int = MILESTONES) -> MultiScaleDenoiser:
    if isinstance(model, MultiScaleDenoiser):
        return model.eval()
    if not 1 <= int(milestone) <= MILESTONES:
        raise UserError(f"The load milestone must be 1–{MILESTONES}.")
    path = Path(model)
    if not path.exists():
        raise UserError(f"No trained model at {path}; train one first.")
    return load_milestone(path, int(milestone))


def _timesteps(start: int, count: int) -> list[int]:
    """Descending timesteps from start − 1 to 0, at most `count` of them (DDIM-style skipping)."""
    return sorted({int(round(v)) for v in np.linspace(start - 1, 0, max(2, min(count, start)))}, reverse=True)


def _cpu_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(device)


Guide = Callable[[torch.Tensor, int], torch.Tensor]  # (clean estimate, scale) -> adjusted clean estimate


@torch.no_grad()
def sample_scale(net: MultiScaleDenoiser, blur: torch.Tensor, scale: int, generator: torch.Generator,
                 alphas: torch.Tensor, steps: int, eta: float, guide: Guide | None = None,
                 keep: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
                 cancel: CancelToken | None = None) -> torch.Tensor:
    """The reverse process at one scale, from noise (coarsest) or from the noised blurred input x̃_n."""
    start = net.config.start_steps[scale]
    schedule = _timesteps(start, steps)
    t0 = schedule[0]
    noise = _cpu_noise(tuple(blur.shape), generator, blur.device)
    # The blend at T_n is taken to be x̃_n: the detail it lacks is below the noise level there (model.py).
    x = alphas[t0].sqrt() * blur + (1 - alphas[t0]).sqrt() * noise
    for index, t in enumerate(schedule):
        if cancel is not None:
            cancel.raise_if_cancelled()
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        output = net(x, t_batch, scale).float()
        clean = clean_estimate(output, x, blur, t_batch, scale, start, alphas, net.config.fine_prediction)
        clean = clean.clamp(-1, 1)
        if guide is not None:
            with torch.enable_grad():
                clean = guide(clean, scale).clamp(-1, 1)
        if keep is not None:
            clean = keep(clean, scale)
        if index == len(schedule) - 1:
            return clean
        t_prev = schedule[index + 1]
        gamma_prev = blend_weight(torch.tensor([t_prev]), scale, start).to(x.device).view(1, 1, 1, 1)
        a, a_prev = alphas[t], alphas[t_prev]
        eps = implied_noise(clean, x, blur, t_batch, scale, start, alphas)  # consistent with the clamped estimate
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0).sqrt()
        mixture_prev = blur + (1 - gamma_prev) * (clean - blur)
        x = (a_prev.sqrt() * mixture_prev + (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
             + sigma * _cpu_noise(tuple(x.shape), generator, x.device))
    return x


def output_sizes(net: MultiScaleDenoiser, width_scale: float, height_scale: float) -> list[tuple[int, int]]:
    if not (0.25 <= width_scale <= MAX_SIZE_MULTIPLIER and 0.25 <= height_scale <= MAX_SIZE_MULTIPLIER):
        raise UserError(f"Output size multipliers must be 0.25–{MAX_SIZE_MULTIPLIER}.")
    sizes = [(max(8, round(h * height_scale)), max(8, round(w * width_scale))) for h, w in net.config.sizes]
    if sizes[-1][0] * sizes[-1][1] > MAX_OUTPUT_PIXELS:
        raise UserError(f"The output would be {sizes[-1][1]}×{sizes[-1][0]}; keep it within "
                        f"{MAX_OUTPUT_PIXELS // 1000}k pixels (lower the size multiplier).")
    return sizes


def run_scales(net: MultiScaleDenoiser, sizes: list[tuple[int, int]], seed: int, start_scale: int, steps: int,
               eta: float, guide: Guide | None = None, keep: Callable | None = None,
               cancel: CancelToken | None = None, callback: Callable[[int], None] | None = None
               ) -> list[torch.Tensor]:
    """The result at every scale from `start_scale` up (coarser ones are the source's), coarsest first."""
    if not 0 <= start_scale < len(sizes):
        raise UserError(f"The start scale must be 0–{len(sizes) - 1}.")
    device = next(net.parameters()).device
    alphas = alphas_cumprod(net.config.diffusion_steps).to(device)
    generator = torch.Generator().manual_seed(int(seed))
    source = net.source_image().to(device)
    results = [resize(source, size).clamp(-1, 1) for size in sizes[:start_scale]]
    for scale in range(start_scale, len(sizes)):
        blur = resize(results[-1], sizes[scale]) if scale else torch.zeros(1, 3, *sizes[0], device=device)
        results.append(sample_scale(net, blur, scale, generator, alphas, steps, eta, guide, keep, cancel))
        if callback is not None:
            callback(scale)
    return results


def variations(model: MultiScaleDenoiser | str | os.PathLike, request: VariationRequest, *,
               callback: ProgressCallback | None = None, cancel: CancelToken | None = None) -> SampleOutput:
    """`request.count` variations (image i uses seed + i), each with its image at every scale."""
    if not 1 <= request.count <= MAX_COUNT:
        raise UserError(f"Make 1–{MAX_COUNT} variations at a time.")
    if request.detail not in DETAIL_CHOICES:
        raise UserError(f"The detail must come from one of {', '.join(DETAIL_CHOICES)}.")
    started = time.perf_counter()
    net = load(model, request.milestone)
    sizes = output_sizes(net, request.width_scale, request.height_scale)
    gpnn_detail = request.detail == DETAIL_GPNN
    images, per_scale, seeds = [], [], []
    for index in range(request.count):
        seed = int(request.seed) + index
        if callback is not None:
            callback(index, request.count, f"Variation {index + 1} of {request.count}")
        results = run_scales(net, sizes[:request.start_scale + 1] if gpnn_detail else sizes, seed,
                             request.start_scale, request.steps_per_scale, request.eta, cancel=cancel)
        if gpnn_detail:
            results += _gpnn_detail(net, results[-1], sizes[-1], cancel)
        images.append(tensor_image(results[-1]))
        per_scale.append([tensor_image(level) for level in results])
        seeds.append(seed)
    if callback is not None:
        callback(request.count, request.count, "Done")
    notes = ([f"Layout from the model at scale {request.start_scale}; finer detail by GPNN from the photo's own "
              "patches."] if gpnn_detail else [])
    return SampleOutput(images, per_scale, seeds, time.perf_counter() - started, notes=notes)


def _gpnn_detail(net: MultiScaleDenoiser, layout: torch.Tensor, output_size: tuple[int, int],
                 cancel: CancelToken | None) -> list[torch.Tensor]:
    """GPNN's outputs (in [-1, 1], coarsest first) drawing `layout` with the training image's patches."""
    from .gpnn import finish_layout

    source = (net.source_image() + 1) / 2
    levels = finish_layout(source.to(layout.device), (layout.float() + 1) / 2, output_size, cancel=cancel)
    return [level * 2 - 1 for level in levels]


@dataclass
class Reconstruction:
    image: Any
    tensor: torch.Tensor


def reconstruct(model: MultiScaleDenoiser | str | os.PathLike, image: Any = None, steps_per_scale: int = 20,
                milestone: int = MILESTONES, seed: int = 0) -> Reconstruction:
    """Rebuild the source from its own coarsest scale: scale 1 on, deterministic (eta 0) from seeded noise."""
    net = load(model, milestone)
    start = 1 if net.config.scales > 1 else 0
    results = run_scales(net, list(net.config.sizes), seed, start, steps_per_scale, eta=0.0)
    return Reconstruction(tensor_image(results[-1]), results[-1])


def _psnr(image: torch.Tensor, target: torch.Tensor) -> float:
    # On the float tensors, not metrics.formulas.psnr: that one takes uint8 images, whose rounding would blur the
    # sub-dB gains detail_gains must tell apart.
    return float(10 * torch.log10(4 / (image - target).pow(2).mean().clamp(min=1e-12)))  # [-1, 1]: peak-to-peak 2


@dataclass
class DetailGain:
    """One finer scale's reverse process given the true coarser level, against plain upsampling of that level."""

    upsampled_db: float  # PSNR of x̃_n, the upsampled coarser level, against the true level
    gain_db: float  # the reverse process's PSNR minus upsampled_db
    added: float  # RMS of what the process added to x̃_n over the RMS of the detail x̃_n lacks (0: nothing)


def detail_gains(model: MultiScaleDenoiser | str | os.PathLike, milestone: int = MILESTONES,
                 steps_per_scale: int = 20, seed: int = 0) -> list[DetailGain]:
    """Each finer scale's DetailGain (deterministic, eta 0). A scale whose detail output has died gives back its
    input: `added` about 0 and no gain, and its variations are as soft as the coarser scale enlarged."""
    net = load(model, milestone)
    device = next(net.parameters()).device
    levels = pyramid(net.source_image().to(device), list(net.config.sizes))
    alphas = alphas_cumprod(net.config.diffusion_steps).to(device)
    generator = torch.Generator().manual_seed(int(seed))
    gains = []
    for scale in range(1, len(levels)):
        blur = blurred(levels, scale)
        finer = sample_scale(net, blur, scale, generator, alphas, steps_per_scale, eta=0.0)
        upsampled = _psnr(blur, levels[scale])
        missing = (levels[scale] - blur).pow(2).mean().sqrt().clamp(min=1e-8)
        added = float((finer - blur).pow(2).mean().sqrt() / missing)
        gains.append(DetailGain(upsampled, _psnr(finer, levels[scale]) - upsampled, added))
    return gains


# ---------------------------------------------------------------------------------------------- editing
def mask_tensor(mask: Any, size: tuple[int, int]) -> torch.Tensor:
    """1×1×H×W float mask (1 = edit) from an array or PIL image of the source's size; clear errors otherwise."""
    array = np.asarray(mask.convert("L") if hasattr(mask, "convert") else mask)
    if array.ndim == 3:
        array = array.max(axis=-1) if array.shape[-1] != 4 else array[..., 3]
    if array.ndim != 2:
        raise UserError("The region mask must be a 2-D image.")
    if tuple(array.shape) != tuple(size):
        raise UserError(f"The region mask is {array.shape[1]}×{array.shape[0]} but the image is {size[1]}×{size[0]}; "
                        "draw the region on the image itself.")
    binary = torch.from_numpy((array > 0).astype(np.float32))[None, None]
    if binary.sum() == 0:
        raise UserError("The region mask is empty: draw the region to edit, or clear it to edit the whole image.")
    return binary


def edit(model: MultiScaleDenoiser | str | os.PathLike, request: EditRequest, *, clip: Any = None,
         callback: ProgressCallback | None = None, cancel: CancelToken | None = None) -> SampleOutput:
    """A text edit: CLIP guidance toward the prompt's augmentations, only inside the region when one is given."""
    from . import text as text_mod

    prompt = " ".join(str(request.prompt or "").split())
    if not prompt:
        raise UserError("Write what the edit should show (the edit prompt is empty).")
    if not 0.0 <= request.guidance <= 1000.0:
        raise UserError("CLIP guidance strength must be 0–1000.")
    if not 0.0 < request.fill <= 1.0:
        raise UserError("Region fill must be above 0 and at most 1.")
    started = time.perf_counter()
    net = load(model, request.milestone)
    sizes = list(net.config.sizes)
    source = net.source_image()
    region = None if request.mask is None else mask_tensor(request.mask, sizes[-1])
    prompts = text_mod.augment_prompt(prompt, request.augmentations)
    notes = []
    if clip is None:
        source_name = request.clip_model or net.config.extra.get("text_encoder") or text_mod.DEFAULT_CLIP
        clip = text_mod.ClipModel(source_name)
    if clip.is_test_model:
        notes.append("CLIP is a test model with random weights here: the guidance direction is noise, not the prompt.")
    target = clip.text_features(prompts).mean(0, keepdim=True)
    target = F.normalize(target, dim=-1)

    def guide(clean: torch.Tensor, scale: int) -> torch.Tensor:
        clean = clean.detach().requires_grad_(True)
        similarity = (clip.image_features(clean) @ target.to(clip.device).T).sum()
        (grad,) = torch.autograd.grad(similarity, clean)
        step = request.guidance * grad / (grad.abs().mean() + 1e-8) * 1e-3
        return (clean + step).detach()

    def keep(clean: torch.Tensor, scale: int) -> torch.Tensor:
        if region is None:
            return clean
        size = tuple(clean.shape[-2:])
        inside = resize(region, size).clamp(0, 1)
        return inside * clean + (1 - inside) * resize(source, size).clamp(-1, 1)

    images, per_scale, seeds = [], [], []
    for index in range(request.count):
        if callback is not None:
            callback(index, request.count, f"Edit {index + 1} of {request.count}")
        seed = int(request.seed) + index
        results = run_scales(net, sizes, seed, min(request.start_scale, len(sizes) - 1), request.steps_per_scale,
                             1.0, guide if request.guidance > 0 else None, keep, cancel)
        final = results[-1]
        if region is not None:  # exactly the source outside the region; `fill` of the edit inside it
            final = region * (request.fill * final + (1 - request.fill) * source) + (1 - region) * source
        elif request.fill < 1:
            final = request.fill * final + (1 - request.fill) * source
        images.append(tensor_image(final))
        per_scale.append([tensor_image(level) for level in [*results[:-1], final]])
        seeds.append(seed)
    return SampleOutput(images, per_scale, seeds, time.perf_counter() - started, prompts, notes)
