"""Where LoRAs and embeddings are found, by the names users write in prompts (A1111: the file's stem).

Folders, searched in order: `ASL_LORA_DIRS` / `ASL_EMBEDDING_DIRS` (os.pathsep-separated), `models/lora` and
`models/embeddings` (beside the app, as `models/` holds checkpoints), and `<outputs>/loras`,
`<outputs>/embeddings` where the fine-tuning tab puts what it trains. Only .safetensors files count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.core import settings
from pipelines.core.errors import UserError

ENV_LORA_DIRS = "ASL_LORA_DIRS"
ENV_EMBEDDING_DIRS = "ASL_EMBEDDING_DIRS"


def _folders(env: str, models_sub: str, outputs_sub: str) -> list[Path]:
    extra = [Path(item).expanduser() for item in os.environ.get(env, "").split(os.pathsep) if item.strip()]
    return [*extra, Path("models") / models_sub, settings.outputs_dir() / outputs_sub]


def lora_folders() -> list[Path]:
    return _folders(ENV_LORA_DIRS, "lora", "loras")


def embedding_folders() -> list[Path]:
    return _folders(ENV_EMBEDDING_DIRS, "embeddings", "embeddings")


def installed(kind: str) -> dict[str, Path]:
    """name -> file for 'lora' or 'embedding'; an earlier folder wins a name clash."""
    from .embeddings import installed_embeddings
    from .lora import installed_loras

    folders, lister = ((lora_folders(), installed_loras) if kind == "lora"
                       else (embedding_folders(), installed_embeddings))
    found: dict[str, Path] = {}
    for folder in reversed(folders):
        if folder.is_dir():
            found.update(lister(folder))
    return found


def resolve_loras(tags: Sequence[tuple[str, float]],
                  given: Sequence[tuple[str, float]] = ()) -> list[tuple[Any, dict, float]]:
    """(LoraFile, state dict, weight) for the prompt's tags, found by installed name only (a prompt may come from
    anyone, so it never names a path on the server), and for LoRAs `given` by a caller, by name or .safetensors
    path. A missing one is named in the error."""
    from .lora import read_lora

    if not tags and not given:
        return []
    available = installed("lora")
    resolved = []
    for name, weight in [*tags, *given]:
        from_caller = (name, weight) in given and name.endswith(".safetensors")
        path = Path(name).expanduser() if from_caller else available.get(name)
        if path is None or not path.is_file():
            names = ", ".join(sorted(available)) or "none"
            raise UserError(f"The LoRA '{name}' is not installed (installed: {names}). "
                            f"Put {Path(name).stem}.safetensors in {lora_folders()[-2]}.")
        lora_file, state_dict = read_lora(path)
        resolved.append((lora_file, state_dict, float(weight)))
    return resolved


def find_embeddings(text: str) -> dict[str, Any]:
    """name -> vectors of each installed embedding whose name appears in the text as a word."""
    from .embeddings import read_embedding
    from .prompts import find_embedding_names

    available = installed("embedding")
    if not available:
        return {}
    return {name: read_embedding(available[name]).vectors for name in find_embedding_names(text, available)}


# Few-step previews (a CPU user's quick look): LCM-LoRA turns an SD 1.5 model into a 4-step one (Luo et al. 2023),
# sampled with LCM at CFG 1, the settings its model card gives.
LCM_LORA_SD15 = "latent-consistency/lcm-lora-sdv1-5"
LCM_LORA_NAME = "lcm-lora-sdv1-5"  # what it is installed as, so a prompt may also write <lora:lcm-lora-sdv1-5:1>
FAST_PREVIEW = {"sampler": "LCM", "schedule": "Automatic", "steps": 4, "cfg_scale": 1.0}


def lcm_lora(base_model: str) -> str:
    """The LCM-LoRA file for `base_model` (SD 1.5 family): the tiny test one for a tiny model, else the installed
    copy, else fetched from the Hub once and installed in <outputs>/loras. Returns a .safetensors path."""
    import shutil

    from pipelines.core.jobs import atomic_path
    from pipelines.core.loader import is_test_model
    from pipelines.core.network import hub_status
    from pipelines.core.tiny_models import LCM_LORA_FILE, build

    if is_test_model(base_model):
        return str(build("lcm_lora") / LCM_LORA_FILE)
    found = installed("lora").get(LCM_LORA_NAME)
    if found is not None:
        return str(found)
    from huggingface_hub import hf_hub_download

    offline = hub_status().offline
    try:
        downloaded = hf_hub_download(LCM_LORA_SD15, LCM_LORA_FILE, local_files_only=offline)
    except Exception as err:  # not cached and no network, or the Hub refused
        raise UserError(f"The fast preview needs the LCM-LoRA ({LCM_LORA_SD15}), which is not on this machine"
                        f"{' and the Hub cannot be reached' if offline else ''}. Put {LCM_LORA_NAME}.safetensors "
                        f"in {lora_folders()[-2]}, or turn the fast preview off.") from err
    target = lora_folders()[-1] / f"{LCM_LORA_NAME}.safetensors"
    with atomic_path(target) as tmp:
        shutil.copyfile(downloaded, tmp)
    return str(target)
