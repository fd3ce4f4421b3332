"""Single-image runs as records (History): training, variations, edits and the ablation; the shipped model.

Every run's params hold what a re-run needs: the action, the settings and a content-addressed copy of the image.
The ablation trains each variant (cached by the image's hash), samples the same seeds from each, and sets GPNN
(no training) beside them as the bar to beat; it scores them against the source through
`pipelines.metrics.compare` (patch-NN distance, CLIP-I, SSIM, PSNR, LPIPS; NIMA when the host has it), plus
SinGAN's diversity (mean per-pixel standard deviation across the variations over that of the source) and the
patch-NN distance of a tile-shuffled source as the control a real variation must beat.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import TAB
from .request import DETAIL_GPNN

if TYPE_CHECKING:
    from pipelines.core.jobs import CancelToken, ProgressCallback
    from pipelines.core.records import RunRecord, RunStore

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "single_image"
SHIPPED_MODEL = ASSETS / "coffee_fcn.safetensors"
SHIPPED_CARD = ASSETS / "coffee_fcn.json"
ABLATION_VARIANTS = {
    "baseline": {"backbone": "fcn", "text": "none", "contrastive": False},
    "+U-Net": {"backbone": "unet", "text": "none", "contrastive": False},
    "+arbitrary prompt": {"backbone": "unet", "text": "arbitrary", "contrastive": False},
    "+BLIP prompt": {"backbone": "unet", "text": "blip", "contrastive": False},
    "+contrastive": {"backbone": "unet", "text": "blip", "contrastive": True},
}
GPNN_VARIANT = "GPNN (no training)"  # Granot et al. 2022: patch nearest neighbours, the no-training bar
ABLATION_CHOICES = [*ABLATION_VARIANTS, GPNN_VARIANT]
ABLATION_METRICS = ["patch_nn", "clip_i", "ssim", "psnr", "lpips", "nima",
                    "lpips_diversity"]  # diversity: within the variations
CONTROL_ROW = "control: the source's 7×7 tiles shuffled"


def shipped_model() -> Path | None:
    """The model trained by the project and shipped in assets/ (None when the file is missing)."""
    return SHIPPED_MODEL if SHIPPED_MODEL.exists() else None


def shipped_card() -> dict[str, Any]:
    return json.loads(SHIPPED_CARD.read_text()) if SHIPPED_CARD.exists() else {}


def _store(store: RunStore | None) -> RunStore:
    from pipelines.core.records import default_store

    return store or default_store()


def _record(action: str, params: dict[str, Any], seed: int | None = None) -> RunRecord:
    from pipelines.core import devices
    from pipelines.core.records import RunRecord

    device = devices.resolve_device()
    return RunRecord(tab=TAB, params={"action": action, **params}, seed=seed, device=device.type,
                     attention=devices.attention_backend())


def _model_entry(path: Path) -> dict[str, Any]:
    from .model import load_model_file

    _, metadata = load_model_file(path)
    test = metadata.get("text_encoder_test_model") == "true"
    return {"id": str(path), "revision": metadata.get("trained_on", ""), "test_model": test}


# ---------------------------------------------------------------------------------------------- training
NAME_FILE = "name.txt"  # the user's name for a model, beside it (not in its settings: renaming must not retrain)


def model_name(model_path: str | Path) -> str:
    """The name the user gave the model ("" when none)."""
    path = Path(model_path).parent / NAME_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""


def name_model(model_path: str | Path, name: str) -> None:
    from pipelines.core.jobs import atomic_path

    name = " ".join(str(name or "").split())[:80]
    if name:
        with atomic_path(Path(model_path).parent / NAME_FILE) as tmp:
            tmp.write_text(name, encoding="utf-8")


def run_train(config: Any, image: Any, *, store: RunStore | None = None, callback: ProgressCallback | None = None,
              cancel: CancelToken | None = None, preview: Any = None, time_budget_s: float | None = None,
              name: str = "") -> tuple[RunRecord, Any]:
    from pipelines.core.runs import save_input_copy

    from .train import prepare_image, train

    prepared, _ = prepare_image(image, config.max_area)
    record = _record("train", {"config": dataclasses.asdict(config), "image": str(save_input_copy(prepared))},
                     config.seed)
    with _store(store).run(record):
        with record.stage("train"):
            result = train(config, prepared, callback=callback, cancel=cancel, preview=preview,
                           time_budget_s=time_budget_s)
        record.outputs.append(str(result.model_path))
        if result.finished:
            name_model(result.model_path, name)
            record.params["name"] = model_name(result.model_path)
        record.params.update(steps_done=result.steps, cached=result.cached, precision=result.precision,
                             final_loss=float(np.mean(result.losses[-20:])) if result.losses else None,
                             detail_gain_db=result.detail_gain_db)
        if result.prompts is not None:
            record.params["prompts"] = dataclasses.asdict(result.prompts)
    return record, result


# ---------------------------------------------------------------------------------------------- sampling
def _save(record: RunRecord, output: Any, settings_: dict[str, Any], prompt: str = "") -> None:
    from pipelines.core.runs import save_outputs

    metadata = [{**settings_, "Seed": seed} for seed in output.seeds]
    save_outputs(record, output.images, metadata, prompt=prompt)


def run_variations(model_path: str | Path, request: Any, *, store: RunStore | None = None,
                   callback: ProgressCallback | None = None, cancel: CancelToken | None = None
                   ) -> tuple[RunRecord, Any]:
    from .sample import variations

    model_path = Path(model_path)
    record = _record("variations", {"model": str(model_path), "request": dataclasses.asdict(request)}, request.seed)
    record.models.append(_model_entry(model_path))
    with _store(store).run(record):
        with record.stage("sample"):
            output = variations(model_path, request, callback=callback, cancel=cancel)
        _save(record, output, {"Model": model_path.name, "LM": request.milestone, "Start scale": request.start_scale,
                               "Method": "single-image multi-scale diffusion"
                               + (", detail by GPNN" if request.detail == DETAIL_GPNN else "")})
        record.params["seconds_per_variation"] = round(output.seconds / max(1, len(output.images)), 3)
    return record, output


def run_edit(model_path: str | Path, request: Any, *, store: RunStore | None = None,
             callback: ProgressCallback | None = None, cancel: CancelToken | None = None
             ) -> tuple[RunRecord, Any]:
    from pipelines.core.runs import save_input_copy

    from .sample import edit

    model_path = Path(model_path)
    params = dataclasses.asdict(dataclasses.replace(request, mask=None))
    if request.mask is not None:
        from PIL import Image

        mask = Image.fromarray((np.asarray(request.mask) > 0).astype(np.uint8) * 255)
        params["mask_file"] = str(save_input_copy(mask.convert("RGB")))
    record = _record("edit", {"model": str(model_path), "request": params}, request.seed)
    record.models.append(_model_entry(model_path))
    with _store(store).run(record):
        with record.stage("edit"):
            output = edit(model_path, request, callback=callback, cancel=cancel)
        _save(record, output, {"Model": model_path.name, "CLIP guidance": request.guidance,
                               "Augmented prompts": " | ".join(output.prompts)}, prompt=request.prompt)
        record.params["notes"] = output.notes
    return record, output


def run_gpnn(image: Any, count: int = 4, seed: int = 0, settings: Any = None, *, store: RunStore | None = None,
             callback: ProgressCallback | None = None, cancel: CancelToken | None = None) -> tuple[RunRecord, Any]:
    """GPNN variations of `image` (prepared as for training: the same size the diffusion model would see)."""
    from pipelines.core.runs import save_input_copy

    from .gpnn import GPNNSettings, gpnn_variations
    from .train import prepare_image

    settings = settings or GPNNSettings()
    prepared, _ = prepare_image(image)
    record = _record("gpnn", {"image": str(save_input_copy(prepared)), "count": int(count), "seed": int(seed),
                              "settings": dataclasses.asdict(settings)}, seed)
    with _store(store).run(record):
        with record.stage("sample"):
            output = gpnn_variations(prepared, count, seed, settings, callback=callback, cancel=cancel)
        _save(record, output, {"Method": GPNN_VARIANT, "Patch": settings.patch, "Alpha": settings.alpha,
                               "Noise": settings.noise_std, "Iterations": settings.iterations})
        record.params["seconds_per_variation"] = round(output.seconds / max(1, len(output.images)), 3)
    return record, output


# ---------------------------------------------------------------------------------------------- ablation
@dataclass
class AblationResult:
    rows: list[dict[str, Any]]  # one per variant: name, metric values, diversity, seconds, notes
    images: dict[str, list[Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    test_models: bool = False


def diversity(images: list[Any], source: Any) -> float:
    """SinGAN's diversity: per-pixel std across the variations, averaged, over the source's own pixel std."""
    stack = np.stack([np.asarray(image, dtype=np.float64) / 255 for image in images])
    spread = float(stack.std(axis=0).mean())
    return spread / max(float((np.asarray(source, dtype=np.float64) / 255).std()), 1e-8)


def _ablation_variant(name: str, prepared: Any, settings: dict[str, Any], count: int, seed: int,
                      cancel: CancelToken | None) -> tuple[Any, float]:
    """(variations, seconds of training) for one variant; GPNN trains nothing."""
    from .gpnn import gpnn_variations
    from .sample import VariationRequest, variations
    from .train import TrainConfig, train

    if name == GPNN_VARIANT:
        return gpnn_variations(prepared, count, seed, cancel=cancel), 0.0
    result = train(TrainConfig(**settings, **ABLATION_VARIANTS[name]), prepared, cancel=cancel)
    return variations(result.model_path, VariationRequest(count=count, seed=seed), cancel=cancel), result.seconds


def run_ablation(image: Any, variants: list[str], *, steps: int = 600, width: int = 32, count: int = 4,
                 seed: int = 0, prompt: str = "a photo", blip_model: str | None = None,
                 clip_model: str | None = None, metrics: list[str] | None = None, store: RunStore | None = None,
                 callback: ProgressCallback | None = None, cancel: CancelToken | None = None) -> AblationResult:
    """Train each chosen variant (cached), sample the same seeds, score each against the source; GPNN beside them
    with no training, and a tile-shuffled source as the patch-NN control (its own row)."""
    from pipelines.metrics import compare
    from pipelines.metrics.patches import patch_nn_distance, shuffled_tiles

    from . import text as text_mod
    from .train import prepare_image

    unknown = [name for name in variants if name not in ABLATION_CHOICES]
    if unknown or not variants:
        raise ValueError(f"Choose variants from {ABLATION_CHOICES}.")
    blip_model, clip_model = blip_model or text_mod.DEFAULT_BLIP, clip_model or text_mod.DEFAULT_CLIP
    prepared, _ = prepare_image(image)
    settings = {"steps": steps, "width": width, "seed": seed, "prompt": prompt, "blip_model": blip_model,
                "clip_model": clip_model}
    images: dict[str, list[Any]] = {}
    rows: list[dict[str, Any]] = []
    for index, name in enumerate(variants):
        if callback is not None:
            callback(index, len(variants), f"{'Sampling' if name == GPNN_VARIANT else 'Training and sampling'} "
                                           f"'{name}'")
        output, train_seconds = _ablation_variant(name, prepared, settings, count, seed, cancel)
        images[name] = output.images
        rows.append({"variant": name, "diversity": round(diversity(output.images, prepared), 4),
                     "train_seconds": round(train_seconds, 1),
                     "seconds_per_variation": round(output.seconds / count, 2)})
    reference = [np.asarray(prepared)] * count
    skipped, warnings, test_models = {}, [], False
    baseline = variants[0]
    for row in rows:
        report = compare([np.asarray(i) for i in images[baseline]], [np.asarray(i) for i in images[row["variant"]]],
                         reference=reference, pairs="order", metrics=metrics or ABLATION_METRICS, n_bootstrap=200,
                         seed=seed,
                         models={"clip": clip_model})
        for metric_row in report.rows:
            row[metric_row.key] = None if metric_row.b is None else round(float(metric_row.b), 4)
        skipped.update(report.skipped)
        test_models |= any(model["test_model"] for model in report.models)
    control = shuffled_tiles(np.asarray(prepared), 7, seed)
    rows.append({"variant": CONTROL_ROW, "patch_nn": round(patch_nn_distance(control, np.asarray(prepared)), 4)})
    if test_models:
        warnings.append("A metric network is a test model with random weights: its scores are not real.")
    record = _record("ablation", {"variants": variants, "steps": steps, "width": width, "count": count,
                                  "prompt": prompt, "blip_model": blip_model, "clip_model": clip_model, "rows": rows},
                     seed)
    with _store(store).run(record):
        pass
    return AblationResult(rows, images, skipped, warnings, test_models)


# ---------------------------------------------------------------------------------------------- History
def rerun(params: dict[str, Any], store: RunStore) -> RunRecord:
    from PIL import Image

    from .sample import EditRequest, VariationRequest
    from .train import TrainConfig

    action = params["action"]
    if action == "train":
        with Image.open(params["image"]) as image:
            return run_train(TrainConfig(**params["config"]), image.convert("RGB"), store=store)[0]
    if action == "variations":
        return run_variations(params["model"], VariationRequest(**params["request"]), store=store)[0]
    if action == "gpnn":
        from .gpnn import GPNNSettings

        with Image.open(params["image"]) as image:
            return run_gpnn(image.convert("RGB"), params["count"], params["seed"],
                            GPNNSettings(**params["settings"]), store=store)[0]
    if action == "edit":
        request = dict(params["request"])
        mask_file = params.get("mask_file")
        if mask_file:
            with Image.open(mask_file) as mask:
                request["mask"] = np.asarray(mask.convert("L"))
        return run_edit(params["model"], EditRequest(**request), store=store)[0]
    raise ValueError(f"Runs of kind {action!r} cannot be re-run.")
