"""The real-size paths on a CUDA GPU in fp16: does each run, and how much GPU memory does it take?

    .venv/bin/python bench/gpu_smoke.py        # SD 1.5-shaped random weights (pipelines/diffusion/real_size.py)
    .venv/bin/python bench/gpu_smoke.py --model models/anything-v5 --size 512 --steps 20
    .venv/bin/python bench/gpu_smoke.py --paths generate,lora --ip-adapter /path/to/h94-IP-Adapter

Paths: generate, controlnet, storyboard (2 panels with memory attention and a ControlNet), ip-adapter (only with
--ip-adapter: a folder laid out as h94/IP-Adapter; this machine reaches no hub), and one short training per method
(lora, embedding, full) with fp16 autocast, validation and export. For each: torch.cuda.max_memory_allocated and
max_memory_reserved from a reset before the path (the models' own weights included: the loader cache is emptied
between paths), seconds, and "ok" or the error. Without CUDA it says so and exits 0, so CI can call it anywhere.
Compare its figures with bench/bench_real_size.py's T4 estimates.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATHS = ("generate", "controlnet", "storyboard", "ip-adapter", "lora", "embedding", "full")
GB = 1024**3


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def run_path(path: str, model: str, control: str | None, ip_adapter: str | None, size: int, steps: int) -> None:
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    if path in ("generate", "controlnet", "ip-adapter"):
        from pipelines.diffusion.generate import ControlUnit, GenerateRequest, generate
        from pipelines.diffusion.ip_adapter import ReferenceImage

        units = (ControlUnit(control, image),) if path == "controlnet" else ()
        reference = ReferenceImage(image, 0.6, model=ip_adapter) if path == "ip-adapter" else None
        generate(GenerateRequest(prompt="1girl, smile", model=model, width=size, height=size, steps=steps,
                                 sampler="DPM++ 2M", schedule="Karras", controlnets=units, reference=reference,
                                 memory="none"))
    elif path == "storyboard":
        from pipelines.storyboard.generate import generate_storyboard
        from pipelines.storyboard.request import StoryboardRequest

        generate_storyboard(StoryboardRequest(prompts=("1girl, standing", "1girl, sitting"), sketches=(image, image),
                                              model=model, control=control, steps=steps, width=size, height=size))
    else:
        from pipelines.style_finetune.data import Dataset
        from pipelines.style_finetune.train import TrainConfig, train

        dataset = Dataset((image, image), ("0.png", "1.png"), ("zqstyle, noise",) * 2, "zqstyle", size)
        result = train(TrainConfig(name=f"smoke-{path}", model=model, method=path, steps=2, mixed_precision="fp16",
                                   validation_steps=2, validation_seeds=(1,)), dataset)
        if not result.finished or not result.files:
            raise RuntimeError(f"training stopped at step {result.steps} without exports")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="default: SD 1.5-shaped random weights")
    parser.add_argument("--controlnet", default=None, help="default: a real-size random ControlNet")
    parser.add_argument("--ip-adapter", default=None, help="a folder laid out as h94/IP-Adapter")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if not cuda_available():
        print("gpu_smoke: no CUDA device here; skipped.")
        return 0
    import torch

    os.environ.setdefault("ASL_DEVICE", "cuda")
    os.environ["ASL_DTYPE"] = "fp16"
    os.environ.setdefault("ASL_OUTPUTS", tempfile.mkdtemp(prefix="gpu-smoke-"))
    from pipelines.core import loader
    from pipelines.diffusion import real_size

    model = args.model or str(real_size.build_sd15())
    control = args.controlnet or str(real_size.build_controlnet())
    name = torch.cuda.get_device_name()
    total = torch.cuda.get_device_properties(0).total_memory / GB
    print(f"{name}, {total:.1f} GB, torch {torch.__version__}; fp16, {args.size}x{args.size}, {args.steps} steps; "
          f"model {model}\n")
    print("| path | result | peak allocated (GB) | peak reserved (GB) | seconds |")
    print("| --- | --- | --- | --- | --- |")
    failures = 0
    for path in args.paths.split(","):
        if path == "ip-adapter" and not args.ip_adapter:
            print("| ip-adapter | skipped (no --ip-adapter folder) | | | |")
            continue
        loader.CACHE.clear()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            run_path(path, model, control, args.ip_adapter, args.size, args.steps)
            outcome = "ok"
        except Exception as err:  # noqa: BLE001 - every path is tried; the table says which failed and why
            failures += 1
            outcome = f"{type(err).__name__}: {str(err)[:120]}".replace("|", "/").replace("\n", " ")
            traceback.print_exc(file=sys.stderr)
        torch.cuda.synchronize()
        print(f"| {path} | {outcome} | {torch.cuda.max_memory_allocated() / GB:.2f} | "
              f"{torch.cuda.max_memory_reserved() / GB:.2f} | {time.perf_counter() - started:.1f} |", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
