"""Start app.py on a free port in a subprocess and wait until it serves its page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_LOGS: dict[Path, float | None] = {}  # each app's log → when it stopped (None: running)


def log_tails(since: float, lines: int = 60) -> str:
    """The last lines of the log of every app that ran after `since` (a time.time()), for a failing test's report:
    on CI it is all there is to read."""
    parts = []
    for path in [path for path, stopped in APP_LOGS.items() if stopped is None or stopped >= since]:
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        parts.append(f"--- {path.name} (last {len(tail)} lines) ---\n" + "\n".join(tail))
    return "\n".join(parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_page(url: str, process: subprocess.Popen, timeout: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"app exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"app did not serve {url} within {timeout} s")


@contextmanager
def running_app(outputs: Path, cache: Path, *, prefix: list[str] | None = None, env: dict | None = None,
                drop_env: tuple[str, ...] = (), log_path: Path | None = None):
    """Yield the base URL of a freshly started app; stop it afterwards."""
    port = free_port()
    full_env = {**os.environ, "ASL_OUTPUTS": str(outputs), "ASL_CACHE": str(cache), "PYTHONUNBUFFERED": "1",
                **(env or {})}
    for name in drop_env:
        full_env.pop(name, None)
    command = [sys.executable, *(prefix or []), "app.py", "--port", str(port)]
    log_file = log_path or outputs.parent / f"app-{port}.log"
    log = open(log_file, "w")  # noqa: SIM115
    process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    APP_LOGS[log_file] = None
    try:
        wait_for_page(url, process)
        yield url
    finally:
        APP_LOGS[log_file] = time.time()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
