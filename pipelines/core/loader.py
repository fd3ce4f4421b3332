"""One model loader and one process-wide cache for every model family the app uses.

Sources are hub ids ("org/name"), local folders, single files, or "tiny:NAME" — a tiny random-weight
model built from a config on first use, saved under the cache folder, and then loaded like any folder.
The cache is keyed by (family, source, dtype, device, options) and evicts the least recently used
models when a memory budget would be exceeded.

Registries: FAMILIES (how to load a kind of model) and ARCHITECTURES (plain torch modules saved as safetensors
name theirs in their metadata). A new method adds an architecture from its package's __init__ with
`loader.register_architecture(NAME, lazy(MODULE, "build"))` (see methods.py); a name not registered yet makes
the loader import the method packages once (methods.discover_methods) before it gives up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import catalog, devices, network, owners, settings
from .cache import KeyedCache
from .errors import UserError
from .methods import discover_methods, discovery_note

log = logging.getLogger(__name__)

TINY_PREFIX = "tiny:"
TEST_MODEL_LABEL = "test model — random weights, output is noise"
TINY_LABEL = "tiny (test, random weights)"  # how every model dropdown names a tiny test model


class ModelLoadError(UserError, RuntimeError):
    """A model could not be loaded; the message names the model and the reason in plain words."""


@dataclass(frozen=True)
class ModelInfo:
    family: str
    source: str
    revision: str
    test_model: bool
    size_bytes: int

    def as_record(self) -> dict[str, Any]:
        return {"family": self.family, "id": self.source, "revision": self.revision, "test_model": self.test_model}


@dataclass(frozen=True)
class LoadRequest:
    source: str  # as given by the caller
    path_or_id: str  # a local path for tiny/local models, else the hub id
    dtype: Any
    device: Any
    local_files_only: bool
    options: dict[str, Any]


FamilyLoader = Callable[[LoadRequest], Any]
Architecture = Callable[[dict[str, Any], dict[str, Any]], Any]  # (config, state_dict) -> nn.Module
FAMILIES: dict[str, FamilyLoader] = {}
ARCHITECTURES: dict[str, Architecture] = {}


def register_family(name: str) -> Callable[[FamilyLoader], FamilyLoader]:
    def decorate(fn: FamilyLoader) -> FamilyLoader:
        FAMILIES[name] = fn
        return fn

    return decorate


def register_architecture(name: str, builder: Architecture) -> None:
    """Plain torch modules stored as safetensors name their architecture; a method registers its builder,
    builder(config, state_dict) -> nn.Module, when its package is imported."""
    ARCHITECTURES[name] = builder


def architecture(name: str | None) -> Architecture | None:
    """The builder registered for `name`, importing the core's tiny models and then the method packages (once)
    if it is not registered yet; None when nobody registers it."""
    if not name:
        return None
    if name not in ARCHITECTURES:
        from . import tiny_models  # noqa: F401  the core's own tiny architectures register on import

        if name not in ARCHITECTURES:
            discover_methods()
    return ARCHITECTURES.get(name)


def is_test_model(source: str) -> bool:
    return str(source).startswith(TINY_PREFIX)


TEST_MODEL_ATTRIBUTE = "asl_test_model"  # set on modules whose saved config says "test_model"


def marked_test_model(model: Any) -> bool:
    """True for a module loaded from a file whose metadata or config.json says `test_model` (e.g. a style
    trained against a random-weight VGG16): it is labelled as a test model wherever it is loaded from."""
    return bool(getattr(model, TEST_MODEL_ATTRIBUTE, False))


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


# ---------------------------------------------------------------------------------------------- sizes
def _modules_of(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.nn.Module):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [module for item in obj for module in _modules_of(item)]
    components = getattr(obj, "components", None)  # diffusers pipelines
    if isinstance(components, dict):
        return [value for value in components.values() if isinstance(value, torch.nn.Module)]
    return []


def size_in_bytes(obj: Any) -> int:
    import torch

    if isinstance(obj, dict) and all(isinstance(value, torch.Tensor) for value in obj.values()):  # "state_dict"
        return sum(tensor.numel() * tensor.element_size() for tensor in obj.values())
    seen, total = set(), 0
    for module in _modules_of(obj):
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def default_budget_bytes(device: Any) -> int:
    """Half the machine's RAM on CPU, 80% of the GPU's memory on CUDA, unless ASL_MODEL_CACHE_GB says."""
    configured = settings.cache_budget_bytes()
    if configured is not None:
        return configured
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory * 0.8)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)


# ---------------------------------------------------------------------------------------------- cache
class ModelCache(KeyedCache):
    """Loaded models under a byte budget (values are (model, ModelInfo)); frees GPU memory on eviction."""

    def info_for(self, model: Any) -> ModelInfo | None:
        return next((info for obj, info in self.values() if obj is model), None)

    def get_or_load(self, key: tuple, load: Callable[[], tuple[Any, ModelInfo]], budget: int) -> Any:
        def create() -> tuple[tuple[Any, ModelInfo], int]:
            model, info = load()
            return (model, info), info.size_bytes

        return self.get_or_create(key, create, budget)[0]

    def on_evicted(self, evicted: list[tuple[Any, Any]]) -> None:
        for _, (_, info) in evicted:
            log.info("Evicted %s (%s MB) from the model cache", info.source, info.size_bytes // 2**20)
        _free_accelerator_memory()

    def clear(self) -> None:
        super().clear()
        _free_accelerator_memory()


def _free_accelerator_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


CACHE = ModelCache()


# ---------------------------------------------------------------------------------------------- loading
def _freeze(options: dict[str, Any]) -> tuple:
    return tuple(sorted((key, repr(value)) for key, value in options.items()))


def resolve_path_or_id(source: str) -> str:
    """A local path for tiny models and existing paths; the hub id otherwise."""
    if is_test_model(source):
        from . import tiny_models

        return str(tiny_models.build(source.removeprefix(TINY_PREFIX)))
    expanded = Path(source).expanduser()
    if expanded.exists():
        return str(expanded.resolve())
    models_dir = Path("models") / source
    if models_dir.exists():
        return str(models_dir.resolve())
    return source


def _looks_like_hub_id(text: str) -> bool:
    return bool(re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", text)) and not Path(text).exists()


def _revision(model: Any, path_or_id: str, source: str) -> str:
    if is_test_model(source):
        return Path(path_or_id).name  # e.g. "sd15-v1": the builder's version
    config = getattr(model, "config", None)
    for candidate in (getattr(config, "_commit_hash", None), getattr(config, "_name_or_path", None),
                      path_or_id):
        match = re.search(r"snapshots/([0-9a-f]{40})", str(candidate or ""))
        if match:
            return match.group(1)
        if candidate and re.fullmatch(r"[0-9a-f]{40}", str(candidate)):
            return str(candidate)
    path = Path(path_or_id)
    if path.is_file():
        import hashlib

        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()[:16]}"
    return "local" if path.exists() else "unknown"


def _plain_reason(err: BaseException, source: str, offline: bool) -> str:
    name = type(err).__name__
    text = str(err).strip().splitlines()[0] if str(err).strip() else name
    if name in ("RepositoryNotFoundError",):
        return "there is no such model on the Hub (check the id) or it is private"
    if name == "GatedRepoError":
        return "the model is gated: accept its licence on the Hub and set HF_TOKEN"
    if name == "UnsafeWeightsError":
        return text
    if isinstance(err, MemoryError) or "out of memory" in text.lower():
        return "there is not enough memory to load it"
    if offline and _looks_like_hub_id(source) and isinstance(err, (OSError, ValueError)):
        return "it is not in the local cache and the Hub cannot be reached (offline)"
    if isinstance(err, FileNotFoundError):
        return f"a file is missing ({text})"
    return text


# ---------------------------------------------------------------------------------------------- sources
ENV_ALLOW_HUB_IDS = "ASL_ALLOW_HUB_IDS"
ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"


class SourceRefused(ModelLoadError):
    """A multi-user server was asked for a model that is neither in the catalog, nor a file of its models folder,
    nor (where the host allows downloads) a hub id."""


def hub_ids_allowed() -> bool:
    """Whether a client may name any hub id: ASL_ALLOW_HUB_IDS=1/0, else yes in single-user mode, no on a
    multi-user server (a visitor could otherwise make the server download anything)."""
    value = os.environ.get(ENV_ALLOW_HUB_IDS, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return not owners.multi_user()


def _allowed_roots() -> list[Path]:
    """Folders a multi-user server loads files from: the models folder, what the app built or downloaded (its cache,
    the Hub cache), what it ships (assets) and the current visitor's own outputs (their trained models)."""
    from .downloads import hub_cache_dir

    roots = [catalog.models_folder(), settings.cache_dir().resolve(), hub_cache_dir().resolve(), ASSETS_DIR]
    with contextlib.suppress(owners.NoOwner):  # no visitor known: nobody's outputs
        roots.append(settings.outputs_dir().resolve())
    return roots


def _local_candidates(text: str) -> list[Path]:
    path = Path(text).expanduser()
    return [path] if path.is_absolute() else [path, Path("models") / text]


def check_source(source: str, subfolder: str | None = None) -> None:
    """The one gate for model sources a client can name (every load passes here). Single-user mode accepts any path or
    hub id, as always. On a multi-user server only: test models, catalog models, files under the models folder (and
    the app's own folders), and hub ids where the host allows downloads (ASL_ALLOW_HUB_IDS=1); anything else — `/etc`,
    another visitor's folder — is refused in plain words before anything is read."""
    if not owners.multi_user():
        return
    text = str(source).strip()
    if is_test_model(text) or catalog.entry_for(text, subfolder) is not None:
        return
    for candidate in _local_candidates(text):
        if candidate.exists():
            resolved = candidate.resolve()
            if any(resolved == root or resolved.is_relative_to(root) for root in _allowed_roots()):
                return
            break
    else:
        if _looks_like_hub_id(text) and hub_ids_allowed():
            return
    offered = "the models in its lists and the files in its models folder"
    if hub_ids_allowed():
        offered += ", or a Hugging Face model id (org/name)"
    raise SourceRefused(f"'{text}' is not a model this server offers. On this shared server you can choose "
                        f"{offered}.")


def _fetch_catalog_files(source: str, options: dict[str, Any]) -> None:
    """A catalog model not cached yet is downloaded here, once for all visitors, with the job's progress bar and a
    free-disk check first (downloads.fetch_entry); other hub ids are left to their library, as before."""
    entry = catalog.entry_for(source, options.get("subfolder"))
    if entry is not None and entry.repo:
        from .downloads import fetch_entry

        fetch_entry(entry)


def load_model(family: str, source: str, *, dtype: Any = None, device: Any = None, **options: Any) -> Any:
    """Load (or fetch from the cache) a model of `family` from `source`.

    Families: diffusers_pipeline, diffusers_model (class_name=...), transformers (class_name=...),
    open_clip, torch_module, state_dict (filename=...). Raises ModelLoadError with a plain message when it
    cannot be had (SourceRefused when a multi-user server does not offer `source`).
    """
    if family not in FAMILIES:
        raise ModelLoadError(f"Unknown model family {family!r} (known: {', '.join(sorted(FAMILIES))}).")
    check_source(str(source), options.get("subfolder"))
    device = devices.resolve_device(device) if not hasattr(device, "type") else device
    dtype = dtype or devices.resolve_dtype(device)
    key = (family, str(source), str(dtype), str(device), _freeze(options))

    def load() -> tuple[Any, ModelInfo]:
        offline = False
        try:
            path_or_id = resolve_path_or_id(str(source))
            if not Path(path_or_id).exists():
                offline = network.hub_status().offline
                if not offline:
                    _fetch_catalog_files(str(source), options)
            request = LoadRequest(str(source), path_or_id, dtype, device, offline, options)
            log.info("Loading %s model %s on %s", family, source, device)
            model = FAMILIES[family](request)
        except ModelLoadError:
            raise
        except Exception as err:  # any library error becomes one plain message
            reason = _plain_reason(err, str(source), offline)
            raise ModelLoadError(f"Could not load the model '{source}': {reason.rstrip('.')}.") from err
        info = ModelInfo(family, str(source), _revision(model, path_or_id, str(source)),
                         is_test_model(str(source)) or marked_test_model(model), size_in_bytes(model))
        return model, info

    return CACHE.get_or_load(key, load, default_budget_bytes(device))


def unload_variants(family: str, source: str, keep: dict[str, Any]) -> int:
    """Drop cached copies of a model loaded with other options than `keep` (another memory preset, another
    VAE), so that switching, e.g. to a lower-memory preset after running out of memory, never holds two."""
    keep_options = _freeze(keep)
    return CACHE.discard(lambda key: key[0] == family and key[1] == str(source) and key[4] != keep_options)


def model_info(model: Any) -> ModelInfo | None:
    """What the cache knows about a loaded model (for run records)."""
    return CACHE.info_for(model)


# ---------------------------------------------------------------------------------------------- families
def _hub_kwargs(request: LoadRequest) -> dict[str, Any]:
    kwargs = {"local_files_only": request.local_files_only}
    for key in ("subfolder", "revision", "variant"):
        if key in request.options:
            kwargs[key] = request.options[key]
    return kwargs


MEMORY_PRESETS = ("auto", "none", "low", "lowest")


def choose_memory_preset(device: Any) -> str:
    """'auto' on CUDA by free memory: < 6 GiB offloads idle models to the CPU, < 10 GiB slices attention and
    tiles the VAE; other devices need none (system memory is not the limit there)."""
    if getattr(device, "type", "cpu") != "cuda":
        return "none"
    import torch

    free_gib = torch.cuda.mem_get_info(device)[0] / 2**30
    return "lowest" if free_gib < 6 else "low" if free_gib < 10 else "none"


def _place_pipeline(pipe: Any, preset: str, device: Any) -> Any:
    """Move a pipeline to its device with a memory preset; the chosen preset is kept on the pipe."""
    if preset == "auto":
        preset = choose_memory_preset(device)
    if preset not in MEMORY_PRESETS:
        raise ModelLoadError(f"Unknown memory setting {preset!r}; use one of {', '.join(MEMORY_PRESETS)}.")
    if preset in ("low", "lowest"):
        pipe.enable_attention_slicing()
        pipe.vae.enable_slicing()
        pipe.vae.enable_tiling()
    pipe.asl_memory_preset = preset
    # Callers that put per-call adapters (LoRAs) into the shared modules take turns on this lock.
    pipe.asl_lock = threading.RLock()
    if preset == "lowest" and getattr(device, "type", "cpu") == "cuda":
        pipe.enable_model_cpu_offload(device=device)
        return pipe
    return pipe.to(device)


def _single_file_path(request: LoadRequest) -> str | None:
    """The path when the source is one weights file; pickles are refused before anything reads them."""
    from .safeweights import PICKLE_SUFFIXES, check_safetensors, refuse_pickle_name

    path = request.path_or_id
    if not path.lower().endswith((".safetensors", *PICKLE_SUFFIXES)):
        return None
    refuse_pickle_name(path, "checkpoints")
    check_safetensors(path)
    return path


@register_family("diffusers_pipeline")
def _load_diffusers_pipeline(request: LoadRequest) -> Any:
    """Options: class_name, config (a diffusers folder or id for a single file's layout), vae (a VAE source),
    memory (a preset name)."""
    import diffusers

    pipeline_class = getattr(diffusers, request.options.get("class_name", "DiffusionPipeline"))
    extra = {}
    if request.options.get("vae"):
        vae_options = {"class_name": "AutoencoderKL", **request.options.get("vae_options", {})}
        extra["vae"] = load_model("diffusers_model", request.options["vae"], dtype=request.dtype,
                                  device=request.device, **vae_options)
    single_file = _single_file_path(request)
    if single_file:
        if pipeline_class is diffusers.DiffusionPipeline:
            pipeline_class = diffusers.StableDiffusionPipeline
        if request.options.get("config"):
            extra["config"] = request.options["config"]
        pipe = pipeline_class.from_single_file(single_file, dtype=request.dtype,
                                               local_files_only=request.local_files_only, **extra)
    else:
        pipe = pipeline_class.from_pretrained(request.path_or_id, dtype=request.dtype,
                                              use_safetensors=True, **_hub_kwargs(request), **extra)
    pipe.set_progress_bar_config(disable=True)
    return _place_pipeline(pipe, request.options.get("memory", "none"), request.device)


@register_family("diffusers_model")
def _load_diffusers_model(request: LoadRequest) -> Any:
    """Options: class_name; for a single file, config (+ subfolder) naming its layout."""
    import diffusers

    model_class = getattr(diffusers, request.options["class_name"])
    single_file = _single_file_path(request)
    if single_file:
        layout = {key: request.options[key] for key in ("config", "subfolder") if request.options.get(key)}
        model = model_class.from_single_file(single_file, dtype=request.dtype,
                                             local_files_only=request.local_files_only, **layout)
    else:
        model = model_class.from_pretrained(request.path_or_id, dtype=request.dtype, use_safetensors=True,
                                            **_hub_kwargs(request))
    return model.to(request.device).eval()


@register_family("transformers")
def _load_transformers(request: LoadRequest) -> Any:
    import torch
    import transformers

    obj_class = getattr(transformers, request.options["class_name"])
    kwargs = _hub_kwargs(request)
    if not issubclass(obj_class, torch.nn.Module):  # processors and tokenizers
        return obj_class.from_pretrained(request.path_or_id, **kwargs)
    model = obj_class.from_pretrained(request.path_or_id, dtype=request.dtype, use_safetensors=True, **kwargs)
    return model.to(request.device).eval()


@register_family("open_clip")
def _load_open_clip(request: LoadRequest) -> Any:
    """Returns (model, preprocess, tokenizer). Source: "hf-hub:org/name" or "ARCH/PRETRAINED_TAG"."""
    import open_clip

    source = request.path_or_id
    if source.startswith("hf-hub:"):
        model, _, preprocess = open_clip.create_model_and_transforms(source, device=request.device)
        tokenizer = open_clip.get_tokenizer(source)
    else:
        arch, _, tag = source.partition("/")
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag or None,
                                                                     device=request.device)
        tokenizer = open_clip.get_tokenizer(arch)
    return model.to(dtype=request.dtype).eval(), preprocess, tokenizer


@register_family("state_dict")
def _load_state_dict(request: LoadRequest) -> Any:
    """A .safetensors file's tensors, for weights a library applies itself (an IP-Adapter's). Source: the file, or
    a folder or hub repo with option `filename` (a path inside it). Pickles are refused; tensors stay on the CPU."""
    from .safeweights import load_safetensors, refuse_pickle_name

    path = Path(request.path_or_id)
    filename = request.options.get("filename")
    if filename:
        refuse_pickle_name(filename, "weights")
        if path.is_dir():
            path = path / filename
        elif not path.exists():
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(request.path_or_id, filename, local_files_only=request.local_files_only))
    refuse_pickle_name(str(path), "weights")
    tensors, _ = load_safetensors(path)  # checks the header first: a renamed pickle is refused
    return tensors


@register_family("torch_module")
def _load_torch_module(request: LoadRequest) -> Any:
    """A plain module: folder with config.json + model.safetensors, or one .safetensors whose metadata
    names the architecture. Hub ids are downloaded with huggingface_hub (safetensors files only)."""
    import json

    from .safeweights import load_safetensors

    path = Path(request.path_or_id)
    if not path.exists():
        from huggingface_hub import hf_hub_download

        filename = request.options.get("filename", "model.safetensors")
        path = Path(hf_hub_download(request.path_or_id, filename, local_files_only=request.local_files_only))
    weights = path / "model.safetensors" if path.is_dir() else path
    state_dict, metadata = load_safetensors(weights)
    config = dict(metadata)
    if path.is_dir() and (path / "config.json").exists():
        config.update(json.loads((path / "config.json").read_text()))
    config.update(request.options.get("config", {}))
    name = config.get("architecture") or request.options.get("architecture")
    builder = architecture(name)
    if builder is None:
        known = ", ".join(sorted(ARCHITECTURES)) or "none registered"
        raise ModelLoadError(f"Could not load '{request.source}': unknown architecture {name!r} "
                             f"(known: {known}){discovery_note()}.")
    module = builder(config, state_dict)
    if _truthy(config.get("test_model")):
        setattr(module, TEST_MODEL_ATTRIBUTE, True)
    return module.to(device=request.device, dtype=request.dtype).eval()
