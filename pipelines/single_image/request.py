"""Limits of the single-image requests, importable without torch (the tab's sliders take their bounds from here)."""

from __future__ import annotations

from pipelines.core.userjson import parse_json

MAX_COUNT = 16  # variations per request
MAX_SIZE_MULTIPLIER = 3.0  # output width/height multipliers
MAX_START_SCALES = 5  # a 128×128 image has 6 scales (0…5)
MILESTONES = 10  # load milestones (LM) 1…10, one every 10% of training
# Where a variation's finer detail comes from: the trained model's finer scales, or GPNN drawing the model's layout
# with the photo's own patches (GPNN's initial-guess mode).
DETAIL_MODEL = "model"
DETAIL_GPNN = "gpnn"
DETAIL_CHOICES = (DETAIL_MODEL, DETAIL_GPNN)


def model_header(path: str) -> dict:
    """A model file's metadata, with its config parsed, read from the safetensors header only (no torch)."""

    from pipelines.core.safeweights import check_safetensors

    metadata = dict(check_safetensors(path).get("__metadata__") or {})
    config = parse_json(metadata.get("model_config", "{}"), "The model file's settings")
    return {**config.get("extra", {}), **metadata, "config": config}
