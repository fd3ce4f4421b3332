"""Generation metadata in PNGs: A1111-compatible `parameters` text plus a JSON chunk.

The A1111 text format (also read by Fooocus' meta_parser, civitai and others) is:

    <prompt>
    Negative prompt: <negative prompt>
    Steps: 20, Sampler: Euler a, Seed: 42, Model: sd15, ...

The JSON chunk (`asl_json`) holds the full parameters losslessly; the text is for other tools.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from .jobs import atomic_path

PARAMETERS_KEY = "parameters"
JSON_KEY = "asl_json"
# One "Key: value" pair of A1111's last line; values may be quoted and contain commas.
_PAIR = re.compile(r'\s*([\w][\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _format_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if any(ch in text for ch in ',:\n"'):
        return json.dumps(text)
    return text


def format_a1111(prompt: str, negative_prompt: str, settings: dict[str, Any]) -> str:
    lines = [prompt.strip()] if prompt.strip() else []
    if negative_prompt.strip():
        lines.append(f"Negative prompt: {negative_prompt.strip()}")
    lines.append(", ".join(f"{key}: {_format_value(value)}" for key, value in settings.items()))
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
        return json.loads(text[JSON_KEY])
    if PARAMETERS_KEY in text:
        return parse_a1111(text[PARAMETERS_KEY])
    return None
