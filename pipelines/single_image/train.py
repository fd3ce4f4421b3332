"""Training the multi-scale model on one image: a resumable job (DESIGN.md "A training job with resume").

    outputs/single_image/models/<image hash>-<config digest>/
        checkpoints/step-0000400/{model.safetensors, ema.safetensors, optimizer.pt, ema.pt}   # .pt: our own files,
        checkpoints/state.json     # step, folder, digests, losses; written last, atomically     read weights_only
        milestones/lm-01.safetensors … lm-10.safetensors   # EMA weights at every 10% (the seed's LM slider)
        model.safetensors          # = lm-10: the finished model; its presence makes a re-train a cache hit

Step s draws its scale, timesteps and noise from a generator seeded with (seed, s), so a resume repeats the run
exactly without pickled RNG states. Where the CPU has native bf16 (AVX-512 BF16 / AMX; detected at run time) or
the GPU supports it, the step runs under bf16 autocast with channels_last (the project measured 3.5× for a conv net's
training step; bench/bench_single_image.py measures this network against fp32, speed and quality); weights,
optimizer and EMA stay fp32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.core import devices, jobs, schedules, settings
from pipelines.core.errors import TrainingDiverged, UserError
from pipelines.core.images import load_image
from pipelines.core.jobs import CancelToken, JobCancelled, ProgressCallback, atomic_path, discard_checkpoints
from pipelines.core.safeweights import load_safetensors

from . import text as text_mod
from .model import (
    COARSEST_SIDE,
    CPU_MAX_AREA,
    FINE_PREDICTIONS,
    WIDE_DILATIONS,
    ModelConfig,
    MultiScaleDenoiser,
    alphas_cumprod,
    blurred,
    clean_estimate,
    implied_noise,
    load_model_file,
    noised,
    predicts_noise,
    pyramid,
    save_model,
    scale_sizes,
    start_steps,
    training_size,
)

MILESTONES = 10
STATE_FILE = "state.json"
TEXT_MODES = ("none", "arbitrary", "blip")
TIMESTEP_WEIGHTINGS = ("none", "inverse_alpha")
NOISE_WEIGHT_CAP = 10.0  # 1/sqrt(ᾱ_t) reaches ~100 at the last step; capped so those few draws do not dominate
MAX_INPUT_SIDE = 4096  # decoded larger images are refused by the core; this only bounds the first resize
# A finished model whose finer scales all land less than this above their upsampled input (given the true coarser
# level) has learned no detail. Measured (sample.detail_gains, best finer scale): 128 px runs of the recipe +14 to
# +16 dB (the shipped coffee model, 10-minute chelsea and rocket runs); two chelsea finer-scale-only runs at lr 2e-3
# whose detail output died +0.0 and +0.6 dB; the tests' 600-step model of a 36 px photo +1.0 dB (issue 25).
SOFT_DETAIL_DB = 0.75
SHARP_ENOUGH_DB = 40.0  # a scale whose upsampled input is already this close has no detail left to learn
NO_TEXT_WIDTH = 32  # token width of the U-Net's "no text" token in the +U-Net ablation (no encoder involved)


@dataclass(frozen=True)
class TrainConfig:
    """The settings of one training run: the record's params, the resume check (its digest) and the CLI flags."""

    backbone: str = "fcn"  # "fcn" (SinDDM baseline) or "unet" (the seed's, with cross-attention to text)
    steps: int = 2000
    width: int = 64
    batch_size: int = 4  # noise draws per step, all at one scale
    # Draws per step at the coarsest scale, which alone builds the layout from pure noise: its images are ~1/40 of
    # the finest's pixels, so a larger batch there costs little time (0: batch_size).
    coarsest_batch_size: int = 8
    dilations: tuple[int, ...] = WIDE_DILATIONS  # the FCN's (model.fcn_reach); model.DILATIONS is SinDDM's
    # "inverse_alpha": each draw's L1 noise error weighted by 1/sqrt(ᾱ_t) (capped at NOISE_WEIGHT_CAP), which is
    # the L1 error of the clean image it implies, scaled by sqrt(1 − ᾱ_t) ≤ 1 — like v-prediction's weighting.
    # Plain ε-loss ("none") weighs a high-noise step's clean-image error by ᾱ_t/(1 − ᾱ_t), ~0.1 at t = 80: the
    # coarsest scale, which decides the layout at high noise, barely learned where the objects are (measured: the
    # clean estimate at t = 60–80 was 0.15–0.32 RMS off the only image it is trained on).
    timestep_weighting: str = "inverse_alpha"
    # What the network outputs at the finer scales (model.FINE_PREDICTIONS): "epsilon", the noise, as SinDDM; or
    # "detail", the missing detail, trained on its L1 error in the image, with its own output layer (issue 25):
    # given the true coarser level, its finer scales land 2–20 dB above the plain upsampled input (chelsea, 16,900
    # steps, max_grad_norm 1) where the first recipe's ε model's land 2.3 dB below to 3.4 dB above (coffee).
    fine_prediction: str = "detail"
    lr: float = 2e-3  # the peak of the schedule below
    # The recipe (issue 25): share of the steps spent at the coarsest scale (the rest split evenly over the finer
    # ones) and the learning-rate schedule ("cosine": warm-up then cosine decay; "constant": the first recipe).
    coarse_share: float = 0.4
    # Or each scale's relative weight, coarsest first, one per scale (empty: the coarse_share rule). E.g. all on the
    # finest, (0, 0, 0, 0, 1): how far that scale alone gets in a budget (bench_single_image.py --finest-bound).
    scale_weights: tuple[float, ...] = ()
    lr_schedule: str = "cosine"
    coarsest_side: int = COARSEST_SIDE  # short side of the coarsest scale, px (smaller: fewer pixels per object)
    seed: int = 0
    max_area: int = CPU_MAX_AREA
    text: str = "none"  # "none", "arbitrary" (the prompt below) or "blip" (P* of BLIP's captions)
    prompt: str = ""
    contrastive: bool = False
    contrastive_weight: float = text_mod.CONTRASTIVE_WEIGHT
    contrastive_every: int = text_mod.CONTRASTIVE_EVERY
    captions: int = text_mod.DEFAULT_CAPTIONS
    blip_model: str = text_mod.DEFAULT_BLIP
    clip_model: str = text_mod.DEFAULT_CLIP
    ema_decay: float = 0.995
    # Clip the gradient's norm to this before each step (0: off). With fine_prediction "detail" a 16,900-step
    # chelsea run's finer scales blew up at the peak learning rate unclipped; clipped to 1 (diffusers'
    # max_grad_norm) the same run's landed 2–20 dB above their upsampled inputs (issue 25).
    max_grad_norm: float = 1.0
    # Variety (issue 25). A scale trained on its whole level memorises it: its borders tell every pixel where it is.
    # Each draw is instead a random window, a side of `coarsest_crop` px at the coarsest scale and `fine_crop` px
    # at the finer ones (0: the whole level); sampling still runs on the whole canvas, so it must compose a new
    # layout from what the windows showed. Chelsea's coarsest scale alone (26×40, 6,000 steps, batch 8, clipped):
    # whole level, 6 samples of 6 within 0.015–0.020 mean abs of the photo (near-copies), diversity 0.04; 18-px
    # windows, 0.23–0.26 from it, diversity 0.49, eyes and nose in new places.
    coarsest_crop: int = 18
    fine_crop: int = 40
    # `fine_noise`: each finer scale's reverse process starts at the noise that covers this many times the detail
    # upsampling loses (1: SinDDM's choice). Chelsea's finer scales alone on 40-px windows, dB over their upsampled
    # input given the true coarser level (scales 1–4): at 1, +13.9 … +1.1 (3,000 steps); at 3, +17.4, +11.6, +7.5,
    # +3.2 (6,000 steps); at 4.5, +8.6 … +0.5. At 2 and 6 the detail head fell to zero output at lr 2e-3 (fine
    # scales only; at 1e-3, 2 gave +16.0 … +1.7; the full recipe at 2e-3 trained alive on chelsea and coffee).
    fine_noise: float = 3.0
    precision: str = "auto"  # "auto" (bf16 where the CPU/GPU supports it), "bf16" or "fp32"

    def check(self) -> None:
        problems = []
        if self.backbone not in ("fcn", "unet"):
            problems.append("backbone must be 'fcn' or 'unet'")
        if not 10 <= self.steps <= 200_000:
            problems.append("steps must be 10–200000")
        if not 8 <= self.width <= 256:
            problems.append("width must be 8–256")
        if not 1 <= len(self.dilations) <= 12 or not all(1 <= int(d) <= 16 for d in self.dilations):
            problems.append("the FCN needs 1–12 blocks with dilations 1–16")
        if self.timestep_weighting not in TIMESTEP_WEIGHTINGS:
            problems.append(f"timestep weighting must be one of {TIMESTEP_WEIGHTINGS}")
        if self.fine_prediction not in FINE_PREDICTIONS:
            problems.append(f"the finer scales' prediction must be one of {FINE_PREDICTIONS}")
        if not 0 <= self.coarsest_batch_size <= 256:
            problems.append("the coarsest scale's batch size must be 0–256")
        if not 1 <= self.batch_size <= 64:
            problems.append("batch size must be 1–64")
        if self.text not in TEXT_MODES:
            problems.append(f"text must be one of {TEXT_MODES}")
        if self.text != "none" and self.backbone != "unet":
            problems.append("text conditioning needs the U-Net backbone")
        if self.text == "arbitrary" and not self.prompt.strip():
            problems.append("the arbitrary-prompt setting needs a prompt")
        if self.contrastive and self.text != "blip":
            problems.append("the contrastive loss needs BLIP prompts (text='blip')")
        if self.scale_weights and (min(self.scale_weights) < 0 or sum(self.scale_weights) <= 0):
            problems.append("the scales' weights must be 0 or more, and not all 0")
        if not 0.05 <= self.coarse_share <= 0.95:
            problems.append("the coarsest scale's share of the steps must be 0.05–0.95")
        if self.lr_schedule not in schedules.SCHEDULES:
            problems.append("the learning-rate schedule must be 'cosine' or 'constant'")
        if self.precision not in ("auto", "bf16", "fp32"):
            problems.append("precision must be auto, bf16 or fp32")
        if not 0 <= self.max_grad_norm <= 1000:
            problems.append("the gradient clipping norm must be 0 (off) to 1000")
        if not all(side == 0 or 8 <= side <= 512 for side in (self.coarsest_crop, self.fine_crop)):
            problems.append("a crop side must be 0 (the whole level) or 8–512 px")
        if not 1 <= self.fine_noise <= 8:
            problems.append("the finer scales' noise must cover 1–8 times their missing detail")
        if not 8 <= self.coarsest_side <= 64:
            problems.append("the coarsest scale's side must be 8–64 px")
        if self.max_area < COARSEST_SIDE ** 2:
            problems.append(f"max area must be at least {COARSEST_SIDE}²")
        if problems:
            raise UserError("Cannot train: " + "; ".join(problems) + ".")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class TrainResult:
    model_path: Path
    folder: Path
    steps: int
    losses: list[float]
    milestones: list[Path]
    resumed_from: int
    seconds: float
    cached: bool = False
    finished: bool = True
    precision: str = "fp32"
    prompts: text_mod.PromptSet | None = None
    notes: list[str] = field(default_factory=list)
    detail_gain_db: list[float] = field(default_factory=list)  # per finer scale, over its upsampled input

    @property
    def summary(self) -> str:
        if self.cached:
            return (f"This image was already trained with these settings ({self.steps} steps): the cached model "
                    "is used. Change a setting to train again.")
        first, last = (np.mean(self.losses[:20]), np.mean(self.losses[-20:])) if self.losses else (np.nan, np.nan)
        done = "Trained" if self.finished else "Paused (time budget) after"
        return (f"{done} {self.steps} steps in {self.seconds:.0f} s ({self.precision})"
                + (f", resumed from step {self.resumed_from}" if self.resumed_from else "")
                + f"; L1 noise loss {first:.3f} → {last:.3f}. " + " ".join(self.notes)).strip()


# ---------------------------------------------------------------------------------------------- the image
def image_tensor(image: Any) -> torch.Tensor:
    """1×3×H×W float in [-1, 1] from a PIL RGB image."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_image(tensor: torch.Tensor) -> Any:
    from PIL import Image

    array = ((tensor.detach().float().clamp(-1, 1)[0].permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round()
    return Image.fromarray(array.astype(np.uint8))


def prepare_image(source: Any, max_area: int = CPU_MAX_AREA) -> tuple[Any, list[str]]:
    """The training image (PIL RGB, area ≤ max_area) and notes for the user (downscaled, grayscale, transparent)."""
    from PIL import Image

    notes = []
    if isinstance(source, (str, os.PathLike)):
        with Image.open(source) as raw:
            mode = raw.mode
    else:
        mode = getattr(source, "mode", "RGB")
    image = load_image(source, max_side=MAX_INPUT_SIDE, name="The image")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in getattr(source, "info", {})):
        notes.append("The image has transparency: it was placed on white.")
    if mode in ("L", "LA", "1", "I", "I;16", "F"):
        notes.append("The image is grayscale: it is trained as RGB, so variations are gray too.")
    if min(image.size) < COARSEST_SIDE:
        raise UserError(f"The image is {image.width}×{image.height}; its short side must be at least "
                        f"{COARSEST_SIDE} px (the coarsest scale).")
    height, width = training_size(image.height, image.width, max_area)
    if (width, height) != image.size:
        notes.append(f"The image ({image.width}×{image.height}) was downscaled to {width}×{height} for training "
                     f"(area cap {int(max_area ** 0.5)}² on this device).")
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image, notes


def image_digest(image: Any) -> str:
    return hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()[:16]


def model_folder(image: Any, config: TrainConfig) -> Path:
    return settings.outputs_dir() / "single_image" / "models" / f"{image_digest(image)}-{config.digest()}"


# ---------------------------------------------------------------------------------------------- precision
def choose_precision(config: TrainConfig, device: torch.device) -> str:
    if config.precision == "auto":
        return "bf16" if devices.bf16_supported(device) else "fp32"
    return config.precision


# ---------------------------------------------------------------------------------------------- text
def text_conditioning(config: TrainConfig, image: Any, report: ProgressCallback
                      ) -> tuple[torch.Tensor | None, text_mod.PromptSet | None, dict[str, str], Any]:
    """(P* tokens for the U-Net or None, the captions table, record fields, the CLIP model for the loss)."""
    if config.backbone != "unet":
        return None, None, {}, None
    if config.text == "none":
        return torch.zeros(1, 1, NO_TEXT_WIDTH), None, {"prompt": ""}, None
    clip = text_mod.ClipModel(config.clip_model)
    prompts = None
    if config.text == "blip":
        report(0, config.steps, "Writing captions with BLIP and scoring them with CLIP…")
        prompts = text_mod.caption_prompts(image, config.blip_model, clip, config.captions, config.seed)
        prompt = prompts.best
    else:
        prompt = " ".join(config.prompt.split())
    fields = {"prompt": prompt, "text_encoder": config.clip_model,
              "text_encoder_test_model": str(clip.is_test_model).lower()}
    return clip.text_tokens(prompt), prompts, fields, clip


# ---------------------------------------------------------------------------------------------- checkpoints
def write_checkpoint(folder: Path, step: int, net: MultiScaleDenoiser, ema: Any, optimizer: torch.optim.Optimizer,
                     losses: list[float], digest: str) -> None:
    def write(files: Path) -> None:
        save_model(net, files / "model.safetensors")
        save_model(ema_copy(net, ema), files / "ema.safetensors")
        torch.save({"step": step, "optimizer": optimizer.state_dict()}, files / "optimizer.pt")
        torch.save({"step": step, "ema": ema.state_dict()}, files / "ema.pt")

    jobs.write_step_checkpoint(folder / "checkpoints", step, write, {"digest": digest, "losses": losses})


def read_state(folder: Path) -> dict[str, Any] | None:
    return jobs.read_step_state(folder / "checkpoints", "ema.pt")


def restore(folder: Path, state: dict[str, Any], net: MultiScaleDenoiser, ema: Any,
            optimizer: torch.optim.Optimizer) -> None:
    files = folder / "checkpoints" / state["folder"]
    tensors, _ = load_safetensors(files / "model.safetensors")
    net.load_state_dict(tensors)
    saved = torch.load(files / "optimizer.pt", map_location="cpu", weights_only=True)  # our own file
    optimizer.load_state_dict(saved["optimizer"])
    ema.load_state_dict(torch.load(files / "ema.pt", map_location="cpu", weights_only=True)["ema"])
    ema.to(next(net.parameters()).device)  # EMAModel.load_state_dict keeps the CPU tensors it was given


def ema_copy(net: MultiScaleDenoiser, ema: Any) -> MultiScaleDenoiser:
    """A copy of the network holding the EMA weights (the training network is left as it is)."""
    copy = MultiScaleDenoiser(net.config)
    copy.load_state_dict(net.state_dict())
    ema.copy_to(copy.parameters())
    return copy.eval()


def milestone_path(folder: Path, index: int) -> Path:
    return folder / "milestones" / f"lm-{index:02d}.safetensors"


def milestone_steps(steps: int) -> list[int]:
    """The steps after which milestone 1 … 10 is written (every 10% of training)."""
    return [max(1, round(steps * index / MILESTONES)) for index in range(1, MILESTONES + 1)]


# ---------------------------------------------------------------------------------------------- estimate
def estimate_seconds(height: int, width: int, config: TrainConfig, seconds_per_megapixel_step: float = 0.9) -> float:
    """Rough wall time before training starts: work ∝ steps × batch × mean pixels per scale × width² (measured
    on this 2-core CPU in bf16 at width 64: about 0.9 s per million pixel-draws). It leaves out the per-step cost,
    which dominates once the recipe trains on windows (it gave 0.06–0.08 of the real time in the issue-25 bench):
    the tab and the CLI's --minutes use measure_seconds_per_step, a timed trial, instead."""
    height, width = training_size(height, width, config.max_area)
    sizes = scale_sizes(height, width, coarsest_side=config.coarsest_side)
    shares = scale_shares(len(sizes), config.coarse_share, config.scale_weights)
    mean_draw_pixels = sum(share * batch_size_at(config, scale) * math.prod(drawn_size(config, scale, size))
                           for scale, (share, size) in enumerate(zip(shares, sizes, strict=True)))
    factor = (config.width / 64) ** 2 * (1.3 if config.backbone == "unet" else 1.0)
    return config.steps * mean_draw_pixels / 1e6 * seconds_per_megapixel_step * factor


def measure_seconds_per_step(image: Any, config: TrainConfig, probe_steps: int = 30,
                             device: str | None = None) -> float:
    """Seconds per training step on this machine as it is now: the same network, image and batch (text off) run
    for `probe_steps` steps in a temporary folder and timed from step 10 on, so start-up and the first slow steps
    are left out. The probe is set up as a long run that is cancelled, so no milestone is saved inside the window
    (a real run saves ten in all, a negligible share). A fixed constant cannot know the machine or its load."""
    import tempfile

    probe_steps = max(20, int(probe_steps))
    probe = dataclasses.replace(config, steps=max(config.steps, 100 * probe_steps), text="none", contrastive=False,
                                prompt="")
    stamps: dict[int, float] = {}
    token = CancelToken()

    def stamp(step: int, total: int, message: str) -> None:
        stamps.setdefault(step, time.perf_counter())
        if step >= probe_steps:
            token.cancel()

    # JobCancelled is the probe's own cancel, at probe_steps
    with tempfile.TemporaryDirectory() as folder, contextlib.suppress(JobCancelled):
        train(probe, image, folder=folder, resume=False, checkpoint_every=10**9, device=device, callback=stamp,
              cancel=token)
    measured = (stamps[probe_steps] - stamps[10]) / (probe_steps - 10)
    # The window's scales are a few random draws, and a finest-scale step has ~16× a coarsest one's pixels: rescale by
    # the pixels the run's share of each scale would draw against those the window drew (it undershot by ~30%).
    prepared, _ = prepare_image(image, config.max_area)
    sizes = scale_sizes(prepared.height, prepared.width, coarsest_side=config.coarsest_side)
    shares = scale_shares(len(sizes), config.coarse_share, config.scale_weights)
    pixels = [batch_size_at(config, scale) * math.prod(drawn_size(config, scale, size))
              for scale, size in enumerate(sizes)]
    expected = sum(share * count for share, count in zip(shares, pixels, strict=True))
    drawn = np.mean([pixels[_scale_of(probe, step, shares)] for step in range(10, probe_steps)])
    return measured * expected / drawn


# ---------------------------------------------------------------------------------------------- training
def build_model(config: TrainConfig, levels: list[torch.Tensor], alphas: torch.Tensor, context: torch.Tensor | None,
                extra: dict[str, str]) -> MultiScaleDenoiser:
    sizes = tuple(tuple(level.shape[-2:]) for level in levels)
    model_config = ModelConfig(
        backbone=config.backbone, width=config.width, sizes=sizes,
        start_steps=tuple(start_steps(levels, alphas, config.fine_noise)),
        text_dim=0 if context is None else int(context.shape[-1]),
        text_tokens=0 if context is None else int(context.shape[1]), dilations=tuple(config.dilations),
        fine_prediction=config.fine_prediction, extra=extra)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = MultiScaleDenoiser(model_config)
    if context is not None:
        net.net.context.copy_(context)
    net.set_source(levels[-1])
    return net


def scale_shares(scales: int, coarse_share: float, weights: tuple[float, ...] = ()) -> list[float]:
    """The probability that a step trains each scale, coarsest first: `weights` normalised when given (one per
    scale), else `coarse_share` at the coarsest and the rest evenly over the finer ones. Why not uniform (SinDDM
    draws scales uniformly; SinGAN/ConSinGAN give every stage the same iterations): the coarsest scale is the only
    one that must invent the layout from pure noise over all 100 steps, while a finer scale only sharpens its
    upsampled coarser level over its few (T_n) steps; trained uniformly on this CPU budget the coarsest learned the
    palette but not the objects. Its steps are also the cheapest (about 25 px side against up to 128), so 40% of
    the steps cost a small share of the time."""
    if weights:
        if len(weights) != scales:
            raise UserError(f"This image trains {scales} scales; give one weight per scale, not {len(weights)}.")
        return [float(weight) / sum(weights) for weight in weights]
    if scales == 1:
        return [1.0]
    return [coarse_share] + [(1 - coarse_share) / (scales - 1)] * (scales - 1)


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of step `step` (0-based): constant, or core.schedules.warmup_cosine (warm-up, then cosine
    decay to a small share of `lr`), a closed form of the step so a resumed run continues it exactly."""
    return schedules.rate(config.lr_schedule, config.lr, step, config.steps)


def noise_loss(predicted: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor,
               weighting: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss to minimise, the plain L1 noise error): per draw weighted as TrainConfig.timestep_weighting says;
    the plain one is what is recorded and reported, comparable across weightings (predicting zero scores ~0.80)."""
    per_draw = (predicted - noise).abs().mean(dim=(1, 2, 3))
    if weighting == "none":
        return per_draw.mean(), per_draw.mean()
    weight = alphas[t].rsqrt().clamp(max=NOISE_WEIGHT_CAP)
    return (per_draw * weight).mean(), per_draw.mean()


def detail_loss(estimate: torch.Tensor, clean: torch.Tensor, x_t: torch.Tensor, blur: torch.Tensor,
                noise: torch.Tensor, t: torch.Tensor, scale: int, start: int,
                alphas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss to minimise, the plain L1 noise error) of a finer scale that predicts its missing detail: the L1
    error of the clean estimate in the image. An L1 gradient has the same size whatever the error's, so this pulls
    on the shared network as hard as the coarsest scale's noise error does; scaling it up by the scale's noise std
    (to put it in the noise's units) drew worse coarsest layouts on the tests' photo (patch distance 3.8–4.2
    against 3.0, one shared output layer each). The recorded error is that of the noise the estimate implies,
    comparable with ε-prediction."""
    loss = (estimate - clean).abs().mean()
    implied = implied_noise(estimate.detach(), x_t, blur, t, scale, start, alphas)
    return loss, (implied - noise).abs().mean()


def batch_size_at(config: TrainConfig, scale: int) -> int:
    return config.coarsest_batch_size if scale == 0 and config.coarsest_batch_size else config.batch_size


def _draw_scale(generator: torch.Generator, shares: list[float]) -> int:
    return int(torch.multinomial(torch.tensor(shares, dtype=torch.float64), 1, generator=generator))


def _scale_of(config: TrainConfig, step: int, shares: list[float]) -> int:
    """The scale step `step` trains: the first draw of _step_draws' generator."""
    return _draw_scale(torch.Generator().manual_seed(config.seed * 1_000_003 + step), shares)


def crop_side_at(config: TrainConfig, scale: int) -> int:
    return config.coarsest_crop if scale == 0 else config.fine_crop


def drawn_size(config: TrainConfig, scale: int, size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of one training draw at this scale: its window, or the whole level of `size`."""
    side = crop_side_at(config, scale)
    return (min(size[0], side), min(size[1], side)) if side else tuple(size)


def _step_draws(config: TrainConfig, step: int, model_config: ModelConfig
                ) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(scale, timesteps, noise, window corners or None) of step `step`: from a generator seeded with (seed, step),
    so resume is exact. The corners (one (y, x) per draw) are drawn only when this scale trains on windows."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    scale = _draw_scale(generator, scale_shares(model_config.scales, config.coarse_share, config.scale_weights))
    start = model_config.start_steps[scale]
    batch = batch_size_at(config, scale)
    t = torch.randint(start, (batch,), generator=generator)
    h, w = model_config.sizes[scale]
    corners = None
    if crop_side_at(config, scale):
        window = drawn_size(config, scale, (h, w))
        corners = torch.stack([torch.randint(h - window[0] + 1, (batch,), generator=generator),
                               torch.randint(w - window[1] + 1, (batch,), generator=generator)], dim=1)
        h, w = window
    noise = torch.randn(batch, 3, h, w, generator=generator)
    return scale, t, noise, corners


def windows(level: torch.Tensor, corners: torch.Tensor | None, size: tuple[int, int], batch: int) -> torch.Tensor:
    """The batch's views of one level (1×3×H×W): the whole level, or one h×w window per (y, x) corner."""
    if corners is None:
        return level.expand(batch, -1, -1, -1)
    h, w = size
    return torch.cat([level[..., y:y + h, x:x + w] for y, x in corners.tolist()])


def train(config: TrainConfig, image: Any, *, callback: ProgressCallback | None = None,
          cancel: CancelToken | None = None, resume: bool = True, time_budget_s: float | None = None,
          preview: Callable[[int, Any], None] | None = None, device: str | None = None,
          folder: str | os.PathLike | None = None, checkpoint_every: int | None = None) -> TrainResult:
    """Train on one image; a finished model for the same image and settings is reused (cached by hash).

    preview(milestone_index, PIL image) is called at every milestone with a reconstruction from the coarsest
    scale, for the tab's live preview. Cancelling writes a checkpoint and raises JobCancelled; when
    `time_budget_s` runs out the job writes a checkpoint and returns with finished=False. Train again to resume.
    Checkpoints are written every `checkpoint_every` steps (default: at every milestone, 10% of the steps).
    """
    from diffusers.training_utils import EMAModel

    from pipelines.core import devices

    config.check()
    started = time.perf_counter()
    report = callback or (lambda step, total, message: None)
    image, notes = prepare_image(image, config.max_area)
    folder = Path(folder) if folder else model_folder(image, config)
    final = folder / "model.safetensors"
    if resume and final.exists():
        state = read_state(folder) or {}
        return TrainResult(final, folder, config.steps, list(state.get("losses", [])),
                           [milestone_path(folder, i) for i in range(1, MILESTONES + 1)], config.steps, 0.0,
                           cached=True, notes=notes)
    target = devices.resolve_device(device)
    precision = choose_precision(config, target)
    alphas = alphas_cumprod()
    height, width = image.height, image.width
    levels = pyramid(image_tensor(image), scale_sizes(height, width, coarsest_side=config.coarsest_side))
    scale_shares(len(levels), config.coarse_share, config.scale_weights)  # a wrong count of weights fails here
    context, prompts, text_fields, clip = text_conditioning(config, image, report)
    extra = {"trained_on": f"{width}×{height} image {image_digest(image)}", "steps": str(config.steps),
             "seed": str(config.seed), **text_fields}
    net = build_model(config, levels, alphas, context, extra).to(target)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=0.0, foreach=True)
    ema = EMAModel(net.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=3 / 4)
    digest = config.digest() + image_digest(image)
    losses: list[float] = []
    start_step = 0
    state = read_state(folder) if resume else None
    if state is not None and state.get("digest") != digest:
        report(0, config.steps, "The checkpoint found was trained with other settings; starting afresh.")
        state = None
    if state is not None:
        restore(folder, state, net, ema, optimizer)
        start_step = min(int(state["step"]), config.steps)
        losses = list(state.get("losses", []))[:start_step]
        report(start_step, config.steps, f"Resuming from step {start_step}")
    else:
        discard_checkpoints(folder / "checkpoints")
    if clip is not None and config.contrastive and prompts is not None:
        v_plus, v_minus = clip.text_features(prompts.positive), (
            clip.text_features(prompts.negative) if prompts.negative else None)
    levels = [level.to(target) for level in levels]
    blurs = [blurred(levels, scale) for scale in range(len(levels))]
    alphas = alphas.to(target)
    model_config = net.config
    milestones = milestone_steps(config.steps)
    every = max(1, int(checkpoint_every or milestones[0]))
    if target.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    net.train()

    step = start_step
    try:
        while step < config.steps:
            if cancel is not None and cancel.cancelled:
                raise JobCancelled(f"Training cancelled at step {step} of {config.steps}; its checkpoint is saved: "
                                   "press Train again with the same image and settings to resume.")
            scale, t, noise, corners = _step_draws(config, step, model_config)
            t, noise = t.to(target), noise.to(target)
            clean = windows(levels[scale], corners, noise.shape[-2:], len(t))
            blur = windows(blurs[scale], corners, noise.shape[-2:], len(t))
            x_t = noised(clean, blur, noise, t, scale, model_config.start_steps[scale], alphas)
            if target.type == "cpu":
                x_t = x_t.contiguous(memory_format=torch.channels_last)
            with torch.autocast(target.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                output = net(x_t, t, scale).float()
            start = model_config.start_steps[scale]
            # elementwise on the batch: cheap next to the network, and both losses below may need it
            estimate = clean_estimate(output, x_t, blur, t, scale, start, alphas, model_config.fine_prediction)
            if predicts_noise(scale, model_config.fine_prediction):
                loss, plain_l1 = noise_loss(output, noise, t, alphas, config.timestep_weighting)
            else:
                loss, plain_l1 = detail_loss(estimate, clean, x_t, blur, noise, t, scale, start, alphas)
            if config.contrastive and clip is not None and step % config.contrastive_every == 0:
                embedding = clip.image_features(estimate.clamp(-1, 1))
                loss = loss + config.contrastive_weight * text_mod.contrastive_loss(embedding, v_plus, v_minus)
            if not torch.isfinite(loss.detach()):
                raise TrainingDiverged(f"The loss became {loss.item()} at step {step + 1}; lower the learning rate.")
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
            optimizer.step()
            ema.step(net.parameters())
            step += 1
            losses.append(round(float(plain_l1.item()), 5))
            if step % 10 == 0 or step == config.steps:
                report(step, config.steps, f"step {step}/{config.steps}: L1 loss {np.mean(losses[-10:]):.4f}")
            if step in milestones:
                index = milestones.index(step) + 1
                ema_net = ema_copy(net, ema)
                save_model(ema_net, milestone_path(folder, index), milestone=index, step=step)
                if preview is not None:
                    from .sample import reconstruct

                    preview(index, reconstruct(ema_net, steps_per_scale=4).image)
            if step % every == 0 and step < config.steps:
                write_checkpoint(folder, step, net, ema, optimizer, losses, digest)
            if time_budget_s is not None and time.perf_counter() - started > time_budget_s and step < config.steps:
                write_checkpoint(folder, step, net, ema, optimizer, losses, digest)
                notes.append("Stopped at the time budget; train again to continue.")
                return TrainResult(final, folder, step, losses, [], start_step, time.perf_counter() - started,
                                   finished=False, precision=precision, prompts=prompts, notes=notes)
    except JobCancelled:
        write_checkpoint(folder, step, net, ema, optimizer, losses, digest)
        report(step, config.steps, f"Cancelled at step {step}; the checkpoint is saved, train again to resume.")
        raise
    write_checkpoint(folder, step, net, ema, optimizer, losses, digest)
    shutil.copyfile(milestone_path(folder, MILESTONES), folder / ".model.tmp")
    os.replace(folder / ".model.tmp", final)
    gains = check_detail(final, notes)
    if prompts is not None:
        with atomic_path(folder / "prompts.json") as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(prompts)))
    return TrainResult(final, folder, step, losses, [milestone_path(folder, i) for i in range(1, MILESTONES + 1)],
                       start_step, time.perf_counter() - started, precision=precision, prompts=prompts, notes=notes,
                       detail_gain_db=gains)


def check_detail(model_path: Path, notes: list[str]) -> list[float]:
    """Each finer scale's gain over its upsampled input (sample.detail_gains), with a note for the user when none
    of the scales that had detail to learn learned it: the variations would be as soft as the coarsest enlarged."""
    from .sample import detail_gains

    measured = detail_gains(model_path)
    gains = [round(scale.gain_db, 2) for scale in measured]
    open_scales = [scale.gain_db for scale in measured if scale.upsampled_db < SHARP_ENOUGH_DB]
    if open_scales and max(open_scales) < SOFT_DETAIL_DB:
        notes.append(f"Its finer scales add little detail (at most {max(open_scales):+.1f} dB over the enlarged "
                     "coarser scale): the variations will be soft. Train longer, or with a lower learning rate if "
                     "this persists.")
    return gains


def load_milestone(model_path: str | os.PathLike, milestone: int = MILESTONES) -> MultiScaleDenoiser:
    """The model at load milestone 1–10 (10 = the finished model); the model file itself when no milestones."""
    path = Path(model_path)
    if milestone < MILESTONES:
        for candidate in (milestone_path(path.parent, milestone),  # a trained model's folder
                          path.parent / f"{path.stem}_milestones" / f"lm-{milestone:02d}.safetensors"):  # shipped
            if candidate.exists():
                return load_model_file(candidate)[0]
    return load_model_file(path)[0]


def has_milestones(model_path: str | os.PathLike) -> bool:
    path = Path(model_path)
    return milestone_path(path.parent, 1).exists() or (path.parent / f"{path.stem}_milestones").is_dir()
