"""GPNN: variations of one image by patch nearest neighbours, no training (Granot et al., CVPR 2022, "Drop the GAN:
In Defense of Patches Nearest Neighbors as Single Image Generative Models").

Written from the paper, with the defaults of its official code (iyttor/GPNN: patch 7, pyramid ratio 4/3, coarsest
height 14, noise σ 0.75 on 0–1 pixels, α 0.005, 10 iterations per scale):

1. A pyramid of the source: each level 4/3 smaller than the next, the coarsest with its short side 14 px
   (the aspect is kept; the official code squashes the coarsest level to a square).
2. Coarsest scale: the queries are the source's coarsest level plus Gaussian noise (one value per pixel, the same
   in the three channels, as the official code draws it); keys and values are that level's patches.
3. Every finer scale: the queries are the coarser output upscaled; at the first iteration the keys are the coarser
   SOURCE upscaled the same way (blurry like the queries, so like is matched with like) and the values are the
   source's sharp patches at this scale; later iterations use this scale's source patches as keys too.
4. Each iteration (the paper's PNN, an EM-like step): every query patch is replaced by the value of the key with
   the lowest normalised score D(q, k) / (α + min_q' D(q', k)) — the completeness term that spreads the choice
   over more of the source — and overlapping patches are averaged back into an image.

The patch search is pipelines/metrics/patches.py's (batched squared-L2 on torch, chunked so memory stays
bounded); the patch-NN metric uses the same search. Noise comes from core/seeds.py (drawn on the CPU), so a seed
gives the same variation on any device; variation i uses seed + i, as the diffusion model's variations do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipelines.core import devices
from pipelines.core.errors import UserError
from pipelines.core.jobs import CancelToken, ProgressCallback
from pipelines.core.seeds import seeded_noise
from pipelines.metrics.patches import DEFAULT_MAX_ELEMENTS, extract_patches, fold_patches, nearest_patches

from .request import MAX_COUNT
from .sample import SampleOutput

PATCH = 7
PYRAMID_RATIO = 4 / 3
COARSE_SIDE = 14
NOISE_STD = 0.75
ALPHA = 0.005
ITERATIONS = 10


@dataclass(frozen=True)
class GPNNSettings:
    patch: int = PATCH
    ratio: float = PYRAMID_RATIO
    coarse_side: int = COARSE_SIDE  # short side of the coarsest level, px
    noise_std: float = NOISE_STD  # 0 = no noise (then the output is the source)
    alpha: float | None = ALPHA  # None = plain nearest neighbours (no completeness term)
    iterations: int = ITERATIONS  # per scale

    def check(self) -> None:
        if self.patch < 3 or self.patch % 2 == 0:
            raise UserError("The GPNN patch size must be an odd number of at least 3.")
        if not 1.05 <= self.ratio <= 2.0:
            raise UserError("The GPNN pyramid ratio must be 1.05–2.")
        if self.coarse_side < self.patch:
            raise UserError(f"The coarsest side ({self.coarse_side} px) must be at least one patch ({self.patch} px).")
        if not 0 <= self.noise_std <= 5:
            raise UserError("The GPNN noise level must be 0–5.")
        if self.alpha is not None and self.alpha <= 0:
            raise UserError("GPNN's α must be above 0.")
        if not 1 <= self.iterations <= 50:
            raise UserError("GPNN needs 1–50 iterations per scale.")


def pyramid_sizes(height: int, width: int, settings: GPNNSettings) -> list[tuple[int, int]]:
    """(height, width) of every level, coarsest first: ratio apart, the coarsest's short side = coarse_side."""
    short = min(height, width)
    if short <= settings.coarse_side:
        return [(height, width)]
    depth = math.ceil(math.log(short / settings.coarse_side) / math.log(settings.ratio))
    sizes = [(max(settings.patch, round(height / settings.ratio ** k)),
              max(settings.patch, round(width / settings.ratio ** k))) for k in range(depth)]
    coarse = settings.coarse_side / short
    coarsest = (max(settings.patch, round(height * coarse)), max(settings.patch, round(width * coarse)))
    if coarsest != sizes[-1]:  # the ratio steps seldom land on coarse_side exactly: one more, smaller step
        sizes.append(coarsest)
    return sizes[::-1]


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def _source_tensor(image: Any) -> torch.Tensor:
    """1×3×H×W float32 in [0, 1] from a PIL image, an array or a path (RGB)."""
    import numpy as np

    from pipelines.core.images import load_image

    array = np.asarray(load_image(image, name="The image").convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def _to_image(tensor: torch.Tensor) -> Any:
    from PIL import Image

    array = (tensor[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
    return Image.fromarray(array)


def _pnn(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, settings: GPNNSettings,
         max_elements: int) -> torch.Tensor:
    """One PNN step: each query patch becomes the value of its best key (normalised score), patches averaged."""
    indices, _ = nearest_patches(extract_patches(queries, settings.patch), keys, settings.alpha, max_elements)
    return fold_patches(values[indices], tuple(queries.shape[-2:]), settings.patch)


@torch.no_grad()
def generate_one(levels: list[torch.Tensor], seed: int, settings: GPNNSettings, *,
                 max_elements: int = DEFAULT_MAX_ELEMENTS, cancel: CancelToken | None = None,
                 step: Callable[[], None] | None = None, initial: torch.Tensor | None = None,
                 out_sizes: list[tuple[int, int]] | None = None) -> list[torch.Tensor]:
    """One variation from the source pyramid (coarsest first): the output at every level, coarsest first.
    `initial` is the paper's initial guess: the coarsest queries instead of the noisy source (e.g. another model's
    layout); `out_sizes` (one per level) retargets the output, the source's patches staying as they are."""
    out_sizes = out_sizes or [tuple(level.shape[-2:]) for level in levels]
    outputs: list[torch.Tensor] = []
    for index, level in enumerate(levels):
        values = extract_patches(level, settings.patch)
        if initial is not None and index == 0:
            queries, keys = _resize(initial, out_sizes[0]), values
        elif index == 0:
            noise = seeded_noise((1, 1, *out_sizes[0]), seed, device=level.device) * settings.noise_std
            queries, keys = _resize(level, out_sizes[0]) + noise, values
        else:
            queries = _resize(outputs[-1], out_sizes[index])
            keys = extract_patches(_resize(levels[index - 1], tuple(level.shape[-2:])), settings.patch)
        for _ in range(settings.iterations):
            if cancel is not None:
                cancel.raise_if_cancelled()
            queries = _pnn(queries, keys, values, settings, max_elements)
            keys = values
            if step is not None:
                step()
        outputs.append(queries)
    return outputs


def source_levels(source: torch.Tensor, settings: GPNNSettings) -> list[torch.Tensor]:
    """The source's pyramid (1×3×H×W in [0, 1]), coarsest first."""
    return [_resize(source, size) for size in pyramid_sizes(*source.shape[-2:], settings)]


@torch.no_grad()
def finish_layout(source: torch.Tensor, layout: torch.Tensor, output_size: tuple[int, int],
                  settings: GPNNSettings | None = None, *, max_elements: int = DEFAULT_MAX_ELEMENTS,
                  cancel: CancelToken | None = None, step: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """GPNN with `layout` (an image in [0, 1], e.g. a trained model's variation at a coarse scale) in place of its
    noisy coarsest input: the layout's arrangement, drawn with the source's full-resolution patches, at
    `output_size`. The output at every level, coarsest first (1×3×h×w in [0, 1]).

    The layout enters at GPNN's coarsest level whatever its own size: starting at the level of the layout's size
    instead kept its blurred, in-between shapes as smears (coffee, the shipped model: patch-NN 2.06× GPNN's from
    26×40, 1.62× from 14×21; chelsea, measured from 25×37 and 44×66 only, 1.16× from both)."""
    settings = settings or GPNNSettings()
    levels = source_levels(source, settings)
    height, width = source.shape[-2:]
    out_sizes = [(max(settings.patch, round(level.shape[-2] * output_size[0] / height)),
                  max(settings.patch, round(level.shape[-1] * output_size[1] / width))) for level in levels]
    out_sizes[-1] = tuple(output_size)
    return generate_one(levels, 0, settings, max_elements=max_elements, cancel=cancel, step=step,
                        initial=layout, out_sizes=out_sizes)


def gpnn_variations(image: Any, count: int = 4, seed: int = 0, settings: GPNNSettings | None = None, *,
                    device: str | torch.device | None = None, max_elements: int = DEFAULT_MAX_ELEMENTS,
                    callback: ProgressCallback | None = None, cancel: CancelToken | None = None) -> SampleOutput:
    """`count` GPNN variations of `image` at its own size (variation i uses seed + i), each with every level."""
    settings = settings or GPNNSettings()
    settings.check()
    if not 1 <= int(count) <= MAX_COUNT:
        raise UserError(f"Make 1–{MAX_COUNT} variations at a time.")
    started = time.perf_counter()
    target = torch.device(device) if device is not None else devices.resolve_device()
    source = _source_tensor(image).to(target)
    if min(source.shape[-2:]) < settings.patch:
        raise UserError(f"The image is {source.shape[-1]}×{source.shape[-2]}; GPNN needs at least "
                        f"{settings.patch}×{settings.patch} px.")
    levels = source_levels(source, settings)
    total, done = int(count) * len(levels) * settings.iterations, 0

    def step() -> None:
        nonlocal done
        done += 1
        if callback is not None:
            callback(done, total, f"GPNN variation {(done - 1) // (len(levels) * settings.iterations) + 1} of {count}")

    images, per_scale, seeds = [], [], []
    for index in range(int(count)):
        outputs = generate_one(levels, int(seed) + index, settings, max_elements=max_elements, cancel=cancel,
                               step=step)
        images.append(_to_image(outputs[-1]))
        per_scale.append([_to_image(level) for level in outputs])
        seeds.append(int(seed) + index)
    if callback is not None:
        callback(total, total, "Done")
    notes = [f"GPNN: {len(levels)} scales from {levels[0].shape[-1]}×{levels[0].shape[-2]}, patch {settings.patch}, "
             f"α {settings.alpha}, noise σ {settings.noise_std}, {settings.iterations} iterations per scale."]
    return SampleOutput(images, per_scale, seeds, time.perf_counter() - started, notes=notes)
