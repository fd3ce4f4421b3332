"""What the diffusion core costs on top of diffusers, in one run: seconds per image and prompt encoding.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_diffusion.py [--model tiny:sd15] [--size 256] [--steps 20] [--reps 5]
        [--ip-adapter tiny:ip_adapter]

1. Generation: `pipelines.diffusion.generate` (A1111 prompt rules, CPU seeds, a fresh scheduler and a from_pipe
   copy per call, the step hook) against the bare diffusers call on the same cached pipeline with the same
   settings (prompt strings, DPM++ 2M Karras, steps, CFG, size, a CPU generator). Interleaved rep by rep so
   that load from other processes hits both alike. Ratio = bare seconds / core seconds (target ≥ 0.95).
2. Prompt encoding of a 200-token weighted prompt (3 chunks): `encode_prompts` against the maintained
   library's `get_embeddings_sd15` (diffusion-prompt-embedder: the same chunked, weighted CLIP encoding, without
   A1111's renormalisation), both with clip skip 2. Ratio = library seconds / ours.
3. A reference image (IP-Adapter): the core, which puts the adapter into the shared UNet for each call and takes it
   out again, against diffusers with the same adapter loaded once and left in (its own `load_ip_adapter`), same
   settings and reference. Ratio = kept-adapter seconds / core seconds: what sharing the cached model costs.
4. The fast preview (LCM-LoRA, 4 LCM steps at CFG 1) against the full request (DPM++ 2M Karras, --steps): the
   speed-up a CPU user gets from ticking it. Ratio = full seconds / preview seconds.
The tiny pipeline's UNet is small, so the fixed cost per call weighs far more here than with a real model: this is
the worst case for the ratio. Pass --model with a real SD 1.5 id or folder where one is available.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PROMPT = "masterpiece, best quality, 1girl, (silver hair:1.2), [simple background], looking at viewer"
NEGATIVE = "lowres, bad anatomy, (worst quality:1.4)"
PLAIN_PROMPT = PROMPT.replace("(", "").replace(")", "").replace("[", "").replace("]", "")  # for bare diffusers
LONG_TAGS = ("1girl, solo, long hair, (blue eyes:1.3), smile, school uniform, serafuku, pleated skirt, "
             "cherry blossoms, outdoors, day, (sunlight:0.8), wind, petals, looking back, from side, hair ribbon, "
             "red ribbon, white shirt, blue skirt, thighhighs, loafers, holding bag, school bag, ")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_generation(args: argparse.Namespace) -> None:
    import torch

    from pipelines.diffusion.generate import GenerateRequest, generate
    from pipelines.diffusion.models import load_pipeline
    from pipelines.diffusion.samplers import make_scheduler

    request = GenerateRequest(prompt=PROMPT, negative_prompt=NEGATIVE, model=args.model, width=args.size,
                              height=args.size, steps=args.steps, sampler="DPM++ 2M", schedule="Karras",
                              cfg_scale=7.0, seed=42)
    pipe = load_pipeline(args.model)
    bare = type(pipe).from_pipe(pipe, scheduler=make_scheduler("DPM++ 2M", "Karras", pipe.scheduler.config),
                                dtype=pipe.dtype)
    bare.set_progress_bar_config(disable=True)

    def bare_call() -> None:
        bare(prompt=PLAIN_PROMPT,
             negative_prompt=NEGATIVE, num_inference_steps=args.steps, guidance_scale=7.0, width=args.size,
             height=args.size, generator=torch.Generator("cpu").manual_seed(42))

    def core_call() -> None:
        generate(request)

    bare_call(), core_call()  # warm-up: caches, first-call allocations
    bare_times, core_times = [], []
    for _ in range(args.reps):
        bare_times.append(timed(bare_call))
        core_times.append(timed(core_call))
    bare_s, core_s = statistics.median(bare_times), statistics.median(core_times)
    print(f"generation {args.model} {args.size}px {args.steps} steps, median of {args.reps}:")
    print(f"  bare diffusers call  {bare_s:.3f} s/image")
    print(f"  through the core     {core_s:.3f} s/image   (fixed cost per call {1000 * (core_s - bare_s):+.0f} ms)")
    print(f"  ratio bare/core      {bare_s / core_s:.3f}   (target >= 0.95)")


def bench_reference_and_preview(args: argparse.Namespace) -> None:
    import copy
    import dataclasses

    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from pipelines.core.loader import resolve_path_or_id
    from pipelines.core.seeds import cpu_generator
    from pipelines.core.tiny_models import IP_ADAPTER_WEIGHTS
    from pipelines.diffusion.generate import GenerateRequest, generate
    from pipelines.diffusion.ip_adapter import ReferenceImage
    from pipelines.diffusion.library import FAST_PREVIEW, lcm_lora
    from pipelines.diffusion.models import load_pipeline
    from pipelines.diffusion.samplers import make_scheduler

    face = Image.new("RGB", (224, 224), (240, 200, 180))
    request = GenerateRequest(prompt=PROMPT, negative_prompt=NEGATIVE, model=args.model, width=args.size,
                              height=args.size, steps=args.steps, sampler="DPM++ 2M", schedule="Karras",
                              cfg_scale=7.0, seed=42)
    with_reference = dataclasses.replace(request, reference=ReferenceImage(face, scale=0.6, model=args.ip_adapter))
    shared = load_pipeline(args.model)
    kept = StableDiffusionPipeline(vae=shared.vae, text_encoder=shared.text_encoder, tokenizer=shared.tokenizer,
                                   unet=copy.deepcopy(shared.unet), safety_checker=None,
                                   feature_extractor=None, image_encoder=None, requires_safety_checker=False,
                                   scheduler=make_scheduler("DPM++ 2M", "Karras", shared.scheduler.config))
    kept.set_progress_bar_config(disable=True)
    folder, _, weights = IP_ADAPTER_WEIGHTS.rpartition("/")
    kept.load_ip_adapter(resolve_path_or_id(args.ip_adapter), subfolder=folder, weight_name=weights)
    kept.set_ip_adapter_scale(0.6)
    latents = torch.randn((1, 4, args.size // 8, args.size // 8), generator=cpu_generator(42))

    def kept_call() -> None:
        kept(prompt=PLAIN_PROMPT, negative_prompt=NEGATIVE, ip_adapter_image=face, num_inference_steps=args.steps,
             guidance_scale=7.0, width=args.size, height=args.size, latents=latents, generator=cpu_generator(42))

    preview = dataclasses.replace(request, loras=((lcm_lora(args.model), 1.0),), **FAST_PREVIEW)
    calls = {"kept": kept_call, "reference": lambda: generate(with_reference), "full": lambda: generate(request),
             "preview": lambda: generate(preview)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up
        call()
    for _ in range(args.reps):
        for name, call in calls.items():
            times[name].append(timed(call))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"reference image (IP-Adapter {args.ip_adapter}), median of {args.reps}:")
    print(f"  adapter kept in (diffusers)   {median['kept']:.3f} s/image")
    print(f"  core, in and out per call     {median['reference']:.3f} s/image   "
          f"ratio {median['kept'] / median['reference']:.3f}")
    print(f"fast preview (LCM-LoRA, {FAST_PREVIEW['steps']} LCM steps, CFG {FAST_PREVIEW['cfg_scale']:g}) vs "
          f"DPM++ 2M Karras {args.steps} steps:")
    print(f"  full {median['full']:.3f} s, preview {median['preview']:.3f} s   "
          f"speed-up {median['full'] / median['preview']:.2f}x")


def bench_prompt_encoding(args: argparse.Namespace) -> None:
    import torch
    from diffusion_prompt_embedder import get_embeddings_sd15

    from pipelines.diffusion.models import load_pipeline
    from pipelines.diffusion.prompts import encode_prompts

    pipe = load_pipeline(args.model)
    prompt, tokens = "", 0
    for tag in (LONG_TAGS * 10).split(", "):  # tags until the prompt is 200 tokens long
        if tokens >= 200:
            break
        prompt += tag + ", "
        tokens = len(pipe.tokenizer(prompt, truncation=False, verbose=False).input_ids) - 2
    with torch.inference_mode():
        ours = encode_prompts(pipe, prompt, NEGATIVE, clip_skip=2)

        def ours_call() -> None:
            encode_prompts(pipe, prompt, NEGATIVE, clip_skip=2)

        def library_call() -> None:
            get_embeddings_sd15(pipe.tokenizer, pipe.text_encoder, prompt=prompt, neg_prompt=NEGATIVE, clip_skip=2)

        ours_call(), library_call()
        ours_times, library_times = [], []
        for _ in range(args.reps * 4):
            library_times.append(timed(library_call))
            ours_times.append(timed(ours_call))
    ours_s, library_s = statistics.median(ours_times), statistics.median(library_times)
    print(f"prompt encoding, {tokens} tokens -> {ours.chunks} chunks, cond {tuple(ours.cond.shape)}:")
    print(f"  diffusion-prompt-embedder  {1000 * library_s:.1f} ms")
    print(f"  encode_prompts (ours)      {1000 * ours_s:.1f} ms")
    print(f"  ratio library/ours         {library_s / ours_s:.3f}   (target >= 0.95)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny:sd15")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--ip-adapter", default="tiny:ip_adapter", help="laid out as h94/IP-Adapter")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_generation(args)
    bench_reference_and_preview(args)
    bench_prompt_encoding(args)


if __name__ == "__main__":
    main()
