"""Stable Diffusion pipelines and ControlNets through the core loader, plus the pieces a single call needs.

Sources are what `core.loader` takes (hub id, diffusers folder, `tiny:NAME`) and A1111-style single files
(`.safetensors` only: a `.ckpt` is a pickle, which can run code when opened, so it is refused). A single file
carries no config; the SD 1.5 config ships in `assets/configs/sd15` (its tokenizer is built from open_clip's
BPE file, as the tiny models do) so such files load offline. SDXL single files need the Hub for their config.

The loaded pipeline is cached and shared: nothing here changes it. A call gets its own light copy through
`from_pipe` (same modules, own scheduler, ControlNets attached) — see `pipeline_for_call`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.core.errors import UserError
from pipelines.core.loader import MEMORY_PRESETS, TINY_PREFIX, load_model

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "configs"
SD15_CONFIG_VERSION = 1
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
# diffusers' infer_diffusers_model_type names -> what we call the base, for messages and LoRA checks.
SINGLE_FILE_BASES = {"v1": "sd15", "inpainting": "sd15", "xl_base": "sdxl"}


def is_single_file(source: str) -> bool:
    return Path(str(source)).suffix.lower() in (".safetensors", *PICKLE_SUFFIXES)


def refuse_pickles(source: str) -> None:
    if Path(str(source)).suffix.lower() in PICKLE_SUFFIXES:
        raise UserError(
            f"'{Path(source).name}' is a pickle checkpoint ({Path(source).suffix}). Opening a pickle can run any "
            "code inside it, so this app loads only .safetensors files. Most models are also published as "
            ".safetensors; otherwise convert it once on a machine you trust.")


def sd15_config_folder() -> Path:
    """The SD 1.5 pipeline config as a diffusers folder (for single files), built once in the cache."""
    from pipelines.core import settings
    from pipelines.core.tiny_models import build_clip_tokenizer

    target = settings.cache_dir() / "configs" / f"sd15-v{SD15_CONFIG_VERSION}"
    if (target / "tokenizer" / "tokenizer_config.json").exists():
        return target
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ASSETS / "sd15", tmp)
    build_clip_tokenizer(tmp / "tokenizer")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def single_file_base(path: str | Path) -> str:
    """'sd15' or 'sdxl' from the checkpoint's tensor names (read from the header, no weights loaded)."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    from pipelines.core.safeweights import check_safetensors

    header = check_safetensors(path)
    names = {key: _ShapeOnly(value.get("shape", [])) for key, value in header.items() if key != "__metadata__"}
    kind = infer_diffusers_model_type(names)
    if kind not in SINGLE_FILE_BASES:
        raise UserError(f"'{Path(path).name}' looks like a {kind} checkpoint; this app runs SD 1.5-family "
                        "checkpoints (and SDXL from the Hub or a diffusers folder).")
    return SINGLE_FILE_BASES[kind]


class _ShapeOnly:
    """Stands in for a tensor where diffusers' model-type check reads only `.shape`."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)


def single_file_config(path: str | Path) -> str | None:
    """The config folder for a single file: the checkpoint's own note (our exports), else by its base."""
    from pipelines.core.safeweights import check_safetensors

    metadata = check_safetensors(path).get("__metadata__") or {}
    if metadata.get("asl_base_config", "").startswith(TINY_PREFIX):
        from pipelines.core.tiny_models import build

        return str(build(metadata["asl_base_config"].removeprefix(TINY_PREFIX)))
    return str(sd15_config_folder()) if single_file_base(path) == "sd15" else None


def load_pipeline(source: str, *, vae: str | None = None, memory: str = "auto") -> Any:
    """A cached text-to-image pipeline (StableDiffusionPipeline or the SDXL one) for `source`."""
    source = str(source).strip()
    if not source:
        raise UserError("Choose a model.")
    refuse_pickles(source)
    if memory not in MEMORY_PRESETS:
        raise UserError(f"Unknown memory setting {memory!r}; use one of {', '.join(MEMORY_PRESETS)}.")
    options: dict[str, Any] = {"memory": memory}
    if is_single_file(source) and Path(source).exists():
        config = single_file_config(source)
        if config:
            options["config"] = config
    if vae:
        options["vae"] = str(vae).strip()
        refuse_pickles(options["vae"])
        options["vae_options"] = _vae_layout(options["vae"])
    return load_model("diffusers_pipeline", source, **options)


def _vae_layout(vae: str) -> dict[str, str]:
    """A VAE file (A1111 style) has SD 1.5's VAE layout; a whole pipeline's folder has its VAE in vae/."""
    from pipelines.core.loader import resolve_path_or_id

    if is_single_file(vae):
        return {"config": str(sd15_config_folder()), "subfolder": "vae"}
    if (Path(resolve_path_or_id(vae)) / "vae" / "config.json").exists():
        return {"subfolder": "vae"}
    return {}


def load_controlnet(source: str, *, dtype: Any = None, device: Any = None) -> Any:
    source = str(source).strip()
    refuse_pickles(source)
    options: dict[str, Any] = {"class_name": "ControlNetModel"}
    if is_single_file(source) and Path(source).exists():
        options["config"] = str(ASSETS / "sd15_controlnet")
    return load_model("diffusers_model", source, dtype=dtype, device=device, **options)


def base_of(pipe: Any) -> str:
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd15"


def pipeline_for_call(pipe: Any, scheduler: Any, controlnets: Sequence[Any] = ()) -> Any:
    """A per-call pipeline sharing `pipe`'s modules: its own scheduler, the ControlNets attached.

    `dtype=pipe.dtype` keeps from_pipe from casting the shared modules to fp32.
    """
    import diffusers

    if not controlnets:
        return type(pipe).from_pipe(pipe, scheduler=scheduler, dtype=pipe.dtype)
    controlnet = controlnets[0] if len(controlnets) == 1 else list(controlnets)  # a list becomes a MultiControlNet
    pipeline_class = (diffusers.StableDiffusionXLControlNetPipeline if base_of(pipe) == "sdxl"
                      else diffusers.StableDiffusionControlNetPipeline)
    return pipeline_class.from_pipe(pipe, controlnet=controlnet, scheduler=scheduler, dtype=pipe.dtype)


def describe_source(source: str) -> dict[str, Any]:
    """Name (as A1111 shows it: the file stem) and whether it is a test model, for infotext and records."""
    text = str(source)
    if text.startswith(TINY_PREFIX):
        return {"name": text, "test_model": True, "file": None}
    path = Path(text)
    if path.is_file():
        return {"name": path.stem, "test_model": False, "file": str(path)}
    return {"name": path.name if path.exists() else text, "test_model": False, "file": None}


def local_checkpoints(folder: str | Path = "models") -> list[str]:
    """SD checkpoints on this machine: .safetensors files and diffusers folders under `folder` (not recursive
    into them), for model dropdowns. LoRAs and embeddings live in their own sub-folders and are left out."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        if entry.name in ("lora", "embeddings", "controlnet", "vae"):
            continue
        if entry.is_file() and entry.suffix == ".safetensors" or (entry / "model_index.json").exists():
            found.append(str(entry))
    return found


def model_choices() -> list[tuple[str, str]]:
    """(label, source) pairs for a checkpoint dropdown: the local ones, then the tiny test model."""
    from pipelines.core.tiny_models import dropdown_choice

    return [(Path(path).name, path) for path in local_checkpoints()] + [dropdown_choice("sd15")]
