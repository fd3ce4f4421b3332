"""Landmark faces as recorded runs (History): the seed's U-Net, and SD 1.5 + OpenPose-face ControlNet through
the diffusion core. Both record the 24 landmarks, so History can re-run either."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import TAB, is_test_model, load_unet

if TYPE_CHECKING:
    from pipelines.core.jobs import CancelToken, ProgressCallback
    from pipelines.core.records import RunRecord, RunStore

    from .generate import FaceOutput

TINY_NOTE = "test model — random weights, output is noise"
CONTROLNET_DEFAULT = "lllyasviel/control_v11p_sd15_openpose"  # draws faces from OpenPose's face points
CONTROLNET_TEST = "tiny:controlnet"
CONTROLNET_MEDIAPIPE = "CrucibleAI/ControlNetMediaPipeFace/diffusion_sd15"  # trained on MediaPipe face-mesh drawings
CONDITIONS = ("openpose", "mediapipe")
IP_ADAPTER_DEFAULT = "h94/IP-Adapter"  # its plus-face SD 1.5 adapter (the core's default weights file)
IP_ADAPTER_TEST = "tiny:ip_adapter"


def run_generate(points: Any, tags: Sequence[str] = (), *, model: str | None = None, guidance: float = 2.0,
                 steps: int = 50, seed: int = 0, count: int = 1, store: RunStore | None = None,
                 callback: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> tuple[RunRecord, FaceOutput]:
    """The seed's U-Net as one recorded run: PNGs with the settings and landmarks in their metadata."""
    from pipelines.core import devices
    from pipelines.core.records import RunRecord, default_store
    from pipelines.core.runs import save_outputs

    from . import default_model, landmarks
    from .generate import check, sample

    source = str(model or default_model())
    array = landmarks.check_points(points)
    check(array, steps, guidance, seed, count)
    tags = [str(tag).strip() for tag in tags if str(tag).strip()]
    params = {"path": "unet", "points": array.round(5).tolist(), "tags": tags, "model": source,
              "guidance": float(guidance), "steps": int(steps), "seed": int(seed), "count": int(count)}
    store = store or default_store()
    record = RunRecord(tab=TAB, params=params, seed=int(seed), attention=devices.attention_backend())
    with store.run(record):
        with record.stage("load"):
            unet = load_unet(source)
            parameter = next(unet.parameters())
            record.device = devices.describe(parameter.device, parameter.dtype)
            test = is_test_model(source)
            record.models = [{"id": source, "revision": "local", "test_model": test,
                              **({"test_note": TINY_NOTE} if test else
                                 {"trained_on": getattr(unet, "trained_on", "") or "synthetic cartoon faces"})}]
        with record.stage("generate"):
            output = sample(unet, array, tags, steps=steps, guidance=guidance, seed=seed, count=count,
                            callback=callback, cancel=cancel)
        with record.stage("save"):
            metadata = [{"Model": source, "Guidance": float(guidance), "Steps": int(steps), "Seed": one_seed,
                         "Tags": ", ".join(tags), "Landmarks": landmarks.to_json(array),
                         **({"Test model": TINY_NOTE} if test else {})} for one_seed in output.seeds]
            save_outputs(record, output.images, metadata, prompt=", ".join(tags))
        if output.notes:
            params["notes"] = output.notes
    return record, output


def run_compare(points: Any, tags: Sequence[str] = (), *, model: str | None = None, guidance: float = 2.0,
                steps: int = 50, seed: int = 0, count: int = 8, reference_only: Any = None,
                store: RunStore | None = None, callback: ProgressCallback | None = None) -> tuple[RunRecord, Any]:
    """The Compare panel as one recorded run (History lists it; Re-run repeats it): the faces of each path as PNGs
    and the metrics table in the record's params. `reference_only`: compare.ReferenceOnly or None."""
    import dataclasses

    from pipelines.core import devices
    from pipelines.core.records import RunRecord, default_store
    from pipelines.core.runs import save_outputs

    from . import default_model, landmarks
    from .compare import compare_on_face

    source = str(model or default_model())
    array = landmarks.check_points(points)
    tags = [str(tag).strip() for tag in tags if str(tag).strip()]
    params: dict[str, Any] = {
        "path": "compare", "points": array.round(5).tolist(), "tags": tags, "model": source,
        "guidance": float(guidance), "steps": int(steps), "seed": int(seed), "count": int(count),
        "reference_only": dataclasses.asdict(reference_only) if reference_only is not None else None}
    store = store or default_store()
    record = RunRecord(tab=TAB, params=params, seed=int(seed), attention=devices.attention_backend())
    with store.run(record):
        test = is_test_model(source)
        record.models = [{"id": source, "revision": "local", "test_model": test,
                          **({"test_note": TINY_NOTE} if test else {})}]
        with record.stage("compare"):
            result = compare_on_face(array, tags, model=source, guidance=guidance, steps=steps, seed=seed,
                                     count=count, reference_only=reference_only, callback=callback)
        with record.stage("save"):
            images = [image for image, _ in result.gallery]
            metadata = [{"Model": source, "Compare": caption, "Tags": ", ".join(tags),
                         "Landmarks": landmarks.to_json(array)} for _, caption in result.gallery]
            save_outputs(record, images, metadata, prompt=", ".join(tags))
        params["table"] = {"headers": result.headers, "rows": [[str(cell) for cell in row] for row in result.table]}
    return record, result


def controlnet_request(points: Any, prompt: str, *, negative_prompt: str = "", model: str = "tiny:sd15",
                       controlnet: str = CONTROLNET_TEST, control_scale: float = 1.0, steps: int = 20,
                       cfg_scale: float = 7.0, seed: int = 0, size: int = 512, sampler: str = "Euler a",
                       reference: Any = None, reference_scale: float = 0.6, ip_adapter: str = IP_ADAPTER_TEST,
                       condition: str = "openpose", mesh: Any = None) -> Any:
    """The diffusion core's request. condition "openpose": the landmarks drawn as OpenPose's face points;
    "mediapipe": a photo's MediaPipe face mesh (`mesh`, 478 points) drawn as MediaPipe draws it, for the
    MediaPipe-face ControlNet. A reference face, if given, steers the look through IP-Adapter at `reference_scale`."""
    from pipelines.diffusion.generate import ControlUnit, GenerateRequest
    from pipelines.diffusion.ip_adapter import ReferenceImage

    image, module = condition_image(points, condition, mesh, size)
    unit = ControlUnit(model=controlnet, image=image, scale=float(control_scale), module=module)
    adapter = None if reference is None else ReferenceImage(reference, scale=float(reference_scale), model=ip_adapter)
    return GenerateRequest(prompt=prompt, negative_prompt=negative_prompt, model=model, sampler=sampler,
                           schedule="Automatic", steps=int(steps), cfg_scale=float(cfg_scale), seed=int(seed),
                           width=size, height=size, controlnets=(unit,), reference=adapter)


def condition_image(points: Any, condition: str, mesh: Any, size: int) -> tuple[Any, str]:
    """(the ControlNet's condition image, A1111's name for its preprocessor)."""
    import numpy as np

    from pipelines.core.errors import UserError

    from .landmarks import face_mesh_drawing, openpose_face

    if condition not in CONDITIONS:
        raise UserError(f"Unknown condition {condition!r}; choose one of {', '.join(CONDITIONS)}.")
    if condition == "openpose":
        return openpose_face(points, size, size), "openpose_faceonly"
    if mesh is None or len(mesh) < 468:
        raise UserError("The MediaPipe face-mesh condition comes from a photo: find the landmarks in a photo first "
                        "(or choose the OpenPose condition, which the 24 points draw).")
    return face_mesh_drawing(np.asarray(mesh, dtype=np.float64), size, size), "mediapipe_face"


def run_controlnet(points: Any, prompt: str, *, store: RunStore | None = None,
                   callback: ProgressCallback | None = None, cancel: CancelToken | None = None,
                   **options: Any) -> tuple[RunRecord, Any]:
    """SD 1.5 + a face ControlNet as one recorded run (the diffusion core's run, with our landmarks)."""
    from pipelines.diffusion.runs import run_generate as core_run

    from . import landmarks

    array = landmarks.check_points(points)
    request = controlnet_request(array, prompt, **options)
    extra = {"landmark_faces": {"path": "controlnet", "points": array.round(5).tolist(),
                                "condition": options.get("condition", "openpose")}}
    return core_run(request, tab=TAB, store=store, callback=callback, cancel=cancel, extra_params=extra)


def run_train(config: Any, *, zip_path: str | None = None, store: RunStore | None = None,
              callback: ProgressCallback | None = None, cancel: CancelToken | None = None,
              time_budget_s: float | None = None) -> tuple[RunRecord, Any]:
    """Train (or resume) the seed's U-Net as one recorded run. `zip_path`: a zip of images with same-named landmark
    JSONs, unpacked (safely, each file checked as it is written) into outputs/landmark_faces/data/NAME and trained
    on; otherwise `config.data`. When the job is refused or fails, the unpacked folder is removed again."""
    import dataclasses

    from pipelines.core import settings
    from pipelines.core.archives import job_unpack_folder
    from pipelines.core.errors import checked_name

    from .train import _check

    _check(config)
    options = {"store": store, "callback": callback, "cancel": cancel, "time_budget_s": time_budget_s}
    if not zip_path:
        return _recorded_train(config, **options)
    target = settings.outputs_dir() / "landmark_faces" / "data" / checked_name(config.name, "The training's name")
    with job_unpack_folder(target):
        _unpack_training_zip(zip_path, target)
        return _recorded_train(dataclasses.replace(config, data=str(target)), **options)


def _recorded_train(config: Any, *, store: RunStore | None, callback: ProgressCallback | None,
                    cancel: CancelToken | None, time_budget_s: float | None) -> tuple[RunRecord, Any]:
    import dataclasses

    from pipelines.core import devices, settings
    from pipelines.core.records import RunRecord, default_store

    from .train import train

    params = {"path": "train", "config": dataclasses.asdict(config)}
    store = store or default_store()
    record = RunRecord(tab=TAB, params=params, seed=int(config.seed), attention=devices.attention_backend(),
                       device=str(devices.resolve_device(config.device or None)))
    with store.run(record):
        with record.stage("train"):
            result = train(config, callback=callback, cancel=cancel, time_budget_s=time_budget_s,
                           out=settings.outputs_dir() / "landmark_faces" / "models" / f"{config.name}.safetensors")
        params.update(steps_done=result.steps, finished=result.finished,
                      final_loss=result.losses[-1] if result.losses else None)
        if result.path is not None:
            record.outputs.append(str(result.path))
    if not result.finished:  # stopped by its time budget: History shows it unfinished, Re-run resumes it
        record.status = "paused"
        store.save(record)
    return record, result


def _unpack_training_zip(zip_path: str, target: Path) -> None:
    """The zip's images and landmark JSONs, flat in `target` (replacing an earlier upload of the same name)."""
    from pipelines.core.archives import extract_images
    from pipelines.core.jobs import atomic_folder

    from .train import DatasetError

    with atomic_folder(target, replace=True) as tmp:
        paths, skipped = extract_images(zip_path, tmp, extra_suffixes=(".json",))
        labels = {path.with_suffix("") for path in paths if path.suffix.lower() == ".json"}
        images = [path for path in paths if path.suffix.lower() != ".json"]
        unlabelled = [f"{path.name}: no {path.stem}.json" for path in images if path.with_suffix("") not in labels]
        if len(unlabelled) == len(images):  # nothing to train on: say why each file was dropped
            reasons = skipped + unlabelled
            raise DatasetError(f"{Path(zip_path).name} holds no usable image with a same-named landmark JSON"
                               + (": " + "; ".join(reasons[:5]) if reasons else "."))
        for nested in [path for path in tmp.rglob("*") if path.is_file() and path.parent != tmp]:
            nested.rename(tmp / nested.name)  # a zip of a folder: its files, flat beside each other


def rerun(params: dict[str, Any], store: RunStore) -> RunRecord:
    if params.get("path") == "train":
        from .train import TrainConfig

        return run_train(TrainConfig(**params["config"]), store=store)[0]
    if params.get("path") == "compare":
        from .compare import ReferenceOnly

        reference = params.get("reference_only")
        return run_compare(params["points"], params.get("tags", ()), model=params["model"],
                           guidance=params["guidance"], steps=params["steps"], seed=params["seed"],
                           count=params.get("count", 8), store=store,
                           reference_only=ReferenceOnly(**reference) if reference else None)[0]
    if params.get("path") == "unet":
        return run_generate(params["points"], params.get("tags", ()), model=params["model"],
                            guidance=params["guidance"], steps=params["steps"], seed=params["seed"],
                            count=params.get("count", 1), store=store)[0]
    from pipelines.diffusion.runs import request_from_params
    from pipelines.diffusion.runs import run_generate as core_run

    extra = {"landmark_faces": params["landmark_faces"]}
    return core_run(request_from_params(params), tab=TAB, store=store, extra_params=extra)[0]
