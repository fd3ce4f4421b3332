"""The seed's landmark U-Net on this CPU: training steps/s and sampling s/face at 32 and 64 px, bf16 autocast +
channels_last against plain fp32 (speed ratio, and that the loss matches), parameter counts against the seed's
290 M claim.

    .venv/bin/python bench/bench_landmark_faces.py [--widths 12 64] [--sizes 32 64] [--steps 6] [--batch 16]
    .venv/bin/python bench/bench_landmark_faces.py --readback [--model M] [--values 5] [--record M.json]

--readback prints the per-slider shape read-back instead (issue #23): for each slider, faces drawn at evenly
spaced values across its whole range, and the mean |read back − asked| of the model, of the synthetic drawings of
the same landmarks (the read-back's own floor), of the model given tags only and of the untrained network;
--record merges the table into the model's JSON, where the tab's Compare shows it. It is
`python -m pipelines.landmark_faces readback`.

fp32 (the plain reference) and bf16 are timed interleaved, step by step, on the same batches from the same
initial weights, so load from other processes hits both alike. "loss gap" is the largest relative difference of
the two runs' losses over the timed steps (they start equal and drift apart a little as bf16 rounds). Sampling
is 50 DDIM steps with classifier-free guidance (two U-Net passes per step) for a batch of 4 faces.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEED_CLAIM = 290e6


def main() -> None:
    if "--readback" in sys.argv:
        from pipelines.landmark_faces.__main__ import main as cli

        sys.argv = [sys.argv[0], "readback", *(arg for arg in sys.argv[1:] if arg != "--readback")]
        raise SystemExit(cli(sys.argv[1:]))  # the record then names the command as the CLI would
    import torch

    from pipelines.core import devices
    from pipelines.landmark_faces import landmarks as L
    from pipelines.landmark_faces.generate import sample
    from pipelines.landmark_faces.train import (
        Batches,
        TrainConfig,
        _train_step,
        draw_batch,
        scheduler_for,
        synthetic_data,
    )
    from pipelines.landmark_faces.unet import UNetConfig, build, parameter_count

    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", type=int, nargs="+", default=[12, 64])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    device = torch.device("cpu")
    native = devices.bf16_supported(device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {native}")
    for width in args.widths:
        count = parameter_count(build(UNetConfig(width=width, tags=("a",) * 20)))
        print(f"width {width}: {count / 1e6:.2f} M parameters = {count / SEED_CLAIM:.3%} of the seed's 290 M claim")
    print("width size | fp32 steps/s | bf16 steps/s | bf16/fp32 speed | loss gap | sample s/face (fp32)")
    for width in args.widths:
        for size in args.sizes:
            config = TrainConfig(image_size=size, width=width, batch_size=args.batch, synthetic_count=64, lr=1e-3)
            data = synthetic_data(config)
            batches = Batches(data, data.vocabulary, config)
            scheduler = scheduler_for(config)
            unet_config = UNetConfig(width=width, image_size=size, tags=data.vocabulary, time_dim=max(32, 4 * width))
            models = {"fp32": build(unet_config), "bf16": build(unet_config).to(memory_format=torch.channels_last)}
            optimizers = {key: torch.optim.AdamW(model.parameters(), lr=1e-3) for key, model in models.items()}
            times: dict[str, list[float]] = {"fp32": [], "bf16": []}
            losses: dict[str, list[float]] = {"fp32": [], "bf16": []}
            for step in range(args.steps + 1):
                batch = draw_batch(batches, config, step, config.train_timesteps)
                for key in ("fp32", "bf16"):
                    start = time.perf_counter()
                    losses[key].append(_train_step(models[key], optimizers[key], batch, scheduler, device, key))
                    if step:  # the first step warms up oneDNN's kernels
                        times[key].append(time.perf_counter() - start)
            fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
            gap = max(abs(a - b) / max(abs(a), 1e-8) for a, b in zip(losses["fp32"], losses["bf16"], strict=True))
            start = time.perf_counter()
            sample(models["fp32"], L.parametric_face(), ["smile"], steps=50, guidance=2.0, count=4)
            per_face = (time.perf_counter() - start) / 4
            print(f"{width:5d} {size:4d} | {1 / fp32:12.2f} | {1 / bf16:12.2f} | {fp32 / bf16:15.2f} | "
                  f"{gap:8.3f} | {per_face:.2f}")


if __name__ == "__main__":
    main()
