"""Command line: stylize images, train a style, list styles.

    python -m pipelines.neural_style stylize photo.jpg other.png --style rain_princess --strength 0.8 \\
        --preserve-color --max-size 1024 --out stylized/
    python -m pipelines.neural_style train --style-image style.png --content photos/ --name my_style --steps 2000
    python -m pipelines.neural_style list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _content_files(paths: list[str]) -> list[str]:
    files = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(str(path))
    return files


def _print_progress(step: int, total: int, message: str) -> None:
    print(f"[{step}/{total}] {message}", file=sys.stderr, flush=True)


def cmd_stylize(args: argparse.Namespace) -> int:
    from pipelines.core import pngmeta

    from . import load_style, run_stylize, style_test_note, stylize

    if args.out is None:  # a recorded run: PNGs with metadata under the outputs folder, listed in History
        record = run_stylize(args.images, args.style, args.strength, args.preserve_color, args.max_size)
        for note in record.params.get("skipped", []):
            print(f"skipped: {note}", file=sys.stderr)
        print(f"{len(record.outputs)} image(s) in {record.timings.get('stylize', 0):.2f} s on {record.device} "
              f"(run {record.id})")
        for model in record.models:
            if model.get("test_model"):
                print(f"note: test model ({model.get('test_note') or 'random weights'})", file=sys.stderr)
        print("\n".join(record.outputs))
        return 0
    from pipelines.core.images import ImageInputError, load_image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_style(args.style)
    images, names = [], []
    for path in args.images:
        try:
            images.append(load_image(path, max_side=args.max_size))
            names.append(Path(path).stem)
        except ImageInputError as err:
            print(f"skipped: {err}", file=sys.stderr)
    if not images:
        print("error: none of the images can be used", file=sys.stderr)
        return 2
    result = stylize(images, model, args.strength, args.preserve_color, args.max_size)
    settings = {"Style": args.style, "Strength": args.strength, "Preserve colors": args.preserve_color,
                "Max size": args.max_size, "Layout": getattr(model, "layout", "unknown")}
    note = style_test_note(args.style)
    if note:
        settings["Test model"] = note
        print(f"note: test model ({note})", file=sys.stderr)
    for name, image in zip(names, result.images, strict=True):
        target = out / f"{name}_{Path(args.style).stem}.png"
        pngmeta.save_png(image, target, settings)
        print(target)
    print(f"{len(images)} image(s) in {result.seconds:.2f} s", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from . import train_style_job

    content = _content_files(args.content)
    result = train_style_job(args.style_image, content, name=args.name, steps=args.steps, image_size=args.image_size,
                             style_size=args.style_size, content_weight=args.content_weight,
                             style_weight=args.style_weight, lr=args.lr, batch_size=args.batch_size,
                             vgg_weights=args.vgg_weights, checkpoint_dir=args.checkpoint_dir,
                             checkpoint_every=args.checkpoint_every, resume=not args.no_resume, seed=args.seed,
                             callback=_print_progress if not args.quiet else None)
    print(result.summary.replace("**", ""))
    print(result.path)
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    from . import list_styles

    for entry in list_styles():
        print(f"{entry.name:16s} {entry.kind:10s} {'ready' if entry.available else 'download':8s} {entry.label}")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m pipelines.neural_style", description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = main.add_subparsers(dest="command", required=True)

    stylize = commands.add_parser("stylize", help="stylize images with a style")
    stylize.add_argument("images", nargs="+", help="image files")
    stylize.add_argument("--style", required=True, help="style name (see `list`), or a .safetensors file")
    stylize.add_argument("--strength", type=float, default=1.0, help="0 = original image, 1 = full style")
    stylize.add_argument("--preserve-color", action="store_true", help="keep the photo's colours")
    stylize.add_argument("--max-size", type=int, default=1024, help="long side in px (16–2048), default 1024")
    stylize.add_argument("--out", default=None,
                         help="write PNGs here; without it the run is recorded under the outputs folder")
    stylize.set_defaults(func=cmd_stylize)

    train = commands.add_parser("train", help="train a new style")
    train.add_argument("--style-image", required=True)
    train.add_argument("--content", required=True, nargs="+", help="content image files or folders")
    train.add_argument("--name", default="my_style")
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--image-size", type=int, default=256)
    train.add_argument("--style-size", type=int, default=512)
    train.add_argument("--content-weight", type=float, default=1e5)
    train.add_argument("--style-weight", type=float, default=1e10)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--vgg-weights", default=None,
                       help="imagenet | random (tests only) | a VGG16 .safetensors; default: ImageNet when obtainable")
    train.add_argument("--checkpoint-dir", default=None)
    train.add_argument("--checkpoint-every", type=int, default=None)
    train.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=cmd_train)

    listing = commands.add_parser("list", help="list the styles")
    listing.set_defaults(func=cmd_list)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as err:  # plain messages, no stack trace
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
