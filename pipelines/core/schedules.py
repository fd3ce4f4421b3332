"""Learning-rate schedules shared by the trainers that run their own loop (single-image, landmark faces).

A closed form of the step rather than a torch LRScheduler object: a run resumed from a step checkpoint continues
the schedule exactly without storing scheduler state, and a time-budgeted run can be reasoned about in advance.
tests/test_single_image_recipe.py checks it against torch's LinearLR + CosineAnnealingLR."""
from __future__ import annotations

import math

WARMUP_SHARE = 0.02  # linear warm-up over the first 2% of the steps, then cosine decay …
FINAL_SHARE = 0.05  # … down to 5% of the peak at the last step


def warmup_cosine(peak: float, step: int, total_steps: int, *, warmup_share: float = WARMUP_SHARE,
                  final_share: float = FINAL_SHARE) -> float:
    """The rate of step `step` (0-based) of `total_steps`: linear warm-up to `peak` (the first steps at a high rate
    are the risky ones in nets without normalisation), then cosine decay to final_share · peak at the last step
    (a high rate learns fast early; the decay lets the weights settle in a short run)."""
    warmup = max(1, round(warmup_share * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)
    final = final_share * peak
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


SCHEDULES = ("cosine", "constant")


def rate(schedule: str, peak: float, step: int, total_steps: int) -> float:
    """The rate of step `step` under a named schedule: "cosine" (warmup_cosine) or "constant" (`peak` throughout)."""
    if schedule == "constant":
        return peak
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose from {SCHEDULES}")
    return warmup_cosine(peak, step, total_steps)
