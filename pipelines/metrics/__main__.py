"""python -m pipelines.metrics A_DIR B_DIR [--ref DIR] [--metrics fid,kid,ssim] [--json out.json] ..."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return "inf" if math.isinf(value) else f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.metrics", description=__doc__)
    parser.add_argument("set_a", help="folder, zip or image of set A")
    parser.add_argument("set_b", help="folder, zip or image of set B")
    parser.add_argument("--ref", help="folder or zip of real reference images")
    parser.add_argument("--metrics", help="comma-separated keys (default: the preselected ones)")
    parser.add_argument("--pairs", choices=["name", "order"], help="pair A and B with the reference")
    parser.add_argument("--prompts", help="a text file with one prompt per line (or one for all images)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inception", help="FID Inception source (default fid-inception; tiny:inception for tests)")
    parser.add_argument("--clip", help="CLIP source (default openai/clip-vit-base-patch32)")
    parser.add_argument("--lpips", help="LPIPS source (default lpips-alex)")
    parser.add_argument("--json", help="write the full report as JSON here")
    parser.add_argument("--csv", help="write the metric table as CSV here")
    args = parser.parse_args(argv)

    from .comparison import compare

    models = {key: value for key, value in (("inception", args.inception), ("clip", args.clip),
                                             ("lpips", args.lpips)) if value}
    prompts = Path(args.prompts).read_text().splitlines() if args.prompts else None
    try:
        report = compare(args.set_a, args.set_b, args.ref, prompts=prompts, pairs=args.pairs,
                         metrics=args.metrics.split(",") if args.metrics else None, n_bootstrap=args.bootstrap,
                         seed=args.seed, models=models, allow_folders=True)  # the user's own folders
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for row in report.rows:
        print(f"{row.name:<28} A {_number(row.a):>10}  B {_number(row.b):>10}  "
              f"diff {_number(row.difference):>10} [{_number(row.low)}, {_number(row.high)}]  {row.verdict}")
    for key, reason in report.skipped.items():
        print(f"skipped {key}: {reason}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if args.json:
        Path(args.json).write_text(report.to_json())
    if args.csv:
        Path(args.csv).write_text(report.rows_csv())
    return 0


if __name__ == "__main__":
    sys.exit(main())
