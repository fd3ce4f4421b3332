"""Peak memory per path at SD 1.5's real size (random weights from assets/configs, pipelines/diffusion/real_size.py)
on this CPU, and what each path needs in fp16 on a 16 GB T4.

    .venv/bin/python bench/bench_real_size.py                 # 512 px, every path, one fresh process per path
    .venv/bin/python bench/bench_real_size.py --size 256 --paths generate,lora

How the figures are made. Each path runs in its own process (peak RSS is per process): the models are loaded
in fp32 (CPU), the resident memory after loading is the WEIGHTS figure, the process's peak resident memory
(ru_maxrss) the PEAK, and PEAK − WEIGHTS the ACTIVATIONS (everything the call itself allocates: latents,
attention, the training copies, gradients, optimizer states, VAE decode). Trainings run one optimizer step under
bf16 autocast with fp32 master weights, which is what fp16 autocast on CUDA keeps too.

The T4 column: fp16 weights (parameters × 2 bytes, from the parameter counts of the modules the path keeps on the
GPU) + what the call needs on top + 0.7 GB for the CUDA context and allocator slack. Generation: the activations
measured here in fp32, halved (fp16 tensors). Training: the training copies (UNet in fp16 for LoRA/embedding, in
fp32 for the full method; the text encoder in fp32), the trainable parameters' fp32 weight, gradient and two AdamW
moments (16 bytes each), and the step's activations — measured here as peak − weights − the fp32 training copies
− the gradients and moments — as they are (autocast keeps the same mix of half and fp32 tensors on CUDA).
A ratio column divides PEAK by the fp32 weights of the same path measured in the same run. These are estimates
to size hardware with; bench/gpu_smoke.py measures the real thing on a GPU (torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATHS = ("generate", "controlnet", "storyboard", "lora", "embedding", "full")
GB = 1024**3
T4_GB = 15.0  # usable of a T4's 16 GB (15 GiB shown by nvidia-smi)
CUDA_CONTEXT_GB = 0.7
# Parameters of what the bench cannot build here: IP-Adapter plus-face SD 1.5 with laion's ViT-H/14 image encoder
# (h94/IP-Adapter: models/image_encoder 632 M; the plus-face resampler and the 16 to_k_ip/to_v_ip pairs 22 M).
IP_ADAPTER_PARAMETERS = 632_076_800 + 22_000_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------------------------------- one path (child)
def run_path(path: str, size: int) -> dict:
    import numpy as np
    from PIL import Image

    from pipelines.diffusion.models import load_pipeline
    from pipelines.diffusion.real_size import build_controlnet, build_sd15, parameter_count

    os.environ["ASL_DTYPE"] = "fp32"
    folder = str(build_sd15())
    control = str(build_controlnet()) if path in ("controlnet", "storyboard") else None
    pipe = load_pipeline(folder)
    on_gpu = parameter_count(pipe.unet) + parameter_count(pipe.text_encoder) + parameter_count(pipe.vae)
    if control:
        from pipelines.diffusion.models import load_controlnet

        on_gpu += parameter_count(load_controlnet(control))
    trainable = 0
    weights = rss_bytes()
    started = time.perf_counter()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    if path in ("generate", "controlnet"):
        from pipelines.diffusion.generate import ControlUnit, GenerateRequest, generate

        units = (ControlUnit(control, image),) if control else ()
        generate(GenerateRequest(prompt="1girl", model=folder, width=size, height=size, steps=1, sampler="Euler a",
                                 schedule="Automatic", controlnets=units, memory="none"))
    elif path == "storyboard":
        from pipelines.storyboard.generate import generate_storyboard
        from pipelines.storyboard.request import StoryboardRequest

        generate_storyboard(StoryboardRequest(prompts=("1girl, standing", "1girl, sitting"), sketches=(image, image),
                                              model=folder, control=control, steps=1, width=size, height=size))
    else:
        from pipelines.style_finetune.data import Dataset
        from pipelines.style_finetune.train import TrainConfig, train

        dataset = Dataset((image,), ("0.png",), ("zqstyle, noise",), "zqstyle", size)
        config = TrainConfig(name=f"bench-{path}", model=folder, method=path, steps=1, rank=16,
                             mixed_precision="bf16", validation_steps=1, validation_seeds=(1,))
        train(config, dataset, export=False)
        trainable = {"lora": _lora_parameters(pipe, 16), "embedding": 768 * config.vectors,
                     "full": parameter_count(pipe.unet)}[path]
    return {"path": path, "size": size, "weights": weights, "peak": peak_bytes(), "on_gpu_parameters": on_gpu,
            "unet": parameter_count(pipe.unet), "text_encoder": parameter_count(pipe.text_encoder),
            "trainable": trainable, "seconds": time.perf_counter() - started}


def _lora_parameters(pipe, rank: int) -> int:
    """Rank-r LoRA on every attention q, k, v, out of the UNet: r·(in + out) per projection."""
    total = 0
    for name, module in pipe.unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and hasattr(module, "in_features"):
            total += rank * (module.in_features + module.out_features)
    return total


# ---------------------------------------------------------------------------------------------- table (parent)
def step_activations(row: dict) -> float:
    """Bytes the call allocates beyond the loaded weights; for a training, beyond its fp32 training copies (UNet
    and text encoder, deep-copied from the pipeline) and the trainable parameters' gradients and AdamW moments."""
    extra = row["peak"] - row["weights"]
    if row["trainable"]:
        extra -= 4 * (row["unet"] + row["text_encoder"]) + 12 * row["trainable"]
    return max(extra, 0)


def t4_estimate(row: dict, activations: float | None = None) -> float:
    """GB on a T4 in fp16 (see the module docstring); `activations` replaces the row's measured ones."""
    if activations is None:
        activations = step_activations(row)
    weights = 2 * row["on_gpu_parameters"]  # the cached pipeline (and ControlNet) in fp16
    if not row["trainable"]:
        return (weights + activations / 2) / GB + CUDA_CONTEXT_GB
    unet_copy = 4 * row["unet"] if row["path"] == "full" else 2 * row["unet"]  # full trains fp32 master weights
    text_copy = 4 * row["text_encoder"]  # kept in fp32 (trained rows, LoRA)
    states = 12 * row["trainable"] + (0 if row["path"] == "full" else 4 * row["trainable"])  # grad, 2 moments (+w)
    return (weights + unet_copy + text_copy + states + activations) / GB + CUDA_CONTEXT_GB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_path(args.child, args.size)), flush=True)
        return
    rows = []
    for path in args.paths.split(","):
        done = subprocess.run([sys.executable, __file__, "--child", path, "--size", str(args.size)],
                              capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            print(f"{path}: failed\n{done.stderr[-2000:]}")
            continue
        rows.append(json.loads(lines[-1].removeprefix("RESULT ")))
    print(f"\nSD 1.5 real size, random weights, {args.size}x{args.size}, 1 step, CPU fp32 weights (trainings: "
          "bf16 autocast)\n")
    print("| path | weights (GB) | peak (GB) | peak/weights | activations (GB) | seconds | T4 fp16 estimate (GB) "
          "| fits a 16 GB T4 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        estimate = t4_estimate(row)
        print(f"| {row['path']} | {row['weights'] / GB:.2f} | {row['peak'] / GB:.2f} | "
              f"{row['peak'] / row['weights']:.2f} | {step_activations(row) / GB:.2f} | "
              f"{row['seconds']:.0f} | {estimate:.1f} | {'yes' if estimate <= T4_GB else 'no'} |")
    lora_row = next((row for row in rows if row["path"] == "lora"), None)
    if lora_row and not any(row["path"] == "full" for row in rows):
        # Not run (fp32 AdamW on 859 M parameters needs ~19 GB of RAM here): the LoRA step's activations (both
        # backpropagate through the whole UNet) with the full method's fp32 master UNet, gradient and moments.
        full = {**lora_row, "path": "full", "trainable": lora_row["unet"]}
        estimate = t4_estimate(full, step_activations(lora_row))
        print(f"| full (not run: LoRA's step activations + 16 bytes × {full['unet'] / 1e6:.0f} M) | | | | "
              f"{step_activations(lora_row) / GB:.2f} | | {estimate:.1f} | {'yes' if estimate <= T4_GB else 'no'} |")
    generate_row = next((row for row in rows if row["path"] == "generate"), None)
    if generate_row:
        estimate = t4_estimate(generate_row) + IP_ADAPTER_PARAMETERS * 2 / GB
        print(f"| IP-Adapter plus-face (not run: generate + {IP_ADAPTER_PARAMETERS / 1e6:.0f} M parameters in fp16) "
              f"| | | | | | {estimate:.1f} | {'yes' if estimate <= T4_GB else 'no'} |")


if __name__ == "__main__":
    main()
