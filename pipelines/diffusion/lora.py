"""LoRA files: read them (diffusers, peft and kohya/A1111 layouts), hash them as A1111 does, export to kohya,
and apply them to a pipeline inside a `with` block that leaves the shared pipeline exactly as it found it.

Loading and key conversion are diffusers' own (`load_lora_weights` reads kohya files through
`_convert_non_diffusers_lora_to_diffusers`; export goes through `convert_state_dict_to_kohya`); this module adds the
checks users need (safetensors only, which base model a file was made for, plain messages) and fixes what the
export misses for A1111 (SD-1.5's `lora_te_` prefix, `text_model.` in the text-encoder names, the alpha value).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import UserError
from pipelines.core.safeweights import MAX_HEADER_BYTES, check_safetensors, load_safetensors, refuse_pickle_name
from pipelines.core.userjson import parse_json, read_json

if TYPE_CHECKING:
    from torch import Tensor

LAYOUTS = ("diffusers", "kohya", "peft")
BASES = ("sd15", "sdxl", "unknown")
BASE_LABELS = {"sd15": "Stable Diffusion 1.x", "sdxl": "SDXL", "unknown": "an unknown base model"}

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
DIFFUSERS_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.")
KOHYA_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha", ".dora_scale")
DOWN_SUFFIXES = (".lora_down.weight", ".lora.down.weight", ".lora_A.weight", ".lora_linear_layer.down.weight")
UP_SUFFIXES = (".lora_up.weight", ".lora.up.weight", ".lora_B.weight", ".lora_linear_layer.up.weight")
# LyCORIS variants A1111 reads but diffusers cannot (LoHa, LoKr, OFT, IA3, GLoRA, full diff).
LYCORIS_SUFFIXES = (
    ".hada_w1_a",
    ".lokr_w1",
    ".lokr_w1_a",
    ".oft_blocks",
    ".oft_diag",
    ".on_input",
    ".a1.weight",
    ".diff",
)
CLIP_TEXT_ROOTS = ("encoder.", "embeddings.", "final_layer_norm.")
TEXT_ENCODER_HINTS = ("self_attn", "text_model", "mlp.fc1", "mlp.fc2", "encoder.layers.")
ADDNET_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class LoraFile:
    name: str  # the file stem, as A1111 names a LoRA (<lora:name:w>)
    path: Path
    layout: str  # "diffusers" | "kohya" | "peft"
    base: str  # "sd15" | "sdxl" | "unknown"
    short_hash: str  # A1111's "Lora hashes" value (12 hex)


# ----------------------------------------------------------------------------------------------------- files


def installed_loras(folder: str | os.PathLike) -> dict[str, Path]:
    """`{name: path}` for the `*.safetensors` files under `folder` (subfolders too, like A1111's Lora folder).

    The name is the file stem; when two files share a stem the one nearer the top (then first by path) wins.
    """
    root = Path(folder)
    if not root.is_dir():
        return {}
    files = [p for p in root.rglob("*") if p.suffix.lower() == ".safetensors" and p.is_file()]
    found: dict[str, Path] = {}
    for path in sorted(files, key=lambda p: (len(p.relative_to(root).parts), str(p))):
        found.setdefault(path.stem, path)
    return found


def lora_short_hash(path: str | os.PathLike) -> str:
    """A1111's LoRA hash: the first 12 hex digits of the sha256 of the file after its safetensors header.

    This is the "addnet" hash: A1111 `modules/hashes.py` `addnet_hash_safetensors` (taken from kohya-ss sd-scripts
    `library/train_util.py`) hashes the bytes after the 8-byte header length and the JSON header, and
    `extensions-builtin/Lora/network.py` `NetworkOnDisk.set_hash` keeps `hash[0:12]` as `shorthash` — preferring a
    `sshs_model_hash` that kohya's trainer stored in the metadata, so we do too (when it is a real sha256).
    Hashing only the tensor bytes keeps the hash when someone edits the metadata.
    """
    header = check_safetensors(path)  # refuses pickles before we read further
    stored = str((header.get("__metadata__") or {}).get("sshs_model_hash", "")).strip().lower()
    if re.fullmatch(r"[0-9a-f]{64}", stored):
        return stored[:12]
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        handle.seek(8 + header_len)
        while chunk := handle.read(ADDNET_BLOCK):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def read_lora(path: str | os.PathLike) -> tuple[LoraFile, dict[str, Tensor]]:
    """Read a LoRA safetensors file; return its description and a state dict ready for `applied_loras`.

    The state dict keeps the file's keys, except that a peft file's keys get the `unet.`/`text_encoder.` prefix
    diffusers expects, and a `lora_alpha` recorded in the file's `lora_adapter_metadata` (diffusers'
    `save_lora_weights`) or, for a peft file, in an `adapter_config.json` beside it, is folded into the up weights:
    diffusers ignores file metadata when it is given a dict instead of a path.
    """
    path = Path(path)
    refuse_pickle_name(path, "LoRAs")
    tensors, metadata = load_safetensors(path)
    if not tensors:
        raise UserError(f"{path.name} holds no tensors, so it is not a LoRA.")
    layout = detect_layout(tensors, path.name)
    base = detect_base(tensors, metadata)
    state_dict = dict(tensors)
    if layout == "diffusers":
        state_dict = _fold_diffusers_alpha(state_dict, metadata)
    elif layout == "peft":
        config = _peft_adapter_config(path) or _unprefixed_adapter_metadata(metadata)
        state_dict = _peft_to_diffusers_keys(_fold_alpha(state_dict, config, prefix=""))
    return LoraFile(path.stem, path, layout, base, lora_short_hash(path)), state_dict


def detect_layout(state_dict: Mapping[str, Any], filename: str = "this file") -> str:
    """The layout ("kohya", "diffusers" or "peft") from the key names; else a UserError guessing what it is."""
    keys = list(state_dict)
    if any(k.startswith(KOHYA_PREFIXES) and k.endswith(LYCORIS_SUFFIXES) for k in keys):
        raise UserError(
            f"{filename} is a LyCORIS file (LoHa/LoKr/OFT…), not a plain LoRA; only plain LoRAs can be used here."
        )
    if all(k.startswith(KOHYA_PREFIXES) and k.endswith(KOHYA_SUFFIXES) for k in keys) and any(
        k.endswith(".lora_down.weight") for k in keys
    ):
        return "kohya"
    if any(k.endswith(DOWN_SUFFIXES) for k in keys) and all("lora" in k for k in keys):
        if all(k.startswith(DIFFUSERS_PREFIXES) for k in keys):
            return "diffusers"
        if not any(k.startswith(DIFFUSERS_PREFIXES + KOHYA_PREFIXES) for k in keys):
            return "peft"
    raise UserError(f"{filename} is not a LoRA: {_what_it_looks_like(keys)}")


def detect_base(state_dict: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> str:
    """The base model ("sdxl", "sd15" or "unknown"): kohya's metadata first (as A1111's `detect_version`), then key
    names and the input width of the cross-attention (2048 SDXL, 768 SD 1.x) and text encoder (768 SD 1.x, 1280
    SDXL's second)."""
    metadata = metadata or {}
    version = str(metadata.get("ss_base_model_version", "")).lower()
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v1"):
        return "sd15"
    if version or str(metadata.get("ss_v2", "")) == "True":
        return "unknown"  # SD 2.x and others
    keys = list(state_dict)
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
        return "sdxl"
    for key in keys:
        if "attn2" in key and re.search(r"[._]to_[kv][._]", key) and key.endswith(DOWN_SUFFIXES):
            return {2048: "sdxl", 768: "sd15"}.get(state_dict[key].shape[-1], "unknown")
    for key in keys:
        if "q_proj" in key and key.endswith(DOWN_SUFFIXES) and key.startswith(("lora_te", "text_encoder")):
            return {768: "sd15", 1280: "sdxl"}.get(state_dict[key].shape[-1], "unknown")
    return "unknown"


def _what_it_looks_like(keys: Sequence[str]) -> str:
    joined = " ".join(keys[:200])
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in keys):
        return "it looks like a full Stable Diffusion checkpoint — put it with the models, not the LoRAs."
    if any(k in ("emb_params", "string_to_param", "clip_l", "clip_g") for k in keys) or len(keys) == 1:
        return "it looks like a textual-inversion embedding — put it with the embeddings, then write its name."
    if "lora" not in joined.lower():
        return "none of its tensors are LoRA weights (no lora_down/lora_up, lora.down/lora.up or lora_A/lora_B keys)."
    return "its tensor names follow no LoRA layout this app knows (diffusers, peft or kohya/A1111)."


def _peft_adapter_config(path: Path) -> dict:
    """peft keeps lora_alpha in adapter_config.json beside adapter_model.safetensors (plain JSON, safe to read)."""
    config_path = path.with_name("adapter_config.json")
    try:
        config = read_json(config_path) if config_path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _unprefixed_adapter_metadata(metadata: Mapping[str, str]) -> dict:
    """A peft file may carry its LoraConfig (r, lora_alpha, …) as JSON under diffusers' metadata key."""
    try:
        config = parse_json(metadata.get("lora_adapter_metadata") or "{}", "The LoRA's adapter metadata",
                            max_bytes=MAX_HEADER_BYTES)
    except ValueError:
        return {}
    return config if isinstance(config, dict) and "lora_alpha" in config else {}


def _fold_diffusers_alpha(state_dict: dict, metadata: Mapping[str, str]) -> dict:
    """diffusers' save_lora_weights stores each part's LoraConfig as "<part>.<field>" in `lora_adapter_metadata`."""
    try:
        adapter = parse_json(metadata.get("lora_adapter_metadata") or "{}", "The LoRA's adapter metadata",
                             max_bytes=MAX_HEADER_BYTES)
    except ValueError:
        return state_dict
    if not isinstance(adapter, dict):
        return state_dict
    for part in ("unet", "text_encoder", "text_encoder_2"):
        config = {k.removeprefix(f"{part}."): v for k, v in adapter.items() if k.startswith(f"{part}.")}
        state_dict = _fold_alpha(state_dict, config, prefix=f"{part}.")
    return state_dict


def _fold_alpha(state_dict: dict, config: Mapping[str, Any], *, prefix: str) -> dict:
    """Multiply each up weight by peft's scaling (lora_alpha / r, or / sqrt(r) with rsLoRA) so that loading the
    dict with diffusers' default alpha = r gives the same layers as loading the file with its config."""
    from peft.utils.other import get_pattern_key

    default_alpha = config.get("lora_alpha")
    alpha_pattern = config.get("alpha_pattern") or {}
    if default_alpha is None and not alpha_pattern:
        return state_dict
    folded = dict(state_dict)
    for key, up in state_dict.items():
        if not key.startswith(prefix) or not key.endswith(UP_SUFFIXES):
            continue
        module, down_key = _module_and_down_key(key, state_dict)
        if down_key is None:
            continue
        rank = state_dict[down_key].shape[0]
        name = _peft_module_name(module.removeprefix(prefix))
        alpha = alpha_pattern.get(get_pattern_key(list(alpha_pattern), name), default_alpha)
        if alpha is None:
            continue
        scale = float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)
        if scale != 1.0:
            folded[key] = (up.float() * scale).to(up.dtype)
    return folded


def _module_and_down_key(up_key: str, state_dict: Mapping[str, Any]) -> tuple[str, str | None]:
    for up_suffix, down_suffix in zip(UP_SUFFIXES, DOWN_SUFFIXES, strict=True):
        if up_key.endswith(up_suffix):
            module = up_key.removesuffix(up_suffix)
            down_key = module + down_suffix
            return module, down_key if down_key in state_dict else None
    return up_key, None


def _peft_module_name(module: str) -> str:
    """The module path as peft's patterns see it (diffusers' old `to_out_lora` style aside)."""
    return module.removeprefix("base_model.model.")


def _peft_to_diffusers_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """peft's `adapter_model.safetensors` keys have no component prefix: give them the one diffusers expects."""
    converted = {}
    for key, tensor in state_dict.items():
        bare = key.removeprefix("base_model.model.")
        part = "text_encoder" if any(hint in bare for hint in TEXT_ENCODER_HINTS) else "unet"
        converted[f"{part}.{bare}"] = tensor
    return converted


# ----------------------------------------------------------------------------------------------------- export


def diffusers_to_kohya(state_dict: Mapping[str, Tensor], *, alpha: float | None = None) -> dict[str, Tensor]:
    """Convert a diffusers or peft LoRA state dict (UNet and text encoder) to kohya/A1111 keys.

    `lora_unet_<module path with _>.lora_down.weight` / `.lora_up.weight` / `.alpha` and, for SD 1.x,
    `lora_te_text_model_encoder_layers_<i>_…`. `alpha` is the training `lora_alpha` (the file then scales by
    alpha / rank, as A1111 and diffusers do); None writes alpha = rank, i.e. the weights as they are.
    Built on diffusers' `convert_state_dict_to_kohya`, which writes SD-1.5 text-encoder keys as `lora_te1_`
    (A1111's SD-1 loader only matches `lora_te_text_model_encoder_layers_…`, `extensions-builtin/Lora/networks.py`
    `convert_diffusers_name_to_compvis`), keeps transformers 5's flattened CLIP names (no `text_model.`) and
    stores alpha as an int64.
    """
    import torch
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    if state_dict and all(k.startswith(KOHYA_PREFIXES) for k in state_dict):
        kohya = dict(state_dict)  # already kohya: only the alpha may change
    else:
        kohya = convert_state_dict_to_kohya(_to_prefixed_peft(state_dict))
    has_second_text_encoder = any(k.startswith("lora_te2_") for k in kohya)
    exported: dict[str, Tensor] = {}
    for key, tensor in kohya.items():
        if not has_second_text_encoder and key.startswith("lora_te1_"):
            key = "lora_te_" + key.removeprefix("lora_te1_")
        if key.endswith(".alpha"):
            value = float(alpha) if alpha is not None else float(tensor.item())
            tensor = torch.tensor(value, dtype=torch.float32)
        exported[key] = tensor.contiguous()
    _check_kohya_keys(exported)
    return exported


def _to_prefixed_peft(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys as `unet.<module>.lora_A.weight` / `text_encoder.text_model.<module>.lora_A.weight` (what diffusers'
    `convert_state_dict_to_kohya` turns into A1111 names), from any diffusers or peft spelling."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    parts: dict[str, dict[str, Tensor]] = {}
    for key, tensor in state_dict.items():
        if key.endswith(".alpha"):
            continue  # diffusers-format files carry no alpha tensors; kohya gets its own below
        bare = key.removeprefix("base_model.model.")
        part, _, rest = bare.partition(".")
        if part not in ("unet", "text_encoder", "text_encoder_2"):
            part, rest = ("text_encoder" if any(h in bare for h in TEXT_ENCODER_HINTS) else "unet"), bare
        parts.setdefault(part, {})[rest] = tensor
    if not any(k.endswith(DOWN_SUFFIXES) for part in parts.values() for k in part):
        raise UserError("These weights are not a LoRA (no lora_A/lora_B or lora.down/lora.up tensors) to export.")
    converted: dict[str, Tensor] = {}
    for part, tensors in parts.items():
        if any(".lora_A." in k or ".lora_B." in k for k in tensors):
            peft_keys = tensors
        elif part == "unet":
            peft_keys = convert_unet_state_dict_to_peft(tensors)
        else:
            try:
                peft_keys = convert_state_dict_to_peft(tensors)
            except ValueError as err:
                raise UserError(f"Cannot tell the layout of this LoRA's {part} weights: {err}") from err
        for key, tensor in peft_keys.items():
            if part.startswith("text_encoder") and key.startswith(CLIP_TEXT_ROOTS):
                key = "text_model." + key  # transformers 5 flattened CLIPTextModel; A1111 keeps text_model_
            converted[f"{part}.{key}"] = tensor
    return converted


def _check_kohya_keys(state_dict: Mapping[str, Tensor]) -> None:
    odd = [k for k in state_dict if not (k.startswith(KOHYA_PREFIXES) and k.endswith(KOHYA_SUFFIXES))]
    if odd:
        raise UserError(f"Could not convert these LoRA weights to the kohya layout: {', '.join(odd[:5])}")


# ----------------------------------------------------------------------------------------------------- apply


@contextmanager
def applied_loras(pipe: Any, loras: Sequence[tuple[LoraFile, Mapping[str, Tensor], float]]) -> Iterator[None]:
    """Inside the block the pipeline runs with these LoRAs at their weights (UNet and text encoder alike, as A1111's
    `<lora:name:w>`); on leaving, even by an exception, they are taken off again.

    When the pipeline carried no adapters before, leaving also unloads peft's wrapper layers, so the (shared, cached)
    UNet and text encoder have their original modules and parameters back. Adapters it already had stay loaded and
    are re-activated afterwards (at weight 1: diffusers cannot read their old weights back). The same file twice
    is loaded once, with the weights added (a LoRA is linear in its weight). Not safe for two threads on one pipe.
    """
    merged = _merge_same_files(loras)
    if not merged:
        yield
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise UserError(f"This pipeline ({type(pipe).__name__}) cannot take LoRAs.")
    for lora, _, _ in merged:
        _check_base(pipe, lora)
    before = _adapter_names(pipe)
    active_before = list(pipe.get_active_adapters()) if before else []
    names: list[str] = []
    try:
        for lora, state_dict, _ in merged:
            name = _free_adapter_name(pipe, lora)
            names.append(name)  # recorded before loading, so a half-loaded adapter is removed too
            _load_adapter(pipe, lora, state_dict, name)
        pipe.set_adapters(names, [float(weight) for _, _, weight in merged])
        yield
    finally:
        _take_off(pipe, names, had_adapters=bool(before), active_before=active_before)


def _merge_same_files(loras: Sequence[tuple[LoraFile, Mapping[str, Tensor], float]]) -> list[tuple]:
    merged: dict[str, list] = {}
    for lora, state_dict, weight in loras:
        key = lora.short_hash or str(lora.path)
        if key in merged:
            merged[key][2] += float(weight)
        else:
            merged[key] = [lora, state_dict, float(weight)]
    return [tuple(item) for item in merged.values()]


def _check_base(pipe: Any, lora: LoraFile) -> None:
    from .models import base_of

    pipe_base = base_of(pipe)
    if lora.base != "unknown" and lora.base != pipe_base:
        raise UserError(
            f"The LoRA {lora.path.name} was made for a different base model ({BASE_LABELS[lora.base]}) than the "
            f"model in use ({BASE_LABELS[pipe_base]}); choose a LoRA made for this model, or a model of its kind."
        )


def _adapter_names(pipe: Any) -> set[str]:
    return {name for names in pipe.get_list_adapters().values() for name in names}


def _free_adapter_name(pipe: Any, lora: LoraFile) -> str:
    stem = "asl_" + (lora.short_hash or re.sub(r"\W", "_", lora.name))
    taken = _adapter_names(pipe)
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    return name


def _load_adapter(pipe: Any, lora: LoraFile, state_dict: Mapping[str, Tensor], name: str) -> None:
    try:
        pipe.load_lora_weights(dict(state_dict), adapter_name=name)  # a copy: diffusers pops keys from kohya dicts
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError) as err:
        text = str(err)
        if "size mismatch" in text or "not found in the base model" in text or "shape" in text:
            raise UserError(
                f"The LoRA {lora.path.name} was made for a different base model: its layers do not fit this "
                f"model's ({text.splitlines()[-1].strip()[:200]})"
            ) from err
        raise UserError(f"The LoRA {lora.path.name} could not be loaded: {text[:300]}") from err
    if name not in _adapter_names(pipe):  # diffusers only warns when no key matched
        raise UserError(
            f"The LoRA {lora.path.name} was made for a different base model: none of its layers exist in this model."
        )


def _take_off(pipe: Any, names: Sequence[str], *, had_adapters: bool, active_before: Sequence[str]) -> None:
    present = [name for name in names if name in _adapter_names(pipe)]
    if present:
        pipe.delete_adapters(present)
    if not had_adapters:
        # delete_adapters leaves peft's LoraLayer wrappers in place; unloading puts the original modules back.
        if names:
            pipe.unload_lora_weights()
    elif active_before:
        pipe.set_adapters(list(active_before))
