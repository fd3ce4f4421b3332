"""What an open webcam stream costs other users: another API client's Stylize with and without the stream.

Starts the app (offline, tiny test style), measures the webcam stream's frame time (frames sent as fast as they
are answered, long side 512 px), another client's Stylize of 4 photos alone, and the same Stylize submitted
while the stream runs. Prints the seconds and the extra time in frames. Before the stream had its own
concurrency slot, the Stylize waited for the whole stream (up to its 120 s time limit).

Usage: python bench/bench_live.py [--stream-seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import ROOT, running_app  # noqa: E402
from tests.support.stream_client import measure_live  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stream-seconds", type=float, default=30.0, help="how long the stream stays open at most")
    args = parser.parse_args()
    samples = ROOT / "assets" / "samples"
    photos = sorted(samples.glob("*.jpg"))[:4]
    with tempfile.TemporaryDirectory() as folder, \
            running_app(Path(folder) / "outputs", Path(folder) / "cache", env={"HF_HUB_OFFLINE": "1"}) as url:
        figures = measure_live(url, samples / "chelsea.jpg", photos, stream_seconds=args.stream_seconds)
    print(f"webcam frame time (stream alone):       {figures.frame_seconds * 1000:7.0f} ms")
    print(f"other client's Stylize, no stream:       {figures.stylize_alone:7.2f} s")
    print(f"the same Stylize during the stream:      {figures.stylize_during:7.2f} s "
          f"({figures.frames} frames streamed meanwhile; stream open {figures.stream_seconds:.1f} s)")
    print(f"cost of the stream to the other client:  {figures.stylize_during - figures.stylize_alone:7.2f} s "
          f"= {figures.extra_frames:.1f} frame times, {figures.stylize_during / figures.stylize_alone:.2f}x")


if __name__ == "__main__":
    main()
