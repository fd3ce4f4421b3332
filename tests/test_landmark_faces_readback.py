"""The per-slider shape read-back (issue #23): checked on synthetic drawings whose parameters are known — the
read-back sees only pixels and where the asked parts are, the generator's parameters are the independent truth —
plus the training's independent dropping of landmarks and tags, the per-slider table stored beside a model,
the Compare run in History and the sliders' event settings (no queueing of stale slider updates)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.landmark_faces import landmarks as L
from pipelines.landmark_faces import readback as R
from pipelines.landmark_faces import synthetic

SIZE = 64


def _drawn(**params: float) -> tuple[np.ndarray, np.ndarray]:
    points = L.parametric_face(L.FaceParams(**params))
    return synthetic.draw_face(points, SIZE, "brown_hair", "blue_eyes"), points


def _measured(**params: float) -> R.Shape:
    image, points = _drawn(**params)
    return R.measured_shape(image, points, "brown_hair", "blue_eyes")


def test_measured_eye_openness_tracks_the_drawn_one_and_a_closed_eye_reads_closed() -> None:
    readings = [_measured(left_eye_open=value, right_eye_open=value) for value in (0.0, 0.5, 1.0)]
    for side in ("left_eye_open", "right_eye_open"):
        values = [getattr(shape, side) for shape in readings]
        assert values[0] < R.CLOSED_BELOW < values[2], values  # shut reads shut, wide open reads open
        assert values[0] < values[1] < values[2], values
        assert values[2] > 0.6
    # one eye closed, the other open: each is read on its own side
    one = _measured(left_eye_open=0.0, right_eye_open=1.0)
    assert one.left_eye_open < R.CLOSED_BELOW < one.right_eye_open


def test_mouth_opening_smile_and_roll_follow_the_drawing() -> None:
    mouths = [_measured(mouth_open=value).mouth_open for value in (0.0, 0.5, 1.0)]
    assert mouths[0] < mouths[1] < mouths[2]
    widths = [_measured(smile=value).mouth_width for value in (0.0, 1.0)]
    assert widths[1] > widths[0]
    for roll in (-30.0, -10.0, 20.0):
        assert _measured(roll=roll).roll == pytest.approx(roll, abs=3.0)  # the eye line's angle, from pixels
    gaze = [_measured(gaze_x=value).gaze_x for value in (-1.0, 1.0)]
    assert gaze[0] < 0 < gaze[1]


def test_a_blank_face_reads_as_nothing_drawn() -> None:
    points = L.parametric_face()
    skin = np.full((SIZE, SIZE, 3), synthetic.SKIN, np.uint8)
    shape = R.measured_shape(skin, points, "brown_hair", "blue_eyes")
    assert shape.left_eye_open == 0.0 and shape.right_eye_open == 0.0 and shape.mouth_open == 0.0
    assert np.isnan(shape.roll)
    check = next(c for c in R.CHECKS if c.slider == "roll")
    assert R.error_of(check, skin, points, "brown_hair", "blue_eyes") == R.MISSING_ERROR["roll"]


def test_asked_shape_is_the_slider_value_on_a_neutral_face() -> None:
    for name, value in (("left_eye_open", 0.3), ("right_eye_open", 0.8), ("gaze_x", -0.6), ("gaze_y", 0.4),
                        ("roll", 17.0)):
        asked = R.asked_shape(L.parametric_face(L.FaceParams(**{name: value})), SIZE)
        assert getattr(asked, name) == pytest.approx(value, abs=1e-6)


def test_the_slider_table_has_every_slider_and_source_and_is_stored_beside_the_model(tmp_path) -> None:
    from pipelines.landmark_faces import load_unet

    model = load_unet("tiny:landmark_unet")
    faces: dict = {}
    report = R.slider_table(model, values_per_slider=2, steps=1, untrained=R.untrained_twin(model), faces_out=faces)
    assert set(report["sliders"]) == set(L.PARAM_NAMES)  # every slider the tab offers
    for entry in report["sliders"].values():
        assert set(R.SOURCES) <= set(entry)
    # the drawings are the floor: their roll is read back within a few degrees, noise is not
    roll = report["sliders"]["roll"]
    assert roll["drawings"] < 5.0 and roll["untrained"] > roll["drawings"]
    assert report["closed_eye_drawn_closed"]["drawings"] == 1.0
    model_file = tmp_path / "m.safetensors"
    model_file.write_bytes(b"")
    assert R.stored_table(str(model_file)) is None
    R.write_into_record(report, model_file.with_suffix(".json"))
    headers, rows = R.table_rows(R.stored_table(str(model_file)))
    assert headers[:2] == ["slider", "unit"] and len(rows) == len(L.PARAM_NAMES) + 1
    assert R.stored_table("tiny:landmark_unet") is None
    # the sheet to judge by eye: the drawings' block holds the drawings themselves, row by row
    sheet = np.asarray(R.sample_grid(faces, 2, model, seeds=2, steps=1))
    size = model.config.image_size
    assert sheet.shape[0] == (len(R.CHECKS) + 1) * size
    block = 2 * size + size // 4
    for row in range(len(R.CHECKS)):
        drawing = np.asarray(faces["images"]["drawings"][2 * row + 1])[:, :, :3]
        np.testing.assert_array_equal(sheet[row * size:(row + 1) * size, block + size:block + 2 * size], drawing)


def test_training_drops_landmarks_and_tags_independently() -> None:
    from pipelines.landmark_faces.train import Batches, TrainConfig, draw_batch, synthetic_data

    config = TrainConfig(image_size=32, batch_size=8, synthetic_count=8, condition_dropout=0.0, tag_mask=0.0)
    data = synthetic_data(config)
    batches = Batches(data, data.vocabulary, config)
    tags_only = draw_batch(batches, replace(config, landmark_dropout=1.0), step=0, timesteps=1000)
    assert float(tags_only["masks"].abs().sum()) == 0 and bool((tags_only["tags"].sum(dim=1) > 0).all())
    marks_only = draw_batch(batches, replace(config, tag_dropout=1.0), step=0, timesteps=1000)
    assert float(marks_only["tags"].sum()) == 0 and bool((marks_only["masks"].abs().sum(dim=(1, 2, 3)) > 0).all())


def test_random_faces_cover_every_slider_range_and_seeds_vary_the_style() -> None:
    faces = synthetic.make_faces(400, 32, seed=3)
    for name, (low, high) in L.LIMITS.items():
        values = [getattr(face.params, name) for face in faces]
        assert min(values) <= low + 0.15 * (high - low) and max(values) >= high - 0.15 * (high - low), name
    assert sum(face.params.left_eye_open == 0.0 for face in faces) > 40  # shut eyes are common, not rare
    styles = {(round(face.style.length, 1), face.style.strands, face.style.blush) for face in faces}
    assert len(styles) > 20
    # the same landmarks and colours with another style give another picture (what a seed may change)
    points = L.parametric_face()
    a = synthetic.draw_face(points, 64, "pink_hair", "green_eyes", style=synthetic.Style(length=0.3))
    b = synthetic.draw_face(points, 64, "pink_hair", "green_eyes", style=synthetic.Style(length=2.2, blush=True))
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 0


def test_the_frame_keeps_the_hair_at_every_pose() -> None:
    for pitch in (-30.0, 30.0):
        for roll in (-30.0, 30.0):
            image, _ = _drawn(pitch=pitch, roll=roll, yaw=45.0, face_width=1.25)
            hair = synthetic._nearest_colour_classes(image, {"hair": synthetic.HAIR_COLOURS["brown_hair"],
                                                             "skin": synthetic.SKIN,
                                                             "bg": synthetic.BACKGROUNDS[0]})["hair"]
            assert not hair[0].any(), (pitch, roll)  # nothing of the hair touches the top edge


def test_the_compare_run_is_recorded_for_history(tmp_path) -> None:
    from pipelines.core.records import RunStore
    from pipelines.landmark_faces.runs import rerun, run_compare

    store = RunStore(tmp_path / "runs")
    record, result = run_compare(L.parametric_face(), ["smile"], model="tiny:landmark_unet", steps=2, count=2,
                                 store=store)
    saved = store.get(record.id)
    assert saved.status == "done" and saved.params["path"] == "compare"
    assert len(saved.outputs) == len(result.gallery) and saved.params["table"]["rows"]
    assert rerun(saved.params, store).params["path"] == "compare"


def test_slider_updates_are_not_queued_behind_each_other() -> None:
    import gradio as gr

    from tabs import landmark_faces as tab

    with gr.Blocks() as demo:
        tab.build()
    slider_events = [fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "on_sliders"
                     or getattr(getattr(fn.fn, "__wrapped__", None), "__name__", "") == "on_sliders"]
    assert len(slider_events) == len(L.PARAM_NAMES)
    for event in slider_events:
        assert event.trigger_mode == "always_last" and event.queue is False


def test_untrained_twin_has_the_models_shape_and_its_initial_weights() -> None:
    from pipelines.landmark_faces import load_unet
    from pipelines.landmark_faces.unet import build

    model = load_unet("tiny:landmark_unet")
    twin = R.untrained_twin(model)
    fresh = build(model.config, seed=0)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[key], value)
