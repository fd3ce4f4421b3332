"""python -m pipelines.landmark_faces train|generate|synth|evaluate|readback

    train     train the seed's U-Net (resumable: run the same command again to continue); --record writes the
              JSON beside the model with the command, seed, data settings and the figures reached
    generate  faces from landmarks (sliders' parameters, or --landmarks FILE.json) and tags
    synth     write synthetic cartoon faces (PNG + landmark JSON with tags) to a folder
    evaluate  landmark error of a model's samples on held-out synthetic faces, against the untrained network
    readback  per slider, how far the drawn shape (eye openness, mouth, gaze, roll, place) is from what was
              asked: the model vs the synthetic drawings vs tags only vs untrained; --record merges it into the
              model's JSON, where the tab's Compare reads it
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    config = TrainConfig(**values)
    last = [0.0]

    def progress(step: int, total: int, message: str) -> None:
        if time.perf_counter() - last[0] > 10 or step == total:
            last[0] = time.perf_counter()
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    load_before = [round(value, 2) for value in os.getloadavg()]  # recorded: a shared CPU's speed depends on it
    result = train(config, callback=progress, resume=not args.fresh, time_budget_s=args.time_budget,
                   out=args.out, half=args.half)
    print(result.summary)
    if not result.finished and not (args.keep_at_budget and args.out):
        print("Stopped at the time budget; run the same command again to resume.")
        return 3
    if not result.finished:  # --keep-at-budget: the model as it stands is the result (its record says so)
        from .unet import save_unet

        result.path = save_unet(result.model, args.out, half=args.half, steps=result.steps,
                                train_config=json.dumps(asdict(config)), trained_on="synthetic cartoon faces")
    print(f"Saved {result.path}")
    if args.record:
        import torch

        from .evaluate import landmark_error_report

        report = landmark_error_report(result.model, config, faces=args.eval_faces, steps=args.eval_steps)
        losses = result.losses
        record = {
            "command": "python -m pipelines.landmark_faces " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "trained_on": "synthetic cartoon faces (pipelines/landmark_faces/synthetic.py)",
            "config": asdict(config), "parameters": result.parameters, "precision": result.precision,
            "seconds_this_invocation": round(result.seconds, 1), "time_budget_s": args.time_budget,
            "threads": torch.get_num_threads(),
            "load_average_1_5_15_min": {"start": load_before, "end": [round(v, 2) for v in os.getloadavg()]},
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": result.steps,
            "stopped_by_time_budget": not result.finished,
            "resumed_from_step": result.resumed_from,
            "loss_first_100_mean": round(float(sum(losses[:100]) / max(1, len(losses[:100]))), 5),
            "loss_last_100_mean": round(float(sum(losses[-100:]) / max(1, len(losses[-100:]))), 5),
            "stored_as": "float16" if args.half else "float32",
            "evaluation": report,
        }
        path = Path(args.record)
        path.write_text(json.dumps(record, indent=2))
        print(f"Wrote {path}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from . import landmarks as L
    from .runs import run_generate

    if args.landmarks:
        points = L.load_json(args.landmarks)
    else:
        params = L.FaceParams(**{name: getattr(args, name) for name in L.PARAM_NAMES})
        points = L.parametric_face(params)
    tags = [tag.strip() for tag in args.tags.split(",") if tag.strip()]
    record, output = run_generate(points, tags, model=args.model, guidance=args.guidance, steps=args.steps,
                                  seed=args.seed, count=args.count)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(output.images):
        path = out / f"face_{output.seeds[index]}.png"
        image.resize((image.width * args.scale, image.height * args.scale), 0).save(path)
        print(path)
    for note in output.notes:
        print(note)
    print(f"run {record.id}, {output.seconds:.1f} s")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from PIL import Image

    from . import landmarks as L
    from . import synthetic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index, face in enumerate(synthetic.make_faces(args.count, args.size, seed=args.seed)):
        Image.fromarray(face.image).save(out / f"face_{index:05d}.png")
        (out / f"face_{index:05d}.json").write_text(L.to_json(face.points, tags=list(face.tags)))
    print(f"Wrote {args.count} faces to {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from . import load_unet
    from .evaluate import landmark_error_report
    from .train import TrainConfig

    model = load_unet(args.model)
    config = TrainConfig(image_size=model.config.image_size)
    print(json.dumps(landmark_error_report(model, config, faces=args.faces, steps=args.steps), indent=2))
    return 0


def _readback(args: argparse.Namespace) -> int:
    from . import default_model, load_unet
    from .readback import sample_grid, slider_table, table_rows, untrained_twin, write_into_record

    source = args.model or default_model()
    model = load_unet(source)
    started = time.perf_counter()
    faces: dict = {}
    report = slider_table(model, values_per_slider=args.values, steps=args.steps, guidance=args.guidance,
                          untrained=untrained_twin(model), faces_out=faces)
    report["model"] = Path(source).name
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["command"] = "python -m pipelines.landmark_faces " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    headers, rows = table_rows(report)
    print(" | ".join(headers))
    for row in rows:
        print(" | ".join(f"{cell:.3f}" if isinstance(cell, float) else str(cell) for cell in row))
    print(report["note"])
    if args.record:
        print(f"Wrote {write_into_record(report, args.record)}")
    if args.grid:
        sheet = sample_grid(faces, args.values, model, seeds=args.values, steps=args.steps, guidance=args.guidance)
        sheet.save(args.grid)
        print(f"Wrote {args.grid}: per slider, the model | the synthetic drawings | tags only; last row: seeds")
    return 0


def main(argv: list[str] | None = None) -> int:
    from . import landmarks as L
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m pipelines.landmark_faces")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the seed's U-Net")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        kind = type(getattr(defaults, f.name))
        train.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None,
                           help=f"default {getattr(defaults, f.name)!r}")
    train.add_argument("--out", help="where the model goes (default outputs/landmark_faces/models/NAME)")
    train.add_argument("--half", action="store_true", help="store the weights as float16")
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    train.add_argument("--time-budget", type=float, default=None, help="stop (with a checkpoint) after N seconds")
    train.add_argument("--record", help="write the training record JSON here")
    train.add_argument("--keep-at-budget", action="store_true",
                       help="when the time budget ends the run, save the model reached (needs --out)")
    train.add_argument("--eval-faces", type=int, default=32)
    train.add_argument("--eval-steps", type=int, default=50)
    generate = commands.add_parser("generate", help="faces from landmarks and tags")
    for name in L.PARAM_NAMES:
        generate.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(L.FaceParams(), name))
    generate.add_argument("--landmarks", help="a landmark JSON file instead of the parameters")
    generate.add_argument("--tags", default="")
    generate.add_argument("--model", default=None, help="default: the shipped model")
    generate.add_argument("--guidance", type=float, default=2.0)
    generate.add_argument("--steps", type=int, default=50)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--count", type=int, default=4)
    generate.add_argument("--scale", type=int, default=8, help="enlarge the saved PNGs (nearest neighbour)")
    generate.add_argument("--out", default="outputs/landmark_faces/cli")
    synth = commands.add_parser("synth", help="write synthetic faces with landmark JSON files")
    synth.add_argument("--count", type=int, default=100)
    synth.add_argument("--size", type=int, default=64)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True)
    evaluate = commands.add_parser("evaluate", help="landmark error against the untrained network")
    evaluate.add_argument("--model", default=None)
    evaluate.add_argument("--faces", type=int, default=32)
    evaluate.add_argument("--steps", type=int, default=50)
    readback = commands.add_parser("readback", help="per-slider shape read-back: model vs drawings vs tags only "
                                                    "vs untrained")
    readback.add_argument("--model", default=None, help="default: the shipped model")
    readback.add_argument("--values", type=int, default=5, help="faces per slider, evenly across its range")
    readback.add_argument("--steps", type=int, default=25)
    readback.add_argument("--guidance", type=float, default=2.0)
    readback.add_argument("--record", help="merge the table into this JSON (the model's record)")
    readback.add_argument("--grid", help="also save the faces as a sheet to judge by eye (PNG)")
    args = parser.parse_args(argv)
    handlers = {"train": _train, "generate": _generate, "synth": _synth, "evaluate": _evaluate,
                "readback": _readback}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
