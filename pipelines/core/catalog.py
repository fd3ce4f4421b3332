"""The catalog of real models: one list per role (SD 1.5 anime checkpoints, ControlNets, IP-Adapter, LCM-LoRA,
BLIP, CLIP, DINOv2, the metric networks), each with its licence, its approximate download size and the files the
loader needs. Every model dropdown offers these entries; the loader downloads an entry's files once, with a progress
bar (downloads.fetch_entry); on a multi-user server a visitor may name only these, the models folder's files and,
where the host allows it, other hub ids (loader.check_source).

Data and small functions only. The core never imports a method: a method adds its own roles' entries with
`register(CatalogEntry(...))` when its package is imported.

Sizes are approximate: the sum of the listed files as the Hub's file list shows them (decimal GB/MB, rounded), not
measured downloads. `verified` says how each id and its files were checked when the entry was written: from this
build machine the Hub cannot be reached, so that was done from stored copies of the Hub's file-list pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MB = 1_000_000
GB = 1_000_000_000

# The files of an SD 1.5 pipeline in diffusers layout that from_pretrained(use_safetensors=True) reads (fp32 weights;
# the safety checker is listed because the repos' model_index.json names it, so diffusers loads it too).
SD15_PIPELINE_FILES = (
    "model_index.json", "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json",
    "tokenizer/*", "text_encoder/config.json", "text_encoder/model.safetensors",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    "safety_checker/config.json", "safety_checker/model.safetensors",
)
SD15_PIPELINE_BYTES = int(3.44 * GB + 492 * MB + 335 * MB + 1.22 * GB)  # unet + text encoder + VAE + safety checker
CONTROLNET_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
CONTROLNET_BYTES = int(1.45 * GB)
PROCESSOR_FILES = ("*.json", "*.txt")  # tokenizer and image-processor files (small; whichever the repo has)


@dataclass(frozen=True)
class CatalogEntry:
    role: str  # "sd15", "controlnet", "ip_adapter", "lcm_lora", "blip", "clip", "dino", "inception", "lpips", …
    source: str  # what a dropdown offers and the loader is given ("org/repo", "org/repo/sub/folder", or a key)
    label: str
    licence: str
    size_bytes: int  # approximate download size (the listed files, from the repo's file list)
    files: tuple[str, ...] = ()  # what the loader needs from the repo (paths or glob patterns, repo-relative)
    repo: str = ""  # the hub repo ("" for weights fetched from a fixed URL by their own module)
    subfolder: str = ""  # where in the repo the model sits (files are listed with it)
    variant: str = ""  # the weights variant to load ("fp16" where the repo has no fp32 safetensors)
    url: str = ""  # for weights that are not on the Hub
    verified: str = ""  # how the id and its files were checked

    @property
    def required_files(self) -> tuple[str, ...]:
        """The listed files that are exact paths (not patterns): all must be present for the entry to be cached."""
        return tuple(name for name in self.files if not any(char in name for char in "*?["))

    @property
    def size_text(self) -> str:
        return size_text(self.size_bytes)


def size_text(size_bytes: int) -> str:
    """'≈ 5.5 GB' / '≈ 98 MB' (decimal units, as the Hub shows sizes)."""
    if size_bytes >= GB:
        return f"≈ {size_bytes / GB:.1f} GB"
    return f"≈ {max(1, round(size_bytes / MB))} MB"


_ENTRIES: dict[str, CatalogEntry] = {}  # source -> entry; a registry like loader.FAMILIES


def register(entry: CatalogEntry) -> CatalogEntry:
    """Add (or replace) an entry; the order of registration is the order in dropdowns."""
    _ENTRIES[entry.source] = entry
    return entry


def entries(role: str | None = None) -> list[CatalogEntry]:
    return [entry for entry in _ENTRIES.values() if role is None or entry.role == role]


def entry_for(source: str, subfolder: str | None = None) -> CatalogEntry | None:
    """The entry for a dropdown value or loader source: by its source, or by its repo (+ sub-folder), as the loader
    sees it after a ControlNet's "org/repo/sub" was split. None for anything not in the catalog."""
    source = str(source).strip()
    if source in _ENTRIES:
        return _ENTRIES[source]
    for entry in _ENTRIES.values():
        if entry.repo and entry.repo == source and _holds_subfolder(entry, subfolder):
            return entry
    return None


def _holds_subfolder(entry: CatalogEntry, subfolder: str | None) -> bool:
    """Whether loading `subfolder` of the entry's repo stays within the files the entry names."""
    if not subfolder:
        return not entry.subfolder
    prefix = subfolder.strip("/") + "/"
    return any(name.startswith(prefix) for name in entry.files)


def is_cached(entry: CatalogEntry) -> bool | None:
    """Whether every file the loader needs is in the Hugging Face cache (no network call); None for entries whose
    weights are not on the Hub (their own module knows)."""
    if not entry.repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a requirement
        return False
    try:
        return all(isinstance(try_to_load_from_cache(entry.repo, name), str) for name in entry.required_files)
    except Exception:  # a malformed cache or id: not usable
        return False


def licence_and_size(entry: CatalogEntry) -> str:
    """'CreativeML OpenRAIL-M, ≈ 5.5 GB download on first use' (or 'downloaded' once it is here; offline, that it
    cannot be downloaded now — known without a network call)."""
    from .network import known_offline

    status = known_offline()
    if is_cached(entry):
        where = "downloaded"
    elif status is not None and status.offline:
        where = f"not here ({entry.size_text}; cannot be downloaded offline)"
    else:
        where = f"{entry.size_text} download on first use"
    return f"{entry.licence}, {where}"


def dropdown_label(entry: CatalogEntry) -> str:
    """What a dropdown shows: the model, its licence and its download size (or that it is already here)."""
    return f"{entry.label} — {licence_and_size(entry)}"


def choices(role: str) -> list[tuple[str, str]]:
    """(label, source) pairs for a dropdown of `role`, in catalog order."""
    return [(dropdown_label(entry), entry.source) for entry in entries(role)]


def hub_may_be_used() -> bool:
    """Whether a real model that is not cached can be fetched now, as far as is known without a network call:
    False only when offline mode is on or an earlier probe found the Hub unreachable."""
    from . import network

    status = network.known_offline()
    return status is None or not status.offline


def default_source(role: str, fallback: str, *, local: list[str] | tuple[str, ...] = ()) -> str:
    """The default of a dropdown: a model already on this machine (`local`, then a cached catalog entry), else the
    first catalog entry when the Hub may be reachable, else `fallback` (the tiny test model)."""
    if local:
        return local[0]
    role_entries = entries(role)
    cached = next((entry.source for entry in role_entries if is_cached(entry)), None)
    if cached:
        return cached
    if role_entries and hub_may_be_used():
        return role_entries[0].source
    return fallback


def models_folder() -> Path:
    """The host's models folder (relative to the working folder, as the loader resolves names)."""
    return Path("models").resolve()


# ---------------------------------------------------------------------------------------------- the entries
_HUB_TREE = "its Hub file list (huggingface.co/{}/tree/main{}) read from a stored copy"

for _entry in (
    # SD 1.5 anime checkpoints in diffusers layout (fp32 safetensors in every component folder).
    CatalogEntry("sd15", "Lykon/AnyLoRA", "AnyLoRA (anime, SD 1.5)", "CreativeML OpenRAIL-M", SD15_PIPELINE_BYTES,
                 SD15_PIPELINE_FILES, repo="Lykon/AnyLoRA",
                 verified=_HUB_TREE.format("Lykon/AnyLoRA", "") + ": model_index.json and the seven component "
                 "folders; unet/diffusion_pytorch_model.safetensors 3.44 GB and safety_checker/model.safetensors "
                 "1.22 GB seen in their folder lists; text_encoder/vae files from the same diffusers upload (#5)"),
    CatalogEntry("sd15", "Meina/MeinaMix_V11", "MeinaMix V11 (anime, SD 1.5)", "CreativeML OpenRAIL-M",
                 SD15_PIPELINE_BYTES, SD15_PIPELINE_FILES, repo="Meina/MeinaMix_V11",
                 verified="the Hub page of unet/diffusion_pytorch_model.safetensors (3.44 GB, commit 817ff64) read "
                 "from a stored copy; the other component files not seen (same diffusers upload)"),
    CatalogEntry("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "Stable Diffusion 1.5 (base, not anime)",
                 "CreativeML OpenRAIL-M", SD15_PIPELINE_BYTES, SD15_PIPELINE_FILES,
                 repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
                 verified="copies marked 'Duplicate from stable-diffusion-v1-5/stable-diffusion-v1-5' list "
                 "unet/diffusion_pytorch_model.safetensors 3.44 GB; the repo's own list not seen"),
    # ControlNets (SD 1.5) the tabs use.
    CatalogEntry("controlnet", "lllyasviel/control_v11p_sd15s2_lineart_anime", "ControlNet anime line art (v1.1)",
                 "OpenRAIL", CONTROLNET_BYTES, CONTROLNET_FILES, repo="lllyasviel/control_v11p_sd15s2_lineart_anime",
                 verified=_HUB_TREE.format("lllyasviel/control_v11p_sd15s2_lineart_anime", "") + ": config.json and "
                 "diffusion_pytorch_model weights (1.45 GB); the Safetensors tag, the safetensors file itself as in "
                 "the sibling v1.1 repos"),
    CatalogEntry("controlnet", "lllyasviel/control_v11p_sd15_lineart", "ControlNet line art (v1.1)", "OpenRAIL",
                 CONTROLNET_BYTES, CONTROLNET_FILES, repo="lllyasviel/control_v11p_sd15_lineart",
                 verified=_HUB_TREE.format("lllyasviel/control_v11p_sd15_lineart", "") + " (config.json, 1.45 GB "
                 "weights); ControlNet-1-1-preview's original lists diffusion_pytorch_model.safetensors 1.45 GB"),
    CatalogEntry("controlnet", "lllyasviel/control_v11p_sd15_canny", "ControlNet canny (v1.1)", "OpenRAIL",
                 CONTROLNET_BYTES, CONTROLNET_FILES, repo="lllyasviel/control_v11p_sd15_canny",
                 verified=_HUB_TREE.format("lllyasviel/control_v11p_sd15_canny", "") + " (config.json 996 B, 1.45 GB "
                 "weights, fp16 safetensors; the list cut off before the fp32 safetensors)"),
    CatalogEntry("controlnet", "lllyasviel/control_v11p_sd15_scribble", "ControlNet scribble (v1.1)", "OpenRAIL",
                 CONTROLNET_BYTES, CONTROLNET_FILES, repo="lllyasviel/control_v11p_sd15_scribble",
                 verified="same layout as the other v1.1 repos (not seen separately)"),
    CatalogEntry("controlnet", "lllyasviel/control_v11p_sd15_openpose", "ControlNet OpenPose (v1.1)", "OpenRAIL",
                 CONTROLNET_BYTES, CONTROLNET_FILES, repo="lllyasviel/control_v11p_sd15_openpose",
                 verified=_HUB_TREE.format("lllyasviel/control_v11p_sd15_openpose", "") + " (config.json 999 B, "
                 "1.45 GB weights) and exact clones listing diffusion_pytorch_model.safetensors 1.45 GB"),
    # The SD 1.5 MediaPipe-face ControlNet sits in diffusion_sd15/, whose only safetensors weights are fp16.
    CatalogEntry("controlnet", "CrucibleAI/ControlNetMediaPipeFace/diffusion_sd15", "ControlNet MediaPipe face",
                 "OpenRAIL", 723 * MB,
                 ("diffusion_sd15/config.json", "diffusion_sd15/diffusion_pytorch_model.fp16.safetensors"),
                 repo="CrucibleAI/ControlNetMediaPipeFace", subfolder="diffusion_sd15", variant="fp16",
                 verified=_HUB_TREE.format("CrucibleAI/ControlNetMediaPipeFace", "/diffusion_sd15") + ": config.json, "
                 "diffusion_pytorch_model.bin / .fp16.bin / .fp16.safetensors (723 MB) — no fp32 safetensors, "
                 "hence variant fp16"),
    # IP-Adapter plus-face for SD 1.5 and the CLIP ViT-H image encoder it needs, both from h94/IP-Adapter.
    CatalogEntry("ip_adapter", "h94/IP-Adapter", "IP-Adapter plus-face (SD 1.5) + ViT-H image encoder",
                 "Apache-2.0", int(98.2 * MB + 2.53 * GB),
                 ("models/ip-adapter-plus-face_sd15.safetensors", "models/image_encoder/config.json",
                  "models/image_encoder/model.safetensors"), repo="h94/IP-Adapter",
                 verified=_HUB_TREE.format("h94/IP-Adapter", "/models") + " (ip-adapter-plus-face_sd15.safetensors "
                 "98.2 MB, image_encoder/); image_encoder/model.safetensors 2,528,373,448 B from its exact copies "
                 "(InvokeAI/ip_adapter_sd_image_encoder)"),
    CatalogEntry("lcm_lora", "latent-consistency/lcm-lora-sdv1-5", "LCM-LoRA for SD 1.5", "OpenRAIL++",
                 135 * MB, ("pytorch_lora_weights.safetensors",), repo="latent-consistency/lcm-lora-sdv1-5",
                 verified=_HUB_TREE.format("latent-consistency/lcm-lora-sdv1-5", "") + ": "
                 "pytorch_lora_weights.safetensors 135 MB"),
    # main holds pytorch_model.bin / tf_model.h5 only; model.safetensors (990 MB) sits in the Hub's conversion PRs,
    # which transformers fetches itself (use_safetensors=True), so only config.json marks it as cached here.
    CatalogEntry("blip", "Salesforce/blip-image-captioning-base", "BLIP base captioning", "BSD-3-Clause",
                 990 * MB, ("config.json", "*.safetensors", *PROCESSOR_FILES),
                 repo="Salesforce/blip-image-captioning-base",
                 verified=_HUB_TREE.format("Salesforce/blip-image-captioning-base", "") + " (main 82a3776: "
                 "config.json, pytorch_model.bin 990 MB, processor files) and its SFconvertbot PRs (model.safetensors "
                 "990 MB)"),
    # The main branch's weights may be only pickles (exact copies list pytorch_model.bin, TF, Flax); transformers then
    # takes the safetensors conversion from the Hub's PR branch, so only config.json marks it as cached here.
    CatalogEntry("clip", "openai/clip-vit-base-patch32", "CLIP ViT-B/32", "MIT", 605 * MB,
                 ("config.json", "*.safetensors", *PROCESSOR_FILES), repo="openai/clip-vit-base-patch32",
                 verified="exact copies' file lists (model.safetensors 605 MB in a converted copy; the originals' "
                 "copies tagged PyTorch/TF/JAX only); the original's list not seen"),
    CatalogEntry("dino", "facebook/dinov2-small", "DINOv2 ViT-S/14", "Apache-2.0", 88 * MB,
                 ("config.json", "model.safetensors", "preprocessor_config.json"), repo="facebook/dinov2-small",
                 verified=_HUB_TREE.format("facebook/dinov2-small", "") + ": config.json, model.safetensors 88.2 MB, "
                 "preprocessor_config.json"),
    # Metric networks fetched from fixed URLs by pipelines/metrics (not Hub repos).
    CatalogEntry("inception", "fid-inception", "FID Inception v3 (pytorch-fid / TensorFlow weights)", "Apache-2.0",
                 96 * MB, url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                 "pt_inception-2015-12-05-6726825d.pth",
                 verified="pytorch-fid's release asset (pipelines/metrics/fid_inception.py checks its sha256)"),
    CatalogEntry("lpips", "lpips-alex", "LPIPS (AlexNet backbone, linear weights from torchmetrics)", "BSD-3-Clause",
                 244 * MB, url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                 verified="torchvision's AlexNet IMAGENET1K_V1 weights (the linear layers ship with torchmetrics)"),
):
    register(_entry)
