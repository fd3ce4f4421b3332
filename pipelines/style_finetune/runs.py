"""Trainings as recorded runs: History lists them (status running / done / cancelled / failed) and its Re-run
resumes an unfinished one from its last checkpoint, with the same settings and the dataset saved beside it.
Evaluations are recorded runs too (params kind "evaluation"), re-run with the same settings."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from . import TAB

if TYPE_CHECKING:
    from pipelines.core.jobs import CancelToken, ProgressCallback
    from pipelines.core.records import RunRecord, RunStore

    from .data import Dataset
    from .evaluate import EvaluateOutput, EvaluateRequest
    from .train import TrainConfig, TrainResult


def dataset_folder(name: str) -> Any:
    from .train import training_folder

    return training_folder(name) / "dataset"


def run_train(config: TrainConfig, dataset: Dataset | None = None, *, store: RunStore | None = None,
              callback: ProgressCallback | None = None, cancel: CancelToken | None = None,
              time_budget_s: float | None = None, **hooks: Any) -> tuple[RunRecord, TrainResult]:
    """`train` as a run record. The dataset is saved under outputs/training/<name>/dataset (so History can resume
    it); None trains on the dataset already saved there."""
    from pipelines.core import devices
    from pipelines.core.loader import is_test_model
    from pipelines.core.records import RunRecord, default_store

    from .config import check
    from .data import load_dataset, save_dataset
    from .train import launched_processes, train

    problems = check(config)
    if problems:
        from pipelines.core.errors import UserError

        raise UserError(" ".join(problems))
    folder = dataset_folder(config.name)
    processes = launched_processes()  # one, unless the CLI was started by accelerate launch / torchrun
    with processes.main_first():
        if dataset is not None and processes.main:
            save_dataset(dataset, folder)
        dataset = load_dataset(folder)
    params = {"train": dataclasses.asdict(config), "dataset": str(folder), "images": len(dataset),
              "trigger": dataset.trigger}
    record = RunRecord(tab=TAB, params=params, seed=int(config.seed), attention=devices.attention_backend(),
                       models=[{"id": config.model, "test_model": is_test_model(config.model)}],
                       device=str(devices.resolve_device()))
    if not processes.main:  # process 0 keeps the record; the others only train beside it
        return record, train(config, dataset, callback=callback, cancel=cancel, time_budget_s=time_budget_s,
                             **hooks)
    store = store or default_store()
    with store.run(record):
        with record.stage("train"):
            result = train(config, dataset, callback=callback, cancel=cancel, time_budget_s=time_budget_s, **hooks)
        params["steps_done"] = result.steps
        params["finished"] = result.finished
        params["final_loss"] = result.losses[-1] if result.losses else None
        record.outputs.extend(str(path) for path in result.files.values())
        record.outputs.extend(str(path) for _, paths in result.validation[-1:] for path in paths)
        if not result.finished:
            record.status = "paused"
    if not result.finished:  # store.run wrote "done"; a paused training must show as unfinished with Resume
        record.status = "paused"
        store.save(record)
    return record, result


def rerun(params: dict[str, Any], store: RunStore) -> RunRecord:
    """History's Re-run: train again with the recorded settings, which resumes from the last checkpoint."""
    from .config import config_from_dict

    return run_train(config_from_dict(params["train"]), None, store=store)[0]


def run_evaluate(request: EvaluateRequest, *, store: RunStore | None = None,
                 callback: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> tuple[RunRecord, EvaluateOutput]:
    """`evaluate` against the style's training images as a recorded run: History lists it (its base and tuned
    images as PNGs, the settings) and its Re-run evaluates again with the same settings and seeds."""
    from pipelines.core import devices
    from pipelines.core.records import RunRecord, default_store
    from pipelines.core.runs import save_outputs

    from .data import load_dataset
    from .evaluate import evaluate

    reference = list(load_dataset(dataset_folder(request.tuned)).images)
    params = {"kind": "evaluation", "name": request.tuned, "prompt": request.prompt,
              "evaluate": dataclasses.asdict(request)}
    record = RunRecord(tab=TAB, params=params, seed=int(request.seed), attention=devices.attention_backend(),
                       device=str(devices.resolve_device()))
    store = store or default_store()
    with store.run(record):
        with record.stage("evaluate"):
            output = evaluate(request, reference, callback=callback, cancel=cancel)
        sides = [("base", output.base, output.prompts[0]), ("tuned", output.tuned, output.prompts[1])]
        save_outputs(record, [*output.base, *output.tuned],  # one call: file names count on across both sides
                     [{"Side": side, "Seed": int(request.seed) + index}
                      for side, images, _ in sides for index in range(len(images))],
                     prompt=[prompt for _, images, prompt in sides for _ in images])
    return record, output


def rerun_any(params: dict[str, Any], store: RunStore) -> RunRecord:
    """History's Re-run of a Style fine-tuning run: an evaluation evaluates again, a training resumes."""
    if params.get("kind") == "evaluation":
        from .evaluate import EvaluateRequest

        return run_evaluate(EvaluateRequest(**params["evaluate"]), store=store)[0]
    return rerun(params, store)
