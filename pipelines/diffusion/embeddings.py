"""Textual-inversion embeddings from safetensors files, in the layouts A1111 reads.

    emb = read_embedding("embeddings/EasyNegative.safetensors")   # name "EasyNegative", vectors [n, 768]
    encode_prompts(pipe, "EasyNegative, lowres", embeddings={emb.name: emb.vectors})

Layouts (A1111's `textual_inversion.load_from_file` rules): one tensor under any key — A1111/kohya's
"emb_params" [n, D], or diffusers' {"<token>": [D] or [n, D]} (e.g. learned_embeds.safetensors) — or SDXL's
{"clip_l": [n, 768], "clip_g": [n, 1280]}. The name is the file stem, as in A1111, whatever token the file holds.
Pickled .pt/.bin files are refused: unpickling a downloaded file can run code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.core.errors import UserError
from pipelines.core.safeweights import check_safetensors, load_safetensors, refuse_pickle_name

if TYPE_CHECKING:
    import torch

SDXL_KEYS = ("clip_l", "clip_g")
MAX_VECTORS = 75  # one prompt chunk
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


@dataclass(frozen=True)
class Embedding:
    name: str
    vectors: torch.Tensor | Mapping[str, torch.Tensor]  # [n, D]; SDXL: {"clip_l": [n, 768], "clip_g": [n, 1280]}

    @property
    def count(self) -> int:
        """How many prompt tokens the embedding takes."""
        first = next(iter(self.vectors.values())) if isinstance(self.vectors, Mapping) else self.vectors
        return int(first.shape[0])


def read_embedding(path: str | os.PathLike) -> Embedding:
    """Read an embedding file (see the module docstring); UserError with a plain reason for anything else."""
    path = Path(path)
    refuse_pickle_name(path, "embeddings")
    header = check_safetensors(path)  # by content: a renamed pickle stops here
    shapes = {key: value for key, value in header.items() if key != "__metadata__"}
    _check_layout(path.name, shapes)
    tensors, _ = load_safetensors(path)
    if set(SDXL_KEYS) <= set(tensors):
        vectors: torch.Tensor | dict[str, torch.Tensor] = {key: _as_rows(tensors[key]).float() for key in SDXL_KEYS}
    else:
        vectors = _as_rows(next(iter(tensors.values()))).float()
    return Embedding(path.stem, vectors)


def _check_layout(filename: str, entries: dict[str, dict]) -> None:
    """Judge the header before loading anything: an embedding is one or two small float tensors."""
    if not entries:
        raise UserError(f"{filename} holds no tensors, so it is not an embedding.")
    keys = set(entries)
    if set(SDXL_KEYS) <= keys:
        entries = {key: entries[key] for key in SDXL_KEYS}
        counts = {tuple(entry.get("shape", ()))[:1] for entry in entries.values()}
        if len(counts) != 1:
            raise UserError(f"{filename}: its clip_l and clip_g parts have different numbers of vectors.")
    elif len(keys) > 1:
        listed = ", ".join(sorted(keys)[:5]) + (", …" if len(keys) > 5 else "")
        raise UserError(f"{filename} holds {len(keys)} tensors ({listed}); an embedding file holds one (or clip_l "
                        "and clip_g for SDXL). It may be a LoRA or a checkpoint: put it in the matching folder.")
    for key, entry in entries.items():
        shape = list(entry.get("shape", ()))
        if entry.get("dtype") not in FLOAT_DTYPES or len(shape) not in (1, 2):
            raise UserError(f"{filename}: the tensor {key} is not a list of float vectors (shape {shape}, "
                            f"{entry.get('dtype')}).")
        if len(shape) == 2 and not 0 < shape[0] <= MAX_VECTORS:
            raise UserError(f"{filename} has {shape[0]} vectors; an embedding has 1 to {MAX_VECTORS}.")


def _as_rows(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(1, -1) if tensor.ndim == 1 else tensor


def installed_embeddings(folder: str | os.PathLike) -> dict[str, Path]:
    """Embedding files under `folder` (subfolders too, as A1111 walks them): file stem -> path, .safetensors only.
    When two files share a stem, the first in path order wins."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() == ".safetensors":
            found.setdefault(path.stem, path)
    return found
