"""Does style fine-tuning learn? One measurement, shared by tests/test_style_finetune_learns.py and
`bench/bench_style_finetune.py --learn`.

Four images of one flat, saturated palette are trained with one method through the loop `train()` uses
(`load_models`, `encode_images`, `start_phase`/`phase_at`, `optimizer_step`). Before and after, the model samples
4 latents at fixed seeds (the trigger prompt; DPM-Solver, as validation images, 10 steps, guidance 7.5), and
the distance between their per-channel mean and std and those of the training latents is taken. Training latents
are what the loop trains on: samples of each image's VAE posterior, whose exact per-channel mean and std follow
from the posteriors' means and stds (no draw needed).

What this shows on tiny:sd15 (random weights): its VAE encodes every image to nearly the same latents (mean about
(-0.04, -0.04, 0.02, 0.04), spread 0.03, posterior std 0.17, whatever the colours), and its UNet's noise
prediction is unrelated to the noise, so sampling amplifies it into latents of std about 9. The distance is
therefore almost all "std 9 where the training latents have 0.18": it falls when the UNet learns to denoise the
training latents, which LoRA and the full UNet do. Text enters the UNet only through cross-attention; the tiny
CLIP's final LayerNorm bounds every token state (norm about 6), and with random cross-attention weights a whole
prompt moves the noise prediction by about 0.03 against its 0.34. Even the 77 token states optimized freely under
that bound (more than any embedding can reach) lower the distance by only about 5%, so the embedding-only method
cannot meet the 30% on this model, whatever its vectors or learning rate (see SETTINGS and the test's xfail).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

TRIGGER = "zqstyle"
CAPTION = f"{TRIGGER}, flat shapes"
PALETTE = ((255, 0, 170), (0, 220, 255), (255, 230, 0))  # flat saturated magenta, cyan, yellow
IMAGES, SIZE = 4, 64
SEEDS = (1, 2, 3, 4)
SAMPLING_STEPS = 10
GUIDANCE = 7.5

# A short CPU run per method on tiny:sd15, fp32. Learning rates are raised for the short run but stay within
# what `check` accepts (≤ 1e-2). LoRA on the attention projections learns this slowly and noisily: with batch 1
# it stalls near -30% after 200-400 steps; batch 4 and alpha 32 (scale 4) reach -38% to -47% after 400 steps on
# training seeds 0-2. The full UNet gets to -56% in 40 steps. The embedding phase of embedding+lora is kept
# short (20%: it cannot move this UNet, see above), so its LoRA phase is the LoRA run (-41% to -49%).
SETTINGS: dict[str, dict[str, Any]] = {
    "embedding": {"steps": 200, "embedding_learning_rate": 5e-3, "vectors": 4, "batch_size": 4},
    "lora": {"steps": 400, "learning_rate": 5e-3, "alpha": 32.0, "batch_size": 4},
    "full": {"steps": 40, "learning_rate": 1e-3},
    "embedding+lora": {"steps": 500, "embedding_share": 0.2, "embedding_learning_rate": 5e-3, "vectors": 4,
                       "learning_rate": 5e-3, "alpha": 32.0, "batch_size": 4},
}


def palette_images(count: int = IMAGES, size: int = SIZE) -> list[Any]:
    """Flat rectangles and ellipses in three saturated colours on a flat ground: a style whose colours are known."""
    from PIL import Image, ImageDraw

    images = []
    for index in range(count):
        image = Image.new("RGB", (size, size), PALETTE[index % 3])
        draw = ImageDraw.Draw(image)
        for k in range(3):
            x, y = (index * 13 + k * 17) % (size - 24), (index * 7 + k * 23) % (size - 24)
            box = (x, y, x + 22, y + 22)
            fill = PALETTE[(index + k + 1) % 3]
            (draw.rectangle if k % 2 else draw.ellipse)(box, fill=fill)
        images.append(image)
    return images


def latent_stats(latents: Any) -> Any:
    """Per-channel mean, then per-channel std, of latents [N, C, H, W]: a vector of 2C."""
    import torch

    return torch.cat([latents.mean(dim=(0, 2, 3)), latents.std(dim=(0, 2, 3), correction=0)])


def training_latent_stats(data: Any, scaling_factor: float) -> Any:
    """latent_stats of the latents the loop trains on (mean + std · noise of each posterior, scaled), exactly:
    the channel mean is the posteriors' mean; the variance is the means' variance plus the mean posterior variance."""
    import torch

    mean, std = data.mean * scaling_factor, data.std * scaling_factor
    variance = mean.var(dim=(0, 2, 3), correction=0) + (std**2).mean(dim=(0, 2, 3))
    return torch.cat([mean.mean(dim=(0, 2, 3)), variance.sqrt()])


def generated_latents(models: Any, prompt: str, seeds: tuple[int, ...] = SEEDS, steps: int = SAMPLING_STEPS,
                      guidance: float = GUIDANCE) -> Any:
    """Latents the training copies sample now (as validation images are made: DPM-Solver, CPU-seeded noise)."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer,
                                   unet=models.unet, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False,
                                   scheduler=DPMSolverMultistepScheduler.from_config(models.pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    size = int(models.unet.config.sample_size) * int(getattr(models.pipe, "vae_scale_factor", 8))
    models.unet.eval()
    models.text_encoder.eval()
    try:
        with torch.no_grad():
            return pipe([prompt] * len(seeds), num_inference_steps=steps, guidance_scale=guidance, height=size,
                        width=size, output_type="latent",
                        generator=[torch.Generator().manual_seed(int(seed)) for seed in seeds]).images
    finally:
        models.unet.train()
        models.text_encoder.train()


@dataclass
class Learning:
    method: str
    before: float  # distance of the generated latents' stats to the training latents', untrained
    after: float  # the same after training
    parts_before: tuple[float, float]  # (mean part, std part) of `before`
    parts_after: tuple[float, float]
    target: list[float]
    generated_before: list[float]
    generated_after: list[float]
    train_seconds: float
    settings: dict[str, Any]

    @property
    def change(self) -> float:
        """after / before - 1: -0.3 is the issue's "falls by 30%"."""
        return self.after / self.before - 1

    def line(self) -> str:
        return (f"{self.method:16} {self.before:7.3f} → {self.after:7.3f} ({100 * self.change:+.0f}%)  "
                f"mean part {self.parts_before[0]:.2f} → {self.parts_after[0]:.2f}, std part "
                f"{self.parts_before[1]:.2f} → {self.parts_after[1]:.2f}  train {self.train_seconds:.1f} s")


def _parts(stats: Any, target: Any) -> tuple[float, float]:
    half = len(target) // 2
    return float((stats[:half] - target[:half]).norm()), float((stats[half:] - target[half:]).norm())


def measure_learning(method: str, model: str = "tiny:sd15", **overrides: Any) -> Learning:
    """Train `method` with SETTINGS[method] (and `overrides`) and measure the distance before and after."""
    from pipelines.style_finetune.train import (
        TrainConfig,
        _caption_text,
        check,
        encode_images,
        load_models,
        optimizer_step,
        phase_at,
        resolved,
        start_phase,
    )

    settings = {**SETTINGS[method], **overrides}
    images = palette_images()
    config = resolved(TrainConfig(name="learn", model=model, method=method, mixed_precision="no", **settings),
                      len(images))
    problems = check(config, len(images))
    if problems:
        raise ValueError(" ".join(problems))
    models = load_models(config, TRIGGER, [])
    prompt = _caption_text(CAPTION, TRIGGER, models.placeholder)
    data = encode_images(models, images, [prompt] * len(images))
    target = training_latent_stats(data, float(models.vae.config.scaling_factor))
    stats_before = latent_stats(generated_latents(models, prompt))
    started = time.perf_counter()
    models.unet.train()
    models.text_encoder.train()
    job = None
    for step in range(config.steps):
        phase = phase_at(config, step)
        if job is None or job.phase != phase:
            job = start_phase(models, config, phase, [])
        optimizer_step(models, config, data, None, step, job, nullcontext)
    seconds = time.perf_counter() - started
    stats_after = latent_stats(generated_latents(models, prompt))
    return Learning(method, float((stats_before - target).norm()), float((stats_after - target).norm()),
                    _parts(stats_before, target), _parts(stats_after, target), target.tolist(),
                    stats_before.tolist(), stats_after.tolist(), seconds, settings)
