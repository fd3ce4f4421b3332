"""Writing a run's images (PNG + metadata) and re-running stored runs from History.

Re-runners: a new method adds one from its package's __init__ with `runs.register_rerunner(TAB, fn)`, where
fn(params, store) -> RunRecord repeats a run of that tab from its recorded params (see methods.py). History can
re-run a tab whose package is not imported yet: a miss imports the method packages once and looks again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from . import pngmeta, settings
from .methods import discover_methods, discovery_note
from .records import RunRecord, RunStore, default_store

# tab name -> function(params, store) -> RunRecord; each pipeline registers its own.
Rerunner = Callable[[dict[str, Any], RunStore], RunRecord]
RERUNNERS: dict[str, Rerunner] = {}


def register_rerunner(tab: str, fn: Rerunner) -> None:
    """Let History re-run runs of `tab`: fn(params, store) -> the new RunRecord."""
    RERUNNERS[tab] = fn


def rerunner(tab: str) -> Rerunner | None:
    """The re-runner of `tab`, importing the method packages once if none is registered yet; None if none."""
    if tab not in RERUNNERS:
        discover_methods()
    return RERUNNERS.get(tab)


def rerun(run_id: str, store: RunStore | None = None) -> RunRecord:
    store = store or default_store()
    record = store.get(run_id)
    if record is None:
        raise KeyError(f"No run with id {run_id!r}.")
    fn = rerunner(record.tab)
    if fn is None:
        raise ValueError(f"Runs of the {record.tab!r} tab cannot be re-run{discovery_note()}.")
    return fn(dict(record.params), store)


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


def save_outputs(record: RunRecord, images: Sequence[Image.Image],
                 metadata: dict[str, Any] | Sequence[dict[str, Any]], prompt: str | Sequence[str] = "",
                 negative_prompt: str = "") -> list[Path]:
    """Save images as PNGs with A1111 text + JSON metadata under outputs/<tab>/, add them to the record.

    `metadata` and `prompt` are one for all images or one per image (a batch whose seeds, or a storyboard whose
    panels' prompts, differ); a per-image "Seed" wins over the record's seed."""
    folder = settings.outputs_dir() / folder_name(record.tab)
    per_image = [metadata] * len(images) if isinstance(metadata, dict) else list(metadata)
    prompts = [prompt] * len(images) if isinstance(prompt, str) else list(prompt)
    paths = []
    for index, (image, settings_, text) in enumerate(zip(images, per_image, prompts, strict=True)):
        path = folder / f"{record.id}_{index:02d}.png"
        seed = {"Seed": record.seed} if record.seed is not None and "Seed" not in settings_ else {}
        pngmeta.save_png(image, path, {**settings_, **seed, "Run": record.id}, prompt=text,
                         negative_prompt=negative_prompt)
        paths.append(path)
    record.outputs.extend(str(path) for path in paths)
    return paths
