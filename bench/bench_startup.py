"""Seconds from `python app.py` to the first page served (target ≤ 4 s on a 2-core machine).

Runs the app a few times in a fresh process each (offline, temporary outputs) and prints each time and
the median. Usage: python bench/bench_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import ROOT, free_port, wait_for_page  # noqa: E402


def time_once(outputs: Path) -> float:
    port = free_port()
    env = {"HF_HUB_OFFLINE": "1", "ASL_OUTPUTS": str(outputs), "PATH": "/usr/bin:/bin"}
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_page(f"http://127.0.0.1:{port}/", process)
        return time.monotonic() - start
    finally:
        process.terminate()
        process.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        time_once(Path(folder))  # warm the OS file cache and .pyc files, not counted
        times = [time_once(Path(folder)) for _ in range(args.runs)]
    print("start-up to first page (s):", ", ".join(f"{t:.2f}" for t in times))
    print(f"median {statistics.median(times):.2f} s  (target <= 4 s)")


if __name__ == "__main__":
    main()
