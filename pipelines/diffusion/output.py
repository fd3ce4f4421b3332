"""What the diffusion core writes beside its images so A1111, Civitai and ComfyUI users can read it.

- `file_short_hash`: A1111's "Model hash", the first 10 hex digits of the sha256 of the whole checkpoint file
  (modules/hashes.py `calculate_sha256`, sd_models.py `shorthash = sha256[0:10]`). Checkpoints are gigabytes, so
  the full digest is kept on disk (cache_dir()/hashes.json) per resolved path and reused while the file's size
  and modification time are unchanged, as A1111 does with its cache.json.
- `infotext_settings`: the settings of A1111's infotext line in A1111's order (modules/processing.py
  `create_infotext`), with LoRA hashes as A1111's Lora extension writes them and ControlNet units as
  sd-webui-controlnet writes them (scripts/infotext.py), and the textual-inversion embeddings a prompt used as
  A1111 ≥ 1.6 writes them: `TI hashes: "name: hash12, ..."`, the hash being the first 12 hex digits of the sha256
  of the whole embedding file (textual_inversion.py `Embedding.set_hash`: `shorthash = hash[0:12]`, with
  `hashes.sha256(filename, "textual_inversion/" + name)`; names without ':' and ',' as sd_hijack_clip.py writes).
  `pipelines.core.pngmeta.save_png` turns the dict into the `parameters` text (A1111's quoting) and the JSON chunk.

Only the standard library is used here, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.errors import UserError

HASH_CACHE_FILE = "hashes.json"
MODEL_HASH_CHARS = 10  # A1111's "Model hash"
EMBEDDING_HASH_CHARS = 12  # A1111's "TI hashes" (Embedding.shorthash)
CONTROLNET_HASH_CHARS = 8  # sd-webui-controlnet's "model_name [hash]"
_READ_BLOCK = 1 << 20
_WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
APP_NAME = "anime-style-lab"


# ------------------------------------------------------------------------------------------ hashes
def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a whole file, from the on-disk cache when the file's size and mtime are unchanged."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise UserError(f"{Path(path).name}: no such model file (a hash needs a single file, not a folder).")
    stat = resolved.stat()
    key, stamp = str(resolved), {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entry = _read_hash_cache().get(key)
    if isinstance(entry, dict) and all(entry.get(name) == value for name, value in stamp.items()) \
            and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = _sha256_of_file(resolved)
    _remember_hash(key, {**stamp, "sha256": digest})
    return digest


def file_short_hash(path: str | os.PathLike) -> str:
    """A1111's "Model hash" of a checkpoint file: sha256 of the whole file, first 10 hex digits."""
    return file_sha256(path)[:MODEL_HASH_CHARS]


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _hash_cache_path() -> Path:
    from pipelines.core.settings import cache_dir

    return cache_dir() / HASH_CACHE_FILE


def _read_hash_cache() -> dict[str, Any]:
    try:
        data = json.loads(_hash_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no cache yet, or a damaged one: hashes are simply computed again
        return {}
    return data if isinstance(data, dict) else {}


def _remember_hash(key: str, entry: dict[str, Any]) -> None:
    from pipelines.core.jobs import atomic_write_bytes

    # Read again just before writing, so entries another process added meanwhile are kept.
    cache = _read_hash_cache()
    cache[key] = entry
    atomic_write_bytes(_hash_cache_path(), json.dumps(cache, indent=1, sort_keys=True).encode("utf-8"))


# ------------------------------------------------------------------------------------------ infotext fields
@dataclass(frozen=True)
class ControlNetInfo:
    """One ControlNet unit as sd-webui-controlnet records it (`module` is its preprocessor; "none" when the
    condition image was given ready-made). `model_hash` (full or short sha256) adds A1111's " [1234abcd]"."""

    model: str
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    module: str = "none"
    model_hash: str | None = None


def _plain(text: Any) -> str:
    """sd-webui-controlnet refuses unit values holding ',' or ':' (its parser splits on them); A1111 removes
    them from LoRA names for the same reason."""
    return str(text).replace(",", "").replace(":", "")


def _number(value: float | int) -> float | int:
    """7.0 -> 7, as A1111 writes a whole CFG scale; other numbers unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def controlnet_unit_text(unit: ControlNetInfo | Mapping[str, Any]) -> str:
    """'Module: none, Model: name [hash8], Weight: 1, Guidance Start: 0, Guidance End: 1' (sd-webui-controlnet)."""
    if isinstance(unit, Mapping):
        unit = _unit_from_mapping(unit)
    model = _plain(model_label(unit.model))
    if unit.model_hash:
        model = f"{model} [{unit.model_hash[:CONTROLNET_HASH_CHARS]}]"
    fields = {"Module": _plain(unit.module), "Model": model, "Weight": _number(float(unit.weight)),
              "Guidance Start": _number(float(unit.guidance_start)), "Guidance End": _number(float(unit.guidance_end))}
    return ", ".join(f"{key}: {value}" for key, value in fields.items())


_UNIT_ALIASES = {"start": "guidance_start", "end": "guidance_end", "scale": "weight"}


def _unit_from_mapping(unit: Mapping[str, Any]) -> ControlNetInfo:
    """ControlNetInfo from a mapping of its fields ("start", "end" and "scale" are accepted for the guidance
    fraction and the weight); an unknown key is an error, so a misspelt one is not silently dropped."""
    fields = {_UNIT_ALIASES.get(key, key): value for key, value in unit.items()}
    return ControlNetInfo(**fields)


def parse_controlnet_unit(text: str) -> dict[str, str]:
    """A 'ControlNet N' value back into its fields ({"Module": "canny", "Model": ..., "Weight": "1.0", ...})."""
    fields = {}
    for item in text.split(","):
        key, sep, value = item.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def lora_hashes_text(loras: Iterable[Any]) -> str | None:
    """'name: hash, name2: hash2' as A1111's Lora extension writes it (name without ':' and ',')."""
    pairs = []
    for lora in loras:
        name, short_hash = (lora.name, lora.short_hash) if hasattr(lora, "short_hash") else lora
        if short_hash:
            pairs.append(f"{_plain(name)}: {short_hash}")
    return ", ".join(pairs) or None


def embedding_short_hash(path: str | os.PathLike) -> str:
    """A1111's "TI hashes" value of an embedding file: the sha256 of the whole file, first 12 hex digits."""
    return file_sha256(path)[:EMBEDDING_HASH_CHARS]


def ti_hashes_text(embeddings: Iterable[tuple[str, str]]) -> str | None:
    """'name: hash, name2: hash2' for the embeddings a prompt used, as A1111 writes "TI hashes"."""
    pairs = [f"{_plain(name)}: {short_hash}" for name, short_hash in embeddings if short_hash]
    return ", ".join(pairs) or None


def parse_lora_hashes(text: str) -> dict[str, str]:
    """A1111's "Lora hashes" value -> {name: hash}."""
    hashes = {}
    for item in text.split(","):
        name, sep, short_hash = item.rpartition(":")
        if sep and name.strip():
            hashes[name.strip()] = short_hash.strip()
    return hashes


def model_label(name: str) -> str:
    """What A1111 writes as "Model": a checkpoint file's name without folder and extension; ids as given."""
    text = str(name)
    if text.lower().endswith(_WEIGHT_SUFFIXES):
        return Path(text.replace("\\", "/")).stem
    return text


def app_version() -> str:
    """"anime-style-lab 0.1.0" (from pyproject.toml), written as the infotext's Version."""
    try:
        project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
        return f"{APP_NAME} {project['version']}"
    except (OSError, KeyError, ValueError):
        return APP_NAME


def infotext_settings(*, steps: int, sampler: str, schedule: str | None, cfg_scale: float, seed: int, width: int,
                      height: int, model_name: str, model_hash: str | None = None, clip_skip: int = 1,
                      loras: Iterable[Any] = (), controlnets: Iterable[ControlNetInfo | Mapping[str, Any]] = (),
                      denoising: float | None = None, extra: Mapping[str, Any] | None = None,
                      embeddings: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """The settings line of A1111's infotext, in A1111's order, for `pngmeta.save_png(image, path, settings,
    prompt, negative_prompt)`.

    `loras`: LoraFile-like objects (`.name`, `.short_hash`) or (name, short hash) pairs, named as in the prompt.
    `controlnets`: ControlNetInfo or mappings of its fields. `embeddings`: (name, short hash) of each embedding the
    prompt or negative prompt used (see `embedding_short_hash`). `extra`: further keys (a None value is left out),
    placed after A1111's own fields and before the LoRA/ControlNet ones; a key A1111 already has is replaced
    in place. Values that need it (commas, colons) are quoted by `format_a1111`, as A1111's `quote` does.
    """
    settings: dict[str, Any] = {
        "Steps": int(steps),
        "Sampler": sampler,
        "Schedule type": schedule,
        "CFG scale": _number(float(cfg_scale)),
        "Seed": int(seed),
        "Size": f"{int(width)}x{int(height)}",
        "Model hash": model_hash[:MODEL_HASH_CHARS] if model_hash else None,
        "Model": model_label(model_name),
        "Denoising strength": _number(float(denoising)) if denoising is not None else None,
        "Clip skip": int(clip_skip) if clip_skip > 1 else None,  # A1111 writes it only when > 1
    }
    settings.update(extra or {})
    for index, unit in enumerate(controlnets):
        settings[f"ControlNet {index}"] = controlnet_unit_text(unit)
    settings["Lora hashes"] = lora_hashes_text(loras)
    settings["TI hashes"] = ti_hashes_text(embeddings)
    settings["Version"] = app_version()
    return {key: value for key, value in settings.items() if value is not None}
