"""What a training produces, and using it: exports in the layouts other tools read, and base-versus-tuned images.

Exports (outputs/training/<name>/export/, plus an installed copy the diffusion core finds by name):
- LoRA, diffusers layout (`save_lora_weights`, keys `unet.…lora.down/up.weight`, alpha in the file's
  `lora_adapter_metadata`): export/<name>.safetensors and installed as outputs/loras/<name>.safetensors, so a prompt
  may write `<lora:<name>:0.8>`.
- LoRA, kohya/A1111 layout (`lora_unet_…lora_down.weight` / `lora_up.weight` / `alpha`, through the diffusion core's
  `diffusers_to_kohya`): export/<name>_a1111.safetensors, with kohya's `ss_*` metadata.
- Embedding, A1111 layout (`{"emb_params": [n, 768]}`): installed as outputs/embeddings/<trigger>.safetensors (A1111
  names an embedding by its file stem, so the trigger word in a prompt calls it) and copied to export/.
- Embedding, diffusers textual-inversion layout (`{"<trigger>": [n, 768]}`, what `load_textual_inversion` reads):
  export/learned_embeds.safetensors.
- Full UNet: a diffusers folder export/model (usable as a model source everywhere in the app) and one A1111/ComfyUI
  checkpoint file export/<name>_a1111.safetensors (fp16, through the diffusion core's `save_single_file`).
training.json beside them records the method, trigger, base model and files.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core import settings
from pipelines.core.errors import UserError, checked_name
from pipelines.core.jobs import atomic_folder, atomic_path

if TYPE_CHECKING:
    from PIL import Image

    from pipelines.core.jobs import CancelToken, ProgressCallback

    from .train import TrainConfig, TrainingModels

INFO_FILE = "training.json"


def _export_folder(folder: Path) -> Path:
    return folder / "export"


def export_training(models: TrainingModels, config: TrainConfig, trigger: str, folder: Path,
                    notes: list[str] | None = None) -> dict[str, Path]:
    """Write every export the method produced (see the module docstring); returns {kind: path}. What the user
    should know (an installed file of another training replaced) is appended to `notes`."""
    from .train import trained_tensors

    export = _export_folder(folder)
    export.mkdir(parents=True, exist_ok=True)
    tensors = trained_tensors(models, config)
    files: dict[str, Path] = {}
    if "embedding" in tensors:
        files.update(export_embedding(tensors["embedding"], trigger, export, config.name,
                                      notes if notes is not None else []))
    if any(key.startswith(("unet.", "text_encoder.")) for key in tensors):
        files.update(export_lora(models, config, export))
    if config.method == "full":
        files["model"] = _export_full(models, export / "model")
        files["model_single_file"] = _export_single_file(files["model"], config, export)
    info = {"name": config.name, "method": config.method, "trigger": trigger, "base_model": config.model,
            "rank": config.rank, "alpha": config.alpha, "steps": config.steps, "seed": config.seed,
            "files": {kind: str(path) for kind, path in files.items()}}
    with atomic_path(export / INFO_FILE) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return files


def export_embedding(rows: Any, trigger: str, export: Path, training: str, notes: list[str]) -> dict[str, Path]:
    """The embedding in both layouts, and installed under the trigger word (A1111 calls an embedding by its file
    name, so two trainings with one trigger word share that name: the newer replaces the older, and says so)."""
    from pipelines.core.safeweights import check_safetensors, save_safetensors

    rows = rows.detach().float().cpu().contiguous()
    metadata = {"name": trigger, "vectors": str(rows.shape[0]), "training": training}
    a1111 = export / f"{trigger}.safetensors"
    save_safetensors({"emb_params": rows}, a1111, metadata)
    diffusers_file = export / "learned_embeds.safetensors"
    save_safetensors({trigger: rows.clone()}, diffusers_file, metadata)
    installed = settings.outputs_dir() / "embeddings" / f"{trigger}.safetensors"
    if installed.is_file():
        owner = (check_safetensors(installed).get("__metadata__") or {}).get("training")
        if owner and owner != training:
            notes.append(f"The embedding '{trigger}' that training '{owner}' installed was replaced by this one (both "
                         f"use the trigger word '{trigger}'); '{owner}' keeps its own copy in its export folder.")
    _copy_atomic(a1111, installed)
    return {"embedding_a1111": a1111, "embedding_diffusers": diffusers_file, "embedding_installed": installed}


def export_lora(models: TrainingModels, config: TrainConfig, export: Path) -> dict[str, Path]:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    from pipelines.core.safeweights import save_safetensors
    from pipelines.diffusion.lora import diffusers_to_kohya

    from .train import LORA_TARGETS, TEXT_LORA_TARGETS

    def lora_layers(module: Any) -> dict[str, Any]:
        return {k: v.detach().float().cpu().contiguous()
                for k, v in convert_state_dict_to_diffusers(get_peft_model_state_dict(module)).items()}

    metadata = {"r": int(config.rank), "lora_alpha": float(config.alpha), "target_modules": list(LORA_TARGETS)}
    text_layers = lora_layers(models.text_encoder) if config.train_text_encoder else None
    text_metadata = ({"r": int(config.rank), "lora_alpha": float(config.alpha),
                      "target_modules": list(TEXT_LORA_TARGETS)} if text_layers else None)
    diffusers_file = export / f"{config.name}.safetensors"
    with atomic_folder(export / f".{config.name}-lora") as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=lora_layers(models.unet),
                                                  text_encoder_lora_layers=text_layers,
                                                  unet_lora_adapter_metadata=metadata,
                                                  text_encoder_lora_adapter_metadata=text_metadata,
                                                  weight_name="lora.safetensors")
        _copy_atomic(tmp / "lora.safetensors", diffusers_file)
    shutil.rmtree(export / f".{config.name}-lora", ignore_errors=True)
    from safetensors.torch import load_file

    kohya = diffusers_to_kohya(load_file(diffusers_file), alpha=float(config.alpha))
    kohya_file = export / f"{config.name}_a1111.safetensors"
    save_safetensors(kohya, kohya_file, {"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora",
                                         "ss_network_dim": str(config.rank), "ss_network_alpha": str(config.alpha),
                                         "ss_output_name": config.name})
    installed = settings.outputs_dir() / "loras" / f"{config.name}.safetensors"
    _copy_atomic(diffusers_file, installed)
    return {"lora_diffusers": diffusers_file, "lora_a1111": kohya_file, "lora_installed": installed}


def _export_full(models: TrainingModels, target: Path) -> Path:
    """The tuned UNet with the base model's other parts, as a diffusers folder (the base tokenizer: the
    training copy has the embedding's placeholder tokens, which generation does not use)."""
    from diffusers import StableDiffusionPipeline

    base = models.pipe
    pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                   unet=models.unet, scheduler=base.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    with atomic_folder(target, replace=True) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return target


def _export_single_file(folder: Path, config: TrainConfig, export: Path) -> Path:
    """The tuned model as one A1111/ComfyUI checkpoint (the diffusion core's converter), fp16 as A1111 shares them.
    A tiny test model's file notes its layout so that this app can load it back."""
    from diffusers import StableDiffusionPipeline

    from pipelines.core.loader import is_test_model
    from pipelines.diffusion.checkpoint import save_single_file

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    note = {"asl_base_config": config.model} if is_test_model(config.model) else {}
    return save_single_file(pipe, export / f"{config.name}_a1111.safetensors", half=True,
                            metadata={**note, "asl_trained_from": config.model, "asl_method": "full"})


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


# ---------------------------------------------------------------------------------------------- trained models
@dataclass(frozen=True)
class Tuned:
    """A finished training as generation uses it."""

    name: str
    method: str
    trigger: str
    base_model: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.files.get("model") or self.base_model

    @property
    def lora(self) -> str | None:
        return self.files.get("lora_installed") or self.files.get("lora_diffusers")


def list_tuned() -> list[Tuned]:
    """Finished trainings under outputs/training, newest first."""
    root = settings.outputs_dir() / "training"
    found = []
    for info_path in root.glob(f"*/export/{INFO_FILE}") if root.is_dir() else []:
        try:
            found.append((info_path.stat().st_mtime, _tuned_from(json.loads(info_path.read_text()))))
        except (OSError, ValueError, KeyError):
            continue
    return [tuned for _, tuned in sorted(found, key=lambda item: item[0], reverse=True)]


def _tuned_from(info: dict[str, Any]) -> Tuned:
    return Tuned(info["name"], info["method"], info["trigger"], info["base_model"], dict(info.get("files", {})))


def load_tuned(name: str) -> Tuned:
    """A finished training by its name, checked like every name that becomes a path (no "..", no slashes)."""
    name = checked_name(name, "The trained style's name")
    path = settings.outputs_dir() / "training" / name / "export" / INFO_FILE
    if not path.is_file():
        raise UserError(f"No finished training named {name!r}; train one in step 2 first.")
    return _tuned_from(json.loads(path.read_text()))


def without_trigger(prompt: str, trigger: str) -> str:
    """The prompt with the trigger word taken out (for the base model, which never learned it)."""
    text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(trigger)}(?![A-Za-z0-9_])", "", prompt)
    return re.sub(r"\s*,(\s*,)+", ",", text).strip(" ,")


# ---------------------------------------------------------------------------------------------- A/B
MAX_AB_IMAGES = 8


@dataclass(frozen=True)
class CompareRequest:
    tuned: str  # a training's name
    prompt: str = ""  # "" → "<trigger>, 1girl, solo"; the trigger word is added when missing
    negative_prompt: str = ""
    lora_scale: float = 1.0
    seed: int = 0
    count: int = 2  # images per side; seeds seed … seed + count - 1
    steps: int = 20
    sampler: str = "DPM++ 2M"
    schedule: str = "Karras"
    cfg_scale: float = 7.0
    size: int = 512
    model: str = ""  # "": the training's base model
    fast_preview: bool = False  # LCM-LoRA on both sides, 4 LCM steps at CFG 1 (the sampler settings are ignored)


@dataclass
class CompareOutput:
    base: list[Image.Image]
    tuned: list[Image.Image]
    seeds: list[int]
    grid: Image.Image
    prompts: tuple[str, str]  # (base, tuned)
    notes: list[str]
    test_model: bool
    run_ids: tuple[str, str] = ("", "")


def requests_for(request: CompareRequest) -> tuple[Any, Any, list[str]]:
    """(base GenerateRequest, tuned GenerateRequest, notes): same seeds, sampler and size; the tuned side adds the
    LoRA at `lora_scale`, uses the trained embedding through the trigger word, or the tuned model."""
    from pipelines.diffusion.generate import GenerateRequest

    from .data import ensure_trigger

    tuned = load_tuned(request.tuned)
    if not 1 <= int(request.count) <= MAX_AB_IMAGES:
        raise UserError(f"Images per side must be 1–{MAX_AB_IMAGES}, got {request.count}.")
    prompt = ensure_trigger(request.prompt.strip() or f"{tuned.trigger}, 1girl, solo", tuned.trigger)
    base_prompt = without_trigger(prompt, tuned.trigger)
    notes = [f"The base model gets the prompt without the trigger word ('{base_prompt}'): it never learned it."]
    common = {"negative_prompt": request.negative_prompt, "sampler": request.sampler, "schedule": request.schedule,
              "steps": int(request.steps), "cfg_scale": float(request.cfg_scale), "seed": int(request.seed),
              "batch_size": int(request.count), "width": int(request.size), "height": int(request.size)}
    base_model = request.model.strip() or tuned.base_model
    if base_model != tuned.base_model:
        notes.append(f"Trained on {tuned.base_model}, used here on {base_model}.")
    loras = ((tuned.lora, float(request.lora_scale)),) if tuned.lora else ()
    base_loras: tuple[tuple[str, float], ...] = ()
    if request.fast_preview:
        from pipelines.diffusion.library import FAST_PREVIEW, lcm_lora

        preview = ((lcm_lora(base_model), 1.0),)
        common.update(FAST_PREVIEW)
        base_loras, loras = preview, loras + preview
        notes.append(f"Fast preview: LCM-LoRA on both sides, {FAST_PREVIEW['steps']} LCM steps at CFG "
                     f"{FAST_PREVIEW['cfg_scale']:g} — a quick look; turn it off for full quality (and for Evaluate).")
    tuned_model = tuned.model if tuned.method == "full" else base_model
    base_request = GenerateRequest(prompt=base_prompt, model=base_model, loras=base_loras, **common)
    tuned_request = GenerateRequest(prompt=prompt, model=tuned_model, loras=loras, **common)
    return base_request, tuned_request, notes


def compare_base_tuned(request: CompareRequest, *, callback: ProgressCallback | None = None,
                       cancel: CancelToken | None = None, record: bool = True) -> CompareOutput:
    """Base and tuned images on the same seeds, through the diffusion core (recorded runs when `record`)."""
    from pipelines.diffusion.generate import generate
    from pipelines.diffusion.runs import run_generate

    from . import TAB

    base_request, tuned_request, notes = requests_for(request)
    outputs, run_ids = [], []
    for label, core_request in (("base", base_request), ("tuned", tuned_request)):
        def step(done: int, total: int, message: str, label: str = label) -> None:
            if callback is not None:
                callback(done, total, f"{label}: {message}")

        if record:
            run, output = run_generate(core_request, tab=TAB, callback=step, cancel=cancel,
                                       extra_params={"style_finetune": {"side": label, "tuned": request.tuned,
                                                                        "lora_scale": request.lora_scale}})
            run_ids.append(run.id)
        else:
            output = generate(core_request, callback=step, cancel=cancel)
        outputs.append(output)
        notes += [note for note in output.notes if note not in notes]
    base, tuned = outputs
    grid = ab_grid(base.images, tuned.images, base.seeds)
    return CompareOutput(base.images, tuned.images, base.seeds, grid, (base.prompt, tuned.prompt), notes,
                         base.test_model or tuned.test_model, tuple(run_ids) if run_ids else ("", ""))


GRID_GUTTER = 8  # px of white between the pictures, so the seeds read as separate images


def grid_label_height(height: int) -> int:
    """Height of the band that names a row, in proportion to the pictures (readable when the page scales down)."""
    return max(16, height // 12)


def ab_grid(base: Sequence[Image.Image], tuned: Sequence[Image.Image], seeds: Sequence[int] = ()) -> Image.Image:
    """Two labelled rows: "Base model" above the base pictures, "Tuned" above the tuned ones, one column per seed
    (named under the row's label when given), white gutters between the pictures."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = base[0].size
    band = grid_label_height(height)
    font = ImageFont.load_default(size=max(10, band * 3 // 4))
    grid = Image.new("RGB", (width * len(base) + GRID_GUTTER * (len(base) - 1), 2 * (band + height) + GRID_GUTTER),
                     "white")
    draw = ImageDraw.Draw(grid)
    for row, (label, images) in enumerate((("Base model", base), ("Tuned (your style)", tuned))):
        top = row * (band + height + GRID_GUTTER)
        for column, image in enumerate(images):
            left = column * (width + GRID_GUTTER)
            caption = label if column == 0 else ""
            if column < len(seeds):
                caption = f"{caption} · seed {seeds[column]}" if caption else f"seed {seeds[column]}"
            while caption and font.getlength(caption) > width - 4:  # small pictures: the words that fit
                caption = caption.rsplit(" ", 1)[0] if " " in caption else ""
            draw.text((left + 2, top + band // 8), caption, fill="black", font=font)
            grid.paste(image, (left, top + band))
    return grid
