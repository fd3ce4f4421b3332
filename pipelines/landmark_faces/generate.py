"""Sampling the seed's landmark U-Net: 24 landmarks + tags → faces, with classifier-free guidance.

The U-Net's prediction (noise, clean image or v, as it was trained) is used by diffusers' DDIM scheduler (the
same β schedule as training); the guided prediction is uncond + s·(cond − uncond), where "uncond" is the empty
condition the model saw under condition dropout (no landmarks, no tags). Noise is drawn on the CPU from the
seed (image i of a batch from seed + i), so a seed gives the same face on any device.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipelines.core.errors import UserError
from pipelines.core.jobs import CancelToken, JobCancelled, ProgressCallback
from pipelines.core.seeds import MAX_SEED, seeded_noise
from pipelines.core.userjson import parse_json

from . import landmarks as L
from .request import MAX_FACES, MAX_GUIDANCE, MAX_STEPS, MIN_GUIDANCE, MIN_STEPS
from .unet import LandmarkUNet


@dataclass
class FaceOutput:
    images: list[Any]  # PIL images
    seeds: list[int]
    seconds: float
    notes: list[str] = field(default_factory=list)


def check(points: Any, steps: int, guidance: float, seed: int, count: int) -> None:
    L.check_points(points)
    if not MIN_STEPS <= int(steps) <= MAX_STEPS:
        raise UserError(f"Steps must be between {MIN_STEPS} and {MAX_STEPS}, got {steps}.")
    if not MIN_GUIDANCE <= float(guidance) <= MAX_GUIDANCE:
        raise UserError(f"Guidance scale must be between {MIN_GUIDANCE:g} and {MAX_GUIDANCE:g}, got {guidance}.")
    if not 0 <= int(seed) <= MAX_SEED:
        raise UserError(f"Seed must be between 0 and {MAX_SEED}, got {seed}.")
    if not 1 <= int(count) <= MAX_FACES:
        raise UserError(f"Faces per run must be between 1 and {MAX_FACES}, got {count}.")


def scheduler_config(model: LandmarkUNet) -> dict[str, Any]:
    """The training schedule stored in the model file's metadata (defaults when absent: tiny models)."""
    raw = getattr(model, "train_config", None)
    values = parse_json(raw, "The model file's settings") if isinstance(raw, str) else dict(raw or {})
    return {"train_timesteps": values.get("train_timesteps", 1000),
            "beta_schedule": values.get("beta_schedule", "squaredcos_cap_v2"),
            "prediction_type": values.get("prediction_type", "epsilon")}


def unknown_tags(model: LandmarkUNet, tags: Sequence[str]) -> list[str]:
    return [tag for tag in tags if tag not in model.config.tags]


@torch.inference_mode()
def sample(model: LandmarkUNet, points: Any | Sequence[Any], tags: Sequence[str] | Sequence[Sequence[str]] = (), *,
           steps: int = 50, guidance: float = 2.0, seed: int = 0, count: int = 1,
           callback: ProgressCallback | None = None, cancel: CancelToken | None = None,
           use_landmarks: bool = True) -> FaceOutput:
    """Faces following `points` ((24, 2), or one set per face) and `tags` (one list, or one per face).

    `use_landmarks=False` samples with the empty landmark map (the text-only baseline of the comparison)."""
    from diffusers import DDIMScheduler

    from .train import scheduler_for

    started = time.perf_counter()
    point_sets = _per_face(points, count)
    tag_sets = _per_face_tags(tags, len(point_sets))
    for one in point_sets:
        check(one, steps, guidance, seed, len(point_sets))
    device = next(model.parameters()).device
    size = model.config.image_size
    masks = torch.from_numpy(np.stack([L.dot_mask(p, size) for p in point_sets]))[:, None].to(device)
    if not use_landmarks:
        masks = torch.zeros_like(masks)
    hot = torch.stack([model.tag_vector(t) for t in tag_sets]).to(device)
    seeds = [(int(seed) + i) % (MAX_SEED + 1) for i in range(len(point_sets))]
    x = torch.cat([seeded_noise((1, 3, size, size), s) for s in seeds]).to(device)
    scheduler = DDIMScheduler.from_config(scheduler_for(scheduler_config(model)).config)
    scheduler.set_timesteps(int(steps))
    guided = float(guidance) != 1.0
    empty_masks, empty_tags = torch.zeros_like(masks), torch.zeros_like(hot)
    model.eval()
    for index, t in enumerate(scheduler.timesteps):
        if cancel is not None and cancel.cancelled:
            raise JobCancelled(f"Sampling cancelled at step {index} of {steps}.")
        timestep = t.to(device).expand(len(x))
        if guided:
            both = model(torch.cat([x, x]), torch.cat([timestep, timestep]), torch.cat([empty_masks, masks]),
                         torch.cat([empty_tags, hot]))
            uncond, cond = both.chunk(2)
            eps = uncond + float(guidance) * (cond - uncond)
        else:
            eps = model(x, timestep, masks, hot)
        x = scheduler.step(eps, t, x).prev_sample
        if callback is not None:
            callback(index + 1, len(scheduler.timesteps), f"Denoising step {index + 1}/{len(scheduler.timesteps)}")
    images = [_to_image(one) for one in x.float().cpu()]
    notes = []
    missing = sorted({tag for tags_ in tag_sets for tag in unknown_tags(model, tags_)})
    if missing:
        notes.append(f"Tags this model was not trained on are ignored: {', '.join(missing)}.")
    return FaceOutput(images, seeds, time.perf_counter() - started, notes)


def _per_face(points: Any, count: int) -> list[np.ndarray]:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 2:
        return [array] * int(count)
    return list(array)


def _per_face_tags(tags: Any, count: int) -> list[tuple[str, ...]]:
    if isinstance(tags, str):
        tags = [tag.strip() for tag in tags.split(",") if tag.strip()]
    tags = list(tags)
    if tags and all(isinstance(t, (list, tuple)) for t in tags):
        return [tuple(t) for t in tags]
    return [tuple(tags)] * count


def _to_image(tensor: torch.Tensor) -> Any:
    from PIL import Image

    pixels = tensor.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(pixels, "RGB")


def image_array(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"))
