"""Load: 8 API clients at once on Stylize, then 8 at once on Compare, then 8 mixed; errors and each latency.

Starts the app (offline, tiny test models), then sends the requests from separate gradio_client Clients in
parallel threads. Model jobs share one slot (tabs.common.MODEL_WORK), so the requests queue: the latencies
show the queue, the error count must be 0. Prints one line per client and a summary per round.

Usage: python bench/bench_load.py [--clients 8] [--photos 2] [--max-size 512]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import ROOT, running_app  # noqa: E402


def _sets(folder: Path) -> dict[str, list[Path]]:
    """Sets A (light noise), B (heavy noise) and the reference: 6 crops of the bundled photos, 64 px."""
    rng = np.random.default_rng(0)
    sets: dict[str, list[Path]] = {}
    photos = sorted((ROOT / "assets" / "samples").glob("*.jpg"))
    for label, sigma in (("a", 3.0), ("b", 30.0), ("ref", 0.0)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        sets[label] = []
        for index in range(6):
            with Image.open(photos[index % len(photos)]) as photo:
                crop = np.asarray(photo.convert("RGB"))[40:104, 40:104].astype(float)
            noisy = np.clip(crop + rng.normal(0, sigma, crop.shape), 0, 255).astype(np.uint8)
            path = folder / label / f"img{index}.png"
            Image.fromarray(noisy).save(path)
            sets[label].append(path)
    return sets


def _stylize(client, photos: list[Path], max_size: int) -> None:
    from gradio_client import handle_file

    client.predict([handle_file(str(path)) for path in photos], "tiny:style", 1.0, False, max_size,
                   api_name="/stylize")


def _compare(client, sets: dict[str, list[Path]]) -> None:
    from gradio_client import handle_file

    files = lambda paths: [handle_file(str(path)) for path in paths]  # noqa: E731
    client.predict(files(sets["a"]), [], "", files(sets["b"]), [], "", files(sets["ref"]), "", "", "Pair by order",
                   ["ssim", "psnr", "lpips", "kid"], "tiny:inception", "tiny:clip", "tiny:lpips", "", 200, 0,
                   api_name="/compare")


def run_round(url: str, jobs: list[tuple[str, object]]) -> list[tuple[str, float, str]]:
    """Start every job at once from its own client; (endpoint, seconds, error or "") per client."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in jobs]
    results: list[tuple[str, float, str]] = [("", 0.0, "")] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def work(index: int) -> None:
        name, call = jobs[index]
        barrier.wait()
        start = time.monotonic()
        try:
            call(clients[index])
            error = ""
        except Exception as err:  # noqa: BLE001 - counted and printed
            error = f"{type(err).__name__}: {err}"
        results[index] = (name, time.monotonic() - start, error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--photos", type=int, default=2, help="photos per Stylize request")
    parser.add_argument("--max-size", type=int, default=512)
    args = parser.parse_args()
    photos = sorted((ROOT / "assets" / "samples").glob("*.jpg"))[: args.photos]
    with tempfile.TemporaryDirectory() as folder, \
            running_app(Path(folder) / "outputs", Path(folder) / "cache", env={"HF_HUB_OFFLINE": "1"}) as url:
        sets = _sets(Path(folder) / "sets")
        stylize = ("/stylize", lambda client: _stylize(client, photos, args.max_size))
        compare = ("/compare", lambda client: _compare(client, sets))
        run_round(url, [stylize, compare])  # warm: models built and loaded once
        rounds = {"Stylize": [stylize] * args.clients, "Compare": [compare] * args.clients,
                  "mixed": [stylize, compare] * (args.clients // 2)}
        total_errors = 0
        for title, jobs in rounds.items():
            start = time.monotonic()
            results = run_round(url, jobs)
            wall = time.monotonic() - start
            errors = [result for result in results if result[2]]
            total_errors += len(errors)
            print(f"\n{title}: {len(jobs)} clients at once, {len(errors)} errors, all done in {wall:.1f} s")
            for index, (name, seconds, error) in enumerate(results):
                print(f"  client {index + 1}  {name:9s} {seconds:6.2f} s  {error or 'ok'}")
            latencies = [seconds for _, seconds, _ in results]
            print(f"  latency median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s")
    print(f"\nerrors in all rounds: {total_errors}")
    sys.exit(1 if total_errors else 0)


if __name__ == "__main__":
    main()
