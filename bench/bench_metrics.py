"""All default metrics of the Metrics / A-B tab: our `compare` against the straightforward way, as a ratio.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_metrics.py [--images 500] [--size 256] [--bootstrap 1000]
        [--small-bootstrap 100] [--repeats 1] [--no-breakdown]

Issue 3 ("Speed"): all default metrics for two sets of 500 images at 256 px with the tiny networks, against
computing each metric on its own the straightforward way (one torchmetrics object per metric, features not
shared), as a ratio. Target ≤ 0.5. This script prints figures; it never asserts timings.

* Data: synthetic 256x256 uint8 RGB sets A, B and a reference (smooth random fields + gradients + noise from a
  seeded numpy rng; A = reference + noise, B = the reference shifted by 3 px + more noise + a brightness offset),
  built once before any timing. Pairing is by order (A[i] and B[i] with reference[i]); one prompt for all.
* Ours: `pipelines.metrics.compare(A, B, reference, prompts=[prompt], pairs="order", metrics=default_metrics(),
  n_bootstrap=N, models=tiny)`, timed with the feature cache cold and again with the network features cached
  (what remains: SSIM/PSNR, hashing and the statistics), once with --bootstrap resamples (default 1000, the
  default of compare) and once with --small-bootstrap (default 100). At the end (unless --no-breakdown) each
  network's feature passes and each metric alone are timed too.
* Baseline: every metric on its own, each extracting its own features (nothing shared, no bootstrap):
  torchmetrics FrechetInceptionDistance / KernelInceptionDistance / InceptionScore with the tiny Inception
  wrapped as their `feature` module, StructuralSimilarityIndexMeasure and PeakSignalNoiseRatio on the pairs,
  the tiny LPIPS module called on pair batches, and CLIP score, CLIP-S (Hessel), CLIP-I, CMMD, per-image FID
  and per-image KL with the tiny networks called directly. The Inception wrapper resizes the clean-fid way
  (features.clean_resize, as ours does), so both sides run the same preprocessing and the numbers can be
  checked against each other.
* Models are loaded (and the tiny networks built) before timing, by a small warm-up of both sides, so both
  are timed warm; the loader's model cache and the feature cache are cleared before the warm-up, and the
  feature cache again before every cold run.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TINY_MODELS = {"inception": "tiny:inception", "clip": "tiny:clip", "lpips": "tiny:lpips"}
PROMPT = "an anime girl with long blue hair standing in a field of flowers at sunset"
BATCH = 32  # the batch size of ours (features.DEFAULT_BATCH_SIZE)


# ------------------------------------------------------------------------------------------ data
def make_sets(count: int, size: int, seed: int = 0):
    """(A, B, reference): lists of uint8 HxWx3 arrays; smooth random fields + a gradient + noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    reference, set_a, set_b = [], [], []
    for _ in range(count):
        cells = int(rng.integers(3, 9))
        coarse = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        gradient = 40.0 * (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])
        base = field + gradient[:, :, None] + rng.normal(0, 4, (size, size, 3))
        reference.append(np.clip(base, 0, 255).round().astype(np.uint8))
        set_a.append(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).round().astype(np.uint8))
        shifted = np.roll(base, 3, axis=1) + rng.normal(0, 12, base.shape) + 4.0
        set_b.append(np.clip(shifted, 0, 255).round().astype(np.uint8))
    return set_a, set_b, reference


# ------------------------------------------------------------------------------------------ machine
def machine_line() -> str:
    import torch

    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"cores {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), torch {torch.__version__} threads "
            f"{torch.get_num_threads()}, load average {load}")


class Timer:
    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Timer:
        gc.collect()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


# ------------------------------------------------------------------------------------------ ours
def clear_feature_cache() -> None:
    from pipelines.metrics import features

    features.FEATURE_CACHE.clear()


def run_ours(sets, n_bootstrap: int):
    from pipelines.metrics import compare, default_metrics

    set_a, set_b, reference = sets
    return compare(set_a, set_b, reference, prompts=[PROMPT], pairs="order", metrics=default_metrics(),
                   n_bootstrap=n_bootstrap, models=dict(TINY_MODELS))


# ------------------------------------------------------------------------------------------ baseline
def _modules():
    """nn.Module wrappers of the tiny Inception for torchmetrics' `feature` argument (same networks as ours)."""
    import numpy as np
    import torch
    from torch import nn

    from pipelines.metrics.features import clean_resize, load_feature_network

    class InceptionOutput(nn.Module):
        """uint8 Bx3xHxW -> the tiny Inception's 2048-d pool features or 1008 logits (float64), images resized
        the clean-fid way first, as ours does."""

        def __init__(self, output: str) -> None:
            super().__init__()
            self.net = load_feature_network("inception", TINY_MODELS["inception"])
            self.output = output
            self.num_features = 2048 if output == "pool" else 1008  # spares FID its dummy forward

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            arrays = images.permute(0, 2, 3, 1).cpu().numpy()
            x = np.stack([clean_resize(array)[0] for array in arrays])
            x = torch.from_numpy(x).permute(0, 3, 1, 2) / 255.0
            return self.net(x)[self.output].double()

    return InceptionOutput


def _batches(tensor, size: int = BATCH):
    return [tensor[start:start + size] for start in range(0, len(tensor), size)]


class Baseline:
    """Each default metric the straightforward way: its own object or code, its own feature pass."""

    def __init__(self, sets) -> None:
        import numpy as np
        import torch

        from pipelines.metrics.features import load_feature_network

        self.torch = torch
        set_a, set_b, reference = sets
        self.uint8 = {label: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
                      for label, images in (("A", set_a), ("B", set_b), ("reference", reference))}
        self.hwc = {"A": set_a, "B": set_b, "reference": reference}
        self.inception_module = _modules()
        self.clip_model, self.clip_processor = load_feature_network("clip", TINY_MODELS["clip"])
        self.lpips = load_feature_network("lpips", TINY_MODELS["lpips"])
        self.values: dict[str, tuple[float, float]] = {}
        self.seconds: dict[str, float] = {}

    # -- feature helpers, called anew by every metric (nothing is shared)
    def inception(self, label: str, output: str):
        module = self.inception_module(output)
        with self.torch.inference_mode():
            return self.torch.cat([module(batch) for batch in _batches(self.uint8[label])])

    def clip_images(self, label: str):
        torch = self.torch
        chunks = []
        with torch.inference_mode():
            for batch in _batches(self.hwc[label]):
                pixels = self.clip_processor(images=batch, return_tensors="pt")["pixel_values"]
                out = self.clip_model.get_image_features(pixel_values=pixels)
                chunks.append((out if isinstance(out, torch.Tensor) else out.pooler_output).double())
        embeddings = torch.cat(chunks)
        return embeddings / embeddings.norm(dim=1, keepdim=True)

    def clip_texts(self, count: int):
        torch = self.torch
        chunks = []
        with torch.inference_mode():
            for start in range(0, count, BATCH):
                texts = [PROMPT] * min(BATCH, count - start)
                tokens = self.clip_processor(text=texts, return_tensors="pt", padding=True)
                out = self.clip_model.get_text_features(input_ids=tokens["input_ids"],
                                                        attention_mask=tokens["attention_mask"])
                chunks.append((out if isinstance(out, torch.Tensor) else out.pooler_output).double())
        embeddings = torch.cat(chunks)
        return embeddings / embeddings.norm(dim=1, keepdim=True)

    # -- the metrics
    def _against_reference(self, metric, first=lambda value: value):
        """A torchmetrics FID/KID object fed the reference once, then A and B in turn: (value A, value B)."""
        for batch in _batches(self.uint8["reference"]):
            metric.update(batch, real=True)
        values = []
        for label in ("A", "B"):
            for batch in _batches(self.uint8[label]):
                metric.update(batch, real=False)
            values.append(float(first(metric.compute())))
            metric.reset()  # reset_real_features=False keeps the reference
        return tuple(values)

    def fid(self):
        from torchmetrics.image.fid import FrechetInceptionDistance

        return self._against_reference(
            FrechetInceptionDistance(feature=self.inception_module("pool"), reset_real_features=False))

    def kid(self):
        from torchmetrics.image.kid import KernelInceptionDistance

        count = min(len(images) for images in self.uint8.values())
        metric = KernelInceptionDistance(feature=self.inception_module("pool"), subsets=20,
                                         subset_size=min(1000, count), reset_real_features=False)
        return self._against_reference(metric, first=lambda value: value[0])  # (mean, std)

    def inception_score(self):
        from torchmetrics.image.inception import InceptionScore

        metric = InceptionScore(feature=self.inception_module("logits"), splits=10)
        values = []
        for label in ("A", "B"):
            for batch in _batches(self.uint8[label]):
                metric.update(batch)
            values.append(float(metric.compute()[0]))
            metric.reset()
        return tuple(values)

    def cmmd(self):
        torch = self.torch
        reference = self.clip_images("reference")

        def mmd(x, y, sigma: float = 10.0, scale: float = 1000.0):  # google-research/cmmd distance.mmd
            gamma = 1.0 / (2 * sigma**2)
            k_xx = torch.exp(-gamma * torch.cdist(x, x).square()).mean()
            k_yy = torch.exp(-gamma * torch.cdist(y, y).square()).mean()
            k_xy = torch.exp(-gamma * torch.cdist(x, y).square()).mean()
            return float(scale * (k_xx + k_yy - 2 * k_xy))

        return tuple(mmd(self.clip_images(label), reference) for label in ("A", "B"))

    def _paired(self, metric) -> tuple[float, float]:
        values = []
        for label in ("A", "B"):
            metric.reset()
            for ours, ref in zip(_batches(self.uint8[label]), _batches(self.uint8["reference"]), strict=True):
                metric.update(ours.float(), ref.float())
            values.append(float(metric.compute()))
        return tuple(values)

    def ssim(self):
        from torchmetrics.image import StructuralSimilarityIndexMeasure

        # scikit-image's SSIM (what ours computes): 7x7 uniform windows, data range 255
        return self._paired(StructuralSimilarityIndexMeasure(data_range=255.0, gaussian_kernel=False, kernel_size=7))

    def psnr(self):
        from torchmetrics.image import PeakSignalNoiseRatio

        return self._paired(PeakSignalNoiseRatio(data_range=255.0, dim=(1, 2, 3)))  # mean of per-image PSNR

    def lpips_metric(self):
        torch = self.torch
        values = []
        with torch.inference_mode():
            for label in ("A", "B"):
                distances = [self.lpips(ours.float() / 127.5 - 1.0, ref.float() / 127.5 - 1.0).reshape(-1)
                             for ours, ref in zip(_batches(self.uint8[label]), _batches(self.uint8["reference"]),
                                                  strict=True)]
                values.append(float(torch.cat(distances).double().mean()))
        return tuple(values)

    def clip_score(self, scale: float):
        values = []
        for label in ("A", "B"):
            images = self.clip_images(label)
            texts = self.clip_texts(len(images))
            values.append(float((scale * (images * texts).sum(dim=1).clamp(min=0)).mean()))
        return tuple(values)

    def clip_i(self):
        reference = self.clip_images("reference")
        return tuple(float((self.clip_images(label) * reference).sum(dim=1).mean()) for label in ("A", "B"))

    def fid_per_image(self):
        torch = self.torch
        reference = self.inception("reference", "pool")
        mu, trace = reference.mean(dim=0), torch.cov(reference.T).trace()
        return tuple(float(((self.inception(label, "pool") - mu).square().sum(dim=1) + trace).mean())
                     for label in ("A", "B"))

    def kl_per_image(self):
        torch = self.torch
        p_ref = torch.softmax(self.inception("reference", "logits"), dim=1).mean(dim=0, keepdim=True)
        values = []
        for label in ("A", "B"):
            log_p = torch.log_softmax(self.inception(label, "logits"), dim=1)
            values.append(float((log_p.exp() * (log_p - p_ref.clamp(min=1e-12).log())).sum(dim=1).mean()))
        return tuple(values)

    def run(self) -> None:
        jobs = {"fid": self.fid, "kid": self.kid, "is": self.inception_score, "cmmd": self.cmmd, "ssim": self.ssim,
                "psnr": self.psnr, "lpips": self.lpips_metric, "clip_score": lambda: self.clip_score(100.0),
                "clip_score_hessel": lambda: self.clip_score(2.5), "clip_i": self.clip_i,
                "fid_per_image": self.fid_per_image, "kl_per_image": self.kl_per_image}
        self.torch.manual_seed(0)  # KID's subsets and IS's shuffle
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # KID/IS "will save all extracted features" notices
            for key, job in jobs.items():
                start = time.perf_counter()
                self.values[key] = job()
                self.seconds[key] = time.perf_counter() - start


# ------------------------------------------------------------------------------------------ report
NOTES = {
    "fid": "same features; torchmetrics: eigvals of Σ1Σ2 in float64, ours: an SVD of the centred rows",
    "kid": "subset size = the set size: every subset is the whole set, so both are exact",
    "is": "differs by design: torchmetrics shuffles before its 10 splits, ours keeps the order",
    "ssim": "torchmetrics (7x7 uniform, reflect padding) vs scikit-image's definition (borders cropped)",
    "clip_score": "mean of 100·max(cos, 0) on both sides",
}


def agreement(report, baseline: Baseline) -> list[str]:
    rows = {row.key: row for row in report.rows}
    lines = [f"  {'metric':<18} {'ours A':>13} {'baseline A':>13} {'ours B':>13} {'baseline B':>13} "
             f"{'max rel diff':>12} {'abs diff':>10}"]
    for key, (base_a, base_b) in baseline.values.items():
        row = rows.get(key)
        if row is None:
            lines.append(f"  {key:<18} skipped by ours: {report.skipped.get(key, '?')}")
            continue
        pairs = ((row.a, base_a), (row.b, base_b))
        rel = max(abs(ours - base) / max(abs(base), 1e-300) for ours, base in pairs)
        absolute = max(abs(ours - base) for ours, base in pairs)
        notes = [NOTES[key]] if key in NOTES else []
        if key in ("clip_score", "clip_score_hessel") and base_a == base_b == 0:
            notes.append("every cosine ≤ 0 with the random tiny CLIP, so both give 0: a weak check")
        if key == "is" and max(abs(base_a - 1), abs(base_b - 1)) < 1e-6:
            notes.append("the tiny Inception's predictions barely vary, so IS ≈ 1: a weak check")
        note = f"  ({'; '.join(notes)})" if notes else ""
        lines.append(f"  {key:<18} {row.a:>13.6g} {base_a:>13.6g} {row.b:>13.6g} {base_b:>13.6g} {rel:>12.2e} "
                     f"{absolute:>10.2e}{note}")
    return lines


def breakdown(sets, bootstraps) -> list[str]:
    """Where ours spends its time: each network's feature passes (cache cold), then each metric alone through
    compare() with every feature cached (its pixel work, hashing and bootstrap)."""
    from pipelines.metrics import default_metrics, features

    set_a, set_b, reference = sets
    clear_feature_cache()
    passes = {
        "inception (A, B, reference)": lambda: [features.inception_features(images, TINY_MODELS["inception"])
                                                for images in sets],
        "clip images (A, B, reference) + prompt": lambda: ([features.clip_image_embeddings(images, TINY_MODELS["clip"])
                                                            for images in sets],
                                                           features.clip_text_embeddings([PROMPT] * len(set_a),
                                                                                         TINY_MODELS["clip"])),
        "lpips (A–reference, B–reference)": lambda: [features.lpips_distances(images, reference, TINY_MODELS["lpips"])
                                                     for images in (set_a, set_b)],
    }
    lines = ["  network feature passes, cache cold (s): "]
    for name, job in passes.items():
        with Timer() as timer:
            job()
        lines[0] += f"{name} {timer.wall:.2f}; "
    for n_bootstrap in bootstraps:
        lines.append(f"  each metric alone with features cached, n_bootstrap={n_bootstrap} (s): ")
        for key in default_metrics():
            with Timer() as timer:
                compare_one(sets, key, n_bootstrap)
            lines[-1] += f"{key} {timer.wall:.2f}, "
    return [line.rstrip(", ;") for line in lines]


def compare_one(sets, key: str, n_bootstrap: int):
    from pipelines.metrics import compare

    set_a, set_b, reference = sets
    return compare(set_a, set_b, reference, prompts=[PROMPT], pairs="order", metrics=[key], n_bootstrap=n_bootstrap,
                   models=dict(TINY_MODELS))


def fid_referee(sets, report) -> str:
    """FID from the d×d route (Gaussian stats, then symmetric eigen-decompositions) on the same cached features:
    a third opinion on the FID row, computed after the timing. It clamps eigenvalues below d·eps·max before
    taking square roots, so on nearly singular covariances it is the least exact of the three."""
    from pipelines.metrics import formulas
    from pipelines.metrics.features import inception_features

    set_a, set_b, reference = (inception_features(images, TINY_MODELS["inception"])[0] for images in sets)
    ref_stats = formulas.gaussian_stats(reference)
    values = [formulas.frechet_distance(*formulas.gaussian_stats(pool), *ref_stats) for pool in (set_a, set_b)]
    row = next((row for row in report.rows if row.key == "fid"), None)
    rel = "" if row is None else (
        f" (max rel diff to ours {max(abs(v - o) / abs(o) for v, o in zip(values, (row.a, row.b), strict=True)):.2e})")
    return (f"  fid by formulas.frechet_distance (2048x2048 eigh route, same features): A {values[0]:.6g}, "
            f"B {values[1]:.6g}{rel}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="images in each of A, B and the reference")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--bootstrap", type=int, default=1000, help="n_bootstrap of compare (its default: 1000)")
    parser.add_argument("--small-bootstrap", type=int, default=100, help="the second, smaller n_bootstrap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of both sides; each side's fastest counts")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-part timings of ours at the end")
    args = parser.parse_args()

    import torch

    from pipelines.core import loader
    from pipelines.metrics import features

    print("Metrics / A-B benchmark: all default metrics, ours (compare) vs each metric on its own (issue 3)")
    print(f"machine before: {machine_line()}")
    print(f"sets: A, B and reference of {args.images} images each, {args.size}x{args.size} RGB uint8, "
          f"pairs by order, one prompt; tiny networks {TINY_MODELS}")

    start = time.perf_counter()
    sets = make_sets(args.images, args.size, args.seed)
    print(f"built the sets in {time.perf_counter() - start:.1f} s (not timed)")

    # Warm-up (not timed): empty caches, then build/load the tiny networks and run both code paths once.
    features.FEATURE_CACHE.clear()
    loader.CACHE.clear()
    start = time.perf_counter()
    small = make_sets(4, 64, seed=args.seed + 1)
    run_ours(small, n_bootstrap=10)
    Baseline(small).run()
    clear_feature_cache()
    print(f"warm-up (tiny networks built and loaded, both paths run on 4 images): {time.perf_counter() - start:.1f} s "
          "(not timed)")

    # Rounds alternate baseline and ours so that load from other processes hits both; with --repeats > 1 each
    # side's fastest round counts (the machine is shared), and every round is printed.
    baseline = Baseline(sets)
    rounds: list[dict] = []
    reports = {}
    for _ in range(max(1, args.repeats)):
        with Timer() as base_time:
            baseline.run()
        result = {"baseline": base_time, "baseline_seconds": dict(baseline.seconds), "ours": {}}
        for n_bootstrap in dict.fromkeys((args.bootstrap, args.small_bootstrap)):
            clear_feature_cache()
            with Timer() as cold:
                reports[n_bootstrap] = run_ours(sets, n_bootstrap)
            computed = {kind: features.FEATURE_CACHE.computed(kind)
                        for kind in ("inception", "clip", "clip_text", "lpips")}
            with Timer() as warm:  # network features already cached
                run_ours(sets, n_bootstrap)
            result["ours"][n_bootstrap] = (cold, warm, computed)
        rounds.append(result)
    if len(rounds) > 1:
        for number, result in enumerate(rounds, start=1):
            ours = ", ".join(f"ours n_bootstrap={n} {cold.wall:.2f} s" for n, (cold, _, _) in result["ours"].items())
            print(f"round {number}: baseline {result['baseline'].wall:.2f} s, {ours}")
    best_base = min(rounds, key=lambda result: result["baseline"].wall)
    base_time = best_base["baseline"]
    baseline.seconds = best_base["baseline_seconds"]
    timings = {n: min((result["ours"][n] for result in rounds), key=lambda item: item[0].wall)
               for n in rounds[0]["ours"]}

    print(f"machine after:  {machine_line()}")
    print()
    print(f"baseline (each metric its own feature pass, no bootstrap): {base_time.wall:8.2f} s wall "
          f"{base_time.cpu:8.2f} s CPU")
    print("  per metric (s): " + ", ".join(f"{key} {seconds:.2f}" for key, seconds in baseline.seconds.items()))
    for n_bootstrap, (cold, warm, computed) in timings.items():
        print(f"ours, n_bootstrap={n_bootstrap}: {cold.wall:8.2f} s wall {cold.cpu:8.2f} s CPU (feature cache cold)")
        print(f"  again with the network features cached (SSIM/PSNR, hashing and statistics remain): {warm.wall:.2f} s "
              f"wall {warm.cpu:.2f} s CPU, so network feature passes ≈ {cold.wall - warm.wall:.2f} s")
        print(f"  feature passes computed: {computed}")
    print()
    counted = f", each side's fastest of {len(rounds)} rounds" if len(rounds) > 1 else ""
    print(f"ratio ours / baseline (wall time{counted}; target ≤ 0.5):")
    for label, n_bootstrap in (("(a)", args.bootstrap), ("(b)", args.small_bootstrap)):
        cold = timings[n_bootstrap][0]
        print(f"  {label} n_bootstrap={n_bootstrap:<5} {cold.wall / base_time.wall:6.3f}   "
              f"(CPU-time ratio {cold.cpu / base_time.cpu:.3f})")
    print(f"  network feature passes only (ours cold − cached, n_bootstrap={args.small_bootstrap}) / baseline: "
          f"{(timings[args.small_bootstrap][0].wall - timings[args.small_bootstrap][1].wall) / base_time.wall:.3f}")
    print()
    print(f"agreement of the numbers (ours with n_bootstrap={args.bootstrap} vs the baseline; relative difference, "
          "for information):")
    for line in agreement(reports[args.bootstrap], baseline):
        print(line)
    print(fid_referee(sets, reports[args.bootstrap]))
    if not args.no_breakdown:
        print()
        print("where ours spends its time (after the timed runs):")
        for line in breakdown(sets, list(dict.fromkeys((args.bootstrap, args.small_bootstrap)))):
            print(line)
    print(f"threads: torch {torch.get_num_threads()}; load average now "
          f"{' '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
