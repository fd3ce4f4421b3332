"""Command line: `python -m pipelines.diffusion generate|samplers|read|to-single-file`.

    python -m pipelines.diffusion generate "1girl, (silver hair:1.2)" --negative "lowres" --model tiny:sd15 \\
        --sampler "DPM++ 2M" --schedule Karras --steps 25 --cfg 7 --seed 42 --size 512x768 --clip-skip 2 --out out/
    python -m pipelines.diffusion generate "1girl" --model tiny:sd15 --sampler "Euler a"   # schedule: the sampler's own
    python -m pipelines.diffusion read image.png          # the generation parameters of any PNG (ours, A1111, ComfyUI)
    python -m pipelines.diffusion to-single-file models/my_folder out.safetensors   # for A1111/ComfyUI
"""

from __future__ import annotations

import argparse
import json
import sys


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height or width)


def _lora(text: str) -> tuple[str, float]:
    name, sep, weight = text.rpartition(":")
    try:
        return (name, float(weight)) if sep and name else (text, 1.0)
    except ValueError:
        return text, 1.0


def _copied(path: str, folder: str) -> str:
    """A copy of the output file `path` in `folder` (the run record keeps the original under outputs/)."""
    import shutil
    from pathlib import Path

    target = Path(folder) / Path(path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, target)
    return str(target)


def generate_command(args: argparse.Namespace) -> int:
    from .generate import GenerateRequest
    from .runs import run_generate

    width, height = _size(args.size)
    request = GenerateRequest(prompt=args.prompt, negative_prompt=args.negative, model=args.model, vae=args.vae,
                              sampler=args.sampler, schedule=args.schedule, steps=args.steps, cfg_scale=args.cfg,
                              seed=args.seed, batch_size=args.batch, width=width, height=height,
                              clip_skip=args.clip_skip, loras=tuple(_lora(item) for item in args.lora),
                              memory=args.memory)

    def progress(step: int, total: int, message: str) -> None:
        print(f"\r{message}", end="", file=sys.stderr, flush=True)

    record, output = run_generate(request, callback=progress)
    print(file=sys.stderr)
    for path in record.outputs:
        print(_copied(path, args.out) if args.out else path)
    for note in output.notes:
        print(f"note: {note}", file=sys.stderr)
    if output.test_model:
        print("note: made with a test model (random weights): the image is noise", file=sys.stderr)
    return 0


def read_command(args: argparse.Namespace) -> int:
    from pipelines.core.pngmeta import read_generation_parameters

    print(json.dumps(read_generation_parameters(args.image), indent=2, default=str, ensure_ascii=False))
    return 0


def samplers_command(args: argparse.Namespace) -> int:
    from .samplers import SAMPLERS, schedule_types_for

    for name in SAMPLERS:
        print(f"{name}: {', '.join(schedule_types_for(name))}")
    return 0


def single_file_command(args: argparse.Namespace) -> int:
    from pipelines.core.loader import is_test_model

    from .checkpoint import save_single_file
    from .models import load_pipeline

    note = {"asl_base_config": args.model} if is_test_model(args.model) else {}  # a tiny model's layout
    print(save_single_file(load_pipeline(args.model), args.out, half=args.half, metadata=note))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .generate import GenerateRequest

    defaults = GenerateRequest()
    parser = argparse.ArgumentParser(prog="python -m pipelines.diffusion", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="text to image, saved with A1111 infotext under outputs/generate/")
    gen.add_argument("prompt")
    gen.add_argument("--negative", default="")
    gen.add_argument("--model", default=defaults.model, help="hub id, diffusers folder, .safetensors file, tiny:sd15")
    gen.add_argument("--vae", default=None)
    gen.add_argument("--sampler", default=defaults.sampler)
    gen.add_argument("--schedule", default="Automatic",
                     help="A1111's schedule type; Automatic (default) is the sampler's own (Karras for DPM++ 2M)")
    gen.add_argument("--steps", type=int, default=defaults.steps)
    gen.add_argument("--cfg", type=float, default=defaults.cfg_scale)
    gen.add_argument("--seed", type=int, default=defaults.seed)
    gen.add_argument("--batch", type=int, default=1)
    gen.add_argument("--size", default=f"{defaults.width}x{defaults.height}", help="WIDTHxHEIGHT")
    gen.add_argument("--clip-skip", type=int, default=defaults.clip_skip)
    gen.add_argument("--lora", action="append", default=[], help="NAME:WEIGHT (or write <lora:NAME:WEIGHT>)")
    gen.add_argument("--memory", default=defaults.memory, help="auto, none, low, lowest")
    gen.add_argument("--out", default=None, help="also copy the images into this folder")
    gen.set_defaults(run=generate_command)
    read = commands.add_parser("read", help="print the generation parameters stored in an image")
    read.add_argument("image")
    read.set_defaults(run=read_command)
    commands.add_parser("samplers", help="list samplers and their schedule types").set_defaults(run=samplers_command)
    single = commands.add_parser("to-single-file", help="save an SD 1.5 pipeline as one A1111 .safetensors file")
    single.add_argument("model")
    single.add_argument("out")
    single.add_argument("--half", action="store_true", help="store fp16 weights (half the size)")
    single.set_defaults(run=single_file_command)
    args = parser.parse_args(argv)
    from pipelines.core.errors import UserError

    try:
        return args.run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
