"""Style fine-tuning: optimizer steps per second of our loop against a plain diffusers-example loop, per method,
and peak memory; bf16 autocast against fp32 on this CPU.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_style_finetune.py [--model tiny:sd15] [--size 128] [--steps 20]

For each method the same training copies, data and batch run through (a) `optimizer_step`, the loop `train()` uses
(its per-step generator, caption placeholders, embedding-row restore), and (b) the arithmetic of diffusers'
examples written plainly (train_dreambooth_lora.py / textual_inversion.py: sample the cached VAE posterior, noise,
timesteps, text encoder, UNet, MSE, backward, AdamW step), interleaved, median of --reps blocks of --steps steps.
Ratio = reference seconds / ours (≥ 1.0: the job machinery costs nothing measurable). The examples also VAE-encode
every image on every step; ours encodes each image once, which the "example, VAE each step" column shows.
Peak memory: CUDA max allocated, or on the CPU the process's peak resident set, each method in a fresh process.
The bf16 line trains the LoRA --steps steps in fp32 and in bf16 autocast from the same start and compares the
step time and the final denoising loss on fixed draws (they should agree within a few %).
--learn [STEPS]: does each method move what it generates toward the training style? The measurement of
tests/test_style_finetune_learns.py (tests/support/style_learning.py, one copy): 4 images of one flat saturated
palette, trained per method with its SETTINGS (learning rates raised for a short run, within `check`'s limits;
STEPS overrides the steps); before and after, 4 latents are sampled at fixed seeds (10 DPM-Solver steps,
guidance 7.5, the trigger prompt) and the distance between their per-channel mean/std and the training latents'
is printed with its change. On tiny:sd15, fp32, 2 CPU cores (distance before → after, training time):
    embedding        17.82 → 17.83 (+0%)   200 steps, batch 4, 4 vectors, lr 5e-3         9 s
    lora             17.77 → 10.77 (-39%)  400 steps, batch 4, lr 5e-3, rank 8, alpha 32  16 s
    full             17.77 →  7.79 (-56%)   40 steps, batch 1, lr 1e-3                     1 s
    embedding+lora   17.82 → 10.57 (-41%)  500 steps (20% embedding), as the two above    23 s
LoRA's and embedding+lora's figures vary from -38% to -49% with the training seed (0-2).
Nearly all of the distance is the samples' std (about 9 against the training latents' 0.18): the random UNet's
noise prediction is unrelated to the noise. Training the UNet (LoRA, full) fixes part of it; an embedding cannot,
since text reaches the UNet only through cross-attention under the text encoder's final LayerNorm (see
tests/support/style_learning.py). The tiny VAE encodes every image to nearly the same latents, so on this model
the check shows that the tuned model learns the training latents, not a palette.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

METHODS = ("embedding", "lora", "full", "embedding+lora")


def _setup(model: str, method: str, size: int, mixed_precision: str = "no"):
    import numpy as np
    from PIL import Image

    from pipelines.style_finetune.train import (
        TrainConfig,
        _caption_text,
        encode_images,
        load_models,
        phase_at,
        resolved,
        start_phase,
    )

    images = [Image.fromarray((np.random.default_rng(i).random((size, size, 3)) * 255).astype("uint8"))
              for i in range(4)]
    config = resolved(TrainConfig(name="bench", model=model, method=method, steps=1000,
                                  mixed_precision=mixed_precision), len(images))
    models = load_models(config, "zqstyle", [])
    captions = [_caption_text("zqstyle, a picture", "zqstyle", models.placeholder)] * len(images)
    data = encode_images(models, images, captions)
    phase = phase_at(config, 999)  # the method's main phase (LoRA for embedding+lora)
    return config, models, data, start_phase(models, config, phase, []), images


def _reference_step(models, data, job, images_pixels, generator, vae_each_step: bool) -> float:
    """diffusers' example step, written plainly (no placeholders, no restore, no micro-step bookkeeping)."""
    import torch
    import torch.nn.functional as F

    index = torch.randint(0, len(data.mean), (1,), generator=generator)
    if vae_each_step:
        with torch.no_grad():
            latents = models.vae.encode(images_pixels[index]).latent_dist.sample(generator=generator)
    else:
        latents = data.mean[index] + data.std[index] * torch.randn(data.mean[index].shape, generator=generator)
    latents = latents * models.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, models.noise_scheduler.config.num_train_timesteps, (1,), generator=generator)
    noisy = models.noise_scheduler.add_noise(latents, noise, timesteps)
    hidden = models.text_encoder(data.input_ids[index])[0]
    loss = F.mse_loss(models.unet(noisy, timesteps, hidden).sample.float(), noise.float())
    loss.backward()
    job.optimizer.step()
    job.optimizer.zero_grad(set_to_none=True)
    if models.new_ids:  # textual_inversion.py puts the other rows back after every step
        with torch.no_grad():
            weight = models.text_encoder.get_input_embeddings().weight
            keep = torch.ones(weight.shape[0], dtype=torch.bool)
            keep[models.new_ids] = False
            weight[keep] = models.original_embeddings[keep]
    return loss.item()


def measure_method(model: str, method: str, size: int, steps: int, reps: int) -> dict:
    import numpy as np
    import torch

    from pipelines.style_finetune.train import optimizer_step

    config, models, data, job, images = _setup(model, method, size)
    pixels = torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) / 127.5 - 1 for i in images]))
    pixels = pixels.permute(0, 3, 1, 2).contiguous()
    generator = torch.Generator().manual_seed(0)
    for step in range(2):  # warm-up
        optimizer_step(models, config, data, None, step, job, nullcontext)
        _reference_step(models, data, job, pixels, generator, False)
    ours, plain, with_vae = [], [], []
    for rep in range(reps):
        for target, run in ((ours, lambda s: optimizer_step(models, config, data, None, s, job, nullcontext)),
                            (plain, lambda s: _reference_step(models, data, job, pixels, generator, False)),
                            (with_vae, lambda s: _reference_step(models, data, job, pixels, generator, True))):
            started = time.perf_counter()
            for step in range(steps):
                run(rep * steps + step)
            target.append((time.perf_counter() - started) / steps)
    return {"method": method, "ours_s": statistics.median(ours), "example_s": statistics.median(plain),
            "example_vae_s": statistics.median(with_vae), "peak_mb": _peak_mb()}


def _peak_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_bf16(model: str, size: int, steps: int) -> dict:
    import numpy as np
    import torch

    from pipelines.style_finetune.train import autocast_for, denoising_loss, optimizer_step

    results = {}
    for precision in ("no", "bf16"):
        config, models, data, job, _ = _setup(model, "lora", size, precision)
        models.unet.to(memory_format=torch.channels_last)
        autocast, used = autocast_for(models.device, precision)
        optimizer_step(models, config, data, None, 0, job, autocast)  # warm-up
        started = time.perf_counter()
        for step in range(1, steps + 1):
            optimizer_step(models, config, data, None, step, job, autocast)
        seconds = (time.perf_counter() - started) / steps
        indices = torch.arange(len(data.mean))
        with torch.no_grad():
            loss = float(np.mean([denoising_loss(models, data, indices, torch.Generator().manual_seed(100 + k))
                                  .mean().item() for k in range(8)]))
        results[used] = {"step_s": seconds, "final_loss": loss}
    return results


def measure_learning(model: str, methods: list[str], steps: int) -> None:
    from tests.support.style_learning import GUIDANCE, SAMPLING_STEPS, SEEDS
    from tests.support.style_learning import measure_learning as measure

    print(f"learning check (tests/test_style_finetune_learns.py): {len(SEEDS)} latents sampled at fixed seeds "
          f"({SAMPLING_STEPS} DPM-Solver steps, guidance {GUIDANCE}) before and after training; distance of their "
          "per-channel mean/std to the training latents' (the issue asks for ≥ 30% less)")
    for method in methods:
        result = measure(method, model, **({"steps": steps} if steps else {}))
        print(f"  {result.line()}  {result.settings}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny:sd15")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process: one method, JSON out
    parser.add_argument("--learn", type=int, nargs="?", const=0, default=None, metavar="STEPS",
                        help="only the learning check (the test's settings; STEPS: that many steps per method)")
    args = parser.parse_args()
    if args.learn is not None:
        measure_learning(args.model, args.methods, args.learn)
        return
    if args.one:
        print(json.dumps(measure_method(args.model, args.one, args.size, args.steps, args.reps)))
        return
    import torch

    print(f"model {args.model}, {args.size}×{args.size} px, batch 1, fp32, {args.steps} steps × {args.reps} reps, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'method':16} {'ours s/step':>12} {'example':>10} {'ratio':>7} {'ex.+VAE':>9} {'peak MB':>9}")
    for method in args.methods:
        child = subprocess.run([sys.executable, __file__, "--one", method, "--model", args.model, "--size",
                                str(args.size), "--steps", str(args.steps), "--reps", str(args.reps)],
                               capture_output=True, text=True, check=True)
        row = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"{method:16} {row['ours_s']:12.4f} {row['example_s']:10.4f} {row['example_s'] / row['ours_s']:7.2f} "
              f"{row['example_vae_s']:9.4f} {row['peak_mb']:9.0f}")
    bf16 = measure_bf16(args.model, args.size, args.steps)
    if "bf16" in bf16:
        fp32, half = bf16["fp32"], bf16["bf16"]
        print(f"LoRA step, fp32 {fp32['step_s']:.4f} s vs bf16 autocast {half['step_s']:.4f} s: "
              f"{fp32['step_s'] / half['step_s']:.2f}× faster; final loss {fp32['final_loss']:.4f} vs "
              f"{half['final_loss']:.4f} ({100 * (half['final_loss'] / fp32['final_loss'] - 1):+.1f}%)")
    else:
        print("bf16 autocast is not supported on this CPU (no AVX-512 BF16): training runs in fp32.")


if __name__ == "__main__":
    main()
