"""Storyboard cost against the number of frames, memory attention (MAGA) on and off, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_storyboard.py [--model tiny:sd15] [--frames 1 2 4 8] [--steps 10]

For each N, the same N prompts and sketches are drawn with the memory on and off (interleaved, median of --reps).
Printed: seconds per storyboard and per frame, the least-squares line seconds = a + b·N with its R² (the thesis
reports time growing "exponentially"; lockstep should be linear while the per-frame memory cost stays small), the
on/off per-frame ratio at the largest N (target ≤ 1.3), and peak memory (CUDA: allocated; CPU: resident).
--memory worst starts the memory at block 0 and step 0 (the most expensive setting, an upper bound); --memory
default uses the issue's defaults, L = 8 of 16 blocks and S = 24 of 50 steps, scaled to this UNet and step count.

--bank measures the out-of-memory fallback instead (issue #19): the N frames drawn in chunks of one with the
earlier frames' keys and values kept in RAM, and with a RAM budget of 0 so that all of them go to disk, against
the lockstep batch; printed: seconds and ratios, the bank's peak RAM and disk bytes per scope, and what SD 1.5
keeps per frame at 512 px over 50 steps (computed from its UNet config: fp16, both CFG branches).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_storyboard.py --bank [--frames 4] [--size 128] [--steps 10]
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

PROMPTS = ["1boy, outdoors", "1boy, outdoors, sitting, on a bench", "1boy, on a bench, surrounded by flowers",
           "1boy, on a bench, flowers, rainy day", "1boy, standing up, umbrella", "1boy, walking home, rain",
           "1boy, opening a door", "1boy, inside, drying his hair"]


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Intercept, slope and R² of the least-squares line."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return intercept, slope, 1 - residual / total if total else 1.0


def sd15_bank_bytes_per_frame(size: int = 512, steps: int = 50, start_layer: int = 8, start_step: int = 24,
                              bytes_per_value: int = 2) -> int:
    """Keys + values SD 1.5 keeps per frame in the bank: the self-attention layers of transformer blocks from L on
    (up_blocks 1-3 at 1/32, 1/16 and 1/8 of the size; SD 1.5's blocks: down 6, mid 1, up 9), both CFG branches, the
    sampler steps from S on (one UNet pass each for Euler and DPM++ 2M)."""
    # (tokens, channels) of SD 1.5's 16 transformer blocks in forward order
    down = [(size // 8) ** 2] * 2 + [(size // 16) ** 2] * 2 + [(size // 32) ** 2] * 2
    channels = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320]
    tokens = down + [(size // 64) ** 2] + [(size // 32) ** 2] * 3 + [(size // 16) ** 2] * 3 + [(size // 8) ** 2] * 3
    per_pass = sum(2 * 2 * t * c * bytes_per_value for t, c in zip(tokens[start_layer:], channels[start_layer:],
                                                                  strict=True))
    return per_pass * (steps - start_step)


def bench_bank(args: argparse.Namespace, sketch: object) -> None:
    import dataclasses

    from pipelines.diffusion.models import controlnet_for, load_pipeline
    from pipelines.storyboard.generate import _FrameDrawer, frames_request
    from pipelines.storyboard.request import MemorySettings, StoryboardRequest

    count = max(args.frames)
    pipe = load_pipeline(args.model, memory="none")
    print(f"{args.model}, {args.size}px, {args.steps} steps, {count} frames, median of {args.reps}; memory from "
          "block 8 of 16, step 24 of 50")
    print("scope    | lockstep s | chunks, bank in RAM s (ratio) | chunks, bank on disk s (ratio) | bank peak RAM MB | "
          "on disk MB")
    for scope in ("all", "previous", "first"):
        request = StoryboardRequest(prompts=tuple(PROMPTS[:count]), sketches=(sketch,) * count, model=args.model,
                                    control=args.control, steps=args.steps, width=args.size, height=args.size,
                                    sampler="Euler", seed=1, memory=MemorySettings(True, 8, 24, scope))
        core = dataclasses.replace(frames_request(request, []), memory="none")
        controlnet = controlnet_for(pipe, core.controlnets[0].model)
        timings: dict[str, list[float]] = {"lockstep": [], "ram": [], "disk": []}
        banks = {}
        for rep in range(args.reps + 1):  # the first is a warm-up
            for name, chunk, budget in (("lockstep", 0, 1e9), ("ram", 1, 1e9), ("disk", 1, 0)):
                drawer = _FrameDrawer(request, pipe, controlnet, [], chunk=chunk, bank_ram_mb=budget)
                start = time.perf_counter()
                drawer.draw(core)
                if rep:
                    timings[name].append(time.perf_counter() - start)
                banks[name] = drawer.bank
        lock, ram, disk = (statistics.median(timings[name]) for name in ("lockstep", "ram", "disk"))
        print(f"{scope:8s} | {lock:10.2f} | {ram:8.2f} ({ram / lock:.2f}) | {disk:8.2f} ({disk / lock:.2f}) | "
              f"{banks['ram'].peak_ram_bytes / 2**20:10.1f} | {banks['disk'].disk_bytes / 2**20:.1f}")
    per_frame = sd15_bank_bytes_per_frame()
    print(f"SD 1.5 at 512 px, 50 steps, from step 24, blocks 8-15, fp16 (computed): {per_frame / 2**30:.2f} GiB per "
          f"kept frame; 8 panels in chunks of 1 with scope 'all' keep 7 frames = {7 * per_frame / 2**30:.1f} GiB; "
          f"with the default {2048} MB RAM budget the rest goes to disk; 'previous'/'first' keep 1 frame.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny:sd15")
    parser.add_argument("--control", default="tiny:controlnet")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--memory", choices=("worst", "default"), default="default")
    parser.add_argument("--bank", action="store_true", help="measure the chunked fallback's key/value bank")
    args = parser.parse_args()

    from PIL import Image, ImageDraw

    from pipelines.diffusion.models import load_pipeline
    from pipelines.storyboard.generate import generate_storyboard
    from pipelines.storyboard.memory import transformer_block_order
    from pipelines.storyboard.request import MemorySettings, StoryboardRequest

    blocks = len(transformer_block_order(load_pipeline(args.model).unet.attn_processors))
    start_layer, start_step = (0, 0) if args.memory == "worst" else (8, 24)  # L of 16, scaled to the UNet's blocks

    sketch = Image.new("RGB", (args.size, args.size), "white")
    ImageDraw.Draw(sketch).ellipse((args.size // 4, args.size // 8, 3 * args.size // 4, 7 * args.size // 8),
                                   outline="black", width=3)
    if args.bank:
        bench_bank(args, sketch)
        return
    results: dict[bool, list[tuple[int, float, float]]] = {True: [], False: []}
    for count in args.frames:
        base = StoryboardRequest(prompts=tuple(PROMPTS[:count]), sketches=(sketch,) * count, model=args.model,
                                 control=args.control, steps=args.steps, width=args.size, height=args.size,
                                 sampler="Euler", seed=1)
        timings: dict[bool, list[float]] = {True: [], False: []}
        peaks: dict[bool, float] = {}
        for rep in range(args.reps + 1):  # the first is a warm-up
            for memory_on in (False, True):
                memory = MemorySettings(memory_on, start_layer, start_step)
                request = StoryboardRequest(**{**base.__dict__, "memory": memory})
                start = time.perf_counter()
                output = generate_storyboard(request)
                if rep:
                    timings[memory_on].append(time.perf_counter() - start)
                peaks[memory_on] = output.peak_memory_mb
        for memory_on in (False, True):
            results[memory_on].append((count, statistics.median(timings[memory_on]), peaks[memory_on]))
    print(f"{args.model}, {args.size}px, {args.steps} steps, median of {args.reps}; memory from block "
          f"{start_layer} of 16 (this UNet has {blocks}), step {start_step} of 50 ({args.memory})")
    print("frames | off s (per frame) | on s (per frame) | on/off per frame | peak MB off / on")
    for (count, off_s, off_mb), (_, on_s, on_mb) in zip(results[False], results[True], strict=True):
        print(f"{count:6d} | {off_s:7.2f} ({off_s / count:.3f}) | {on_s:7.2f} ({on_s / count:.3f}) | "
              f"{on_s / off_s:5.2f} | {off_mb:.0f} / {on_mb:.0f}")
    for memory_on in (False, True):
        counts = [float(count) for count, _, _ in results[memory_on]]
        seconds = [value for _, value, _ in results[memory_on]]
        intercept, slope, r2 = line_fit(counts, seconds)
        print(f"memory {'on ' if memory_on else 'off'}: seconds = {intercept:.2f} + {slope:.3f}·N, R² = {r2:.4f}")
    last_off, last_on = results[False][-1], results[True][-1]
    print(f"per-frame cost at N={last_on[0]}: on/off = {last_on[1] / last_off[1]:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
