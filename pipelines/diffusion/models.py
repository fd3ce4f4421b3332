"""Stable Diffusion pipelines and ControlNets through the core loader, plus the pieces a single call needs.

Sources are what `core.loader` takes (hub id, diffusers folder, `tiny:NAME`) and A1111-style single files
(`.safetensors` only: a `.ckpt` is a pickle, which can run code when opened, so it is refused). A single file
carries no config; the SD 1.5 config ships in `assets/configs/sd15` (its tokenizer is built from open_clip's
BPE file, as the tiny models do) so such files load offline. SDXL single files need the Hub for their config.

The loaded pipeline is cached and shared: nothing here changes it. A call gets its own light copy through
`from_pipe` (same modules, own scheduler, ControlNets attached) — see `pipeline_for_call`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.core import catalog
from pipelines.core.errors import UserError
from pipelines.core.loader import MEMORY_PRESETS, TINY_PREFIX, check_source, load_model
from pipelines.core.safeweights import PICKLE_SUFFIXES, refuse_pickle_name

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "configs"
SD15_CONFIG_VERSION = 1
# diffusers' infer_diffusers_model_type names -> what we call the base, for messages and LoRA checks.
SINGLE_FILE_BASES = {"v1": "sd15", "xl_base": "sdxl"}


def is_single_file(source: str) -> bool:
    return Path(str(source)).suffix.lower() in (".safetensors", *PICKLE_SUFFIXES)


def sd15_config_folder() -> Path:
    """The SD 1.5 pipeline config as a diffusers folder (for single files), built once in the cache."""
    from pipelines.core import settings
    from pipelines.core.jobs import atomic_folder
    from pipelines.core.tiny_models import build_clip_tokenizer

    target = settings.cache_dir() / "configs" / f"sd15-v{SD15_CONFIG_VERSION}"
    if not target.is_dir():
        with atomic_folder(target) as tmp:
            shutil.copytree(ASSETS / "sd15", tmp, dirs_exist_ok=True)
            build_clip_tokenizer(tmp / "tokenizer")
    return target


def single_file_base(path: str | Path) -> str:
    """'sd15' or 'sdxl' from the checkpoint's tensor names (read from the header, no weights loaded)."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    from pipelines.core.safeweights import check_safetensors

    header = check_safetensors(path)
    names = {key: _ShapeOnly(value.get("shape", [])) for key, value in header.items() if key != "__metadata__"}
    kind = infer_diffusers_model_type(names)
    if "inpaint" in kind:
        raise UserError(f"'{Path(path).name}' is an inpainting checkpoint (its UNet takes a mask); this app "
                        "generates from text, so use the model's ordinary version.")
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
    """A cached text-to-image pipeline (StableDiffusionPipeline or the SDXL one) for `source`.

    "auto" is resolved to a preset before the cache is asked, and copies under other presets or VAEs are
    dropped first: a switch to a lower-memory preset never holds two copies."""
    from pipelines.core import devices
    from pipelines.core.loader import choose_memory_preset, unload_variants

    source = str(source).strip()
    if not source:
        raise UserError("Choose a model.")
    check_source(source)  # before a single file's header is read (multi-user servers take only what they offer)
    refuse_pickle_name(source, "checkpoints")
    if vae:
        check_source(str(vae).strip())
    if memory not in MEMORY_PRESETS:
        raise UserError(f"Unknown memory setting {memory!r}; use one of {', '.join(MEMORY_PRESETS)}.")
    options: dict[str, Any] = {"memory": choose_memory_preset(devices.resolve_device()) if memory == "auto"
                               else memory}
    if is_single_file(source) and Path(source).exists():
        config = single_file_config(source)
        if config:
            options["config"] = config
        elif single_file_base(source) == "sdxl":
            options["class_name"] = "StableDiffusionXLPipeline"
    if vae:
        options["vae"] = str(vae).strip()
        refuse_pickle_name(options["vae"], "VAEs")
        options["vae_options"] = _vae_layout(options["vae"])
    unload_variants("diffusers_pipeline", source, keep=options)
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
    """A ControlNet from a hub id, a folder, a single .safetensors file, or "org/repo/sub/folder" (a hub repo that
    keeps it in a sub-folder, as CrucibleAI/ControlNetMediaPipeFace keeps its SD 1.5 one in diffusion_sd15)."""
    source = str(source).strip()
    check_source(source)
    refuse_pickle_name(source, "checkpoints")
    options: dict[str, Any] = {"class_name": "ControlNetModel"}
    if is_single_file(source) and Path(source).exists():
        options["config"] = str(ASSETS / "sd15_controlnet")
    repo, subfolder = hub_subfolder(source)
    if subfolder:
        options["subfolder"] = subfolder
    entry = catalog.entry_for(source)
    if entry is not None and entry.variant:  # e.g. the MediaPipe-face ControlNet has only fp16 safetensors
        options["variant"] = entry.variant
    return load_model("diffusers_model", repo, dtype=dtype, device=device, **options)


def hub_subfolder(source: str) -> tuple[str, str]:
    """("org/repo", "sub/folder") for a hub source with a sub-folder; (source, "") for everything else."""
    parts = source.split("/")
    if len(parts) < 3 or source.startswith((TINY_PREFIX, "/", ".", "~")) or Path(source).exists():
        return source, ""
    return "/".join(parts[:2]), "/".join(parts[2:])


def controlnet_for(pipe: Any, source: str) -> Any:
    """The cached ControlNet for `source`, in the pipeline's dtype, where its UNet runs (also under CPU offload,
    where pipe.device is the CPU)."""
    return load_controlnet(source, dtype=pipe.dtype, device=getattr(pipe, "_execution_device", pipe.device))


def base_of(pipe: Any) -> str:
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd15"


class _EmptyFloat32ListFilter(logging.Filter):
    """diffusers warns on every dtype-carrying `.to()` that modules "should be kept in float32: []" even when the
    list is empty, i.e. on every from_pipe call; that line says nothing, so it is dropped (others pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_EmptyFloat32ListFilter())


def pipeline_for_call(pipe: Any, scheduler: Any, controlnets: Sequence[Any] = ()) -> Any:
    """A per-call pipeline sharing `pipe`'s modules: its own scheduler, the ControlNets attached.

    `dtype=pipe.dtype` keeps from_pipe from casting the shared modules to fp32.
    """
    import diffusers

    if not controlnets:
        call_pipe = type(pipe).from_pipe(pipe, scheduler=scheduler, dtype=pipe.dtype)
    else:
        controlnet = controlnets[0] if len(controlnets) == 1 else list(controlnets)  # a list: MultiControlNet
        pipeline_class = (diffusers.StableDiffusionXLControlNetPipeline if base_of(pipe) == "sdxl"
                          else diffusers.StableDiffusionControlNetPipeline)
        call_pipe = pipeline_class.from_pipe(pipe, controlnet=controlnet, scheduler=scheduler, dtype=pipe.dtype)
    call_pipe.set_progress_bar_config(disable=True)  # progress goes through the step hook, not tqdm on stderr
    return call_pipe


def describe_source(source: str) -> dict[str, Any]:
    """The model's name as A1111 shows it (a file's stem) and its file, if it is one, for the infotext."""
    path = Path(str(source))
    if not str(source).startswith(TINY_PREFIX) and path.is_file():
        return {"name": path.stem, "file": str(path)}
    return {"name": path.name if path.exists() else str(source), "file": None}


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


TINY_SD15 = f"{TINY_PREFIX}sd15"
TINY_CONTROLNET = f"{TINY_PREFIX}controlnet"
TINY_IP_ADAPTER = f"{TINY_PREFIX}ip_adapter"


def model_choices() -> list[tuple[str, str]]:
    """(label, source) pairs for a checkpoint dropdown: the local ones, the catalog's SD 1.5 checkpoints (licence and
    download size), then the tiny test model."""
    from pipelines.core.tiny_models import dropdown_choice

    local = [(Path(path).name, path) for path in local_checkpoints()]
    return local + catalog.choices("sd15") + [dropdown_choice("sd15")]


def default_model() -> str:
    """A real checkpoint whenever one is here or can be fetched (models folder, cached catalog entry, else the first
    catalog entry unless the Hub is known to be unreachable); the tiny test model only offline with nothing here."""
    return catalog.default_source("sd15", TINY_SD15, local=local_checkpoints())


def controlnet_choices(sources: list[str] | tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(label, source) pairs for a ControlNet dropdown: the catalog's ControlNets (or only `sources`, in that order),
    then the tiny test one."""
    from pipelines.core.tiny_models import dropdown_choice

    chosen = catalog.entries("controlnet") if sources is None else [
        entry for entry in (catalog.entry_for(source) for source in sources) if entry is not None]
    return [(catalog.dropdown_label(entry), entry.source) for entry in chosen] + [dropdown_choice("controlnet")]


def default_controlnet(preferred: str, model: str) -> str:
    """`preferred` (a real ControlNet) unless the checkpoint is the tiny test model: a real ControlNet cannot
    condition a test UNet, so the test pair goes together."""
    return TINY_CONTROLNET if str(model).startswith(TINY_PREFIX) else preferred
