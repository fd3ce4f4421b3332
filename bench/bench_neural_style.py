"""Neural style throughput on CPU: our `stylize` path against a plain reference forward pass, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_neural_style.py [--sizes 256 512 1024] [--reps 5]

The reference is how pytorch/examples runs its TransformerNet (neural_style.py `stylize` + utils.save_image):
ToTensor().mul(255) -> TransformerNet (eval, torch.no_grad, plain forward) -> clamp(0, 255) -> uint8 image.
Ours is `pipelines.neural_style.stylize` on the same weights (PIL image in, PIL image out). Both are timed
end to end from a PIL image to a PIL image, interleaved rep by rep so that load from other processes hits both
alike; the network-only times (tensor in, tensor out) are printed too. The weights are a downloaded pretrained
style when one is cached, else the tiny test style (random weights: the same amount of computation).

Also printed: the largest relative difference between the two outputs (before quantisation to 8 bits, and the
largest 8-bit pixel difference), and peak resident memory idle (after imports) and after stylizing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_image(size: int):
    import numpy as np
    from PIL import Image

    sample = Path(__file__).resolve().parents[1] / "assets" / "samples" / "chelsea.jpg"
    if sample.exists():
        return Image.open(sample).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def pick_style() -> str:
    from pipelines.neural_style import list_styles

    examples = ("rain_princess", "candy", "mosaic", "udnie")  # the pytorch/examples layout
    for entry in list_styles():
        if entry.kind == "pretrained" and entry.available and entry.name in examples:
            return entry.name
    return "tiny:style"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per size (after one warm-up)")
    parser.add_argument("--style", default=None, help="style to use (default: a cached pretrained one, else tiny)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from pipelines.neural_style import load_style, stylize
    from pipelines.neural_style.network import ExamplesTransformerNet

    style = args.style or pick_style()
    model = load_style(style)
    if model.layout != "pytorch_examples":
        raise SystemExit(f"{style} is in the {model.layout} layout; the reference here is pytorch/examples.")
    reference = ExamplesTransformerNet().eval()
    reference.load_state_dict(model.net.state_dict())  # the same weights, run the plain way
    idle_peak, idle_now = peak_rss_mb(), current_rss_mb()

    def reference_stylize(image):  # pytorch/examples: ToTensor().mul(255) -> net -> clamp -> uint8
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
            y = reference(x).clamp(0, 255)[0]
            return Image.fromarray(y.numpy().transpose(1, 2, 0).astype("uint8"))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, style {style!r} "
          f"({'random weights' if style.startswith('tiny') else 'pretrained'}), layout {model.layout}")
    print(f"peak RSS idle (after imports and loading the style): {idle_peak:.0f} MB (current {idle_now:.0f} MB)")
    header = (f"{'size':>6} | {'ref img/s':>9} | {'ours img/s':>10} | {'ratio':>5} | {'net-only ratio':>14} | "
              f"{'max rel diff':>12} | {'max px diff':>11}")
    one = max(args.sizes)
    stylize([test_image(one)], model, max_size=one)
    after_one = peak_rss_mb()
    print(f"peak RSS after one stylization at {one} px (our path, before any reference run): {after_one:.0f} MB")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        image = test_image(size)
        x01 = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0).contiguous()
        ours_image = stylize([image], model, max_size=size).images[0]  # warm-up (and builds the fused kernels)
        ref_image = reference_stylize(image)
        with torch.no_grad():
            ref_out = reference(x01 * 255).clamp(0, 255) / 255
        with torch.inference_mode():
            our_out = model(x01)
        rel = float((our_out - ref_out).abs().max() / ref_out.abs().max())
        px = int(np.abs(np.asarray(ours_image, np.int16) - np.asarray(ref_image, np.int16)).max())

        times: dict[str, list[float]] = {"ref": [], "ours": [], "ref_net": [], "ours_net": []}
        for _ in range(args.reps):
            start = time.perf_counter()
            reference_stylize(image)
            times["ref"].append(time.perf_counter() - start)
            start = time.perf_counter()
            stylize([image], model, max_size=size)
            times["ours"].append(time.perf_counter() - start)
            with torch.no_grad():
                start = time.perf_counter()
                reference(x01 * 255)
                times["ref_net"].append(time.perf_counter() - start)
            with torch.inference_mode():
                start = time.perf_counter()
                model(x01)
                times["ours_net"].append(time.perf_counter() - start)
        med = {key: statistics.median(value) for key, value in times.items()}
        print(f"{size:>6} | {1 / med['ref']:>9.2f} | {1 / med['ours']:>10.2f} | {med['ref'] / med['ours']:>5.2f} | "
              f"{med['ref_net'] / med['ours_net']:>14.2f} | {rel:>12.1e} | {px:>11d}")
        best = f"{min(times['ref']) * 1000:.0f} / {min(times['ours']) * 1000:.0f}"
        print(f"{'':>6}   medians over {args.reps} reps: ref {med['ref'] * 1000:.0f} ms, "
              f"ours {med['ours'] * 1000:.0f} ms (best {best} ms); network only: ref "
              f"{med['ref_net'] * 1000:.0f} ms, ours {med['ours_net'] * 1000:.0f} ms")
    print(f"peak RSS at the end (both paths at every size): {peak_rss_mb():.0f} MB")
    print(f"load average during the run: {os.getloadavg()[0]:.2f} (other processes share these cores)")


if __name__ == "__main__":
    main()
