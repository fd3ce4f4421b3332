"""A storyboard as a recorded run: each frame a PNG with its A1111 infotext (through the diffusion core's run),
plus the strip, grid, comic page (PNG, PDF) and GIF; the sketches kept so History can re-run it. The drawn
sketches and the L × S sweep are recorded runs too (params "kind" "sketches" / "sweep"), each re-run from History."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from . import TAB

if TYPE_CHECKING:
    from pipelines.core.jobs import CancelToken, ProgressCallback
    from pipelines.core.records import RunRecord, RunStore

    from .compare import SweepResult
    from .generate import StoryboardOutput
    from .request import SketchRequest, StoryboardRequest
    from .sketches import SketchOutput


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
    """History's Re-run of any Storyboard run: a storyboard, its sketches or an L × S sweep."""
    if params.get("kind") == "sketches":
        return run_sketches(sketch_request_from_params(params), params["panels"], store=store)[0]
    if params.get("kind") == "sweep":
        return run_sweep(sweep_request_from_params(params), params["layers"], params["steps_of_50"], store=store)[0]
    return run_storyboard(request_from_params(params), store=store)[0]


def _new_record(params: dict[str, Any], model: str, seed: int) -> RunRecord:
    from pipelines.core import devices
    from pipelines.core.loader import is_test_model
    from pipelines.core.records import RunRecord

    return RunRecord(tab=TAB, params=params, seed=int(seed), attention=devices.attention_backend(),
                     models=[{"id": model, "test_model": is_test_model(model)}], device=str(devices.resolve_device()))


def run_sketches(request: SketchRequest, panels: list[int] | None = None, *, store: RunStore | None = None,
                 callback: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> tuple[RunRecord, SketchOutput]:
    """`generate_sketches` as a recorded run: each clean sketch a PNG with its panel, prompt and seed."""
    from pipelines.core.runs import save_outputs

    from .sketches import generate_sketches

    settings_ = dataclasses.asdict(request)
    settings_["prompts"] = list(request.prompts)
    record = _new_record({"kind": "sketches", "sketches": settings_, "prompts": list(request.prompts),
                          "panels": None if panels is None else [int(panel) for panel in panels]},
                         request.model, request.seed)
    store = store or _default_store()
    with store.run(record):
        with record.stage("sketches"):
            output = generate_sketches(request, panels, callback=callback, cancel=cancel)
        save_outputs(record, output.sketches,
                     [{"Panel": panel + 1, "Seed": seed} for panel, seed in zip(output.panels, output.seeds,
                                                                                 strict=True)],
                     prompt=[request.prompts[panel] for panel in output.panels])
    return record, output


def sketch_request_from_params(params: dict[str, Any]) -> SketchRequest:
    from .request import LineSettings, SketchRequest

    settings_ = dict(params["sketches"])
    return SketchRequest(**{**settings_, "prompts": tuple(settings_["prompts"]),
                            "lines": LineSettings(**settings_["lines"])})


def run_sweep(request: StoryboardRequest, layers: list[int], steps_of_50: list[int], *,
              store: RunStore | None = None, callback: ProgressCallback | None = None,
              cancel: CancelToken | None = None) -> tuple[RunRecord, SweepResult]:
    """The L × S sweep as a recorded run: its grid a PNG, the settings and sketches kept for a re-run."""
    from pipelines.core.runs import save_outputs

    from .compare import sweep

    plain = {field.name: getattr(request, field.name) for field in dataclasses.fields(request)
             if field.name not in ("sketches", "memory")}
    params = {"kind": "sweep", "layers": [int(layer) for layer in layers],
              "steps_of_50": [int(step) for step in steps_of_50], "prompts": list(request.prompts),
              "request": {**plain, "prompts": list(request.prompts)}, **storyboard_params(request)}
    record = _new_record(params, request.model, request.seed)
    store = store or _default_store()
    with store.run(record):
        with record.stage("sweep"):
            result = sweep(request, layers, steps_of_50, callback=callback, cancel=cancel)
        save_outputs(record, [result.image], {"Layers L": ", ".join(map(str, params["layers"])),
                                                "Steps S": ", ".join(map(str, params["steps_of_50"]))},
                     prompt=" | ".join(request.panel_prompts()), negative_prompt=request.negative_prompt)
    return record, result


def sweep_request_from_params(params: dict[str, Any]) -> StoryboardRequest:
    from .request import MemorySettings, StoryboardRequest

    board, plain = params["storyboard"], dict(params["request"])
    sketches = tuple(None if path is None else _opened(path) for path in board["sketch_files"])
    return StoryboardRequest(**{**plain, "prompts": tuple(plain["prompts"])}, sketches=sketches,
                             memory=MemorySettings(**board["memory_settings"]))


def _opened(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")
