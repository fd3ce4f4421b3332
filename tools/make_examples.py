"""Make the Start page's examples with the app's own pipelines and the models it ships; write them to
assets/examples/ as a small PNG per method with a JSON beside it (the tab, its inputs, the model, the time taken).

    python -m tools.make_examples                  # all of them
    python -m tools.make_examples landmark_faces   # one (after a new landmark model is shipped, say)

Only methods that give a real result offline have an example: Landmark faces (the shipped U-Net), Single-image
variation (the shipped coffee model) and Metrics / A-B (pixel metrics, which need no network weights). The Stable
Diffusion tabs and Neural style need real weights that this build machine cannot download, so they get none here:
an example made with random weights would show noise as if it were a result.

A JSON's "params" are named as the tab's inputs are (tabs/start.py fills them in when "Try it" is pressed), so
re-running an example in the app gives the same image (noise is drawn on the CPU from the seed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
THUMB = 128  # px per image in a card's strip

# The inputs of each example, named as tabs/start.py names the tab's inputs.
LANDMARK_PARAMS = {"face": {"yaw": 15.0, "smile": 0.8, "mouth_open": 0.3}, "tags": "pink_hair, blue_eyes, smile",
                   "guidance": 2.0, "steps": 50, "seed": 7, "count": 4}
# From pure noise (start scale 0) at training stage 7 of 10: the finished model's variations of this photo are
# close to copies (the recipe learns where the cup is); the earlier weights vary the cup and saucer more.
SINGLE_IMAGE_PARAMS = {"count": 4, "seed": 8, "start_scale": 0, "width_scale": 1.0, "height_scale": 1.0,
                       "milestone": 10}
METRICS_PARAMS = {"metrics": ["ssim", "psnr"], "noise_a": 8.0, "noise_b": 30.0, "seed": 0, "n_bootstrap": 1000}
METRIC_PHOTOS = ("astronaut", "chelsea", "coffee", "horse")


def _strip(images: list[Any], size: int = THUMB) -> Any:
    """Images side by side, each fitted into a size×size cell (nearest neighbour keeps small faces crisp)."""
    from PIL import Image

    strip = Image.new("RGB", (size * len(images) + 4 * (len(images) - 1), size), "white")
    for index, image in enumerate(images):
        cell = image.convert("RGB")
        scale = size / max(cell.size)
        resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
        cell = cell.resize((max(1, round(cell.width * scale)), max(1, round(cell.height * scale))), resample)
        strip.paste(cell, (index * (size + 4) + (size - cell.width) // 2, (size - cell.height) // 2))
    return strip


def _write(name: str, image: Any, card: dict[str, Any]) -> Path:
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    image.save(EXAMPLES / f"{name}.png", optimize=True)
    card = {"tab": name, "image": f"{name}.png", **card,
            "made_by": f"python -m tools.make_examples {name}",
            "made_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    path = EXAMPLES / f"{name}.json"
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def _digest(path: Path) -> str:
    """sha256 of a shipped model file: the example's JSON names the exact weights that made it."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _machine() -> dict[str, Any]:
    """Where the time was measured: the device and, on a CPU, its cores and the load (other work running then)."""
    from pipelines.core import devices

    device = devices.resolve_device()
    machine: dict[str, Any] = {"device": devices.describe(device, devices.resolve_dtype(device))}
    if str(device).startswith("cpu"):
        machine |= {"cpu_cores": os.cpu_count(), "load": round(os.getloadavg()[0], 1)}
    return machine


def make_landmark_faces() -> Path:
    from pipelines.landmark_faces import SHIPPED_MODEL, load_unet
    from pipelines.landmark_faces import landmarks as L
    from pipelines.landmark_faces.generate import sample

    params = LANDMARK_PARAMS
    points = L.parametric_face(L.FaceParams(**params["face"]))
    tags = [tag.strip() for tag in params["tags"].split(",")]
    start = time.perf_counter()
    model = load_unet(str(SHIPPED_MODEL))
    output = sample(model, points, tags, steps=params["steps"],
                    guidance=params["guidance"], seed=params["seed"], count=params["count"])
    seconds = time.perf_counter() - start
    image = _strip([L.overlay(points.tolist(), size=THUMB, numbers=False), *output.images])
    return _write("landmark_faces", image, {
        "title": "Landmark faces", "params": params,
        "model": "the landmark U-Net this project trained and ships (assets/landmark_faces/)",
        "model_file": str(SHIPPED_MODEL.relative_to(ROOT)), "model_sha256": _digest(SHIPPED_MODEL),
        "seconds": round(seconds, 1),
        **_machine(),
        "caption": (f"The landmarks (left), set with three sliders (turned {params['face']['yaw']:.0f}°, smiling), "
                    f"and {params['count']} faces the shipped U-Net drew to follow them with the tags "
                    f"“{params['tags']}”. It was trained on synthetic cartoon faces at {model.config.image_size} "
                    "px, so the faces are small and simple: a demonstration of the method, not an illustrator.")})


def make_single_image() -> Path:
    from pipelines.single_image.runs import shipped_card, shipped_model
    from pipelines.single_image.sample import VariationRequest, load, variations
    from pipelines.single_image.train import tensor_image

    model_path = shipped_model()
    if model_path is None:
        raise SystemExit("The shipped single-image model is missing (assets/single_image/).")
    request = VariationRequest(**SINGLE_IMAGE_PARAMS)
    start = time.perf_counter()
    output = variations(model_path, request)
    seconds = time.perf_counter() - start
    source = tensor_image(load(model_path).source_image())
    image = _strip([source, *output.images])
    return _write("single_image", image, {
        "title": "Single-image variation", "params": asdict(request) | SINGLE_IMAGE_PARAMS,
        "model": shipped_card().get("label") or "the single-image model shipped in assets/single_image/",
        "model_file": str(model_path.relative_to(ROOT)), "model_sha256": _digest(model_path),
        "seconds": round(seconds, 1), **_machine(),
        "caption": (f"A photo (left) and {request.count} variations drawn from pure noise by the model the project "
                    f"trained on that one photo in about 6 minutes on a 2-core CPU (training stage "
                    f"{request.milestone} of 10): cups, saucers and spoons in new places, sometimes two or cut "
                    "off at the edge, on a smeared table — SinGAN-style rearrangements, less sharp than the photo.")})


def metric_sets(noise_a: float, noise_b: float, seed: int = 0) -> dict[str, list[Path]]:
    """Reference: four 64 px crops of the bundled photos; A and B: the same crops with a little and a lot of noise.
    Written under assets/examples/metrics/ with the same file names in every set (so they pair by name)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folders = {"reference": 0.0, "a": noise_a, "b": noise_b}
    sets: dict[str, list[Path]] = {}
    for label, sigma in folders.items():
        folder = EXAMPLES / "metrics" / label
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        sets[label] = []
        for name in METRIC_PHOTOS:
            with Image.open(ROOT / "assets" / "samples" / f"{name}.jpg") as photo:
                crop = np.asarray(photo.convert("RGB"))[40:104, 40:104].astype(float)
            noisy = np.clip(crop + rng.normal(0, sigma, crop.shape), 0, 255) if sigma else crop
            path = folder / f"{name}.png"
            Image.fromarray(noisy.round().astype(np.uint8)).save(path)
            sets[label].append(path)
    return sets


def make_metrics() -> Path:
    from PIL import Image

    from pipelines.metrics import compare
    from pipelines.metrics.plots import bar_chart, save_figure

    params = METRICS_PARAMS
    sets = metric_sets(params["noise_a"], params["noise_b"], params["seed"])
    start = time.perf_counter()
    report = compare(sets["a"], sets["b"], sets["reference"], pairs="auto", metrics=params["metrics"],
                     n_bootstrap=params["n_bootstrap"], seed=params["seed"])
    seconds = time.perf_counter() - start
    chart = EXAMPLES / "metrics_chart.png"
    save_figure(bar_chart(report), chart)
    with Image.open(chart) as figure:
        thumbs = [Image.open(sets[label][1]).convert("RGB") for label in ("reference", "a", "b")]
        strip = _strip(thumbs, THUMB)
        scale = strip.width / figure.width
        plot = figure.convert("RGB").resize((strip.width, round(figure.height * scale)), Image.Resampling.LANCZOS)
    chart.unlink()
    image = Image.new("RGB", (strip.width, strip.height + plot.height + 4), "white")
    image.paste(strip, (0, 0))
    image.paste(plot, (0, strip.height + 4))
    files = {label: [str(path.relative_to(ROOT)) for path in paths] for label, paths in sets.items()}
    return _write("metrics", image, {
        "title": "Metrics / A-B", "params": params, "files": files, "model": "pixel metrics only (no network)",
        "seconds": round(seconds, 1), **_machine(),
        "verdicts": [row.verdict for row in report.rows if row.verdict],
        "caption": ("Is A or B closer to the real images? Set A has a little noise, set B a lot (one of four "
                    "shown: reference, A, B). SSIM and PSNR against the reference, with 95% intervals, give the "
                    "verdict: A is closer. Pixel metrics need no downloaded network, so the numbers are real.")})


MAKERS: dict[str, Callable[[], Path]] = {"landmark_faces": make_landmark_faces, "single_image": make_single_image,
                                         "metrics": make_metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"which examples: {', '.join(MAKERS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in MAKERS]
    if unknown:
        parser.error(f"unknown example(s) {unknown}; choose from {', '.join(MAKERS)}")
    for name in args.names or MAKERS:
        path = MAKERS[name]()
        print(f"{name}: {path.relative_to(ROOT)} ({json.loads(path.read_text())['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
