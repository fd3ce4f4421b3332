"""Synthetic cartoon faces drawn with OpenCV: exact 24 landmarks and tags, so the seed's model trains (and the
tab demos) with no downloaded data.

Each face comes from a random parametric face (landmarks.FaceParams) and a palette: the features are drawn
AT the landmarks (pupils on the pupil points, mouth corners on the mouth points ...), so the landmarks are exact
by construction. Skin is one fixed tone and every palette colour is far from it and from each other: that is the
"synthetic palette" `detect_features` reads back to measure how well a generated face follows its landmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from . import landmarks as L

SKIN = (250, 214, 186)
EYE_WHITE = (255, 255, 255)
OUTLINE = (40, 30, 30)
MOUTH = (200, 40, 60)
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black_hair": (35, 35, 45), "brown_hair": (120, 70, 35), "blonde_hair": (240, 200, 80),
    "pink_hair": (240, 120, 190), "silver_hair": (180, 185, 200),
}
EYE_COLOURS: dict[str, tuple[int, int, int]] = {
    "blue_eyes": (20, 110, 240), "green_eyes": (20, 175, 60), "purple_eyes": (150, 40, 210),
}
BACKGROUNDS = ((170, 205, 250), (190, 240, 190), (225, 205, 250))  # none near skin or eye-white
MOUTH_TAGS = ("open_mouth", "closed_mouth", "smile")
TURN_TAGS = ("looking_left", "looking_right", "facing_viewer")
EYE_TAGS = ("closed_eyes", "one_eye_closed")
TAGS: tuple[str, ...] = (*HAIR_COLOURS, *EYE_COLOURS, *MOUTH_TAGS, *TURN_TAGS, *EYE_TAGS)
MIRRORED_TAGS = {"looking_left": "looking_right", "looking_right": "looking_left"}  # what a flip swaps
_SUPERSAMPLE = 4  # drawn at 4× and shrunk with area averaging: smooth edges at 32–64 px


@dataclass
class SyntheticFace:
    image: np.ndarray  # H×W×3 uint8
    points: np.ndarray  # (24, 2) in [0, 1]
    tags: tuple[str, ...]
    params: L.FaceParams
    hair: str
    eyes: str
    style: Style | None = None


def random_params(rng: np.random.Generator) -> L.FaceParams:
    """A face drawn from the WHOLE range every slider allows (landmarks.LIMITS), so the model has seen every
    value a user can ask for: a closed eye (each eye on its own, and both), any gaze, a mouth from shut to wide."""
    def uniform(name: str) -> float:
        return float(rng.uniform(*L.LIMITS[name]))

    def eye() -> float:  # a fifth of the eyes are shut: a closed eye must be drawn closed, not just rarely seen
        return 0.0 if rng.random() < 0.2 else uniform("left_eye_open")

    return L.FaceParams(
        yaw=uniform("yaw"), pitch=uniform("pitch"), roll=uniform("roll"), left_eye_open=eye(),
        right_eye_open=eye(), gaze_x=uniform("gaze_x"), gaze_y=uniform("gaze_y"),
        mouth_open=0.0 if rng.random() < 0.25 else uniform("mouth_open"), smile=uniform("smile"),
        face_width=uniform("face_width"))


@dataclass(frozen=True)
class Style:
    """What the landmarks leave free, drawn from the seed: hair length and fringe, the hair colour's shade, blush
    and the background's tint. The model learns these from the noise, so seeds give different faces."""

    length: float = 0.6  # back hair below the face sides, in half face heights (0.3 short … 2.2 long)
    fringe: float = 0.12  # how far the bangs come down over the forehead
    strands: int = 3  # points along the fringe's lower edge
    shade: float = 1.0  # the hair colour times this
    blush: bool = False
    background: tuple[int, int, int] = BACKGROUNDS[0]


def random_style(rng: np.random.Generator) -> Style:
    base = np.array(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], np.float64)
    tint = np.clip(base + rng.uniform(-12, 12, 3), 0, 255)
    return Style(length=float(rng.choice([0.3, 0.7, 1.3, 2.2]) + rng.uniform(-0.1, 0.1)),
                 fringe=float(rng.uniform(0.0, 0.42)), strands=int(rng.integers(2, 6)),
                 shade=float(rng.uniform(0.8, 1.15)), blush=bool(rng.random() < 0.4),
                 background=tuple(int(v) for v in tint))


def tags_for(params: L.FaceParams, hair: str, eyes: str) -> tuple[str, ...]:
    tags = [hair, eyes, "open_mouth" if params.mouth_open >= 0.25 else "closed_mouth"]
    if params.smile > 0.6:
        tags.append("smile")
    tags.append("looking_right" if params.yaw > 12 else "looking_left" if params.yaw < -12 else "facing_viewer")
    closed = [params.left_eye_open < 0.2, params.right_eye_open < 0.2]
    if all(closed):
        tags.append("closed_eyes")
    elif any(closed):
        tags.append("one_eye_closed")
    return tuple(tags)


def _quarter_ring(points: np.ndarray, per_quarter: int = 8) -> np.ndarray:
    """A smooth closed outline through 4 points (e.g. outer, top, inner, bottom of an eye): quarter ellipses."""
    centre = (points[0] + points[2]) / 2
    ring = []
    for k in range(4):
        a, b = points[k] - centre, points[(k + 1) % 4] - centre
        for t in np.linspace(0, math.pi / 2, per_quarter, endpoint=False):
            ring.append(centre + a * math.cos(t) + b * math.sin(t))
    return np.array(ring)


def _shaded(colour: tuple[int, int, int], shade: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * shade)))) for c in colour)


def draw_face(points: np.ndarray, size: int, hair: str, eyes: str, background: tuple[int, int, int] | None = None,
              style: Style | None = None) -> np.ndarray:
    """Draw the cartoon face whose features sit exactly on `points` (24, in [0, 1]); H×W×3 uint8. `style` (hair
    length, fringe, shade, blush, background) is what the landmarks leave free; the default is one plain style."""
    style = style or Style(background=background or BACKGROUNDS[0])
    big = size * _SUPERSAMPLE
    canvas = np.full((big, big, 3), style.background, np.uint8)
    p = points * (big - 1)
    unit = np.linalg.norm(p[22] - p[21]) / 2  # face half-width in pixels
    hair_colour, eye_colour = _shaded(HAIR_COLOURS[hair], style.shade), EYE_COLOURS[eyes]
    thick = max(1, round(unit / 20))
    jaw = L.openpose_face_points(points)[:17] * (big - 1)
    brow_mid = (p[1] + p[4]) / 2
    up = brow_mid - (p[23] + brow_mid) / 2  # from the face's middle toward the top of the head
    across = (p[22] - p[21]) * 0.5  # the face's half-width, image-left to image-right
    top = brow_mid + up * 0.9
    crown = [p[22] + up * 0.9, top, p[21] + up * 0.9]
    head = np.array([*jaw, *crown], np.int32)
    # hair behind the head (down to the style's length), the face, then the bangs over the forehead
    low = -up * style.length
    back = [p[21] - across * 0.3 + low, p[21] - across * 0.22 - up * 0.1, crown[2] - across * 0.15, top + up * 0.25,
            crown[0] + across * 0.15, p[22] + across * 0.22 - up * 0.1, p[22] + across * 0.3 + low,
            p[22] + low * 0.9 - across * 0.05, p[21] + low * 0.9 + across * 0.05]
    cv2.fillPoly(canvas, [np.array(back, np.int32)], hair_colour, cv2.LINE_AA)
    cv2.fillPoly(canvas, [head], SKIN, cv2.LINE_AA)
    cv2.polylines(canvas, [jaw.astype(np.int32)], False, OUTLINE, thick, cv2.LINE_AA)
    # the fringe's lower edge: `strands` points that come down between the brows' line and the hairline
    edge = []
    for k in range(style.strands + 1):
        t = k / style.strands
        along = p[5] * (1 - t) + p[0] * t  # right brow's outer end → left brow's outer end
        dip = style.fringe if 0 < k < style.strands else style.fringe * 0.5
        edge.append(along + up * (0.3 - dip))
        if k < style.strands:
            edge.append(p[5] * (1 - t - 0.5 / style.strands) + p[0] * (t + 0.5 / style.strands) + up * 0.32)
    bangs = np.array([p[21] + up * 0.2, crown[2], top + up * 0.1, crown[0], p[22] + up * 0.2, *edge], np.int32)
    cv2.fillPoly(canvas, [bangs], hair_colour, cv2.LINE_AA)
    if style.blush:  # soft pink on the cheeks, blended so the skin still reads as skin
        layer = canvas.copy()
        for eye_bottom in (p[9], p[14]):
            cheek = eye_bottom + (p[16] - (p[7] + p[12]) / 2) * 0.7
            cv2.ellipse(layer, tuple(int(v) for v in cheek), (max(1, int(unit * 0.2)), max(1, int(unit * 0.09))),
                        0, 0, 360, (240, 150, 160), -1, cv2.LINE_AA)
        canvas = cv2.addWeighted(layer, 0.35, canvas, 0.65, 0)
    for brow in ((0, 1, 2), (3, 4, 5)):
        cv2.polylines(canvas, [p[list(brow)].astype(np.int32)], False, OUTLINE, thick * 2, cv2.LINE_AA)
    for outer, inner, top_i, bottom_i, pupil in ((6, 7, 8, 9, 10), (11, 12, 13, 14, 15)):
        ring = _quarter_ring(p[[outer, top_i, inner, bottom_i]]).astype(np.int32)
        opening = p[bottom_i, 1] - p[top_i, 1]
        if opening < unit * 0.08:  # a closed eye: one line
            cv2.polylines(canvas, [p[[outer, top_i, inner]].astype(np.int32)], False, OUTLINE, thick * 2,
                          cv2.LINE_AA)
            continue
        eye_mask = np.zeros(canvas.shape[:2], np.uint8)
        cv2.fillPoly(eye_mask, [ring], 255)
        layer = canvas.copy()
        cv2.fillPoly(layer, [ring], EYE_WHITE, cv2.LINE_AA)
        radius = max(2, int(0.7 * max(opening, unit * 0.2)))
        centre = tuple(int(v) for v in p[pupil])
        cv2.circle(layer, centre, radius, eye_colour, -1, cv2.LINE_AA)
        cv2.circle(layer, centre, max(1, radius // 3), OUTLINE, -1, cv2.LINE_AA)
        canvas[eye_mask > 0] = layer[eye_mask > 0]  # the iris is clipped by the lids
        upper_lid = _quarter_ring(p[[outer, top_i, inner, bottom_i]])[:17].astype(np.int32)  # outer→top→inner
        cv2.polylines(canvas, [upper_lid], False, OUTLINE, thick, cv2.LINE_AA)  # anime: a lash line, no ring
    cv2.circle(canvas, tuple(int(v) for v in p[16]), thick, (200, 140, 120), -1, cv2.LINE_AA)
    mouth = _quarter_ring(p[[17, 19, 18, 20]]).astype(np.int32)
    if p[20, 1] - p[19, 1] > unit * 0.1:
        cv2.fillPoly(canvas, [mouth], MOUTH, cv2.LINE_AA)
        cv2.polylines(canvas, [mouth], True, OUTLINE, thick, cv2.LINE_AA)
    else:
        cv2.polylines(canvas, [p[[17, 20, 18]].astype(np.int32)], False, MOUTH, thick * 2, cv2.LINE_AA)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)


def make_face(rng: np.random.Generator, size: int, *, hair: str | None = None, eyes: str | None = None,
              params: L.FaceParams | None = None) -> SyntheticFace:
    params = params or random_params(rng)
    hair = hair or str(rng.choice(list(HAIR_COLOURS)))
    eyes = eyes or str(rng.choice(list(EYE_COLOURS)))
    style = random_style(rng)
    points = L.parametric_face(params)
    image = draw_face(points, size, hair, eyes, style=style)
    return SyntheticFace(image, points, tags_for(params, hair, eyes), params, hair, eyes, style)


def make_faces(count: int, size: int, seed: int = 0, **fixed: str) -> list[SyntheticFace]:
    """`count` faces of size×size, reproducible from `seed` (face i from seed and i, so subsets agree)."""
    return [make_face(np.random.default_rng([seed, i]), size, **fixed) for i in range(count)]


# ---------------------------------------------------------------------------------------------- reading back
FEATURE_POINTS = ("left_eye", "right_eye", "mouth", "face_left", "face_right", "chin")


def _nearest_colour_classes(image: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> dict[str, np.ndarray]:
    names = list(palette)
    colours = np.array([palette[name] for name in names], np.float32)
    distance = ((image.astype(np.float32)[:, :, None, :] - colours[None, None]) ** 2).sum(axis=-1)
    nearest = distance.argmin(axis=-1)
    return {name: nearest == k for k, name in enumerate(names)}


def _colour_weight(image: np.ndarray, colour: tuple[int, int, int], spread: float = 70.0) -> np.ndarray:
    """How close each pixel is to `colour` (1 on it, falling off smoothly): soft, so a 2-pixel iris blended
    with its neighbours at 32 px still counts."""
    distance2 = ((image.astype(np.float32) - np.array(colour, np.float32)) ** 2).sum(axis=-1)
    return np.exp(-distance2 / (2 * spread**2))


def _weighted_centre(weight: np.ndarray, minimum: float) -> np.ndarray | None:
    weight = np.where(weight > 0.2, weight, 0.0)  # faint likeness everywhere must not add up to a part
    total = float(weight.sum())
    if total < minimum:
        return None
    ys, xs = np.indices(weight.shape)
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / total


def detect_features(image: np.ndarray, hair: str, eyes: str, eye_reach: float = 1 / 8) -> dict[str, np.ndarray | None]:
    """Where the face's parts are in an image drawn in the synthetic palette: the skin region (pixels nearest to
    the skin tone; its largest blob) gives the face sides (leftmost, rightmost) and the chin (lowest point);
    inside its box, the eye colours' (white, iris) weighted centre on each side of the box's midline gives the
    eyes, and
    the mouth colour's below the middle gives the mouth. None for a part that is not found. Knows nothing of
    the landmarks asked for: this is the independent read-back behind `landmark_error`. `eye_reach`: how far
    below the box's middle (a share of its height) an eye may be (a face rolled 30° needs 1/4)."""
    height, width = image.shape[:2]
    palette = {"skin": SKIN, "hair": HAIR_COLOURS[hair], "iris": EYE_COLOURS[eyes], "white": EYE_WHITE,
               "outline": OUTLINE, "mouth": MOUTH, **{f"bg{i}": c for i, c in enumerate(BACKGROUNDS)}}
    classes = _nearest_colour_classes(image, palette)
    scale = np.array([width - 1, height - 1], np.float64)
    found: dict[str, np.ndarray | None] = dict.fromkeys(FEATURE_POINTS)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(classes["skin"].astype(np.uint8))
    if count < 2:
        return found
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    ys, xs = np.nonzero(labels == biggest)
    found["face_left"] = np.array([xs.min(), ys[xs == xs.min()].mean()]) / scale
    found["face_right"] = np.array([xs.max(), ys[xs == xs.max()].mean()]) / scale
    found["chin"] = np.array([xs[ys == ys.max()].mean(), ys.max()]) / scale
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    middle_x, middle_y = (x0 + x1) // 2, (y0 + y1) // 2
    minimum = max(0.5, width * height / 4096)  # about one pixel's worth at 64 px
    # an eye is its white and its iris (at 32 px the iris alone is a blend of a pixel or two)
    iris = np.maximum(_colour_weight(image, EYE_COLOURS[eyes]), _colour_weight(image, EYE_WHITE, 40.0))
    iris = iris * ~classes["hair"]  # pink hair is within the soft reach of purple eyes: the fringe is no eye
    box = np.zeros_like(iris)
    box[y0:middle_y + int((y1 - y0) * eye_reach), x0:x1] = 1.0  # a rolled face's lower eye sits lower
    for key, columns in (("left_eye", slice(0, middle_x)), ("right_eye", slice(middle_x, width))):
        side = np.zeros_like(iris)
        side[:, columns] = 1.0
        centre = _weighted_centre(iris * box * side, minimum)
        found[key] = None if centre is None else centre / scale
    lower = np.zeros_like(iris)
    lower[middle_y:y1, x0:x1] = 1.0
    centre = _weighted_centre(_colour_weight(image, MOUTH) * lower, minimum)
    found["mouth"] = None if centre is None else centre / scale
    return found


def expected_features(points: np.ndarray) -> dict[str, np.ndarray]:
    n = L.INDEX
    eye = {side: points[[n[f"{side}_eye_{p}"] for p in ("outer", "inner", "top", "bottom")]].mean(axis=0)
           for side in ("left", "right")}
    return {"left_eye": eye["left"], "right_eye": eye["right"],
            "mouth": (points[n["mouth_top"]] + points[n["mouth_bottom"]]) / 2,
            "face_left": points[n["face_left"]], "face_right": points[n["face_right"]], "chin": points[n["chin"]]}


MISSING_PENALTY = 0.5  # a part not found at all counts as half the image away


def landmark_error(image: np.ndarray, points: np.ndarray, hair: str, eyes: str) -> float:
    """Mean distance (in image widths) between the parts read back from `image` and where `points` put them."""
    found = detect_features(image, hair, eyes)
    expected = expected_features(points)
    errors = [MISSING_PENALTY if found[key] is None else float(np.linalg.norm(found[key] - expected[key]))
              for key in FEATURE_POINTS]
    return float(np.mean(errors))
