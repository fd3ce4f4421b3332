"""Reading a face's SHAPE back, slider by slider: eye openness, mouth opening, mouth width (smile), gaze and roll,
each compared with what the landmarks asked for; place (yaw, pitch, width) by `synthetic.landmark_error`.

The measurements know only the synthetic palette and where the asked landmarks put each part (a window around
it); what is measured is the drawn shape, from pixel colours:
- eye openness: the area of eye white + iris (nearest palette colour) in a window around the asked eye, as the
  height of an ellipse as wide as the asked eye (area = π/4 · width · height), turned into the slider's 0–1 scale
  by the parametric face's own closed form (landmarks._template: height = 1.6 · 0.17 · (0.1 + 0.9 · openness)
  face half-widths, the eye 0.44 wide);
- mouth opening: the mouth-colour area the same way, against the asked top-to-bottom distance, in units of the
  mouth slider's full travel (0.2 face half-widths);
- smile: the mouth colour's width (its horizontal extent) against the asked corner-to-corner distance, in units of
  the smile slider's full travel (0.16 face half-widths);
- gaze: the iris colour's centre minus the asked eye centre, against the asked pupil's offset, in units of the
  gaze sliders' travel (0.12 face half-widths across, 0.5 eye heights up/down);
- roll: the angle of the line through the two eyes that `synthetic.detect_features` finds in the face, in degrees.

`slider_table` draws faces across each slider's whole range (the others at their defaults) and reports, per
slider, the mean error of four sources: the trained model, the synthetic drawings of the same landmarks (the
read-back's own floor), the model given tags only (its landmarks withheld; it was trained with landmarks and tags
dropped independently, so that input is one it has seen) and the untrained network of the same shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import landmarks as L
from . import synthetic

EYE_HEIGHT = 0.17  # landmarks._template: the lid's travel, in face half-widths
EYE_WIDTH = 0.44  # outer to inner corner
OPEN_RATIO = 1.6 * EYE_HEIGHT / EYE_WIDTH  # height / width of a fully open eye
CLOSED_RATIO = OPEN_RATIO * 0.1  # a closed eye keeps a sliver
MOUTH_TRAVEL = 0.2  # mouth_open 0 → 1 moves the lower lip this far (face half-widths)
SMILE_TRAVEL = 0.16  # smile 0 → 1 widens the mouth this much
GAZE_X_TRAVEL = 0.12  # gaze_x 0 → 1 moves the pupil this far
CLOSED_BELOW = 0.25  # an eye read at less than this openness counts as closed


def _classes(image: np.ndarray, hair: str, eyes: str) -> dict[str, np.ndarray]:
    palette = {"skin": synthetic.SKIN, "hair": synthetic.HAIR_COLOURS[hair], "iris": synthetic.EYE_COLOURS[eyes],
               "white": synthetic.EYE_WHITE, "outline": synthetic.OUTLINE, "mouth": synthetic.MOUTH,
               **{f"bg{i}": c for i, c in enumerate(synthetic.BACKGROUNDS)}}
    return synthetic._nearest_colour_classes(image, palette)


def _window(shape: tuple[int, ...], centre: np.ndarray, half_x: float, half_y: float) -> np.ndarray:
    height, width = shape[:2]
    ys, xs = np.indices((height, width))
    return (np.abs(xs - centre[0]) <= half_x) & (np.abs(ys - centre[1]) <= half_y)


@dataclass
class Shape:
    """What a face shows (measured from pixels) or asks for (from landmarks), in the sliders' own units."""

    left_eye_open: float
    right_eye_open: float
    mouth_open: float  # the mouth's top-to-bottom opening / the mouth slider's travel
    mouth_width: float  # corner to corner / the smile slider's travel
    gaze_x: float  # mean over both eyes of the pupil's offset / the gaze slider's travel
    gaze_y: float
    roll: float  # degrees


def _unit(points: np.ndarray, size: int) -> float:
    """The face half-width in pixels (as the drawing measures it)."""
    return float(np.linalg.norm(points[22] - points[21]) * (size - 1) / 2)


def _openness(ratio: float) -> float:
    return float(np.clip((ratio - CLOSED_RATIO) / (OPEN_RATIO - CLOSED_RATIO), 0.0, 1.0))


def _opening_openness(opening: float, unit: float) -> float:
    """Eye openness (slider 0–1) from the lid-to-lid distance, inverting landmarks._template's closed form."""
    full = 1.6 * EYE_HEIGHT * unit
    return float(np.clip((opening / max(full, 1e-6) - 0.1) / 0.9, 0.0, 1.0))


def asked_shape(points: np.ndarray, size: int) -> Shape:
    """The shape the landmarks ask for, in the units the measurement reports (closed form, no pixels)."""
    p = np.asarray(points, np.float64) * (size - 1)
    unit = _unit(points, size)
    eyes = []
    for outer, inner, top, bottom, pupil in ((6, 7, 8, 9, 10), (11, 12, 13, 14, 15)):
        opening = float(np.linalg.norm(p[bottom] - p[top]))
        lid = opening / 1.6  # the pupil sits 0.2 lid above the eye line, plus 0.5 lid · gaze_y
        offset = p[pupil] - (p[outer] + p[inner]) / 2
        eyes.append((_opening_openness(opening, unit), offset[0] / (GAZE_X_TRAVEL * unit),
                     (offset[1] + 0.2 * lid) / max(0.5 * lid, 1e-6), (p[outer] + p[inner]) / 2))
    return Shape(
        left_eye_open=eyes[0][0], right_eye_open=eyes[1][0],
        mouth_open=float(np.linalg.norm(p[20] - p[19]) / (MOUTH_TRAVEL * unit)),
        mouth_width=float(np.linalg.norm(p[18] - p[17]) / (SMILE_TRAVEL * unit)),
        gaze_x=float(np.mean([eye[1] for eye in eyes])), gaze_y=float(np.mean([eye[2] for eye in eyes])),
        roll=_angle(eyes[0][3], eyes[1][3]))


def _angle(left: np.ndarray, right: np.ndarray) -> float:
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def _column_height(mask: np.ndarray, centre_x: float, half_width: float) -> float:
    """Mean count of `mask` pixels per column over the columns within half_width of centre_x: a part's height,
    robust to where along its width the lash line or the pupil falls."""
    columns = np.arange(mask.shape[1])
    picked = np.abs(columns - centre_x) <= max(half_width, 0.5)
    return float(mask[:, picked].sum(axis=0).mean())


def measured_shape(image: Any, points: np.ndarray, hair: str, eyes: str) -> Shape:
    """The shape an image shows, read from its colours in windows around where `points` put each part.

    An eye is whatever is not skin in a window as wide as the asked eye (at 64 px an eye is ~4 px tall and its
    iris, pupil, white and lash line blend into each other, and into colours nearer the hair or background): its
    height is the mean count of such pixels per column over the middle half of the eye, less the lash line (the
    drawing's line width, unit/20);
    an eye with no pixel nearest the eye white or the iris colour is shut (a closed eye is one line).
    The mouth (whatever is not skin around it) is measured the same way; the smile is its width (extent)."""
    pixels = np.asarray(image)[:, :, :3]
    size = pixels.shape[1]
    classes = _classes(pixels, hair, eyes)
    p = np.asarray(points, np.float64) * (size - 1)
    unit = _unit(points, size)
    lash = unit / 20
    drawn = ~classes["skin"]  # at this size a part's colours blend (a dark red can sit nearer brown hair)
    read = []
    for outer, inner in ((6, 7), (11, 12)):
        width = max(float(np.linalg.norm(p[inner] - p[outer])), 1.0)
        centre = (p[outer] + p[inner]) / 2
        window = _window(pixels.shape, centre, 0.6 * width, 1.6 * EYE_HEIGHT * unit * 0.7 + 0.5)
        eye = drawn & window
        if eye.sum() == 0:
            read.append((0.0, np.nan, np.nan, None))
            continue
        iris = classes["iris"] & window
        # an eye that shows no white and no iris is shut, whatever its line's thickness
        shows = int((iris | classes["white"]).sum(where=window))
        opening = max(0.0, _column_height(eye, centre[0], width / 4) - lash) if shows else 0.0
        ys, xs = np.nonzero(eye)
        found_centre = np.array([xs.mean(), ys.mean()])
        if iris.sum() > 0:
            iy, ix = np.nonzero(iris)
            offset = np.array([ix.mean(), iy.mean()]) - centre
            lid = max(opening / 1.6, 0.5)
            gaze = (offset[0] / (GAZE_X_TRAVEL * unit), (offset[1] + 0.2 * lid) / (0.5 * lid))
        else:
            gaze = (np.nan, np.nan)
        read.append((_opening_openness(opening, unit), *gaze, found_centre))
    mouth_centre = (p[17] + p[18] + p[19] + p[20]) / 4
    asked_width = max(float(np.linalg.norm(p[18] - p[17])), 1.0)
    window = _window(pixels.shape, mouth_centre, 0.8 * asked_width,
                     0.5 * float(np.linalg.norm(p[20] - p[19])) + 0.1 * unit + 1.0)
    mouth = drawn & window  # a small open mouth is mostly its outline
    height = max(0.0, _column_height(mouth, mouth_centre[0], asked_width / 4) - lash)
    drawn_width = float(np.ptp(np.nonzero(mouth)[1]) + 1) if mouth.any() else 0.0
    # roll from the eyes found anywhere in the face (not in windows at the asked places, which would hand a
    # noise image the asked angle)
    found = synthetic.detect_features(pixels, hair, eyes, eye_reach=1 / 4)
    roll = (_angle(found["left_eye"], found["right_eye"])
            if found["left_eye"] is not None and found["right_eye"] is not None else float("nan"))
    return Shape(
        left_eye_open=read[0][0], right_eye_open=read[1][0],
        mouth_open=height / (MOUTH_TRAVEL * unit), mouth_width=drawn_width / (SMILE_TRAVEL * unit),
        gaze_x=_nan_mean([eye[1] for eye in read]), gaze_y=_nan_mean([eye[2] for eye in read]), roll=roll)


def _nan_mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


# ---------------------------------------------------------------------------------------------- per slider
@dataclass(frozen=True)
class SliderCheck:
    slider: str
    measures: str  # which read-back
    unit: str


CHECKS: tuple[SliderCheck, ...] = (
    SliderCheck("yaw", "place", "image widths"),
    SliderCheck("pitch", "place", "image widths"),
    SliderCheck("roll", "roll", "degrees"),
    SliderCheck("face_width", "place", "image widths"),
    SliderCheck("left_eye_open", "left_eye_open", "slider units (0–1)"),
    SliderCheck("right_eye_open", "right_eye_open", "slider units (0–1)"),
    SliderCheck("gaze_x", "gaze_x", "slider units (−1–1)"),
    SliderCheck("gaze_y", "gaze_y", "slider units (−1–1)"),
    SliderCheck("mouth_open", "mouth_open", "slider units (0–1)"),
    SliderCheck("smile", "mouth_width", "slider units (0–1)"),
)
MISSING_ERROR = {"roll": 45.0}  # a part not found: as bad as half the slider's range; shapes: 1 slider unit


def sweep_faces(values_per_slider: int, seed: int = 0) -> list[tuple[str, float, L.FaceParams, str, str]]:
    """(slider, value, params, hair, eyes) for each slider at evenly spaced values across its whole range."""
    rng = np.random.default_rng(seed)
    rows = []
    for check in CHECKS:
        low, high = L.LIMITS[check.slider]
        for value in np.linspace(low, high, values_per_slider):
            params = replace(L.FaceParams(), **{check.slider: float(value)})
            rows.append((check.slider, float(value), params, str(rng.choice(list(synthetic.HAIR_COLOURS))),
                         str(rng.choice(list(synthetic.EYE_COLOURS)))))
    return rows


def error_of(check: SliderCheck, image: Any, points: np.ndarray, hair: str, eyes: str) -> float:
    pixels = np.asarray(image)[:, :, :3]
    if check.measures == "place":
        return synthetic.landmark_error(pixels, points, hair, eyes)
    size = pixels.shape[1]
    asked = getattr(asked_shape(points, size), check.measures)
    measured = getattr(measured_shape(pixels, points, hair, eyes), check.measures)
    if not np.isfinite(measured):
        return MISSING_ERROR.get(check.measures, 1.0)
    return float(abs(measured - asked))


SOURCES = ("model", "drawings", "tags_only", "untrained")
SOURCE_LABELS = {"model": "model (landmarks + tags)", "drawings": "synthetic drawings",
                 "tags_only": "model, tags only", "untrained": "untrained network"}


def slider_table(model: Any, *, values_per_slider: int = 5, steps: int = 25, guidance: float = 2.0,
                 seed: int = 0, untrained: Any | None = None,
                 faces_out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per slider: the mean read-back error of each source (see the module docstring), plus the share of
    asked-closed eyes drawn closed. Faces at the model's size, one set of landmarks per (slider, value).
    `faces_out`, when given, receives the faces drawn (per source, in sweep order) and the sweep rows."""
    from .generate import sample
    from .request import MAX_FACES

    size = model.config.image_size
    rows = sweep_faces(values_per_slider, seed)
    points = [L.parametric_face(params) for _, _, params, _, _ in rows]
    tags = [list(synthetic.tags_for(params, hair, eyes)) for _, _, params, hair, eyes in rows]
    images: dict[str, list[Any]] = {
        "drawings": [synthetic.draw_face(p, size, hair, eyes) for p, (_, _, _, hair, eyes) in zip(points, rows,
                                                                                                    strict=True)]}
    def faces(network: Any, use_landmarks: bool = True) -> list[Any]:
        drawn = []
        for start in range(0, len(rows), MAX_FACES):  # a run's face limit; face i keeps seed + i
            chunk = slice(start, start + MAX_FACES)
            drawn += sample(network, np.stack(points[chunk]), tags[chunk], steps=steps, guidance=guidance,
                            seed=seed + start, count=len(points[chunk]), use_landmarks=use_landmarks).images
        return drawn

    images["model"] = faces(model)
    images["tags_only"] = faces(model, use_landmarks=False)
    if untrained is not None:
        images["untrained"] = faces(untrained)
    if faces_out is not None:
        faces_out.update(images=images, rows=rows)
    table: dict[str, dict[str, Any]] = {}
    closed: dict[str, list[bool]] = {source: [] for source in images}
    for check in CHECKS:
        picked = [i for i, row in enumerate(rows) if row[0] == check.slider]
        entry: dict[str, Any] = {"unit": check.unit, "measures": check.measures}
        for source, pictures in images.items():
            errors = [error_of(check, pictures[i], points[i], rows[i][3], rows[i][4]) for i in picked]
            entry[source] = round(float(np.mean(errors)), 4)
        table[check.slider] = entry
        if check.slider.endswith("_eye_open"):
            for i in picked:
                if rows[i][1] == 0.0:
                    for source, pictures in images.items():
                        shape = measured_shape(pictures[i], points[i], rows[i][3], rows[i][4])
                        closed[source].append(getattr(shape, check.slider) < CLOSED_BELOW)
    return {"faces_per_slider": values_per_slider, "sampling_steps": steps, "guidance": guidance, "seed": seed,
            "image_size": size, "sliders": table,
            "closed_eye_drawn_closed": {source: round(float(np.mean(v)), 3) for source, v in closed.items() if v},
            "note": "mean |read back − asked| per slider over faces drawn across its whole range (other sliders at "
                    "their defaults); lower is better. 'synthetic drawings' is the read-back's own floor."}


def sample_grid(faces: dict[str, Any], values_per_slider: int, model: Any = None, seeds: int = 0,
                steps: int = 25, guidance: float = 2.0) -> Any:
    """A sheet to judge by eye: a row per slider, its faces across the range drawn by the model, then the same
    landmarks as the synthetic drawings, then the model given the tags only; with `seeds`, a last row of the
    model at the default landmarks for seeds 0 … seeds−1 (what the landmarks leave free should vary)."""
    from PIL import Image

    from .generate import sample

    sources = [source for source in ("model", "drawings", "tags_only") if source in faces["images"]]
    def picture(face: Any) -> Any:  # the drawings are arrays, the samples PIL images
        return (face if hasattr(face, "convert") else Image.fromarray(np.asarray(face)[:, :, :3])).convert("RGB")

    size = picture(faces["images"]["model"][0]).size[0]
    gap = size // 4
    block = values_per_slider * size + gap
    rows = len(CHECKS) + (1 if seeds else 0)
    sheet = Image.new("RGB", (len(sources) * block - gap, rows * size), "white")
    for row in range(len(CHECKS)):
        for column, source in enumerate(sources):
            for k in range(values_per_slider):
                face = faces["images"][source][row * values_per_slider + k]
                sheet.paste(picture(face), (column * block + k * size, row * size))
    if seeds and model is not None:
        points = L.parametric_face(L.FaceParams())
        tags = list(synthetic.tags_for(L.FaceParams(), "brown", "blue"))
        drawn = sample(model, points, tags, steps=steps, guidance=guidance, seed=0, count=seeds).images  # seed k
        for k, face in enumerate(drawn):
            sheet.paste(picture(face), (k * size, len(CHECKS) * size))
    return sheet


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of the per-slider table (for the bench's print-out and the tab's Compare)."""
    sources = [source for source in SOURCES if any(source in entry for entry in report["sliders"].values())]
    headers = ["slider", "unit", *(SOURCE_LABELS[source] for source in sources)]
    rows = [[slider, entry["unit"], *(entry.get(source) for source in sources)]
            for slider, entry in report["sliders"].items()]
    closed = report.get("closed_eye_drawn_closed") or {}
    if closed:
        rows.append(["closed eye drawn closed", "share (higher is better)", *(closed.get(s) for s in sources)])
    return headers, rows


RECORD_KEY = "slider_readback"


def record_path(model_source: str) -> Path | None:
    """The training record beside a model file (NAME.json beside NAME.safetensors); None for a tiny model."""
    if not model_source or str(model_source).startswith("tiny:"):
        return None
    return Path(model_source).with_suffix(".json")


def stored_table(model_source: str) -> dict[str, Any] | None:
    """The per-slider read-back the bench (or `python -m pipelines.landmark_faces readback --record`) wrote into
    the model's record, so the tab shows it without sampling 200 faces again; None when there is none."""
    from pipelines.core.userjson import JsonInputError, read_json

    path = record_path(model_source)
    if path is None or not path.is_file():
        return None
    try:
        data = read_json(path)
    except JsonInputError:
        return None
    report = data.get(RECORD_KEY) if isinstance(data, dict) else None
    return report if isinstance(report, dict) and isinstance(report.get("sliders"), dict) else None


def untrained_twin(model: Any) -> Any:
    """The network of the same shape with its initial weights (the training's seed), as training started."""
    import json

    from .unet import build

    raw = getattr(model, "train_config", None)
    seed = int(json.loads(raw).get("seed", 0)) if isinstance(raw, str) else 0
    twin = build(model.config, seed=seed)
    twin.train_config = raw
    return twin.eval()


def write_into_record(report: dict[str, Any], path: str | Path) -> Path:
    """Merge the table into the JSON record at `path` (created if absent), under RECORD_KEY."""
    import json

    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[RECORD_KEY] = report
    path.write_text(json.dumps(data, indent=2))
    return path
