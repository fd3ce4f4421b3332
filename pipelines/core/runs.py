"""Writing a run's images (PNG + metadata) and re-running stored runs from History."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from . import pngmeta, settings
from .records import RunRecord, RunStore, default_store

# tab name -> function(params, store) -> RunRecord; each pipeline registers its own.
Rerunner = Callable[[dict[str, Any], RunStore], RunRecord]
RERUNNERS: dict[str, Rerunner] = {}


# Modules that register a tab's re-runner when imported; imported on demand by rerun().
RERUN_PROVIDERS = {"Neural style": "pipelines.neural_style", "Metrics / A-B": "pipelines.metrics.runs"}


def register_rerunner(tab: str, fn: Rerunner) -> None:
    RERUNNERS[tab] = fn


def rerun(run_id: str, store: RunStore | None = None) -> RunRecord:
    store = store or default_store()
    record = store.get(run_id)
    if record is None:
        raise KeyError(f"No run with id {run_id!r}.")
    if record.tab not in RERUNNERS and record.tab in RERUN_PROVIDERS:
        import importlib

        importlib.import_module(RERUN_PROVIDERS[record.tab])
    if record.tab not in RERUNNERS:
        raise ValueError(f"Runs of the {record.tab!r} tab cannot be re-run.")
    return RERUNNERS[record.tab](dict(record.params), store)


def folder_name(tab: str) -> str:
    """A safe folder name for a tab's outputs ("Metrics / A-B" -> "metrics_a-b")."""
    import re

    return re.sub(r"[^a-z0-9\-]+", "_", tab.lower()).strip("_") or "runs"


def save_input_copy(image: Image.Image) -> Path:
    """Keep a copy of a user's input (content-addressed) so the run can be re-run later."""
    digest = hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()[:16]
    path = settings.outputs_dir() / "inputs" / f"{digest}.png"
    if not path.exists():
        pngmeta.save_png(image, path, {"role": "input"})
    return path


def save_outputs(record: RunRecord, images: Sequence[Image.Image], metadata: dict[str, Any],
                 prompt: str = "", negative_prompt: str = "") -> list[Path]:
    """Save images as PNGs with A1111 text + JSON metadata under outputs/<tab>/, add them to the record."""
    folder = settings.outputs_dir() / folder_name(record.tab)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{record.id}_{index:02d}.png"
        chunk = {**metadata, "Run": record.id, "Seed": record.seed} if record.seed is not None else \
            {**metadata, "Run": record.id}
        pngmeta.save_png(image, path, chunk, prompt=prompt, negative_prompt=negative_prompt)
        paths.append(path)
    record.outputs.extend(str(path) for path in paths)
    return paths
