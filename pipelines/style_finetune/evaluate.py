"""Seed 000's experiment: N images from the base and N from the tuned model on the same seeds, scored against the
training images by `pipelines.metrics.compare` (FID, KID, the seed's per-image FID/KL scatter, CLIP-I to the
training images for style, CLIP score to the prompt for fidelity, mean pairwise LPIPS within each set for diversity),
each with its 95% interval and a verdict.

compare() labels every number made with a random-weight network (`report.test_model`) and skips, with the reason,
any metric whose network is not on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import UserError

if TYPE_CHECKING:
    from pipelines.core.jobs import CancelToken, ProgressCallback
    from pipelines.metrics.report import ComparisonReport

EVALUATION_METRICS = ("fid", "kid", "fid_per_image", "kl_per_image", "clip_i", "clip_score", "lpips_diversity")
MIN_IMAGES, MAX_IMAGES = 2, 200
BATCH = 8
TEST_NETWORKS = {"inception": "tiny:inception", "clip": "tiny:clip", "lpips": "tiny:lpips"}


@dataclass(frozen=True)
class EvaluateRequest:
    tuned: str
    count: int = 16  # images per model
    prompt: str = ""
    seed: int = 0
    steps: int = 20
    lora_scale: float = 1.0
    size: int = 512
    networks: dict[str, str] = field(default_factory=dict)  # metric networks; {} = the Metrics tab's defaults
    n_bootstrap: int = 1000


@dataclass
class EvaluateOutput:
    report: ComparisonReport
    base: list[Any]
    tuned: list[Any]
    prompts: tuple[str, str]
    notes: list[str]


def evaluate(request: EvaluateRequest, reference: list[Any], *, callback: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> EvaluateOutput:
    """Generate `count` images per side (seeds seed … seed + count - 1, in batches) and compare them (A = base,
    B = tuned) against `reference`, the training images."""
    import numpy as np

    from pipelines.metrics import compare

    from .apply import CompareRequest, compare_base_tuned

    if not MIN_IMAGES <= int(request.count) <= MAX_IMAGES:
        raise UserError(f"Evaluate with {MIN_IMAGES}–{MAX_IMAGES} images per model, got {request.count}.")
    if len(reference) < 2:
        raise UserError("The evaluation needs the training images (at least 2) as its reference.")
    base, tuned, notes, prompts = [], [], [], ("", "")
    for start in range(0, int(request.count), BATCH):
        count = min(BATCH, int(request.count) - start)
        if callback is not None:
            callback(start, int(request.count), f"Generating images {start + 1}–{start + count} of each model")
        ab = compare_base_tuned(CompareRequest(tuned=request.tuned, prompt=request.prompt, seed=request.seed + start,
                                               count=count, steps=request.steps, lora_scale=request.lora_scale,
                                               size=request.size), cancel=cancel, record=False)
        base += ab.base
        tuned += ab.tuned
        prompts = ab.prompts
        notes += [note for note in ab.notes if note not in notes]
    arrays = [[np.asarray(image.convert("RGB")) for image in images] for images in (base, tuned, reference)]
    report = compare(arrays[0], arrays[1], reference=arrays[2], prompts=[prompts[0]] * len(tuned),
                     metrics=list(EVALUATION_METRICS), n_bootstrap=int(request.n_bootstrap),
                     models=dict(request.networks) or None, callback=callback)
    notes.append("A = base model, B = tuned model; both against the training images. CLIP score uses the prompt "
                 "without the trigger word for both sides (CLIP does not know the made-up word).")
    return EvaluateOutput(report, base, tuned, prompts, notes)
