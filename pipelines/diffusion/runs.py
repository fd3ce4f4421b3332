"""Generation as a recorded run: PNGs with A1111 infotext + JSON under outputs/<tab>/, a run record, re-run.

Tabs built on the diffusion core call `run_generate(request, tab=THEIR_TAB)`; their runs re-run through here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import TAB

if TYPE_CHECKING:
    from pipelines.core.jobs import CancelToken, ProgressCallback
    from pipelines.core.records import RunRecord, RunStore

    from .generate import GenerateOutput, GenerateRequest
    from .steps import PreviewCallback


def request_params(request: GenerateRequest) -> dict[str, Any]:
    """The request as JSON-able run parameters; condition images are kept as input copies (paths)."""
    params = {field.name: getattr(request, field.name) for field in dataclasses.fields(request)
              if field.name not in ("controlnets", "reference")}
    params["loras"] = [list(item) for item in request.loras]
    params["prompts"] = list(request.prompts)
    params["controlnets"] = [{**{key: getattr(unit, key) for key in ("model", "scale", "start", "end", "module")},
                              "image": _input_copies(unit.image)} for unit in request.controlnets]
    reference = request.reference
    params["reference"] = None if reference is None else {
        **{key: getattr(reference, key) for key in ("scale", "model", "weights", "encoder")},
        "image": _input_copies(reference.image)}
    return params


def _input_copies(image: Any) -> str | list[str]:
    from pipelines.core.runs import save_input_copy

    if isinstance(image, (tuple, list)):
        return [str(save_input_copy(item)) for item in image]
    return str(save_input_copy(image))


def _open_copies(paths: str | list[str]) -> Any:
    from PIL import Image

    def open_rgb(path: str) -> Any:
        with Image.open(path) as image:
            return image.convert("RGB")

    return tuple(open_rgb(path) for path in paths) if isinstance(paths, list) else open_rgb(paths)


def request_from_params(params: dict[str, Any]) -> GenerateRequest:
    from .generate import ControlUnit, request_from_settings
    from .ip_adapter import ReferenceImage

    units = tuple(ControlUnit(**{**unit, "image": _open_copies(unit["image"])})
                  for unit in params.get("controlnets") or [])
    reference = params.get("reference")
    if reference:
        reference = ReferenceImage(**{**reference, "image": _open_copies(reference["image"])})
    return dataclasses.replace(request_from_settings(params), controlnets=units, reference=reference or None)


def run_generate(request: GenerateRequest, *, tab: str = TAB, store: RunStore | None = None,
                 callback: ProgressCallback | None = None, cancel: CancelToken | None = None,
                 on_preview: PreviewCallback | None = None, preview_every: int = 0, state: Any = None,
                 cross_attention_kwargs: dict[str, Any] | None = None,
                 extra_params: dict[str, Any] | None = None,
                 produce: Callable[..., GenerateOutput] | None = None) -> tuple[RunRecord, GenerateOutput]:
    """`generate` as a recorded run. `state`/`cross_attention_kwargs` go to `generate` (a method's per-call
    attention state); `extra_params` are the calling tab's own settings, recorded beside the request's.
    `produce`, if given, stands in for `generate` with the same arguments (a method that draws the request in
    several calls, as storyboard's chunks do, still makes one record)."""
    from pipelines.core import devices
    from pipelines.core.records import RunRecord, default_store
    from pipelines.core.runs import save_outputs

    from .generate import generate, raise_for_problems

    raise_for_problems(request)
    params = request_params(request)
    clashes = sorted(set(extra_params or {}) & set(params))
    if clashes:  # a re-run rebuilds the request from these keys: another value would make it differ
        raise ValueError(f"extra_params may not override the request's own settings: {', '.join(clashes)}")
    params.update(extra_params or {})
    store = store or default_store()
    record = RunRecord(tab=tab, params=params, seed=int(request.seed), attention=devices.attention_backend())
    with store.run(record):
        with record.stage("generate"):
            output = (produce or generate)(request, callback=callback, cancel=cancel, on_preview=on_preview,
                                           preview_every=preview_every, state=state,
                                           cross_attention_kwargs=cross_attention_kwargs)
        record.models = output.models
        record.device = output.device
        with record.stage("save"):
            save_outputs(record, output.images, output.infotexts, prompt=output.prompts,
                         negative_prompt=output.negative_prompt)
        if output.notes:
            params["notes"] = output.notes
    return record, output


def rerun_generate(params: dict[str, Any], store: RunStore) -> RunRecord:
    return run_generate(request_from_params(params), store=store)[0]

