"""Training the seed's landmark U-Net as a resumable job (DESIGN.md "A training job with resume").

Data: (image, 24 landmarks, tags) triples — the synthetic cartoon faces, or a folder of images each with a
same-named .json ({"points": …, "tags": [...] or "a, b"}). The loss is the seed's: MSE between the noise added
(DDPM forward process, diffusers' DDPMScheduler) and the noise the U-Net predicts from the noisy image, the
landmark dot mask and the tags. As the issue asks: classifier-free-guidance condition dropout (landmarks and tags
dropped together, plus each on its own with `landmark_dropout` / `tag_dropout`), random horizontal flips that
MIRROR the landmarks (and swap left/right tags), and random
masking of the frequent tags.

Step s draws its batch, noise, timesteps, flips and masks from a generator seeded with (seed, s), so a resume
repeats the run exactly. Checkpoints: CHECKPOINTS/step-NNNNNNN/{model.safetensors, optimizer.pt} (optimizer.pt
is the app's own file, read back with weights_only=True), then state.json, written last and atomically; the
newest two are kept. A cancel or a used-up time budget writes a checkpoint first. On CPUs with native bf16 (and
on CUDA) the forward pass runs under bf16 autocast with channels_last; the weights stay fp32.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.core import devices, schedules, settings
from pipelines.core.errors import TrainingDiverged, UserError, checked_name
from pipelines.core.jobs import (
    CancelToken,
    JobCancelled,
    ProgressCallback,
    discard_checkpoints,
    read_step_state,
    write_step_checkpoint,
)
from pipelines.core.safeweights import load_safetensors

from . import landmarks as L
from . import synthetic
from .unet import LandmarkUNet, UNetConfig, build, save_unet

STATE_FILE = "state.json"
MAX_FOLDER_IMAGES = 50_000


class DatasetError(UserError, ValueError):
    """A training folder that cannot be used (no images, missing or mismatched landmark files); says which."""


@dataclass(frozen=True)
class TrainConfig:
    name: str = "landmark_faces"
    image_size: int = 32
    width: int = 16
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    # "cosine": core.schedules.warmup_cosine over `steps` (warm-up, then decay to 5% of lr), so the last steps
    # refine details (pupils, a shut eye's line) at a low rate; "constant" was the recipe before. Resuming with
    # more steps stretches the decay from that step on.
    lr_schedule: str = "cosine"
    seed: int = 0
    data: str = "synthetic"  # "synthetic" or a folder of images + .json landmark files
    synthetic_count: int = 4000
    synthetic_hair: str = ""  # fix the synthetic palette ("" = random), e.g. for a quick test
    synthetic_eyes: str = ""
    condition_dropout: float = 0.1  # classifier-free guidance: landmarks and tags dropped together
    # Each dropped ON ITS OWN as well, so "tags only" (an empty landmark map with tags) and "landmarks only" are
    # inputs the model has seen: the text-only baseline is then this model given tags alone (issue #23, goal 3 b).
    landmark_dropout: float = 0.0
    tag_dropout: float = 0.0
    attention_max_size: int = 0  # self-attention only at feature maps this small or smaller (0: at every level)
    tag_mask: float = 0.3  # each frequent tag is hidden with this probability
    frequent_share: float = 0.1  # tags on more than this share of the images count as frequent
    flip: float = 0.5
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    # What the U-Net predicts. The seed's loss is "epsilon" (the noise). "sample" (the clean image) is what the
    # shipped model uses: within a CPU budget of ~700 steps an epsilon model's samples were still noise (landmark
    # error 0.34 vs 0.49 untrained), while the clean-image target gives faces early; diffusers' schedulers
    # sample either. "v_prediction" is offered too.
    prediction_type: str = "epsilon"
    precision: str = "auto"  # auto (bf16 where native), bf16, fp32
    checkpoint_every: int = 250
    device: str = ""

    def digest(self) -> str:
        """Identifies the settings a checkpoint was trained with (steps excluded: more steps may resume)."""
        settings_ = {key: value for key, value in asdict(self).items() if key not in ("steps", "checkpoint_every",
                                                                                     "device")}
        return hashlib.sha256(json.dumps(settings_, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class FaceData:
    images: np.ndarray  # N×S×S×3 uint8
    points: np.ndarray  # N×24×2
    tags: list[tuple[str, ...]]
    vocabulary: tuple[str, ...]
    skipped: list[str] = field(default_factory=list)

    def digest(self) -> str:
        h = hashlib.sha256(self.images.tobytes())
        h.update(self.points.astype(np.float32).tobytes())
        h.update(json.dumps([list(t) for t in self.tags]).encode())
        return h.hexdigest()[:16]


@dataclass
class TrainResult:
    model: LandmarkUNet
    path: Path | None  # the trained model (.safetensors); None when the job stopped early (time budget)
    steps: int  # steps done in all, including those before a resume
    losses: list[float]
    resumed_from: int
    seconds: float
    precision: str
    finished: bool
    parameters: int
    checkpoints: Path

    @property
    def summary(self) -> str:
        head = np.mean(self.losses[:20]) if self.losses else float("nan")
        tail = np.mean(self.losses[-20:]) if self.losses else float("nan")
        state = "finished" if self.finished else "stopped early (checkpoint saved; run again to resume)"
        return (f"{self.steps} steps ({state}) in {self.seconds:.0f} s, {self.precision}; loss {head:.4f} → "
                f"{tail:.4f} (means of the first and last 20 steps); {self.parameters / 1e6:.2f} M parameters.")


# ---------------------------------------------------------------------------------------------- data
def synthetic_data(config: TrainConfig) -> FaceData:
    fixed = {key: value for key, value in (("hair", config.synthetic_hair), ("eyes", config.synthetic_eyes))
             if value}
    faces = synthetic.make_faces(config.synthetic_count, config.image_size, seed=config.seed, **fixed)
    return FaceData(np.stack([f.image for f in faces]), np.stack([f.points for f in faces]),
                    [f.tags for f in faces], synthetic.TAGS)


def _tags_of(value: Any, name: str) -> tuple[str, ...]:
    """A label's "tags": a list of words or one comma-separated string; L.LandmarkError names anything else."""
    if isinstance(value, str):
        return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        return tuple(tag.strip() for tag in value if tag.strip())
    raise L.LandmarkError(f'{name}: "tags" must be a list of words or one comma-separated string (e.g. '
                          f'"smile, blue eyes"); got {L.shown_value(value)}.')


def folder_data(folder: str | os.PathLike, size: int) -> FaceData:
    """Images with same-named .json landmark files; images without one (or with a bad one) are listed."""
    from PIL import Image

    from pipelines.core.images import ImageInputError, load_image
    from pipelines.core.userjson import JsonInputError, read_json

    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{folder} is not a folder.")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
    if not files:
        raise DatasetError(f"{root.name} holds no images (PNG, JPEG, WebP or BMP).")
    images, points, tags, skipped = [], [], [], []
    for path in files[:MAX_FOLDER_IMAGES]:
        label = path.with_suffix(".json")
        if not label.exists():
            skipped.append(f"{path.name}: no {label.name}")
            continue
        try:
            picture = load_image(path, max_side=4096, name=path.name)
            data = read_json(label)  # bounded in size and nesting
            found = L.from_data(data, width=picture.width, height=picture.height, name=label.name)
            found_tags = _tags_of(data.get("tags", ()), label.name) if isinstance(data, dict) else ()
        except (L.LandmarkError, ImageInputError, JsonInputError, OSError) as err:
            skipped.append(f"{path.name}: {err}")
            continue
        images.append(np.asarray(picture.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)))
        points.append(found)
        tags.append(found_tags)
    if not images:
        raise DatasetError(f"None of the {len(files)} images in {root.name} can be used: " + "; ".join(skipped[:5]))
    vocabulary = tuple(sorted({tag for row in tags for tag in row}))
    return FaceData(np.stack(images), np.stack(points), tags, vocabulary, skipped)


def load_data(config: TrainConfig) -> FaceData:
    return synthetic_data(config) if config.data == "synthetic" else folder_data(config.data, config.image_size)


def _mirrored_tags(tags: Sequence[str]) -> tuple[str, ...]:
    return tuple(synthetic.MIRRORED_TAGS.get(tag, tag) for tag in tags)


class Batches:
    """Tensors prepared once (images in [-1, 1], dot masks of the points and of their mirror images, tag
    multi-hots for both), so a step only indexes them."""

    def __init__(self, data: FaceData, vocabulary: tuple[str, ...], config: TrainConfig) -> None:
        size = config.image_size
        self.images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        self.masks = torch.from_numpy(np.stack([L.dot_mask(p, size) for p in data.points]))[:, None]
        self.flipped_masks = torch.from_numpy(np.stack([L.dot_mask(L.flip_horizontal(p), size)
                                                        for p in data.points]))[:, None]
        index = {tag: i for i, tag in enumerate(vocabulary)}
        self.tags = torch.zeros(len(data.tags), max(1, len(vocabulary)))
        self.flipped_tags = torch.zeros_like(self.tags)
        for row, tags in enumerate(data.tags):
            for tag in tags:
                self.tags[row, index[tag]] = 1.0
            for tag in _mirrored_tags(tags):
                if tag in index:
                    self.flipped_tags[row, index[tag]] = 1.0
        share = self.tags.mean(dim=0)
        self.frequent = share > config.frequent_share  # the seed masks popular tags to even out their weight

    def __len__(self) -> int:
        return len(self.images)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def draw_batch(batches: Batches, config: TrainConfig, step: int, timesteps: int) -> dict[str, torch.Tensor]:
    """Everything random about step `step`, from its own generator: a resume repeats it exactly."""
    g = step_generator(config.seed, step)
    count, b = len(batches), config.batch_size
    index = torch.randint(0, count, (b,), generator=g)
    flip = torch.rand(b, generator=g) < config.flip
    images = batches.images[index]
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    masks = torch.where(flip[:, None, None, None], batches.flipped_masks[index], batches.masks[index])
    tags = torch.where(flip[:, None], batches.flipped_tags[index], batches.tags[index])
    hidden = (torch.rand(tags.shape, generator=g) < config.tag_mask) & batches.frequent[None]
    tags = tags * (~hidden).float()
    drop = torch.rand(b, generator=g) < config.condition_dropout
    drop_landmarks = drop | (torch.rand(b, generator=g) < config.landmark_dropout)
    drop_tags = drop | (torch.rand(b, generator=g) < config.tag_dropout)
    masks = masks * (~drop_landmarks).float()[:, None, None, None]  # all-zero map = "no landmarks"
    tags = tags * (~drop_tags).float()[:, None]
    noise = torch.randn(images.shape, generator=g)
    t = torch.randint(0, timesteps, (b,), generator=g)
    return {"images": images, "masks": masks, "tags": tags, "noise": noise, "timesteps": t}


# ---------------------------------------------------------------------------------------------- precision
def choose_precision(precision: str, device: torch.device) -> str:
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"Precision must be auto, bf16 or fp32, got {precision!r}.")
    if precision == "auto":
        return "bf16" if devices.bf16_supported(device) else "fp32"
    return precision


# ---------------------------------------------------------------------------------------------- checkpoints
def checkpoint_root(name: str) -> Path:
    name = checked_name(name, "The training's name")
    return settings.outputs_dir() / "training" / "landmark_faces" / name / "checkpoints"


def _write_checkpoint(root: Path, step: int, model: LandmarkUNet, optimizer: torch.optim.Optimizer,
                      state: dict[str, Any]) -> None:
    def write(folder: Path) -> None:
        save_unet(model, folder / "model.safetensors", step=step)
        torch.save({"step": step, "optimizer": optimizer.state_dict()}, folder / "optimizer.pt")

    write_step_checkpoint(root, step, write, state)


def read_state(root: Path) -> dict[str, Any] | None:
    return read_step_state(root, "model.safetensors")


def _restore(root: Path, state: dict[str, Any], model: LandmarkUNet, optimizer: torch.optim.Optimizer) -> None:
    tensors, _ = load_safetensors(root / state["folder"] / "model.safetensors")
    model.load_state_dict(tensors)
    saved = torch.load(root / state["folder"] / "optimizer.pt", map_location="cpu", weights_only=True)  # ours
    optimizer.load_state_dict(saved["optimizer"])


# ---------------------------------------------------------------------------------------------- training
def scheduler_for(config: TrainConfig | dict[str, Any]) -> Any:
    from diffusers import DDPMScheduler

    values = asdict(config) if isinstance(config, TrainConfig) else config
    return DDPMScheduler(num_train_timesteps=int(values.get("train_timesteps", 1000)),
                         beta_schedule=str(values.get("beta_schedule", "squaredcos_cap_v2")),
                         prediction_type=str(values.get("prediction_type", "epsilon")), clip_sample=True)


def _check(config: TrainConfig) -> None:
    if not 16 <= config.image_size <= 256 or config.image_size % 8:
        raise UserError(f"Image size must be a multiple of 8 between 16 and 256 px, got {config.image_size}.")
    if config.prediction_type not in ("epsilon", "sample", "v_prediction"):
        raise UserError(f"Prediction type must be epsilon, sample or v_prediction, got {config.prediction_type!r}.")
    if config.lr_schedule not in schedules.SCHEDULES:
        raise UserError(f"The learning-rate schedule must be 'cosine' or 'constant', got {config.lr_schedule!r}.")
    if not 4 <= config.width <= 128 or config.steps < 1 or config.batch_size < 1:
        raise UserError("Training needs a width of 4–128, at least one step and a batch of at least one.")


def train(config: TrainConfig, data: FaceData | None = None, *, callback: ProgressCallback | None = None,
          cancel: CancelToken | None = None, resume: bool = True, time_budget_s: float | None = None,
          out: str | os.PathLike | None = None, checkpoints: str | os.PathLike | None = None,
          half: bool = False) -> TrainResult:
    """Train (or resume) the landmark U-Net; saves the model to `out` (default outputs/landmark_faces/models/
    NAME.safetensors) when all steps are done. See the module docstring for the data, loss and checkpoints."""
    _check(config)
    started = time.perf_counter()
    device = devices.resolve_device(config.device or None)
    precision = choose_precision(config.precision, device)
    data = data if data is not None else load_data(config)
    vocabulary = data.vocabulary
    batches = Batches(data, vocabulary, config)
    model = build(UNetConfig(width=config.width, image_size=config.image_size, tags=vocabulary,
                             time_dim=max(32, 4 * config.width), heads=4 if config.width % 4 == 0 else 1,
                             attention_max_size=config.attention_max_size),
                  seed=config.seed).to(device)
    if precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    scheduler = scheduler_for(config)
    root = Path(checkpoints) if checkpoints else checkpoint_root(config.name)
    identity = {"config_digest": config.digest(), "data_digest": data.digest(), "config": asdict(config)}
    losses: list[float] = []
    start = 0
    state = read_state(root) if resume else None
    if state is not None and (state.get("config_digest"), state.get("data_digest")) != (
            identity["config_digest"], identity["data_digest"]):
        _report(callback, 0, config.steps, "The checkpoint found was trained with other settings or data; "
                                           "starting afresh.")
        state = None
    if state is not None:
        _restore(root, state, model, optimizer)
        start = min(int(state["step"]), config.steps)
        losses = list(state.get("losses", []))[:start]
        _report(callback, start, config.steps, f"Resuming from step {start}")
    else:
        discard_checkpoints(root)
    step = start
    model.train()
    try:
        while step < config.steps:
            if cancel is not None and cancel.cancelled:
                raise JobCancelled(f"Training cancelled at step {step} of {config.steps}; its checkpoint is saved: "
                                   "train again with the same settings to resume.")
            if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
                break
            batch = draw_batch(batches, config, step, config.train_timesteps)
            for group in optimizer.param_groups:
                group["lr"] = schedules.rate(config.lr_schedule, config.lr, step, config.steps)
            losses.append(_train_step(model, optimizer, batch, scheduler, device, precision))
            step += 1
            _report(callback, step, config.steps, f"step {step}/{config.steps}: loss {losses[-1]:.4f}")
            if step % config.checkpoint_every == 0 and step < config.steps:
                _write_checkpoint(root, step, model, optimizer, {**identity, "losses": losses})
    except JobCancelled:
        _write_checkpoint(root, step, model, optimizer, {**identity, "losses": losses})
        raise
    _write_checkpoint(root, step, model, optimizer, {**identity, "losses": losses})
    finished = step >= config.steps
    path = None
    if finished:
        path = Path(out) if out else settings.outputs_dir() / "landmark_faces" / "models" / f"{config.name}.safetensors"
        save_unet(model.to(memory_format=torch.contiguous_format), path, half=half, steps=step,
                  train_config=json.dumps(asdict(config)), trained_on=("synthetic cartoon faces"
                                                                       if config.data == "synthetic" else
                                                                       Path(config.data).name))
    model.train_config = json.dumps(asdict(config))
    return TrainResult(model.eval(), path, step, losses, start, time.perf_counter() - started, precision, finished,
                       sum(p.numel() for p in model.parameters()), root)


def _train_step(model: LandmarkUNet, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                scheduler: Any, device: torch.device, precision: str) -> float:
    images, noise = batch["images"].to(device), batch["noise"].to(device)
    t = batch["timesteps"].to(device)
    noisy = scheduler.add_noise(images, noise, t)  # DDPM's q(x_t | x_0)
    masks, tags = batch["masks"].to(device), batch["tags"].to(device)
    if precision == "bf16":
        noisy, masks = noisy.contiguous(memory_format=torch.channels_last), masks.contiguous(
            memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        predicted = model(noisy, t, masks, tags)
    if scheduler.config.prediction_type == "sample":
        target = images
    elif scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(images, noise, t)
    else:
        target = noise
    loss = F.mse_loss(predicted.float(), target)
    if not torch.isfinite(loss):
        raise TrainingDiverged("The loss became NaN or infinite; lower the learning rate.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _report(callback: ProgressCallback | None, step: int, total: int, message: str) -> None:
    if callback is not None:
        callback(step, total, message)
