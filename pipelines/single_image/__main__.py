"""python -m pipelines.single_image train|sample|edit — the same functions the tab calls.

    python -m pipelines.single_image train photo.png --steps 2000 --backbone fcn --out model.safetensors
    python -m pipelines.single_image sample model.safetensors --count 4 --seed 1 --out variations/
    python -m pipelines.single_image edit model.safetensors "snow on the mountains" --guidance 20 --out edits/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

from .request import DETAIL_CHOICES, DETAIL_MODEL


def _print_progress(step: int, total: int, message: str) -> None:
    print(f"[{step}/{total}] {message}", file=sys.stderr, flush=True)


def _train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, train

    config = TrainConfig(backbone=args.backbone, steps=args.steps, width=args.width, batch_size=args.batch_size,
                         lr=args.lr, coarse_share=args.coarse_share, scale_weights=tuple(args.scale_weights),
                         lr_schedule=args.lr_schedule, seed=args.seed,
                         coarsest_side=args.coarsest_side, coarsest_batch_size=args.coarsest_batch_size,
                         dilations=tuple(args.dilations), timestep_weighting=args.timestep_weighting,
                         fine_prediction=args.fine_prediction,
                         max_area=args.max_side ** 2, text=args.text,
                         prompt=args.prompt,
                         contrastive=args.contrastive, blip_model=args.blip, clip_model=args.clip,
                         precision=args.precision, max_grad_norm=args.max_grad_norm,
                         coarsest_crop=args.coarsest_crop, fine_crop=args.fine_crop, fine_noise=args.fine_noise)
    image = _image(args.image)
    load_before = [round(value, 2) for value in os.getloadavg()]  # recorded: a shared CPU's speed depends on it
    if args.minutes:
        config = _steps_for_minutes(config, image, args.minutes)
    result = train(config, image, callback=_print_progress, resume=not args.fresh)
    print(result.summary)
    card = {"command": "python -m pipelines.single_image " + " ".join(sys.argv[1:]),
            "config": dataclasses.asdict(config), "steps": result.steps, "seconds": round(result.seconds, 1),
            "load_average_1_5_15_min": {"start": load_before, "end": [round(v, 2) for v in os.getloadavg()]},
            "precision": result.precision, "loss_first_20": _mean(result.losses[:20]),
            "loss_last_100": _mean(result.losses[-100:]), "folder": str(result.folder),
            # each finer scale's dB over its upsampled input, given the true coarser level: ~0 means no detail
            "detail_gain_db": result.detail_gain_db}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        from .model import load_model_file, save_model

        model, metadata = load_model_file(result.model_path)
        save_model(model, out, half=args.half, trained_on=metadata.get("trained_on", ""), steps=result.steps,
                   seed=config.seed)
        card["file"] = out.name
        card["trained_on"] = metadata.get("trained_on", "")
        card["fp16_storage"] = args.half
        if args.card:
            Path(args.card).write_text(json.dumps(card, indent=2) + "\n")
        if args.copy_milestones:
            shutil.copytree(result.folder / "milestones", out.parent / f"{out.stem}_milestones", dirs_exist_ok=True)
    print(json.dumps(card, indent=2))


def _steps_for_minutes(config, image, minutes: float):
    """The config with as many steps as fit in `minutes` on this machine as loaded now (the tab's timed probe)."""
    from .train import measure_seconds_per_step, prepare_image

    prepared = prepare_image(image, config.max_area)[0]
    per_step = measure_seconds_per_step(prepared, config)
    steps = max(10, int(minutes * 60 / per_step))
    print(f"{per_step:.3f} s per step measured now: {steps} steps for {minutes:g} min", file=sys.stderr, flush=True)
    return dataclasses.replace(config, steps=steps)


def _image(source: str) -> object:
    """A path, or "skimage:NAME" for a photo scikit-image ships (e.g. skimage:coffee), so commands reproduce."""
    if not source.startswith("skimage:"):
        return source
    from PIL import Image
    from skimage import data

    name = source.partition(":")[2]
    if name not in ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "colorwheel"):
        raise SystemExit(f"Unknown scikit-image photo {name!r}.")
    return Image.fromarray(getattr(data, name)()).convert("RGB")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 5) if values else None


def _sample(args: argparse.Namespace) -> None:
    from .sample import VariationRequest, variations

    request = VariationRequest(count=args.count, seed=args.seed, start_scale=args.start_scale,
                               width_scale=args.width_scale, height_scale=args.height_scale, milestone=args.lm,
                               steps_per_scale=args.steps_per_scale, detail=args.detail)
    output = variations(args.model, request, callback=_print_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for image, seed in zip(output.images, output.seeds, strict=True):
        image.save(out / f"variation_{seed}.png")
    print(f"{len(output.images)} variations in {output.seconds:.1f} s → {out}")


def _edit(args: argparse.Namespace) -> None:
    import numpy as np
    from PIL import Image

    from .sample import EditRequest, edit

    mask = np.asarray(Image.open(args.mask).convert("L")) if args.mask else None
    request = EditRequest(prompt=args.prompt, seed=args.seed, count=args.count, guidance=args.guidance, mask=mask,
                          fill=args.fill, clip_model=args.clip or "")
    output = edit(args.model, request, callback=_print_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for image, seed in zip(output.images, output.seeds, strict=True):
        image.save(out / f"edit_{seed}.png")
    print("Prompts:", " | ".join(output.prompts), *output.notes, sep="\n")


def main(argv: list[str] | None = None) -> None:
    from .model import COARSEST_SIDE, WIDE_DILATIONS
    from .train import TrainConfig

    recipe = TrainConfig()  # the CLI's defaults are the recipe's

    parser = argparse.ArgumentParser(prog="python -m pipelines.single_image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model on one image (cached by the image's hash)")
    train.add_argument("image", help="an image file, or skimage:NAME for a photo scikit-image ships")
    train.add_argument("--backbone", choices=("fcn", "unet"), default="fcn")
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--width", type=int, default=64)
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    train.add_argument("--coarse-share", type=float, default=0.4, help="share of the steps at the coarsest scale")
    train.add_argument("--scale-weights", type=float, nargs="*", default=[],
                       help="each scale's relative share of the steps, coarsest first (replaces --coarse-share)")
    train.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine")
    train.add_argument("--coarsest-side", type=int, default=COARSEST_SIDE,
                       help="short side of the coarsest scale, px")
    train.add_argument("--coarsest-batch-size", type=int, default=recipe.coarsest_batch_size,
                       help="noise draws per step at the coarsest scale (0: --batch-size)")
    train.add_argument("--dilations", type=int, nargs="+", default=list(WIDE_DILATIONS),
                       help="the FCN blocks' dilations (more or larger: a wider receptive field)")
    train.add_argument("--timestep-weighting", choices=("none", "inverse_alpha"), default="inverse_alpha",
                       help="weight high-noise draws as their clean-image error (see TrainConfig)")
    train.add_argument("--fine-prediction", choices=("epsilon", "detail"), default=recipe.fine_prediction,
                       help="what the network predicts at the finer scales: the noise, or the missing detail")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--minutes", type=float, help="train for about this long: sets --steps from a timed probe")
    train.add_argument("--max-side", type=int, default=128, help="area cap as the side of a square (default 128)")
    train.add_argument("--text", choices=("none", "arbitrary", "blip"), default="none")
    train.add_argument("--prompt", default="")
    train.add_argument("--contrastive", action="store_true")
    train.add_argument("--blip", default="Salesforce/blip-image-captioning-base")
    train.add_argument("--clip", default="openai/clip-vit-base-patch32")
    train.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    train.add_argument("--max-grad-norm", type=float, default=recipe.max_grad_norm,
                       help="clip the gradient norm to this before each step (0: off)")
    train.add_argument("--coarsest-crop", type=int, default=recipe.coarsest_crop,
                       help="train the coarsest scale on random windows of this side, px (0: its whole level)")
    train.add_argument("--fine-crop", type=int, default=recipe.fine_crop,
                       help="train the finer scales on random windows of this side, px (0: the whole level)")
    train.add_argument("--fine-noise", type=float, default=recipe.fine_noise,
                       help="start each finer scale at the noise covering this many times its missing detail")
    train.add_argument("--fresh", action="store_true", help="ignore checkpoints and the cache")
    train.add_argument("--out", help="also write the finished model here (e.g. assets/single_image/x.safetensors)")
    train.add_argument("--half", action="store_true", help="store the --out file in fp16")
    train.add_argument("--card", help="write the JSON record (command, seed, figures) here")
    train.add_argument("--copy-milestones", action="store_true", help="copy the LM milestones beside --out")
    train.set_defaults(run=_train)

    sample = commands.add_parser("sample", help="make variations")
    sample.add_argument("model")
    sample.add_argument("--count", type=int, default=4)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--start-scale", type=int, default=0)
    sample.add_argument("--width-scale", type=float, default=1.0)
    sample.add_argument("--height-scale", type=float, default=1.0)
    sample.add_argument("--lm", type=int, default=10, help="load milestone 1–10")
    sample.add_argument("--steps-per-scale", type=int, default=20)
    sample.add_argument("--detail", choices=DETAIL_CHOICES, default=DETAIL_MODEL,
                        help="finer detail: the model's scales, or GPNN drawing its layout with the photo's patches")
    sample.add_argument("--out", default="variations")
    sample.set_defaults(run=_sample)

    edit = commands.add_parser("edit", help="a text edit guided by CLIP")
    edit.add_argument("model")
    edit.add_argument("prompt")
    edit.add_argument("--guidance", type=float, default=20.0)
    edit.add_argument("--mask", help="image of the source's size: white = edit here")
    edit.add_argument("--fill", type=float, default=1.0)
    edit.add_argument("--count", type=int, default=1)
    edit.add_argument("--seed", type=int, default=0)
    edit.add_argument("--clip", default="")
    edit.add_argument("--out", default="edits")
    edit.set_defaults(run=_edit)

    args = parser.parse_args(argv)
    from pipelines.core.errors import UserError

    try:
        args.run(args)
    except UserError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
