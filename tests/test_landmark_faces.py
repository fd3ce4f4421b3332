"""Landmark faces: the 24-point schema, its sources (MediaPipe, the parametric face), flips, JSON and renders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipelines.landmark_faces import landmarks as L


def test_schema_counts_match_the_seed() -> None:
    # 3 per brow, 5 per eye, 1 nose, 4 mouth, 2 face sides, 1 chin = 24
    sizes = {part: len(indices) for part, indices in L.PARTS.items()}
    assert sizes == {"left brow": 3, "right brow": 3, "left eye": 5, "right eye": 5, "nose": 1, "mouth": 4,
                     "face": 3}
    assert L.COUNT == 24 and sorted(i for part in L.PARTS.values() for i in part) == list(range(24))
    # every mirror pair joins a left_ name with its right_ twin, and mirroring twice is the identity
    for i, j in L.MIRROR_PAIRS:
        assert L.NAMES[i].replace("left", "X") == L.NAMES[j].replace("right", "X")
    assert [L.MIRROR[m] for m in L.MIRROR] == list(range(24))


@pytest.fixture(scope="module")
def astronaut_landmarks() -> L.PhotoLandmarks:
    from skimage import data

    return L.from_photo(data.astronaut())


def test_mediapipe_on_the_astronaut_gives_24_points_in_anatomical_order(astronaut_landmarks) -> None:
    p = astronaut_landmarks.points * 512
    assert p.shape == (24, 2) and astronaut_landmarks.faces == 1
    # Eileen Collins' face in skimage's astronaut photo (measured by hand on the image): x 170–280, y 70–190
    assert ((p[:, 0] > 170) & (p[:, 0] < 280) & (p[:, 1] > 70) & (p[:, 1] < 190)).all()
    x, y = p[:, 0], p[:, 1]
    n = L.INDEX
    assert max(x[list(L.PARTS["left eye"])]) < min(x[list(L.PARTS["right eye"])])
    assert max(x[list(L.PARTS["left brow"])]) < min(x[list(L.PARTS["right brow"])])
    for side in ("left", "right"):
        assert y[n[f"{side}_brow_middle"]] < y[n[f"{side}_eye_top"]] < y[n[f"{side}_eye_bottom"]]
        assert x[n[f"{side}_eye_outer"]] != x[n[f"{side}_eye_inner"]]
    assert y[n["nose"]] < y[n["mouth_top"]] < y[n["mouth_bottom"]] < y[n["chin"]]
    assert y[n["chin"]] == y.max()
    assert x[n["face_left"]] == x.min() and x[n["face_right"]] == x.max()
    assert x[n["mouth_left"]] < x[n["mouth_right"]]


def test_face_mesh_drawing_of_the_photo_lights_the_face(astronaut_landmarks) -> None:
    drawing = np.asarray(L.face_mesh_drawing(astronaut_landmarks.mesh, 512, 512))
    lit = drawing.max(axis=2) > 0
    ys, xs = np.nonzero(lit)
    assert lit.mean() > 0.01 and 160 < xs.mean() < 290 and 70 < ys.mean() < 190


def test_a_photo_without_a_face_is_refused_plainly() -> None:
    with pytest.raises(L.LandmarkError, match="No face"):
        L.from_photo(Image.new("RGB", (256, 256), (90, 140, 200)))


def test_yaw_moves_every_point_monotonically_and_other_sliders_do_what_they_say() -> None:
    yaws = np.arange(-45, 46, 5)
    xs = np.stack([L.parametric_face(L.FaceParams(yaw=float(y)))[:, 0] for y in yaws])
    assert (np.diff(xs, axis=0) > 0).all()  # every point, the face sides included, moves right as yaw grows
    n = L.INDEX
    closed = L.parametric_face(L.FaceParams(left_eye_open=0.0))
    opened = L.parametric_face(L.FaceParams(left_eye_open=1.0))
    gap = lambda p, side: p[n[f"{side}_eye_bottom"], 1] - p[n[f"{side}_eye_top"], 1]  # noqa: E731
    assert gap(closed, "left") < 0.3 * gap(opened, "left") and gap(closed, "right") == pytest.approx(
        gap(opened, "right"))
    shut, wide = L.parametric_face(L.FaceParams(mouth_open=0.0)), L.parametric_face(L.FaceParams(mouth_open=1.0))
    assert wide[n["mouth_bottom"], 1] - shut[n["mouth_bottom"], 1] > 0.03
    up = L.parametric_face(L.FaceParams(pitch=-20)); down = L.parametric_face(L.FaceParams(pitch=20))  # noqa: E702
    assert down[n["nose"], 1] > up[n["nose"], 1]
    tilted = L.parametric_face(L.FaceParams(roll=20))
    assert tilted[n["right_eye_outer"], 1] > tilted[n["left_eye_outer"], 1]  # clockwise: the right side drops
    narrow, broad = L.parametric_face(L.FaceParams(face_width=0.8)), L.parametric_face(L.FaceParams(face_width=1.2))
    assert np.ptp(broad[:, 0]) > np.ptp(narrow[:, 0])
    with pytest.raises(L.LandmarkError, match="yaw"):
        L.parametric_face(L.FaceParams(yaw=80))


def test_flipping_an_image_mirrors_its_landmarks() -> None:
    # A drawn face flipped with PIL, then its dots read back, equals flip_horizontal of the original points.
    points = L.parametric_face(L.FaceParams(yaw=25, roll=10, left_eye_open=0.2, smile=0.8))
    flipped = L.flip_horizontal(points)
    n = L.INDEX
    np.testing.assert_allclose(flipped[n["right_eye_outer"]], [1 - points[n["left_eye_outer"], 0],
                                                                points[n["left_eye_outer"], 1]])
    np.testing.assert_allclose(flipped[n["nose"]], [1 - points[n["nose"], 0], points[n["nose"], 1]])
    np.testing.assert_allclose(L.flip_horizontal(flipped), points)
    size = 256
    mask = L.dot_mask(points, size, standardize=False)
    image_flipped = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).transpose(Image.FLIP_LEFT_RIGHT))
    redrawn = L.dot_mask(flipped, size, standardize=False) * 255
    assert np.abs(image_flipped.astype(float) - redrawn).mean() < 0.5  # same dots (to a pixel's rounding)
    # the flipped face's left eye is the closed one (the original closed its left eye on the image's left)
    gap = flipped[n["right_eye_bottom"], 1] - flipped[n["right_eye_top"], 1]
    assert gap < flipped[n["left_eye_bottom"], 1] - flipped[n["left_eye_top"], 1]


def test_json_round_trip_and_clear_errors(tmp_path) -> None:
    points = L.parametric_face(L.FaceParams(yaw=10))
    np.testing.assert_allclose(L.from_json(L.to_json(points)), points, atol=1e-5)
    seed_style = json.dumps({"width": 512, "height": 512, "points": (points * 512).tolist()})
    np.testing.assert_allclose(L.from_json(seed_style), points, atol=1e-9)
    with pytest.raises(L.LandmarkError, match="not valid JSON"):
        L.from_json("{points: ")
    with pytest.raises(L.LandmarkError, match="24 points"):
        L.from_json(json.dumps({"points": [[0.5, 0.5]] * 23}))
    with pytest.raises(L.LandmarkError, match="outside the image"):
        L.from_json(json.dumps({"points": [[0.5, 1.5]] + [[0.5, 0.5]] * 23, "width": 1, "height": 1}))
    with pytest.raises(L.LandmarkError, match="in pixels"):
        L.from_json(json.dumps({"points": (points * 512).tolist()}))
    named = json.loads(L.to_json(points))
    del named["points"]["chin"]
    with pytest.raises(L.LandmarkError, match="lacks chin"):
        L.from_json(json.dumps(named))
    rows = L.as_rows(points)
    rows[3][2] = "abc"
    with pytest.raises(L.LandmarkError, match="numbers"):
        L.from_rows(rows)


def test_every_render_keeps_each_part_distinguishable() -> None:
    import cv2

    for params in (L.FaceParams(), L.FaceParams(yaw=-40, smile=1, mouth_open=1), L.FaceParams(roll=25, pitch=20)):
        points = L.parametric_face(params)
        mask = (L.dot_mask(points, 256, standardize=False) > 0).astype(np.uint8)
        labels = cv2.connectedComponents(mask)[1]
        pixel = np.rint(points * 255).astype(int)
        part_of_blob: dict[int, str] = {}
        for part, indices in L.PARTS.items():  # no dot of one part merges with a dot of another part
            for i in indices:
                blob = int(labels[pixel[i, 1], pixel[i, 0]])
                assert blob > 0 and part_of_blob.setdefault(blob, part) == part, (params, L.NAMES[i])
        assert len(set(part_of_blob)) >= 18  # and most points stay single dots (the face is 0.48 of the frame)
        standard = L.dot_mask(points, 64)
        assert abs(standard.mean()) < 1e-5 and standard.std() == pytest.approx(1.0, abs=1e-4)
        pose = L.openpose_face_points(points)
        assert pose.shape == (70, 2)
        # the 70 OpenPose points keep their parts where ours are: pupils on our pupils, jaw ends on the sides
        np.testing.assert_allclose(pose[68], points[L.INDEX["left_pupil"]])
        np.testing.assert_allclose(pose[0], points[L.INDEX["face_left"]])
        np.testing.assert_allclose(pose[8], points[L.INDEX["chin"]])
        assert pose[36:42, 0].mean() < pose[42:48, 0].mean()  # OpenPose's eye 36–41 is the image's left one
        drawn = (np.asarray(L.openpose_face(points, 512, 512)).max(axis=2) > 0).astype(np.uint8)
        assert cv2.connectedComponents(drawn)[0] - 1 >= 50  # most of the 70 dots stay separate at 512 px


def test_synthetic_faces_carry_exact_landmarks_and_tags() -> None:
    from pipelines.landmark_faces import synthetic as S

    faces = S.make_faces(24, 64, seed=3)
    own = [S.landmark_error(f.image, f.points, f.hair, f.eyes) for f in faces]
    others = [S.landmark_error(faces[(i + 5) % 24].image, f.points, f.hair, f.eyes) for i, f in enumerate(faces)]
    noise = [S.landmark_error(np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8), f.points,
                              f.hair, f.eyes) for i, f in enumerate(faces)]
    # read back by colour alone, each face's parts sit where its own landmarks say, not where another face's do
    # (a shut eye shows no eye colour, so it is read as missing: the faces with both eyes open set the bound)
    both_open = [error for error, f in zip(own, faces, strict=True)
                 if min(f.params.left_eye_open, f.params.right_eye_open) > 0.3]
    assert len(both_open) >= 6 and np.mean(both_open) < 0.09
    assert np.mean(own) < 0.6 * np.mean(others) and np.mean(noise) > 0.3
    for face in faces:
        assert face.hair in face.tags and face.eyes in face.tags
        assert ("open_mouth" in face.tags) == (face.params.mouth_open >= 0.25)
        turn = "looking_right" if face.params.yaw > 12 else "looking_left" if face.params.yaw < -12 else "facing_viewer"
        assert turn in face.tags
    # the pupils are drawn on the pupil points: at 256 px the pixel under each is the dark pupil, ringed by iris
    face = S.make_face(np.random.default_rng(0), 256, params=L.FaceParams(left_eye_open=1, right_eye_open=1))
    for name in ("left_pupil", "right_pupil"):
        x, y = np.rint(face.points[L.INDEX[name]] * 255).astype(int)
        assert np.abs(face.image[y, x].astype(int) - S.OUTLINE).max() < 25
        ring = face.image[y, x + 6].astype(int)
        assert np.abs(ring - S.EYE_COLOURS[face.eyes]).max() < 40
