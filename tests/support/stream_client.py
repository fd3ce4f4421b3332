"""Drive a Gradio streaming event (the webcam's `.stream`) through the server, as the browser does.

The browser joins the queue once (POST /gradio_api/queue/join), reads the event's messages from
GET /gradio_api/queue/data (server-sent events), sends each new frame to POST /gradio_api/stream/{event_id}
and finally closes it with POST /gradio_api/stream/{event_id}/close. gradio_client cannot send a stream of
inputs, so tests and benchmarks use this.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


@dataclass
class StreamResult:
    outputs: list[float] = field(default_factory=list)  # monotonic time of every streamed output
    errors: list[str] = field(default_factory=list)
    completed: bool = False


class StreamSession:
    """One streaming event of `api_name`; frames are image files uploaded once and sent repeatedly."""

    def __init__(self, base_url: str, api_name: str, auth: tuple[str, str] | None = None) -> None:
        self.base = base_url.rstrip("/") + "/gradio_api"
        self.http = httpx.Client(timeout=60)
        if auth:
            self.http.post(base_url.rstrip("/") + "/login", data={"username": auth[0], "password": auth[1]})
        config = self.http.get(base_url.rstrip("/") + "/config").json()
        self.fn_index = next(dep["id"] for dep in config["dependencies"] if dep.get("api_name") == api_name)
        self.session_hash = uuid.uuid4().hex[:11]
        self.event_id: str | None = None
        self.result = StreamResult()
        self._reader: threading.Thread | None = None
        self._first_output = threading.Event()

    def upload(self, path: Path) -> dict[str, Any]:
        with open(path, "rb") as handle:
            response = self.http.post(f"{self.base}/upload", files={"files": (path.name, handle, "image/png")})
        response.raise_for_status()
        return {"path": response.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def _body(self, data: list[Any]) -> dict[str, Any]:
        return {"data": data, "fn_index": self.fn_index, "session_hash": self.session_hash, "event_data": None}

    def start(self, data: list[Any]) -> None:
        response = self.http.post(f"{self.base}/queue/join", json=self._body(data))
        response.raise_for_status()
        self.event_id = response.json()["event_id"]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        url = f"{self.base}/queue/data"
        with httpx.Client(timeout=None) as http, http.stream("GET", url, params={"session_hash": self.session_hash}) \
                as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                kind = message.get("msg")
                if kind in ("process_streaming", "process_generating"):
                    self.result.outputs.append(time.monotonic())
                    self._first_output.set()
                elif kind == "process_completed":
                    if not message.get("success", True):
                        self.result.errors.append(str((message.get("output") or {}).get("error")))
                    self.result.completed = True
                    self._first_output.set()
                    return
                elif kind == "close_stream":
                    return

    def wait_first_output(self, timeout: float) -> bool:
        return self._first_output.wait(timeout)

    def send(self, data: list[Any]) -> None:
        self.http.post(f"{self.base}/stream/{self.event_id}", json=self._body(data)).raise_for_status()

    def close(self) -> StreamResult:
        if self.event_id:
            self.http.post(f"{self.base}/stream/{self.event_id}/close")
        if self._reader is not None:
            self._reader.join(timeout=30)
        self.http.close()
        return self.result

    def run_for(self, seconds: float, data: list[Any], every: float) -> None:
        """Send the same frame every `every` seconds for `seconds` (the browser's stream_every)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.result.completed:
            self.send(data)
            time.sleep(every)


# ---------------------------------------------------------------------------------------------- measurements
@dataclass
class LiveFigures:
    frame_seconds: float  # median time between streamed outputs with frames sent as fast as they are answered
    frames: int  # outputs the stream produced while the other client's Stylize ran
    stylize_alone: float  # seconds for the other client's Stylize with no stream running (median)
    stylize_during: float  # the same Stylize while the stream runs
    stream_seconds: float  # how long the stream was kept open
    finished_while_streaming: bool = False  # the other client's Stylize ended before the stream was closed

    @property
    def extra_frames(self) -> float:
        """What the stream cost the other client, in frames: (during − alone) / frame time."""
        return (self.stylize_during - self.stylize_alone) / max(self.frame_seconds, 1e-6)


def _stylize_seconds(client: Any, photos: list[Path], max_size: int) -> float:
    from gradio_client import handle_file

    start = time.monotonic()
    client.predict([handle_file(str(path)) for path in photos], "tiny:style", 1.0, False, max_size,
                   api_name="/stylize")
    return time.monotonic() - start


def measure_live(url: str, frame: Path, photos: list[Path], *, stream_seconds: float, max_size: int = 512,
                 frame_every: float = 0.02, repeats: int = 3) -> LiveFigures:
    """Frame time of the webcam stream alone, another client's Stylize alone, then that Stylize submitted one
    second into a stream kept open for `stream_seconds` (the browser's webcam; its time limit is longer)."""
    import statistics

    from gradio_client import Client

    client = Client(url, verbose=False)
    _stylize_seconds(client, photos, max_size)  # warm: model loaded, code paths compiled
    alone = statistics.median(_stylize_seconds(client, photos, max_size) for _ in range(repeats))

    session = StreamSession(url, "stylize_frame")
    data = [session.upload(frame), "tiny:style", 1.0, False]
    session.start(data)
    session.wait_first_output(60)
    session.run_for(3.0, data, frame_every)
    outputs = list(session.result.outputs)
    intervals = [b - a for a, b in zip(outputs, outputs[1:], strict=False)]
    frame_seconds = statistics.median(intervals) if intervals else float("nan")

    opened = time.monotonic()
    result: dict[str, float] = {}

    def other_client() -> None:
        result["seconds"] = _stylize_seconds(Client(url, verbose=False), photos, max_size)

    worker = threading.Thread(target=other_client)
    before = len(session.result.outputs)
    worker.start()
    while worker.is_alive() and time.monotonic() - opened < stream_seconds:
        session.send(data)
        time.sleep(frame_every)
    frames = len(session.result.outputs) - before
    finished_while_streaming = not worker.is_alive()
    session.close()
    worker.join()
    return LiveFigures(frame_seconds, frames, alone, result["seconds"], time.monotonic() - opened,
                       finished_while_streaming)
