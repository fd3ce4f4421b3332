"""The seed's comparison on one face (its Table 1, on our data): landmark-guided versus text-only (tags with the
orientation word, landmarks withheld) versus reference-only (SD 1.5 + IP-Adapter given the reference face, no
landmarks), on the same seeds, against the reference drawing of those landmarks (the synthetic palette).

Every number comes from `pipelines.metrics`: SSIM and PSNR from `compare` (paired by order with the reference face,
bootstrap intervals and verdicts); FID, KID and IS from `compare` against a set of synthetic faces (the training
distribution) when their network is on this machine, skipped with the reason otherwise; the landmark error (parts
read back by colour, synthetic.landmark_error) gets the pipeline's paired bootstrap interval (`stats.difference_ci`).
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
PAIRED_METRICS = ["ssim", "psnr"]
DISTRIBUTION_METRICS = ["fid", "kid", "is"]
DISTRIBUTION_REFERENCE_FACES = 32
# synthetic.tags_for calls a head turn of more than 12° "looking left/right": the nose then sits 0.11 face widths
# off the middle of the face sides (measured on parametric_face), which is how the turn is read from the points.
TURN_OFFSET = 0.11
HEADERS = ["metric", "A", "A value", "B: landmark-guided", "B − A [95% CI]", "verdict"]


@dataclass(frozen=True)
class ReferenceOnly:
    """The reference-only path: SD 1.5 + IP-Adapter (face) given the reference face and the tags, no landmarks."""

    model: str = "tiny:sd15"
    ip_adapter: str = "tiny:ip_adapter"
    scale: float = 0.8
    steps: int = 20
    cfg_scale: float = 6.0
    size: int = 512


@dataclass
class FaceComparison:
    gallery: list[tuple[Any, str]]  # (image, caption): reference, then each path's faces per seed
    headers: list[str]
    table: list[list[Any]]  # metric, baseline A, A's value, landmark-guided B, B − A [95% CI], verdict
    markdown: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # "text_only:ssim" → a, b, low, high, verdict
    skipped: dict[str, str] = field(default_factory=dict)


def palette_of(tags: Sequence[str]) -> tuple[str, str]:
    hair = next((tag for tag in tags if tag in synthetic.HAIR_COLOURS), DEFAULT_HAIR)
    eyes = next((tag for tag in tags if tag in synthetic.EYE_COLOURS), DEFAULT_EYES)
    return hair, eyes


def turn_tag(points: np.ndarray) -> str:
    """The orientation word for the text-only path, read from the points as synthetic.tags_for reads the yaw."""
    sides = points[21:23, 0]
    offset = (points[16, 0] - sides.mean()) / max(abs(sides[1] - sides[0]), 1e-6)
    return "looking_right" if offset > TURN_OFFSET else "looking_left" if offset < -TURN_OFFSET else "facing_viewer"


def compare_on_face(points: Any, tags: Sequence[str], *, model: str | None = None, guidance: float = 2.0,
                    steps: int = 50, seed: int = 0, count: int = 8, reference_only: ReferenceOnly | None = None,
                    networks: dict[str, str] | None = None,
                    callback: ProgressCallback | None = None) -> FaceComparison:
    """Compare the paths on `points` + `tags`. `reference_only` adds the IP-Adapter column; `networks` names the
    metric networks (e.g. {"inception": "tiny:inception"}; default: the Metrics tab's)."""
    array = landmarks.check_points(points)
    hair, eyes = palette_of(list(tags))
    tags = [*dict.fromkeys([*(tag for tag in tags if tag not in synthetic.TURN_TAGS), hair, eyes])]
    unet = load_unet(model)
    size = unet.config.image_size
    count = max(2, int(count))  # an interval needs at least two faces
    reference = synthetic.draw_face(array, size, hair, eyes, synthetic.BACKGROUNDS[0])
    guided = sample(unet, array, [*tags, turn_tag(array)], steps=steps, guidance=guidance, seed=seed, count=count,
                    callback=callback)
    baselines = {"text_only": ("text-only (tags + orientation word)",
                               sample(unet, array, [*tags, turn_tag(array)], steps=steps, guidance=guidance,
                                      seed=seed, count=count, use_landmarks=False).images)}
    notes = [f"{count} faces per path (seeds {seed}–{seed + count - 1}), the same seeds for each; reference: the "
             f"synthetic drawing of these landmarks. Text-only gets the orientation word '{turn_tag(array)}'."]
    if reference_only is not None:
        baselines["reference_only"] = ("reference-only (IP-Adapter)",
                                       _reference_only(reference_only, reference, tags, seed, count, size, notes))
    else:
        notes.append("Reference-only (IP-Adapter) was not run: choose an SD 1.5 model and an IP-Adapter for it.")
    b = [np.asarray(image) for image in guided.images]
    synthetic_set = [face.image for face in synthetic.make_faces(DISTRIBUTION_REFERENCE_FACES, size, seed=int(seed))]
    table, rows, skipped = [], {}, {}
    for key, (label, images) in baselines.items():
        a = [np.asarray(image) for image in images]
        _add_metric_rows(key, label, a, b, reference, synthetic_set, networks, int(seed), table, rows, skipped, notes)
        _add_landmark_error(key, label, a, b, array, hair, eyes, int(seed), table, rows)
    if skipped:
        notes.append("Not computed: " + "; ".join(f"{name} ({why})" for name, why in skipped.items()))
    if is_test_model(str(model or "")) or (reference_only is not None and is_test_model(reference_only.model)):
        notes.insert(0, "⚠️ Test model (random weights): these numbers compare noise with noise and mean nothing.")
    gallery = [(_pil(reference), "reference drawing")]
    for index in range(min(count, 4)):
        gallery.append((guided.images[index], f"with landmarks · seed {guided.seeds[index]}"))
        gallery += [(images[index], f"{label.split(' (')[0]} · seed {seed + index}")
                    for label, images in baselines.values()]
    return FaceComparison(gallery, list(HEADERS), table, "\n\n".join(notes), rows, skipped)


def _reference_only(settings: ReferenceOnly, reference: np.ndarray, tags: Sequence[str], seed: int, count: int,
                    size: int, notes: list[str]) -> list[Any]:
    """SD 1.5 + IP-Adapter from the reference face and the tags (no landmarks), scaled to the U-Net's size."""
    from PIL import Image

    from pipelines.diffusion.generate import MAX_BATCH, GenerateRequest, generate
    from pipelines.diffusion.ip_adapter import ReferenceImage

    face = Image.fromarray(reference).resize((224, 224), Image.LANCZOS)
    prompt = ", ".join(tag.replace("_", " ") for tag in ["1girl", "portrait", *tags])
    adapter = ReferenceImage(face, scale=float(settings.scale), model=settings.ip_adapter)
    images = []
    for start in range(0, count, MAX_BATCH):
        request = GenerateRequest(prompt=prompt, negative_prompt="lowres, bad anatomy", model=settings.model,
                                  steps=int(settings.steps), cfg_scale=float(settings.cfg_scale),
                                  seed=int(seed) + start, batch_size=min(MAX_BATCH, count - start),
                                  width=int(settings.size), height=int(settings.size), sampler="Euler a",
                                  schedule="Automatic", reference=adapter)
        images += generate(request).images
    if int(settings.size) != size:
        notes.append(f"Reference-only faces are drawn at {settings.size} px and scaled to {size} px for the metrics.")
    return [image.resize((size, size), Image.LANCZOS) for image in images]


def _add_metric_rows(key: str, label: str, a: list[np.ndarray], b: list[np.ndarray], reference: np.ndarray,
                     synthetic_set: list[np.ndarray], networks: dict[str, str] | None, seed: int,
                     table: list[list[Any]], rows: dict[str, dict[str, Any]], skipped: dict[str, str],
                     notes: list[str]) -> None:
    from pipelines.metrics import compare

    paired = compare(a, b, reference=[reference] * len(a), pairs="order", metrics=PAIRED_METRICS, seed=seed)
    spread = compare(a, b, reference=synthetic_set, metrics=DISTRIBUTION_METRICS, seed=seed, models=networks)
    for report in (paired, spread):
        for row in report.rows:
            rows[f"{key}:{row.key}"] = {"a": row.a, "b": row.b, "low": row.low, "high": row.high,
                                        "verdict": row.verdict}
            table.append([row.name, label, _fmt(row.a), _fmt(row.b),
                          f"{_fmt(row.difference)} [{_fmt(row.low)}, {_fmt(row.high)}]", row.verdict])
        skipped.update({name: why for name, why in report.skipped.items() if name not in skipped})
        notes += [warning for warning in report.warnings[:2] if warning not in notes]
    if spread.test_model and "networks" not in " ".join(notes):
        notes.append("FID, KID and IS here use random-weight test networks: not real scores.")


def _add_landmark_error(key: str, label: str, a: list[np.ndarray], b: list[np.ndarray], points: np.ndarray,
                        hair: str, eyes: str, seed: int, table: list[list[Any]],
                        rows: dict[str, dict[str, Any]]) -> None:
    from pipelines.metrics.stats import difference_ci

    error_a = [synthetic.landmark_error(image, points, hair, eyes) for image in a]
    error_b = [synthetic.landmark_error(image, points, hair, eyes) for image in b]
    diff = difference_ci(error_a, error_b, paired=True, seed=seed)
    baseline = label.split(" (")[0]
    better = "landmark-guided" if diff.high < 0 else baseline if diff.low > 0 else "neither (the interval holds 0)"
    rows[f"{key}:landmark_error"] = {"a": diff.a, "b": diff.b, "low": diff.low, "high": diff.high,
                                     "verdict": f"lower is better: {better}"}
    table.append(["Landmark error (image widths, lower is better)", label, _fmt(diff.a), _fmt(diff.b),
                  f"{_fmt(diff.difference)} [{_fmt(diff.low)}, {_fmt(diff.high)}]", f"better: {better}"])


def _fmt(value: float | None) -> str:
    from pipelines.metrics.stats import readable_number

    return "—" if value is None or not np.isfinite(value) else readable_number(float(value))


def _pil(array: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(array)
