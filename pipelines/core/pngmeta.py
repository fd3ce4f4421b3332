"""Generation metadata in PNGs: A1111-compatible `parameters` text plus a JSON chunk.

The A1111 text format (also read by Fooocus' meta_parser, civitai and others) is:

    <prompt>
    Negative prompt: <negative prompt>
    Steps: 20, Sampler: Euler a, Seed: 42, Model: sd15, ...

The JSON chunk (`asl_json`) holds the full parameters losslessly; the text is for other tools.

`read_generation_parameters` reads any of three producers into one normalised dict: ours (the JSON chunk),
A1111 and its forks (the `parameters` text chunk, or the EXIF UserComment of their JPEG/WebP files) and
ComfyUI (the API-format `prompt` graph it stores as JSON). Nothing is ever unpickled; chunk sizes are capped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .errors import UserError
from .jobs import atomic_path
from .userjson import JsonInputError, parse_json

PARAMETERS_KEY = "parameters"
JSON_KEY = "asl_json"
# One "Key: value" pair of A1111's last line; values may be quoted and contain commas.
_PAIR = re.compile(r'\s*([\w][\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _format_value(value: Any) -> str:
    """A1111's `quote`: str() of numbers and booleans ("True", as A1111 writes them), JSON for containers,
    and the whole value JSON-quoted when it holds a comma, colon or newline (a quote too, so it reads back)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float):
        text = str(value)
    else:
        text = json.dumps(value, ensure_ascii=False)
    if any(ch in text for ch in ',:\n"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def format_a1111(prompt: str, negative_prompt: str, settings: dict[str, Any]) -> str:
    """A1111's infotext; a setting whose value is None is left out, as A1111 does."""
    lines = [prompt.strip()] if prompt.strip() else []
    if negative_prompt.strip():
        lines.append(f"Negative prompt: {negative_prompt.strip()}")
    lines.append(", ".join(f"{key}: {_format_value(value)}" for key, value in settings.items() if value is not None))
    return "\n".join(lines)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value[1:-1]
    return value


def parse_a1111(text: str) -> dict[str, Any]:
    """Parse A1111 `parameters` text into {"prompt", "negative_prompt", "settings"}."""
    lines = text.strip().split("\n")
    settings: dict[str, str] = {}
    if lines and len(_PAIR.findall(lines[-1])) >= 3:
        settings = {key.strip(): _unquote(value) for key, value in _PAIR.findall(lines.pop())}
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in lines:
        line = line.strip()  # as A1111's parse_generation_parameters
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line.removeprefix("Negative prompt:").strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return {"prompt": "\n".join(prompt_lines).strip(), "negative_prompt": "\n".join(negative_lines).strip(),
            "settings": settings}


def save_png(image: Image.Image, path: str | os.PathLike, settings: dict[str, Any], prompt: str = "",
             negative_prompt: str = "") -> Path:
    """Save `image` as PNG with both metadata chunks, atomically."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, format_a1111(prompt, negative_prompt, settings))
    payload = {"prompt": prompt, "negative_prompt": negative_prompt, "settings": settings}
    info.add_text(JSON_KEY, json.dumps(payload, default=str))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def read_png_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """Metadata of a PNG written by this app (JSON chunk) or by A1111-style tools (text chunk)."""
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or image.info)
    if JSON_KEY in text:
        return parse_json(text[JSON_KEY], f"The metadata of {Path(path).name}", max_bytes=MAX_METADATA_CHARS * 4)
    if PARAMETERS_KEY in text:
        return parse_a1111(text[PARAMETERS_KEY])
    return None


# ------------------------------------------------------------------------------------------ reading any producer
SOURCE_OURS, SOURCE_A1111, SOURCE_COMFYUI = "anime-style-lab", "a1111", "comfyui"
COMFYUI_PROMPT_KEY = "prompt"
NO_PARAMETERS = "this PNG has no generation parameters we can read"
# A metadata chunk longer than this is not parsed (A1111 infotexts are a few KB, ComfyUI API graphs tens of KB).
MAX_METADATA_CHARS = 1_000_000
# Reading chunks stored after the pixel data means decoding the image; beyond this size we do not.
MAX_SCAN_PIXELS = 64_000_000
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
_RAW_SHOWN_CHARS = 100_000


class MetadataReadError(UserError, ValueError):
    """A file whose generation parameters cannot be read, with a message for the user."""


def read_generation_parameters(source: str | os.PathLike | Image.Image) -> dict[str, Any]:
    """Generation parameters of an image made here, by A1111 (and its forks) or by ComfyUI.

    Returns {"source": "anime-style-lab"|"a1111"|"comfyui", "prompt", "negative_prompt",
    "settings": {A1111-named keys: str or number}, "raw": {chunk name: text}} and, for ComfyUI graphs, "loras"
    ([{"name", "strength_model", "strength_clip"}]). Raises MetadataReadError (a UserError) with a plain
    message otherwise.
    """
    chunks = _metadata_chunks(source)
    if JSON_KEY in chunks:
        ours = _load_json(chunks[JSON_KEY])
        if isinstance(ours, dict) and isinstance(ours.get("settings"), dict):
            return {"source": SOURCE_OURS, "prompt": str(ours.get("prompt") or ""),
                    "negative_prompt": str(ours.get("negative_prompt") or ""), "settings": dict(ours["settings"]),
                    "raw": _shown(chunks, JSON_KEY)}
    for key in (PARAMETERS_KEY, "exif UserComment"):
        if key in chunks and not chunks[key].lstrip().startswith("{"):  # Fooocus' JSON scheme is not A1111 text
            parsed = parse_a1111(chunks[key])
            if parsed["settings"] or parsed["prompt"]:
                return {"source": SOURCE_A1111, **parsed, "raw": _shown(chunks, key)}
    if COMFYUI_PROMPT_KEY in chunks:
        graph = _load_json(chunks[COMFYUI_PROMPT_KEY])
        if isinstance(graph, dict):
            return {"source": SOURCE_COMFYUI, **read_comfyui_prompt(graph),
                    "raw": _shown(chunks, COMFYUI_PROMPT_KEY)}
    raise MetadataReadError(f"{_name(source)}: {NO_PARAMETERS}.")


def _name(source: Any) -> str:
    return Path(source).name if isinstance(source, str | os.PathLike) else "The image"


def _shown(chunks: dict[str, str], key: str) -> dict[str, str]:
    text = chunks[key]
    return {key: text if len(text) <= _RAW_SHOWN_CHARS else text[:_RAW_SHOWN_CHARS] + " …(cut)"}


def _load_json(text: str) -> Any:
    try:
        return parse_json(text, max_bytes=MAX_METADATA_CHARS * 4)
    except JsonInputError:  # a damaged or hostile chunk is treated as absent
        return None


def _metadata_chunks(source: str | os.PathLike | Image.Image) -> dict[str, str]:
    """The text chunks (and A1111's EXIF UserComment) of an image, each at most MAX_METADATA_CHARS long."""
    if isinstance(source, Image.Image):
        return _chunks_of(source, "The image")
    name = _name(source)
    try:
        with Image.open(source) as image:
            return _chunks_of(image, name)
    except FileNotFoundError as err:
        raise MetadataReadError(f"{name}: the file does not exist.") from err
    except MetadataReadError:
        raise
    except Image.DecompressionBombError as err:
        raise MetadataReadError(f"{name} is too large to open safely.") from err
    except UnidentifiedImageError as err:  # PIL's text names the server's temporary path: not shown
        raise MetadataReadError(f"{name} is not an image we can read. Drop a PNG (or an A1111 JPEG/WebP).") from err
    except (OSError, ValueError, SyntaxError) as err:  # PIL: cut short, bad chunks, oversized text chunks
        from .images import metadata_bomb_message

        bomb = metadata_bomb_message(name, err) if isinstance(err, ValueError) else None
        raise MetadataReadError(bomb or f"{name} is damaged or incomplete, so its metadata cannot be read.") from err


def _chunks_of(image: Image.Image, name: str) -> dict[str, str]:
    chunks = {key: value for key, value in image.info.items() if isinstance(value, str)}
    known = {JSON_KEY, PARAMETERS_KEY, COMFYUI_PROMPT_KEY}
    if image.format == "PNG" and not known & chunks.keys() and image.width * image.height <= MAX_SCAN_PIXELS:
        # Text chunks may also follow the pixel data; PIL reads those only when it decodes the image.
        chunks.update({key: value for key, value in (getattr(image, "text", None) or {}).items()
                       if isinstance(value, str)})
    comment = _exif_user_comment(image)
    if comment:
        chunks["exif UserComment"] = comment
    too_long = [key for key, value in chunks.items() if key in known | {"exif UserComment"}
                and len(value) > MAX_METADATA_CHARS]
    if too_long:
        raise MetadataReadError(f"{name}: the {too_long[0]!r} metadata is too long to read "
                                f"(over {MAX_METADATA_CHARS:,} characters).")
    return chunks


def _exif_user_comment(image: Image.Image) -> str | None:
    """A1111 writes its infotext into JPEG/WebP EXIF UserComment (piexif: b"UNICODE\\0" + UTF-16 big-endian)."""
    try:
        raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:  # noqa: BLE001 - a damaged EXIF block only means there is no comment to read
        return None
    if isinstance(raw, str):
        return raw.strip("\x00") or None
    if not isinstance(raw, bytes) or len(raw) <= 8 or len(raw) > 2 * MAX_METADATA_CHARS:
        return None
    prefix, body = raw[:8], raw[8:]
    if prefix.startswith(b"UNICODE"):
        # piexif and A1111 write big-endian; some tools write little-endian: the zero bytes of ASCII text tell.
        little = body[1::2].count(0) > body[0::2].count(0)
        text = body.decode("utf-16-le" if little else "utf-16-be", errors="replace")
    elif prefix.startswith(b"ASCII"):
        text = body.decode("ascii", errors="replace")
    else:
        text = body.decode("utf-8", errors="replace")
    return text.strip("\x00").strip() or None


# ------------------------------------------------------------------------------------------ ComfyUI graphs
# ComfyUI's sampler and scheduler names (k-diffusion function names) -> A1111's names, where they are the same
# algorithm. The "_gpu" variants differ only in where their noise is drawn.
COMFYUI_SAMPLERS = {
    "euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS", "dpm_fast": "DPM fast", "dpm_adaptive": "DPM adaptive", "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_sde": "DPM++ SDE", "dpmpp_sde_gpu": "DPM++ SDE", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE", "dpmpp_3m_sde": "DPM++ 3M SDE", "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
    "ddim": "DDIM", "uni_pc": "UniPC", "lcm": "LCM",
}
# A1111 (1.9+) ported ComfyUI's schedulers under these labels (modules/sd_schedulers.py).
COMFYUI_SCHEDULERS = {
    "normal": "Normal", "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform",
    "simple": "Simple", "ddim_uniform": "DDIM", "beta": "Beta", "kl_optimal": "KL Optimal",
}
_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")
_CHECKPOINT_NAME_KEYS = ("ckpt_name", "unet_name")
_MAX_WALK = 200  # nodes visited per walk: graphs are small, and a cycle or a huge graph must not hang us
_NOT_CONDITIONING = {"clip", "model", "vae", "control_net", "image", "mask", "pixels", "samples", "latent_image"}


def read_comfyui_prompt(graph: dict[str, Any]) -> dict[str, Any]:
    """{"prompt", "negative_prompt", "settings", "loras"} from a ComfyUI API-format graph (its `prompt` chunk)."""
    graph = {str(key): node for key, node in graph.items() if isinstance(node, dict)}
    sampler_id = _main_sampler(graph)
    if sampler_id is None:
        raise MetadataReadError(f"{NO_PARAMETERS.capitalize()}: the ComfyUI graph has no KSampler node.")
    inputs = graph[sampler_id].get("inputs") or {}

    def scalar(key: str) -> Any:
        return _scalar(graph, inputs.get(key))

    positive, controlnets = _prompt_texts(graph, inputs.get("positive"), "positive")
    negative, _ = _prompt_texts(graph, inputs.get("negative"), "negative")
    checkpoint, loras = _model_chain(graph, inputs.get("model"))
    sampler_raw, scheduler_raw = scalar("sampler_name"), scalar("scheduler")
    settings: dict[str, Any] = {
        "Steps": scalar("steps"),
        "Sampler": COMFYUI_SAMPLERS.get(str(sampler_raw), sampler_raw),
        "Schedule type": COMFYUI_SCHEDULERS.get(str(scheduler_raw), scheduler_raw),
        "CFG scale": scalar("cfg"),
        "Seed": scalar("seed") if "seed" in inputs else scalar("noise_seed"),
        "Size": _latent_size(graph, inputs.get("latent_image")),
        "Model": Path(str(checkpoint).replace("\\", "/")).stem if checkpoint else None,
    }
    denoise = scalar("denoise")
    if isinstance(denoise, int | float) and denoise < 1:
        settings["Denoising strength"] = denoise
    clip_skip = _clip_skip(graph, positive[1] if positive else None)
    if clip_skip > 1:
        settings["Clip skip"] = clip_skip
    for index, unit in enumerate(controlnets):
        settings[f"ControlNet {index}"] = unit
    if loras:
        settings["Loras"] = ", ".join(f"{lora['name']}: {lora['strength_model']}" for lora in loras)
    # The names as ComfyUI wrote them, beside A1111's, so nothing is lost in the mapping.
    settings.update({"ComfyUI sampler": sampler_raw, "ComfyUI scheduler": scheduler_raw,
                     "ComfyUI checkpoint": checkpoint})
    return {"prompt": positive[0] if positive else "", "negative_prompt": negative[0] if negative else "",
            "settings": {key: value for key, value in settings.items() if value is not None}, "loras": loras}


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | int)


def _node(graph: dict[str, Any], link: Any) -> tuple[str, dict[str, Any]] | None:
    if not _is_link(link) or str(link[0]) not in graph:
        return None
    return str(link[0]), graph[str(link[0])]


def _main_sampler(graph: dict[str, Any]) -> str | None:
    """The first-pass sampler: one that starts from an empty latent, else the one with the lowest node id."""
    samplers = sorted((key for key, node in graph.items() if node.get("class_type") in _SAMPLER_NODES),
                      key=lambda key: (len(key), key))
    for key in samplers:
        found = _node(graph, (graph[key].get("inputs") or {}).get("latent_image"))
        if found and "EmptyLatent" in str(found[1].get("class_type")):
            return key
    return samplers[0] if samplers else None


def _scalar(graph: dict[str, Any], value: Any, depth: int = 0) -> Any:
    """A widget value, following a link to a primitive node (seed, int, string nodes) when it is one."""
    if not _is_link(value):
        return value
    found = _node(graph, value)
    if found is None or depth > 8:
        return None
    plain = [item for item in (found[1].get("inputs") or {}).values() if not _is_link(item)]
    for key in ("seed", "value", "int", "float", "text", "string", "number"):
        if key in (found[1].get("inputs") or {}):
            return _scalar(graph, found[1]["inputs"][key], depth + 1)
    return plain[0] if len(plain) == 1 else None


def _prompt_texts(graph: dict[str, Any], link: Any, branch: str) -> tuple[tuple[str, str] | None, list[str]]:
    """(text, id of its text-encode node) reached from a sampler's positive/negative input, and the ControlNet
    units (A1111 form) applied on the way. Conditioning nodes in between are followed; on nodes with both a
    positive and a negative input (ControlNetApplyAdvanced) only the branch being read is."""
    texts: list[tuple[str, str]] = []
    controlnets: list[str] = []
    stack, seen = [link], set()
    while stack and len(seen) < _MAX_WALK:
        found = _node(graph, stack.pop())
        if found is None or found[0] in seen:
            continue
        node_id, node = found
        seen.add(node_id)
        inputs = node.get("inputs") or {}
        kind = str(node.get("class_type"))
        if "TextEncode" in kind:
            for key in ("text", "text_g", "text_l"):
                text = _scalar(graph, inputs.get(key))
                if isinstance(text, str) and text.strip() and text not in [t for t, _ in texts]:
                    texts.append((text, node_id))
            continue
        if kind.startswith("ControlNetApply"):
            controlnets.append(_comfy_controlnet_unit(graph, inputs))
        keys = [branch] if branch in inputs else [key for key in inputs if key not in _NOT_CONDITIONING]
        stack.extend(inputs[key] for key in reversed(keys) if _is_link(inputs.get(key)))
    if not texts:
        return None, controlnets
    return ("\n".join(text for text, _ in texts), texts[0][1]), controlnets


def _comfy_controlnet_unit(graph: dict[str, Any], inputs: dict[str, Any]) -> str:
    loader = _node(graph, inputs.get("control_net"))
    name = (loader[1].get("inputs") or {}).get("control_net_name") if loader else None
    model = Path(str(name).replace("\\", "/")).stem if isinstance(name, str) else "None"
    parts = {"Module": "none", "Model": model, "Weight": _scalar(graph, inputs.get("strength")),
             "Guidance Start": _scalar(graph, inputs.get("start_percent", 0.0)),
             "Guidance End": _scalar(graph, inputs.get("end_percent", 1.0))}
    return ", ".join(f"{key}: {str(value).replace(',', ' ').replace(':', ' ')}" for key, value in parts.items())


def _model_chain(graph: dict[str, Any], link: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """The checkpoint name and the LoRAs (outermost first, as written in the graph) feeding a sampler's model."""
    loras: list[dict[str, Any]] = []
    seen: set[str] = set()
    while (found := _node(graph, link)) is not None and found[0] not in seen and len(seen) < _MAX_WALK:
        seen.add(found[0])
        inputs = found[1].get("inputs") or {}
        for key in _CHECKPOINT_NAME_KEYS:
            if isinstance(inputs.get(key), str):
                return inputs[key], list(reversed(loras))
        if "lora_name" in inputs:
            loras.append({"name": Path(str(inputs["lora_name"]).replace("\\", "/")).stem,
                          "strength_model": _scalar(graph, inputs.get("strength_model")),
                          "strength_clip": _scalar(graph, inputs.get("strength_clip"))})
        link = inputs.get("model")
    return None, list(reversed(loras))


def _latent_size(graph: dict[str, Any], link: Any) -> str | None:
    seen: set[str] = set()
    while (found := _node(graph, link)) is not None and found[0] not in seen and len(seen) < _MAX_WALK:
        seen.add(found[0])
        inputs = found[1].get("inputs") or {}
        width, height = _scalar(graph, inputs.get("width")), _scalar(graph, inputs.get("height"))
        if isinstance(width, int) and isinstance(height, int):
            return f"{width}x{height}"
        link = inputs.get("samples", inputs.get("latent_image"))
    return None


def _clip_skip(graph: dict[str, Any], encoder_id: str | None) -> int:
    """A1111's Clip skip from ComfyUI's CLIPSetLastLayer (stop_at_clip_layer -2 is clip skip 2)."""
    link = (graph.get(encoder_id or "", {}).get("inputs") or {}).get("clip")
    seen: set[str] = set()
    while (found := _node(graph, link)) is not None and found[0] not in seen and len(seen) < _MAX_WALK:
        seen.add(found[0])
        inputs = found[1].get("inputs") or {}
        layer = _scalar(graph, inputs.get("stop_at_clip_layer"))
        if isinstance(layer, int) and layer < 0:
            return -layer
        link = inputs.get("clip")
    return 1
