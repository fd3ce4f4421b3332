"""Single-image variation benchmark: training speed, bf16 vs fp32, time to the reconstruction threshold, sampling;
and (--variations) the diffusion model against GPNN on held-out photos.

    .venv/bin/python bench/bench_single_image.py                 # defaults: skimage coffee at 64² area, width 32
    .venv/bin/python bench/bench_single_image.py --side 128 --width 64 --steps 600
    .venv/bin/python bench/bench_single_image.py --variations                       # the full run: 2, 5, 10 min
    .venv/bin/python bench/bench_single_image.py --variations --minutes 0.5 --count 2 --gpnn-iterations 2  # smoke
    .venv/bin/python bench/bench_single_image.py --variations --photos coffee --minutes 2 5 \
        --models assets/single_image/coffee_fcn.safetensors    # the shipped model as the 10-minute row
    .venv/bin/python bench/bench_single_image.py --variations --photos chelsea coffee --minutes --finest-bound 10

--variations prints, for three photos scikit-image ships (chelsea the cat, coffee, rocket; the astronaut is kept
aside for an independent check), at --side² area:
- the patch-NN distance to the source (mean over a variation's 7×7 patches of the RMS difference, 0–1 pixels, to
  the nearest source patch; pipelines.metrics.patches, the same search as GPNN and compare()'s patch_nn) of GPNN
  (no training) and of the diffusion model trained for each budget in --minutes, sampled from scale 0;
- the same distance for the source cut into 7×7 tiles and shuffled (the control), and each method's ratio to it
  and to GPNN (the issue's target: diffusion at 10 min within 1.2× of GPNN at comparable diversity);
- coverage: the same distance the other way round (each source patch to the variation's nearest), which a
  variation that repeats one part of the photo (empty sky) cannot score well on;
- the photo less its finest scale's detail, scored like a variation: the sharpness GPNN's distance asks for;
- diversity (SinGAN's: per-pixel std across the variations over the source's std), over the variations that
  count: a near-copy of the source (mean absolute difference < 0.1 on pixels scaled to [-1, 1], i.e. < 12.75 of
  255) is not a variation and is left out of both figures (how many were is printed);
- with --finest-bound M: the finest scale trained alone for M minutes, sent GPNN's own variations shrunk one
  scale, against each one's own distance — the best a whole run's finest scale could do in that budget;
- the training time: the budget is turned into steps from a timed probe run (train.measure_seconds_per_step, the
  tab's estimate), then the real run is timed, so the estimate/actual ratio is printed too.

Prints, all measured in this run on this machine:
1. training iterations/s of our step (FCN and U-Net backbones) against a plain re-implementation of SinDDM's
   training step (same network and width, batch, image; fp32, contiguous tensors, plain Adam, no EMA), as a ratio;
2. our step in bf16 autocast + channels_last against fp32: speed ratio, and the loss and reconstruction PSNR
   each reaches after the same steps (bf16 must match fp32 in quality);
3. the time until the reconstruction from the coarsest scale beats the one-pixel-shift PSNR (the tests' threshold),
   read at the ten load milestones;
4. seconds per variation.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.single_image import model as M  # noqa: E402
from pipelines.single_image.sample import VariationRequest, reconstruct, variations  # noqa: E402
from pipelines.single_image.train import TrainConfig, image_tensor, prepare_image, train  # noqa: E402


def _photo(side: int):
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.coffee()).convert("RGB")
    return prepare_image(image, side * side)[0]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4 / (a - b).pow(2).mean()))


def plain_sinddm_steps_per_second(image, backbone: str, width: int, batch: int, steps: int) -> float:
    """The textbook loop: fp32, NCHW, single-tensor Adam, no EMA, noise and timestep drawn per step."""
    levels = M.pyramid(image_tensor(image), M.scale_sizes(image.height, image.width))
    alphas = M.alphas_cumprod()
    starts = M.start_steps(levels, alphas)
    config = M.ModelConfig(backbone=backbone, width=width, sizes=tuple(tuple(lv.shape[-2:]) for lv in levels),
                           start_steps=tuple(starts), text_dim=32 if backbone == "unet" else 0,
                           text_tokens=1 if backbone == "unet" else 0)
    torch.manual_seed(0)
    net = M.MultiScaleDenoiser(config).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=False)
    for step in range(steps):
        if step == 10:
            started = time.perf_counter()
        scale = int(torch.randint(len(levels), (1,)))
        t = torch.randint(starts[scale], (batch,))
        clean = levels[scale].expand(batch, -1, -1, -1)
        blur = M.blurred(levels, scale).expand(batch, -1, -1, -1)
        noise = torch.randn_like(clean)
        loss = F.l1_loss(net(M.noised(clean, blur, noise, t, scale, starts[scale], alphas), t, scale), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (steps - 10) / (time.perf_counter() - started)


def interleaved_precision_ab(image, width: int, batch: int, rounds: int = 6) -> dict[str, float]:
    """Seconds per training step of fp32 / bf16 autocast, each with and without channels_last, measured in turns
    (one step of each at every scale per round), so that load from other processes falls on all four alike."""
    levels = M.pyramid(image_tensor(image), M.scale_sizes(image.height, image.width))
    sizes = tuple(tuple(level.shape[-2:]) for level in levels)
    modes = {"fp32": (False, False), "fp32 + channels_last": (False, True), "bf16": (True, False),
             "bf16 + channels_last": (True, True)}
    nets, totals = {}, dict.fromkeys(modes, 0.0)
    for name, (_, channels_last) in modes.items():
        torch.manual_seed(0)
        net = M.MultiScaleDenoiser(M.ModelConfig(width=width, sizes=sizes, start_steps=(100,) * len(sizes)))
        net = net.to(memory_format=torch.channels_last) if channels_last else net
        nets[name] = (net, torch.optim.AdamW(net.parameters(), 1e-3, foreach=True))
    for round_ in range(rounds):
        for name, (bf16, channels_last) in modes.items():
            net, optimizer = nets[name]
            for scale, level in enumerate(levels):
                x = torch.randn(batch, *level.shape[1:])
                x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                t = torch.randint(20, (batch,))
                started = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = (net(x, t, scale).float() - x).abs().mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if round_:  # the first round warms up
                    totals[name] += time.perf_counter() - started
    return {name: total / ((rounds - 1) * len(levels)) for name, total in totals.items()}


def ours(image, folder: Path, **settings) -> tuple[float, object]:
    """Steps/s of our loop between its 10th step and its last (set-up excluded; milestone saving included)."""
    config = TrainConfig(**settings)
    stamps: dict[int, float] = {}
    result = train(config, image, folder=folder, resume=False, checkpoint_every=10**9,
                   callback=lambda step, total, message: stamps.setdefault(step, time.perf_counter()))
    return (config.steps - 10) / (stamps[config.steps] - stamps[10]), result


def milestone_psnrs(result, source: torch.Tensor) -> list[float]:
    return [_psnr(reconstruct(result.model_path, milestone=index).tensor, source) for index in range(1, 11)]


VARIATION_PHOTOS = ("chelsea", "coffee", "rocket")
NEAR_COPY = 0.1  # mean absolute difference on [-1, 1] pixels below which a variation is a copy of the source


def _skimage_photo(name: str, side: int):
    from PIL import Image
    from skimage import data

    return prepare_image(Image.fromarray(getattr(data, name)()).convert("RGB"), side * side)[0]


def _not_copies(images, source) -> list:
    """The images that count as variations: not near-copies of the source (see NEAR_COPY)."""
    array = np.asarray(source, dtype=np.float64)
    return [image for image in images if np.abs(np.asarray(image, dtype=np.float64) - array).mean() / 127.5
            >= NEAR_COPY]


def _score(images, source, control: float, gpnn: float | None) -> dict:
    """Patch-NN distance and diversity over the variations that are not near-copies of the source."""
    from pipelines.metrics.patches import patch_nn_distance
    from pipelines.single_image.runs import diversity

    kept = _not_copies(images, source)
    distance = float(np.mean([patch_nn_distance(image, source) for image in kept])) if kept else float("nan")
    # The same search the other way round: how far each source patch is from the variation's nearest one. A
    # variation that is mostly the photo's empty sky matches the sky and scores well above, but misses the rocket.
    coverage = float(np.mean([patch_nn_distance(source, image) for image in kept])) if kept else float("nan")
    spread = diversity(kept, source) if len(kept) >= 2 else float("nan")
    return {"patch_nn": distance, "to_control": distance / control, "to_gpnn": distance / gpnn if gpnn else 1.0,
            "coverage": coverage, "diversity": spread, "copies": len(images) - len(kept)}


def _row(photo: str, method: str, train: str, score: dict, per_variation: float) -> None:
    print(f"   {photo:8s} {method:30s} {train:>16s} {score['patch_nn']:8.4f} {score['to_control']:8.2f} "
          f"{score['to_gpnn']:8.2f} {score['coverage']:8.4f} {score['diversity']:9.3f} {score['copies']:6d} "
          f"{per_variation:8.1f}")


def _sharpness_reference(source, gpnn: float) -> str:
    """The photo without its finest scale's detail (shrunk by the pyramid's factor and enlarged again, bicubic):
    how sharp a variation must be for its patch distance to reach GPNN's, which copies full-resolution patches."""
    from PIL import Image

    from pipelines.metrics.patches import patch_nn_distance
    from pipelines.single_image.model import SCALE_FACTOR

    width, height = source.size
    smaller = (round(width / SCALE_FACTOR), round(height / SCALE_FACTOR))
    softened = source.resize(smaller, Image.BICUBIC).resize((width, height), Image.BICUBIC)
    distance = patch_nn_distance(softened, source)
    return (f"photo less its finest detail (÷{SCALE_FACTOR} and back): patch-NN {distance:.4f}, "
            f"{distance / gpnn:.2f}× GPNN")


def variation_bench(args) -> None:
    from pipelines.metrics.patches import patch_nn_distance, shuffled_tiles
    from pipelines.single_image.gpnn import GPNNSettings, gpnn_variations
    from pipelines.single_image.train import estimate_seconds, measure_seconds_per_step

    print(f"\n5. variations: GPNN vs the diffusion model (width {args.width}, batch {args.batch}, from scale 0), "
          f"{args.count} per method, photos at {args.side}² area, budgets {args.minutes} min")
    print(f"   {'photo':8s} {'method':30s} {'training s':>16s} {'patch-NN':>8s} {'/control':>8s} {'/GPNN':>8s} "
          f"{'coverage':>8s} {'diversity':>9s} {'copies':>6s} {'s/var':>8s}")
    for name in args.photos:
        source = _skimage_photo(name, args.side)
        control = patch_nn_distance(shuffled_tiles(np.asarray(source), 7, 0), source)
        print(f"   {name:8s} {'control (7×7 tiles)':30s} {'':>16s} {control:8.4f} {1:8.2f} {'':>8s}")
        output = gpnn_variations(source, args.count, 0, GPNNSettings(iterations=args.gpnn_iterations))
        gpnn = _score(output.images, source, control, None)
        _row(name, f"GPNN ({args.gpnn_iterations} it/scale)", "0", gpnn, output.seconds / args.count)
        print(f"   {'':8s} {_sharpness_reference(source, gpnn['patch_nn'])}")
        for minutes in args.minutes:
            config = TrainConfig(width=args.width, batch_size=args.batch, steps=20)
            per_step = measure_seconds_per_step(source, config)
            steps = max(20, int(minutes * 60 / per_step))
            config = TrainConfig(width=args.width, batch_size=args.batch, steps=steps)
            with tempfile.TemporaryDirectory() as folder:
                result = train(config, source, folder=folder, resume=False)
                _model_rows(result.model_path, name, f"diffusion {minutes:g} min", f"{result.seconds:.0f} ({steps} st)",
                            source, control, gpnn["patch_nn"], args)
            constant = estimate_seconds(source.height, source.width, config)
            print(f"   {'':8s} {'':30s} estimate/actual: probed {steps * per_step / result.seconds:.2f}, "
                  f"old constant {constant / result.seconds:.2f}")
        for path in args.models:
            _score_trained_model(Path(path), name, source, control, gpnn["patch_nn"], args)
        if args.finest_bound:
            finest_bound(name, source, args)


BOUND_LAYOUTS = 8  # GPNN variations (seeds 10–17) the bound is measured on, near-copies left out


def finest_bound(photo: str, source, args) -> None:
    """The best the finest scale can do in a budget: all --finest-bound minutes on it alone (scale_weights), then
    GPNN's own variations — photo-sharp layouts — shrunk one pyramid step and sent through it. Each result's
    patch-NN over that GPNN variation's own is what the finest scale costs GPNN; a whole run has to spend most of
    its budget elsewhere and start from its own, softer layouts, so it cannot do better."""
    from pipelines.metrics.patches import patch_nn_distance
    from pipelines.single_image.gpnn import GPNNSettings, gpnn_variations
    from pipelines.single_image.sample import sample_scale
    from pipelines.single_image.train import measure_seconds_per_step, tensor_image

    scales = len(M.scale_sizes(source.height, source.width))
    config = TrainConfig(width=args.width, batch_size=args.batch, steps=20, scale_weights=(0,) * (scales - 1) + (1,))
    steps = max(20, int(args.finest_bound * 60 / measure_seconds_per_step(source, config)))
    config = dataclasses.replace(config, steps=steps)
    drawn = gpnn_variations(source, BOUND_LAYOUTS, 10, GPNNSettings(iterations=args.gpnn_iterations)).images
    layouts = _not_copies(drawn, source)
    with tempfile.TemporaryDirectory() as folder:
        result = train(config, source, folder=folder, resume=False)
        net = M.load_model_file(result.model_path)[0]
    finest, alphas = net.config.scales - 1, M.alphas_cumprod()
    ratios, plain = [], []
    for index, layout in enumerate(layouts):
        own = patch_nn_distance(layout, source)
        upsampled = M.resize(M.resize(image_tensor(layout), net.config.sizes[finest - 1]).clamp(-1, 1),
                             net.config.sizes[finest]).clamp(-1, 1)
        sharpened = sample_scale(net, upsampled, finest, torch.Generator().manual_seed(index), alphas, 20, 1.0)
        ratios.append(patch_nn_distance(tensor_image(sharpened), source) / own)
        plain.append(patch_nn_distance(tensor_image(upsampled), source) / own)
    print(f"   {photo:8s} finest scale alone, {args.finest_bound:g} min ({result.seconds:.0f} s, {steps} steps), on "
          f"{len(layouts)} GPNN layouts one step down: {np.mean(ratios):.2f}× GPNN "
          f"({min(ratios):.2f}–{max(ratios):.2f}; plain upsampling {np.mean(plain):.2f}×); detail gain on the photo "
          f"{result.detail_gain_db[-1]:+.1f} dB")


def _score_trained_model(path: Path, photo: str, source, control: float, gpnn: float, args) -> None:
    """A row for a model trained elsewhere (e.g. the shipped one, by the CLI with its JSON record) when it was
    trained on this photo at this size: its source buffer must be the photo's pixels."""
    from pipelines.single_image.model import load_model_file

    net, metadata = load_model_file(path)
    if not torch.equal(net.source[0].permute(1, 2, 0), torch.from_numpy(np.asarray(source).copy())):
        print(f"   {photo:8s} {path.name} was not trained on this photo at this size: skipped")
        return
    _model_rows(path, photo, f"model {path.stem}", f"({metadata.get('steps', '?')} st)", source, control, gpnn, args)


def _model_rows(path, photo: str, method: str, train_text: str, source, control: float, gpnn: float, args) -> None:
    """The model's variations from scale 0; with --gpnn-detail also its scale-0 layouts drawn by GPNN."""
    for detail in ("model", "gpnn") if args.gpnn_detail else ("model",):
        sampled = variations(path, VariationRequest(count=args.count, seed=0, start_scale=0, detail=detail))
        score = _score(sampled.images, source, control, gpnn)
        _row(photo, method + (", GPNN detail" if detail == "gpnn" else ""), train_text, score,
             sampled.seconds / args.count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=None,
                        help="training area cap as a square side (default 64; 128 with --variations, the tab's)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=None, help="default 2; 4 with --variations (the tab's)")
    parser.add_argument("--speed-steps", type=int, default=110)
    parser.add_argument("--only-speed", action="store_true", help="part 1 only")
    parser.add_argument("--steps", type=int, default=600, help="steps of the bf16/fp32 quality runs")
    parser.add_argument("--variations", action="store_true", help="part 5 only: GPNN vs the diffusion model")
    parser.add_argument("--minutes", type=float, nargs="*", default=[2, 5, 10], help="training budgets (part 5)")
    parser.add_argument("--models", nargs="*", default=[], help="also score these trained model files (part 5) on "
                        "the photo each was trained on, e.g. the shipped one made by the CLI")
    parser.add_argument("--photos", nargs="+", default=list(VARIATION_PHOTOS), choices=VARIATION_PHOTOS)
    parser.add_argument("--count", type=int, default=4, help="variations per method (part 5)")
    parser.add_argument("--gpnn-detail", action="store_true",
                        help="also each model's scale-0 layouts drawn by GPNN with the photo's patches (a tab option)")
    parser.add_argument("--finest-bound", type=float, default=0, metavar="MINUTES",
                        help="also train the finest scale alone for MINUTES and score it on GPNN's layouts (part 5)")
    parser.add_argument("--gpnn-iterations", type=int, default=10, help="GPNN iterations per scale (paper: 10)")
    args = parser.parse_args()
    if args.variations:
        args.side, args.batch = args.side or 128, args.batch or 4
        variation_bench(args)
        return
    args.side, args.batch = args.side or 64, args.batch or 2
    image = _photo(args.side)
    source = image_tensor(image)
    print(f"image: skimage coffee at {image.width}×{image.height}, scales {M.scale_sizes(image.height, image.width)}; "
          f"width {args.width}, batch {args.batch}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("\n1. training steps/s: ours (auto precision) vs plain SinDDM step (fp32)")
        for backbone in ("fcn", "unet"):
            plain = plain_sinddm_steps_per_second(image, backbone, args.width, args.batch, args.speed_steps)
            text = {"text": "none"}
            speed, result = ours(image, tmp / f"speed-{backbone}", backbone=backbone, steps=args.speed_steps,
                                 width=args.width, batch_size=args.batch, **text)
            print(f"   {backbone:4s}: ours {speed:6.2f} it/s ({result.precision}), plain {plain:6.2f} it/s, "
                  f"ratio {speed / plain:.2f}×")
        print("\n   per-step A/B in turns (s/step, mean over scales):")
        ab = interleaved_precision_ab(image, args.width, args.batch)
        for name, seconds in ab.items():
            print(f"   {name:22s} {seconds:.3f} s/step ({ab['fp32'] / seconds:.2f}× fp32)")
        if args.only_speed:
            return

        print(f"\n2. bf16 autocast + channels_last vs fp32, FCN, {args.steps} steps each")
        runs = {}
        for precision in ("fp32", "bf16"):
            speed, result = ours(image, tmp / f"q-{precision}", steps=args.steps, width=args.width,
                                 batch_size=args.batch, precision=precision, lr=2e-3)
            psnrs = milestone_psnrs(result, source)
            runs[precision] = (speed, result, psnrs)
            print(f"   {precision}: {speed:6.2f} it/s, final loss {np.mean(result.losses[-50:]):.4f}, "
                  f"reconstruction PSNR {psnrs[-1]:.2f} dB")
        print(f"   bf16/fp32 speed ratio {runs['bf16'][0] / runs['fp32'][0]:.2f}×")

        threshold = _psnr(source[..., 1:], source[..., :-1])
        print(f"\n3. time to a reconstruction above the one-pixel-shift PSNR ({threshold:.2f} dB)")
        for precision, (_speed, result, psnrs) in runs.items():
            reached = next((index for index, value in enumerate(psnrs, start=1) if value > threshold), None)
            line = ", ".join(f"{value:.1f}" for value in psnrs)
            if reached is None:
                print(f"   {precision}: not reached in {args.steps} steps (PSNR by milestone: {line})")
            else:
                seconds = result.seconds * reached / 10
                print(f"   {precision}: milestone {reached} (~{seconds:.0f} s of training; PSNR by milestone: {line})")

        print("\n4. seconds per variation (default settings: 20 steps per finer scale)")
        model_path = runs["bf16"][1].model_path
        for start in (0, 1):
            output = variations(model_path, VariationRequest(count=3, seed=0, start_scale=start))
            print(f"   start scale {start}: {output.seconds / 3:.2f} s/variation")


if __name__ == "__main__":
    main()
