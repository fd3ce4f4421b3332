"""The seed's 24-point anime face landmarks: schema, JSON, sources (photo, parametric face), flips and renders.

Coordinates are (x, y) in [0, 1] of the image's width and height, y downwards. "Left" and "right" mean the
image's left and right (the viewer's), so a flip swaps every left part with its right twin. Order (the one
internal format; JSON files, the table and the model all use it):

    0-2   left brow: outer, middle, inner          3-5   right brow: inner, middle, outer
    6-10  left eye: outer, inner, top, bottom, pupil   11-15 right eye: outer, inner, top, bottom, pupil
    16    nose                                     17-20 mouth: left, right, top, bottom
    21-22 face side: left, right                   23    chin

Renders of the condition: `dot_mask` (the seed's binary dots, standardised to mean 0 / std 1),
`openpose_face` (OpenPose's 68 face points + 2 pupils, interpolated from our 24, drawn as controlnet_aux draws
faces) and `face_mesh_drawing` (MediaPipe's mesh, for a photo). Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core.errors import UserError

NAMES: tuple[str, ...] = (
    "left_brow_outer", "left_brow_middle", "left_brow_inner",
    "right_brow_inner", "right_brow_middle", "right_brow_outer",
    "left_eye_outer", "left_eye_inner", "left_eye_top", "left_eye_bottom", "left_pupil",
    "right_eye_outer", "right_eye_inner", "right_eye_top", "right_eye_bottom", "right_pupil",
    "nose",
    "mouth_left", "mouth_right", "mouth_top", "mouth_bottom",
    "face_left", "face_right", "chin",
)
COUNT = len(NAMES)
INDEX = {name: i for i, name in enumerate(NAMES)}
PARTS: dict[str, tuple[int, ...]] = {
    "left brow": (0, 1, 2), "right brow": (3, 4, 5), "left eye": (6, 7, 8, 9, 10),
    "right eye": (11, 12, 13, 14, 15), "nose": (16,), "mouth": (17, 18, 19, 20), "face": (21, 22, 23),
}


def _mirror_table() -> tuple[int, ...]:
    """Index of each point's left/right twin (itself for the midline points)."""
    table = []
    for name in NAMES:
        if name.startswith("left_"):
            twin = "right_" + name.removeprefix("left_")
        elif name.startswith("right_"):
            twin = "left_" + name.removeprefix("right_")
        elif name.endswith("_left"):
            twin = name.removesuffix("_left") + "_right"
        elif name.endswith("_right"):
            twin = name.removesuffix("_right") + "_left"
        else:
            twin = name
        table.append(INDEX[twin])
    return tuple(table)


MIRROR = _mirror_table()
MIRROR_PAIRS = tuple((i, j) for i, j in enumerate(MIRROR) if i < j)


class LandmarkError(UserError, ValueError):
    """Landmarks that cannot be used (wrong count, outside the image, malformed JSON, no face); says why."""


# ---------------------------------------------------------------------------------------------- checking, JSON
def check_points(points: Any, *, where: str = "The landmarks") -> np.ndarray:
    """A (24, 2) float array in [0, 1], or LandmarkError naming what is wrong."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise LandmarkError(f"{where} are not numbers ({err}).") from None
    if array.shape != (COUNT, 2):
        raise LandmarkError(f"{where} need {COUNT} points of (x, y); got shape {tuple(array.shape)}.")
    if not np.isfinite(array).all():
        raise LandmarkError(f"{where} contain a missing or infinite value.")
    outside = [NAMES[i] for i in np.flatnonzero(((array < 0) | (array > 1)).any(axis=1))]
    if outside:
        raise LandmarkError(f"{where}: {', '.join(outside[:4])} lie outside the image (coordinates must be 0–1).")
    return array


def to_json(points: Any, **extra: Any) -> str:
    """{"format": "anime-24", "points": {name: [x, y]}, ...extra} — readable and order-independent."""
    array = check_points(points)
    payload = {"format": "anime-24", "points": {name: [round(float(x), 5), round(float(y), 5)]
                                                for name, (x, y) in zip(NAMES, array, strict=True)}, **extra}
    return json.dumps(payload, indent=1)


def from_json(text: str | bytes, *, width: float | None = None, height: float | None = None,
              name: str = "The landmark file") -> np.ndarray:
    """Points from our JSON (named points), or a plain list of 24 [x, y] pairs (the seed's files).

    Pixel coordinates (any value above 1) are divided by `width`/`height`, or by the JSON's own "width"/"height"
    (the seed stored 0–512 pixels); without either they are refused with a clear message. The text is read by the
    core's bounded JSON reader (size and nesting); every field that is wrong is named with what it takes.
    """
    from pipelines.core.userjson import JsonInputError, parse_json

    try:
        data = parse_json(text, name)
    except JsonInputError as err:
        raise LandmarkError(str(err)) from None
    return from_data(data, width=width, height=height, name=name)


def from_data(data: Any, *, width: float | None = None, height: float | None = None,
              name: str = "The landmark file") -> np.ndarray:
    """from_json of JSON already parsed (by core.userjson)."""
    if isinstance(data, dict):
        width = _pixels(data, "width", name) if data.get("width") is not None else width  # null: not given
        height = _pixels(data, "height", name) if data.get("height") is not None else height
        raw = data.get("points", data.get("landmarks"))
        field = "points" if "points" in data else "landmarks"
    else:
        raw, field = data, None
    if raw is None:
        raise LandmarkError(f'{name} has no "points" (a list of 24 [x, y] or an object by name).')
    array = _point_array(raw, name, field)
    if array.size and np.nanmax(array) > 1.0:
        if not width or not height:
            raise LandmarkError(f"{name}: the landmarks are in pixels (values above 1) but the file gives no "
                                '"width"/"height" (the image size in pixels).')
        array = array / np.array([float(width), float(height)])
    return check_points(array, where=f"{name}'s points")


def _pixels(data: dict, key: str, name: str) -> float:
    """A "width"/"height" field: a positive, finite number of pixels."""
    value = data[key]
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and number > 0):
        raise LandmarkError(f'{name}: "{key}" must be the image {key} in pixels, a number above 0 (e.g. 512); '
                            f"got {shown_value(value)}.")
    return number


def shown_value(value: Any) -> str:
    """A value from a user's JSON as a message quotes it: short, and a list or object by its kind."""
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__.replace(
        "dict", "an object").replace("list", "a list")
    return text if len(text) <= 40 else text[:37] + "…"


def _point_array(raw: Any, name: str, field: str | None) -> np.ndarray:
    """(24, 2) floats from a list of [x, y] pairs or an object {landmark name: [x, y]}; names the wrong entry."""
    where = f'{name}\'s "{field}"' if field else name
    if isinstance(raw, dict):
        unknown = [key for key in raw if key not in INDEX]
        missing = [key for key in NAMES if key not in raw]
        if missing:
            raise LandmarkError(f"{where} lacks {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''} (it needs "
                                f"all {COUNT} named points"
                                + (f"; unknown names: {', '.join(map(str, unknown[:3]))}" if unknown else "") + ").")
        pairs = [(f'"{key}"', raw[key]) for key in NAMES]
    elif isinstance(raw, list):
        if len(raw) != COUNT:
            raise LandmarkError(f"{where} must hold {COUNT} points ([x, y] pairs), one per landmark; it holds "
                                f"{len(raw)}.")
        pairs = [(f"point {i + 1} ({NAMES[i]})", value) for i, value in enumerate(raw)]
    else:
        raise LandmarkError(f"{where} must be a list of {COUNT} [x, y] pairs or an object of named [x, y] pairs; "
                            f"got {shown_value(raw)}.")
    return np.array([_pair(value, f"{where}: {label}") for label, value in pairs], dtype=np.float64)


def _pair(value: Any, label: str) -> tuple[float, float]:
    numbers = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers:
        raise LandmarkError(f"{label} must be [x, y], two numbers (0–1, or pixels with a width and height); "
                            f"got {shown_value(value)}.")
    return float(value[0]), float(value[1])


def load_json(path: str | Path) -> np.ndarray:
    """Points from a landmark file (read by the core's bounded JSON reader)."""
    from pipelines.core.userjson import JsonInputError, read_json

    path = Path(path)
    try:
        data = read_json(path)
    except JsonInputError as err:
        raise LandmarkError(str(err)) from None
    return from_data(data, name=path.name)


# ---------------------------------------------------------------------------------------------- flips
def flip_horizontal(points: Any) -> np.ndarray:
    """Landmarks of the horizontally flipped image: x → 1 − x, and each left part swaps with its right twin."""
    array = np.asarray(points, dtype=np.float64)
    flipped = array[list(MIRROR)].copy()
    flipped[:, 0] = 1.0 - flipped[:, 0]
    return flipped


# ---------------------------------------------------------------------------------------------- parametric face
@dataclass(frozen=True)
class FaceParams:
    """A parametric face. Angles in degrees: yaw > 0 turns the face toward the image's right, pitch > 0 tilts
    it down, roll > 0 turns it clockwise. Openness, mouth and smile are 0–1; gaze −1–1; width a factor."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    left_eye_open: float = 1.0
    right_eye_open: float = 1.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0
    mouth_open: float = 0.2
    smile: float = 0.3
    face_width: float = 1.0


LIMITS: dict[str, tuple[float, float]] = {
    "yaw": (-45.0, 45.0), "pitch": (-30.0, 30.0), "roll": (-30.0, 30.0), "left_eye_open": (0.0, 1.0),
    "right_eye_open": (0.0, 1.0), "gaze_x": (-1.0, 1.0), "gaze_y": (-1.0, 1.0), "mouth_open": (0.0, 1.0),
    "smile": (0.0, 1.0), "face_width": (0.8, 1.25),
}
PARAM_NAMES = tuple(f.name for f in fields(FaceParams))
_PIVOT_Z = -0.6  # heads turn about the neck, behind the face's centre: features move with the turn
_HEAD_DEPTH = 0.9  # head outline: an ellipse of half-width 1 and half-depth 0.9 (in face half-widths)
# Face half-width as a share of the image, and where the head centre sits: small and low enough that the hair
# on top of the head stays in the frame at every pitch/roll the sliders allow (±30°) and the widest face fits.
_SCALE, _CENTRE = 0.24, (0.5, 0.54)


def check_params(params: FaceParams) -> FaceParams:
    for name in PARAM_NAMES:
        low, high = LIMITS[name]
        value = float(getattr(params, name))
        if not math.isfinite(value) or not low <= value <= high:
            raise LandmarkError(f"{name.replace('_', ' ')} must be between {low:g} and {high:g}, got {value}.")
    return params


def _template(params: FaceParams) -> np.ndarray:
    """The face's 3D points (x right, y down, z toward the viewer; units of face half-width), sides excluded."""
    p = params
    eye_h = 0.17
    points = np.zeros((COUNT, 3))
    for side, sign, openness in (("left", -1.0, p.left_eye_open), ("right", 1.0, p.right_eye_open)):
        brow = (0, 1, 2) if side == "left" else (5, 4, 3)  # outer, middle, inner
        points[brow[0]] = (sign * 0.72, -0.58, 0.55)
        points[brow[1]] = (sign * 0.45, -0.68, 0.78)
        points[brow[2]] = (sign * 0.16, -0.58, 0.9)
        outer, inner, top, bottom, pupil = range(6, 11) if side == "left" else range(11, 16)
        lid = eye_h * (0.1 + 0.9 * openness)  # a closed eye keeps a sliver so its points stay apart
        points[outer] = (sign * 0.64, -0.24, 0.6)
        points[inner] = (sign * 0.2, -0.24, 0.86)
        points[top] = (sign * 0.44, -0.24 - lid, 0.82)
        points[bottom] = (sign * 0.44, -0.24 + 0.6 * lid, 0.82)
        points[pupil] = (sign * 0.44 + 0.12 * p.gaze_x, -0.24 - 0.2 * lid + 0.5 * lid * p.gaze_y, 0.84)
    points[16] = (0.0, 0.16, 1.05)
    half_mouth = 0.2 + 0.08 * p.smile
    corner_y = 0.52 - 0.08 * p.smile
    points[17] = (-half_mouth, corner_y, 0.86)
    points[18] = (half_mouth, corner_y, 0.86)
    points[19] = (0.0, 0.48 - 0.02 * p.smile, 0.93)
    points[20] = (0.0, 0.54 + 0.04 * p.smile + 0.2 * p.mouth_open, 0.91)
    points[23] = (0.0, 0.98, 0.55)
    points[:, 0] *= p.face_width
    return points


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, x, z = (math.radians(v) for v in (yaw, pitch, roll))
    about_y = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    about_x = np.array([[1, 0, 0], [0, math.cos(x), math.sin(x)], [0, -math.sin(x), math.cos(x)]])
    about_z = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return about_z @ about_x @ about_y


def parametric_face(params: FaceParams | None = None) -> np.ndarray:
    """The 24 landmarks of a parametric face (orthographic view of a rigid 3D template)."""
    params = check_params(params or FaceParams())
    points = _template(params)
    pivot = np.array([0.0, 0.0, _PIVOT_Z])
    yaw = math.radians(params.yaw)
    # The face sides are the head outline's silhouette at eye level, not fixed points: after the turn the
    # outline's extreme x is the ellipse's support ±sqrt(w²cos² + d²sin²) about the (moved) head centre.
    width = params.face_width
    reach = math.sqrt((width * math.cos(yaw)) ** 2 + (_HEAD_DEPTH * math.sin(yaw)) ** 2)
    centre_x = -_PIVOT_Z * math.sin(yaw)
    centre_z = _PIVOT_Z + (-_PIVOT_Z) * math.cos(yaw)
    turned = (points - pivot) @ _rotation(params.yaw, 0.0, 0.0).T + pivot
    turned[21] = (centre_x - reach, 0.05, centre_z)
    turned[22] = (centre_x + reach, 0.05, centre_z)
    tilted = turned @ _rotation(0.0, params.pitch, params.roll).T
    xy = tilted[:, :2] * _SCALE + np.array(_CENTRE)
    return np.clip(xy, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------- photo source
# MediaPipe FaceMesh (478 points with refine_landmarks) → our 24. Image-left is the subject's right side.
MEDIAPIPE_INDEX: tuple[int, ...] = (
    70, 105, 107, 336, 334, 300,  # brows: image-left outer/middle/inner, image-right inner/middle/outer
    33, 133, 159, 145, 468,  # image-left eye: outer, inner, top, bottom, iris centre
    263, 362, 386, 374, 473,  # image-right eye
    1,  # nose tip
    61, 291, 0, 17,  # mouth: left corner, right corner, top of upper lip, bottom of lower lip
    234, 454, 152,  # face sides at the cheekbones, chin
)


@dataclass
class PhotoLandmarks:
    points: np.ndarray  # (24, 2) in [0, 1]
    mesh: np.ndarray  # (478, 2) in [0, 1]: MediaPipe's full mesh, for the face-mesh drawing
    faces: int  # how many faces MediaPipe found
    note: str  # e.g. "3 faces found; the largest is used"
    size: tuple[int, int]  # (width, height) of the photo


def from_photo(image: Any, max_faces: int = 5) -> PhotoLandmarks:
    """MediaPipe FaceMesh (its bundled model) on a photo → our 24 points of the largest face."""
    import mediapipe as mp

    from pipelines.core.images import load_image

    picture = load_image(image, max_side=2048, name="The photo")
    pixels = np.asarray(picture.convert("RGB"))
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
                                         min_detection_confidence=0.5) as mesh_model:
        found = mesh_model.process(pixels).multi_face_landmarks or []
    if not found:
        raise LandmarkError("No face was found in the photo. MediaPipe is trained on photos of real faces; for a "
                            "drawing, set the points with the sliders or in the table instead.")
    meshes = [np.array([(p.x, p.y) for p in face.landmark]) for face in found]
    areas = [np.prod(mesh.max(axis=0) - mesh.min(axis=0)) for mesh in meshes]
    largest = meshes[int(np.argmax(areas))]
    note = "" if len(meshes) == 1 else f"{len(meshes)} faces found; the largest is used."
    points = np.clip(largest[list(MEDIAPIPE_INDEX)], 0.0, 1.0)
    return PhotoLandmarks(points, np.clip(largest, 0.0, 1.0), len(meshes), note, picture.size)


# ---------------------------------------------------------------------------------------------- renders
def dot_mask(points: Any, size: int, radius: float | None = None, standardize: bool = True) -> np.ndarray:
    """The seed's condition: a size×size mask with a white dot per landmark, standardised to mean 0, std 1.

    The dot radius defaults to size/64 (at least half a pixel, so every point lights at least one pixel)."""
    import cv2

    array = check_points(points)
    radius = max(0.5, size / 64) if radius is None else float(radius)
    mask = np.zeros((size, size), np.float32)
    shift = 4  # sub-pixel precision for cv2.circle
    for x, y in array * (size - 1):
        centre = (int(round(x * (1 << shift))), int(round(y * (1 << shift))))
        cv2.circle(mask, centre, max(0, int(round((radius - 0.5) * (1 << shift)))), 1.0, -1, cv2.LINE_8, shift)
    if not standardize:
        return mask
    return (mask - mask.mean()) / max(float(mask.std()), 1e-6)


def _ellipse_arc(centre: np.ndarray, a: np.ndarray, b: np.ndarray, count: int) -> np.ndarray:
    """`count` points from centre+a to centre+b along a quarter ellipse with those half-axes."""
    angles = np.linspace(0.0, math.pi / 2, count)
    return centre + np.outer(np.cos(angles), a) + np.outer(np.sin(angles), b)


def _polyline(points: np.ndarray, count: int) -> np.ndarray:
    """`count` points evenly spaced (by arc length) along a polyline."""
    lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    targets = np.linspace(0.0, lengths[-1], count)
    return np.stack([np.interp(targets, lengths, points[:, k]) for k in range(2)], axis=1)


def _eye_ring(outer: np.ndarray, inner: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """OpenPose's 6 eye points (outer, 2 on the upper lid, inner, 2 on the lower lid) from our 4."""
    upper = [outer + (top - outer) * 0.7 + (inner - outer) * 0.05, inner + (top - inner) * 0.7]
    lower = [inner + (bottom - inner) * 0.7, outer + (bottom - outer) * 0.7]
    return np.array([outer, *upper, inner, *lower])


def openpose_face_points(points: Any) -> np.ndarray:
    """OpenPose's 70 face keypoints (68 iBUG points + 2 pupils) interpolated from our 24, in [0, 1]."""
    p = check_points(points)
    centre = (p[21] + p[22]) / 2
    jaw = np.concatenate([_ellipse_arc(centre, p[21] - centre, p[23] - centre, 9),
                          _ellipse_arc(centre, p[22] - centre, p[23] - centre, 9)[::-1][1:]])
    left_brow = _polyline(p[[0, 1, 2]], 5)
    right_brow = _polyline(p[[3, 4, 5]], 5)
    bridge_top = (p[7] + p[12]) / 2
    bridge = bridge_top + np.outer(np.linspace(0.0, 1.0, 4), p[16] - bridge_top)
    nostril_span = (p[18] - p[17]) * 0.35
    nostrils = p[16] + np.outer(np.linspace(-1.0, 1.0, 5), nostril_span) + (p[19] - p[16]) * 0.25
    left_eye = _eye_ring(p[6], p[7], p[8], p[9])
    right_eye = _eye_ring(p[11], p[12], p[13], p[14])[[3, 2, 1, 0, 5, 4]]  # OpenPose: inner first on this side
    left, right, top, bottom = p[17], p[18], p[19], p[20]
    middle = (left + right) / 2
    outer_lip = np.array([left, left + (top - left) * 0.45, middle + (top - middle) * 1.0 + (left - middle) * 0.2,
                          top, middle + (top - middle) * 1.0 + (right - middle) * 0.2, right + (top - right) * 0.45,
                          right, right + (bottom - right) * 0.5, middle + (bottom - middle) + (right - middle) * 0.25,
                          bottom, middle + (bottom - middle) + (left - middle) * 0.25, left + (bottom - left) * 0.5])
    inner_top, inner_bottom = middle + (top - middle) * 0.5, middle + (bottom - middle) * 0.5
    inner_lip = np.array([left + (middle - left) * 0.15, (inner_top + left) / 2 + (middle - left) * 0.1, inner_top,
                          (inner_top + right) / 2 + (middle - right) * 0.1, right + (middle - right) * 0.15,
                          (inner_bottom + right) / 2 + (middle - right) * 0.1, inner_bottom,
                          (inner_bottom + left) / 2 + (middle - left) * 0.1])
    pupils = p[[10, 15]]
    return np.clip(np.concatenate([jaw, left_brow, right_brow, bridge, nostrils, left_eye, right_eye, outer_lip,
                                   inner_lip, pupils]), 0.0, 1.0)


def openpose_face(points: Any, width: int = 512, height: int = 512) -> Any:
    """The OpenPose-face condition: white dots on black, as controlnet_aux's draw_facepose draws them."""
    import cv2
    from PIL import Image

    canvas = np.zeros((height, width, 3), np.uint8)
    radius = max(1, round(3 * min(width, height) / 512))
    for x, y in openpose_face_points(points) * np.array([width - 1, height - 1]):
        cv2.circle(canvas, (int(round(x)), int(round(y))), radius, (255, 255, 255), thickness=-1)
    return Image.fromarray(canvas)


def face_mesh_drawing(mesh: np.ndarray, width: int = 512, height: int = 512) -> Any:
    """MediaPipe's own face-mesh drawing (tesselation, contours, irises) of a 478-point mesh, on black: the
    condition the MediaPipe-face ControlNet was trained on."""
    import mediapipe as mp
    from mediapipe.framework.formats import landmark_pb2
    from PIL import Image

    solutions = mp.solutions
    landmark_list = landmark_pb2.NormalizedLandmarkList(
        landmark=[landmark_pb2.NormalizedLandmark(x=float(x), y=float(y), z=0.0) for x, y in mesh])
    canvas = np.zeros((height, width, 3), np.uint8)
    styles = solutions.drawing_styles
    draw = solutions.drawing_utils.draw_landmarks
    draw(canvas, landmark_list, solutions.face_mesh.FACEMESH_TESSELATION, None,
         styles.get_default_face_mesh_tesselation_style())
    draw(canvas, landmark_list, solutions.face_mesh.FACEMESH_CONTOURS, None,
         styles.get_default_face_mesh_contours_style())
    if len(mesh) >= 478:
        draw(canvas, landmark_list, solutions.face_mesh.FACEMESH_IRISES, None,
             styles.get_default_face_mesh_iris_connections_style())
    return Image.fromarray(canvas)


PART_COLOURS: dict[str, tuple[int, int, int]] = {
    "left brow": (255, 170, 0), "right brow": (255, 110, 0), "left eye": (0, 200, 255), "right eye": (0, 120, 255),
    "nose": (255, 255, 0), "mouth": (255, 60, 120), "face": (120, 255, 120),
}


def overlay(points: Any, image: Any | None = None, size: int = 384, numbers: bool = False) -> Any:
    """The landmarks drawn over an image (or a grey canvas), one colour per part — the tab's live preview."""
    import cv2
    from PIL import Image

    array = check_points(points)
    if image is None:
        canvas = np.full((size, size, 3), 40, np.uint8)
    else:
        canvas = np.array(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    pixels = array * (size - 1)
    for part, indices in PARTS.items():
        colour = PART_COLOURS[part]
        chain = pixels[list(indices)].round().astype(np.int32)
        if part in ("left eye", "right eye"):
            ring = chain[[0, 2, 1, 3]]  # outer, top, inner, bottom
            cv2.polylines(canvas, [ring], True, colour, 1, cv2.LINE_AA)
        elif part == "face":  # the jaw as OpenPose's 17 points draw it: sides → chin along an ellipse
            jaw = (openpose_face_points(array)[:17] * (size - 1)).round().astype(np.int32)
            cv2.polylines(canvas, [jaw], False, colour, 1, cv2.LINE_AA)
        elif len(chain) > 1 and part != "mouth":
            cv2.polylines(canvas, [chain], False, colour, 1, cv2.LINE_AA)
        elif part == "mouth":
            cv2.polylines(canvas, [chain[[0, 2, 1, 3]]], True, colour, 1, cv2.LINE_AA)
        for index, (x, y) in zip(indices, chain, strict=True):
            cv2.circle(canvas, (int(x), int(y)), 3, colour, -1, cv2.LINE_AA)
            if numbers:
                cv2.putText(canvas, str(index), (int(x) + 3, int(y) - 3), cv2.FONT_HERSHEY_PLAIN, 0.7, colour, 1)
    return Image.fromarray(canvas)


def as_rows(points: Any) -> list[list[Any]]:
    """Table rows [index, name, x, y] for the tab's editable table."""
    array = check_points(points)
    return [[i, name, round(float(x), 4), round(float(y), 4)] for i, (name, (x, y)) in enumerate(zip(NAMES, array,
                                                                                                    strict=True))]


def from_rows(rows: Sequence[Sequence[Any]]) -> np.ndarray:
    """Points from the table's rows (matched by name when a name column is present, else by order)."""
    if len(rows) != COUNT:
        raise LandmarkError(f"The table needs exactly {COUNT} rows, one per landmark; it has {len(rows)}.")
    points = np.zeros((COUNT, 2))
    for position, row in enumerate(rows):
        cells = list(row)
        name = str(cells[1]) if len(cells) >= 4 else NAMES[position]
        if name not in INDEX:
            raise LandmarkError(f"Row {position + 1} names an unknown landmark {name!r}.")
        try:
            points[INDEX[name]] = (float(cells[-2]), float(cells[-1]))
        except (TypeError, ValueError):
            raise LandmarkError(f"Row {position + 1} ({name}) needs numbers for x and y.") from None
    return check_points(points, where="The table's points")
