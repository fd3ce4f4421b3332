"""Landmark faces tab handlers: sliders, table, JSON and photo sources answer bad input in words; generating with
the tiny U-Net is labelled as a test model."""

from __future__ import annotations

import json

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from pipelines.landmark_faces import landmarks as L
from tabs import landmark_faces as tab

DEFAULTS = [getattr(L.FaceParams(), name) for name in L.PARAM_NAMES]


def test_sliders_update_points_overlay_and_table() -> None:
    points, overlay, rows = tab.on_sliders(*DEFAULTS)
    np.testing.assert_allclose(points, L.parametric_face())
    assert overlay.size == (tab.OVERLAY_SIZE, tab.OVERLAY_SIZE) and len(rows) == 24
    turned = tab.on_sliders(*([30.0] + DEFAULTS[1:]))[0]
    assert np.mean(np.asarray(turned)[:, 0]) > np.mean(np.asarray(points)[:, 0])


def test_table_edits_apply_and_bad_cells_are_refused_plainly() -> None:
    rows = L.as_rows(L.parametric_face())
    rows[16][2] = 0.6  # move the nose
    points = tab.on_table(rows)[0]
    assert points[16][0] == pytest.approx(0.6)
    rows[16][2] = 3.0
    with pytest.raises(gr.Error, match="outside the image"):
        tab.on_table(rows)


def test_json_import_export_and_bad_files(tmp_path) -> None:
    points = L.parametric_face(L.FaceParams(roll=12))
    exported = tab.on_export(points.tolist())
    np.testing.assert_allclose(tab.on_json(exported)[0], points, atol=1e-5)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"points": [[0.1, 0.2]] * 5}))
    with pytest.raises(gr.Error, match="24 points"):
        tab.on_json(str(bad))
    with pytest.raises(gr.Error, match="Choose a landmark JSON"):
        tab.on_json(None)


def test_a_photo_without_a_face_says_so() -> None:
    with pytest.raises(gr.Error, match="No face was found"):
        tab.on_photo(Image.new("RGB", (200, 200), (30, 120, 40)))


def test_generating_with_the_tiny_unet_is_labelled_as_a_test_model() -> None:
    gallery, notes = tab.on_generate_unet(L.parametric_face().tolist(), "tiny:landmark_unet", "smile", 2.0, 2, 0, 2,
                                          progress=lambda *a, **k: None)
    assert len(gallery) == 2 and gallery[0].size == (tab.UPSCALE, tab.UPSCALE)
    assert "test model" in notes and "noise" in notes
    with pytest.raises(gr.Error, match="Guidance"):
        tab.on_generate_unet(L.parametric_face().tolist(), "tiny:landmark_unet", "", 99.0, 2, 0, 1,
                             progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="prompt"):
        tab.on_generate_controlnet(L.parametric_face().tolist(), "tiny:sd15", "tiny:controlnet", "  ", "", 2, 7, 1,
                                   0, 64, None, "tiny:ip_adapter", 0.6, progress=lambda *a, **k: None)


def _faces_zip(tmp_path, count: int = 6, with_labels: bool = True):
    import zipfile

    from pipelines.landmark_faces import synthetic

    path = tmp_path / "faces.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for index, face in enumerate(synthetic.make_faces(count, 32, seed=3)):
            buffer = __import__("io").BytesIO()
            Image.fromarray(face.image).save(buffer, format="PNG")
            archive.writestr(f"my_faces/face_{index}.png", buffer.getvalue())
            if with_labels:
                archive.writestr(f"my_faces/face_{index}.json", L.to_json(face.points, tags=list(face.tags)))
    return str(path)


def test_training_from_the_tab_on_a_zip_adds_the_model_and_history_resumes_it(tmp_path, monkeypatch) -> None:
    from pipelines.core.records import default_store
    from pipelines.core.runs import rerun

    monkeypatch.setenv("ASL_OUTPUTS", str(tmp_path / "outputs"))
    updates = list(tab.on_train(_faces_zip(tmp_path), "mine", 32, 8, 4, 4, 0, "sample",
                                progress=lambda *a, **k: None))
    status, dropdown = updates[-1]
    assert "4/4" in status or "4 steps" in status, status
    assert any(label == "Trained here: mine" for label, _ in dropdown["choices"])
    assert dropdown["value"].endswith("mine.safetensors")
    faces = tab.on_generate_unet(L.parametric_face().tolist(), dropdown["value"], "smile", 2.0, 2, 0, 1,
                                 progress=lambda *a, **k: None)[0]
    assert len(faces) == 1
    record = next(r for r in default_store().list(tab="Landmark faces") if r.params.get("path") == "train")
    assert record.params["steps_done"] == 4 and record.params["config"]["data"].endswith("mine")
    again = rerun(record.id, default_store())  # the same settings: resumes at its last checkpoint, 0 steps to go
    assert again.status == "done" and again.params["steps_done"] == 4


def test_training_input_problems_are_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ASL_OUTPUTS", str(tmp_path / "outputs"))
    train = tab.friendly_errors(tab.on_train)  # as the page calls it
    with pytest.raises(gr.Error, match="no face_0.json"):
        list(train(_faces_zip(tmp_path, with_labels=False), "mine", 32, 8, 4, 4, 0, "sample",
                   progress=lambda *a, **k: None))
    with pytest.raises(gr.Error, match="name"):
        list(train(_faces_zip(tmp_path), "../up", 32, 8, 4, 4, 0, "sample", progress=lambda *a, **k: None))
