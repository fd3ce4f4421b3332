"""A storyboard as a recorded run: each frame a PNG with its A1111 infotext (through the diffusion core's run),
plus the strip, grid, comic page (PNG, PDF) and GIF; the sketches kept so History can re-run it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from . import TAB

if TYPE_CHECKING:
    from pipelines.core.jobs import CancelToken, ProgressCallback
    from pipelines.core.records import RunRecord, RunStore

    from .generate import StoryboardOutput
    from .request import StoryboardRequest


def storyboard_params(request: StoryboardRequest) -> dict[str, Any]:
    """The storyboard's own settings for the record (the core records the generation's)."""
    from pipelines.core.runs import save_input_copy

    return {"storyboard": {
        "prompts": list(request.prompts), "prefix": request.prefix, "control": request.control,
        "memory_settings": dataclasses.asdict(request.memory),
        "sketch_files": [None if sketch is None else str(save_input_copy(sketch)) for sketch in request.sketches]}}


def request_from_params(params: dict[str, Any]) -> StoryboardRequest:
    from PIL import Image

    from .request import MemorySettings, StoryboardRequest

    board = params["storyboard"]

    def opened(path: str | None) -> Any:
        if path is None:
            return None
        with Image.open(path) as image:
            return image.convert("RGB")

    return StoryboardRequest(
        prompts=tuple(board["prompts"]), prefix=board["prefix"], control=board["control"],
        sketches=tuple(opened(path) for path in board["sketch_files"]),
        memory=MemorySettings(**board["memory_settings"]), negative_prompt=params["negative_prompt"],
        model=params["model"], control_scale=(params["controlnets"] or [{"scale": 1.0}])[0]["scale"],
        seed=params["seed"], steps=params["steps"], cfg_scale=params["cfg_scale"], sampler=params["sampler"],
        schedule=params["schedule"], width=params["width"], height=params["height"], clip_skip=params["clip_skip"],
        memory_preset=params["memory"])


def run_storyboard(request: StoryboardRequest, *, store: RunStore | None = None,
                   callback: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> tuple[RunRecord, StoryboardOutput]:
    from pipelines.core import settings
    from pipelines.core.runs import folder_name
    from pipelines.diffusion.runs import run_generate

    from .generate import generate_storyboard
    from .outputs import save_all

    records: list[RunRecord] = []

    def recorded(core_request: Any, **kwargs: Any) -> Any:
        record, output = run_generate(core_request, tab=TAB, store=store, extra_params=storyboard_params(request),
                                      **kwargs)
        records.append(record)
        return record, output

    output = generate_storyboard(request, callback=callback, cancel=cancel, run=recorded)
    record = records[0]
    files = save_all(output.frames, settings.outputs_dir() / folder_name(TAB), record.id)
    record.outputs.extend(str(path) for path in files.values())
    record.params["seconds_per_frame"] = round(output.seconds_per_frame, 3)
    record.params["peak_memory_mb"] = round(output.peak_memory_mb, 1)
    (store or _default_store()).save(record)
    return record, output


def _default_store() -> RunStore:
    from pipelines.core.records import default_store

    return default_store()


def rerun_storyboard(params: dict[str, Any], store: RunStore) -> RunRecord:
    return run_storyboard(request_from_params(params), store=store)[0]
