"""Command line: prepare a dataset, train (resumes by itself), compare base and tuned, evaluate, list.

    python -m pipelines.style_finetune prepare imgs/*.png more.zip --name ark --trigger arkstyle --resolution 512
    python -m pipelines.style_finetune train --name ark --model models/anything-v5 --method embedding+lora
    python -m pipelines.style_finetune compare --tuned ark --prompt "arkstyle, 1girl, smile" --count 4 --out out/
    python -m pipelines.style_finetune evaluate --tuned ark --count 32 --json report.json
    python -m pipelines.style_finetune list

Every TrainConfig field is a `train` flag (--learning-rate, --rank, --prior-preservation …). On several GPUs:

    accelerate launch --multi_gpu --num_processes 4 -m pipelines.style_finetune train --name ark …
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path


def _config_flags(parser: argparse.ArgumentParser) -> None:
    from .config import METHODS, TrainConfig

    for item in dataclasses.fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        default = item.default
        if item.name == "method":
            parser.add_argument(flag, default=default, choices=list(METHODS))
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=int, nargs="+", default=list(default))
        else:
            parser.add_argument(flag, type=type(default), default=default)


def _progress(step: int, total: int, message: str) -> None:
    print(f"[{step}/{total}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from pipelines.core.errors import UserError

    parser = argparse.ArgumentParser(prog="python -m pipelines.style_finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="check, crop and caption images into a training dataset")
    prepare.add_argument("images", nargs="+")
    prepare.add_argument("--name", required=True)
    prepare.add_argument("--trigger", required=True)
    prepare.add_argument("--resolution", type=int, default=512)
    prepare.add_argument("--face-aware", action="store_true")
    prepare.add_argument("--caption-model", default=None, help="a BLIP model, e.g. Salesforce/blip-image-"
                         "captioning-base (or tiny:blip for a test)")
    _config_flags(commands.add_parser("train", help="train (or resume) on the prepared dataset of --name"))
    compare = commands.add_parser("compare", help="base and tuned images on the same seeds")
    evaluate = commands.add_parser("evaluate", help="seed 000's experiment: metrics with intervals")
    for sub in (compare, evaluate):
        sub.add_argument("--tuned", required=True)
        sub.add_argument("--prompt", default="")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--steps", type=int, default=20)
        sub.add_argument("--lora-scale", type=float, default=1.0)
        sub.add_argument("--size", type=int, default=512)
    compare.add_argument("--count", type=int, default=4)
    compare.add_argument("--fast-preview", action="store_true", help="LCM-LoRA, 4 steps at CFG 1 (for a CPU)")
    compare.add_argument("--out", default="style_ab")
    evaluate.add_argument("--count", type=int, default=16)
    evaluate.add_argument("--json", default=None)
    commands.add_parser("list", help="finished trainings")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from .apply import CompareRequest, compare_base_tuned, list_tuned
    from .config import TrainConfig
    from .data import build_dataset, load_dataset, save_dataset
    from .runs import dataset_folder, run_train

    if args.command == "prepare":
        dataset = build_dataset(args.images, args.trigger, resolution=args.resolution, face_aware=args.face_aware,
                                caption_model=args.caption_model, progress=_progress)
        folder = save_dataset(dataset, dataset_folder(args.name))
        print(f"{len(dataset)} images in {folder}; captions in {folder / 'captions.json'} (edit them freely)")
        for note in dataset.notes:
            print("note:", note)
    elif args.command == "train":
        values = {item.name: getattr(args, item.name) for item in dataclasses.fields(TrainConfig)}
        values["validation_seeds"] = tuple(values["validation_seeds"])
        record, result = run_train(TrainConfig(**values), callback=_progress)
        if int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch, process 0 reports
            print(result.summary.replace("**", ""))
            for kind, path in result.files.items():
                print(f"{kind}: {path}")
    elif args.command == "compare":
        output = compare_base_tuned(CompareRequest(tuned=args.tuned, prompt=args.prompt, seed=args.seed,
                                                   count=args.count, steps=args.steps, lora_scale=args.lora_scale,
                                                   size=args.size, fast_preview=args.fast_preview),
                                    callback=_progress)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        output.grid.save(out / "grid.png")
        print(f"{out / 'grid.png'}: top row base, bottom row tuned, seeds {output.seeds}")
    elif args.command == "evaluate":
        from .evaluate import EvaluateRequest, evaluate

        reference = list(load_dataset(dataset_folder(args.tuned)).images)
        result = evaluate(EvaluateRequest(tuned=args.tuned, count=args.count, prompt=args.prompt, seed=args.seed,
                                          steps=args.steps, lora_scale=args.lora_scale, size=args.size),
                          reference, callback=_progress)
        for row in result.report.rows:
            print(f"{row.name}: base {row.a}, tuned {row.b}, difference {row.difference} "
                  f"[{row.low}, {row.high}] — {row.verdict}" + (" (TEST NETWORK, not real)" if row.test_model else ""))
        for key, reason in result.report.skipped.items():
            print(f"skipped {key}: {reason}")
        if args.json:
            Path(args.json).write_text(result.report.to_json())
    else:
        for tuned in list_tuned():
            print(f"{tuned.name}: {tuned.method}, trigger '{tuned.trigger}', base {tuned.base_model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
