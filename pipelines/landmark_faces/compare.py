"""The seed's comparison on one face: landmark-guided versus text-only (tags, landmarks withheld), both from the
same U-Net and seeds, against the reference drawing of those landmarks (the synthetic palette).

SSIM and PSNR come from `pipelines.metrics.compare` (paired by order with the reference, with its bootstrap
intervals and verdicts); the landmark error (parts read back by colour, synthetic.landmark_error) gets the
metrics pipeline's paired bootstrap interval (`stats.difference_ci`). The reference-only path of the seed
(IP-Adapter) needs real SD 1.5 + IP-Adapter weights and is listed as not run when they are absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.core.jobs import ProgressCallback

from . import is_test_model, landmarks, load_unet, synthetic
from .generate import sample

DEFAULT_HAIR, DEFAULT_EYES = "brown_hair", "blue_eyes"


@dataclass
class FaceComparison:
    gallery: list[tuple[Any, str]]  # (image, caption): reference, then guided and text-only per seed
    headers: list[str]
    table: list[list[Any]]  # metric, text-only (A), landmark-guided (B), B − A [95% CI], verdict
    markdown: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)


def palette_of(tags: Sequence[str]) -> tuple[str, str]:
    hair = next((tag for tag in tags if tag in synthetic.HAIR_COLOURS), DEFAULT_HAIR)
    eyes = next((tag for tag in tags if tag in synthetic.EYE_COLOURS), DEFAULT_EYES)
    return hair, eyes


def compare_on_face(points: Any, tags: Sequence[str], *, model: str | None = None, guidance: float = 2.0,
                    steps: int = 50, seed: int = 0, count: int = 8,
                    callback: ProgressCallback | None = None) -> FaceComparison:
    from pipelines.metrics import compare
    from pipelines.metrics.stats import difference_ci

    array = landmarks.check_points(points)
    tags = list(tags)
    hair, eyes = palette_of(tags)
    tags = [*dict.fromkeys([*tags, hair, eyes])]
    unet = load_unet(model)
    size = unet.config.image_size
    count = max(2, int(count))  # an interval needs at least two faces
    reference = synthetic.draw_face(array, size, hair, eyes, synthetic.BACKGROUNDS[0])
    guided = sample(unet, array, tags, steps=steps, guidance=guidance, seed=seed, count=count, callback=callback)
    text_only = sample(unet, array, tags, steps=steps, guidance=guidance, seed=seed, count=count,
                       use_landmarks=False)
    a = [np.asarray(image) for image in text_only.images]
    b = [np.asarray(image) for image in guided.images]
    report = compare(a, b, reference=[reference] * count, pairs="order", metrics=["ssim", "psnr"], seed=int(seed))
    table, rows = [], {}
    for row in report.rows:
        rows[row.key] = {"a": row.a, "b": row.b, "low": row.low, "high": row.high, "verdict": row.verdict}
        table.append([row.name, _fmt(row.a), _fmt(row.b), f"{_fmt(row.difference)} [{_fmt(row.low)}, "
                                                          f"{_fmt(row.high)}]", row.verdict])
    error_a = [synthetic.landmark_error(image, array, hair, eyes) for image in a]
    error_b = [synthetic.landmark_error(image, array, hair, eyes) for image in b]
    diff = difference_ci(error_a, error_b, paired=True, seed=int(seed))
    better = "landmark-guided" if diff.high < 0 else "text-only" if diff.low > 0 else "neither (the interval holds 0)"
    rows["landmark_error"] = {"a": diff.a, "b": diff.b, "low": diff.low, "high": diff.high,
                              "verdict": f"lower is better: {better}"}
    table.append(["Landmark error (image widths, lower is better)", _fmt(diff.a), _fmt(diff.b),
                  f"{_fmt(diff.difference)} [{_fmt(diff.low)}, {_fmt(diff.high)}]", f"better: {better}"])
    header = ["metric", "text-only (A)", "landmark-guided (B)", "B − A [95% CI]", "verdict"]
    notes = [f"{count} faces each (seeds {seed}–{seed + count - 1}), the same seeds for both; reference: the "
             "synthetic drawing of these landmarks.",
             "Reference-only (IP-Adapter) is not run: it needs real SD 1.5 and IP-Adapter weights, which are not "
             "on this machine."]
    if is_test_model(str(model or "")):
        notes.insert(0, "⚠️ Test model (random weights): these numbers compare noise with noise and mean nothing.")
    notes += report.warnings[:3]
    gallery = [(_pil(reference), "reference drawing")]
    for index in range(min(count, 4)):
        gallery += [(guided.images[index], f"with landmarks · seed {guided.seeds[index]}"),
                    (text_only.images[index], f"tags only · seed {text_only.seeds[index]}")]
    return FaceComparison(gallery, header, table, "\n\n".join(notes), rows)


def _fmt(value: float | None) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _pil(array: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(array)
