"""The Single-image variation tab's handlers: training with preview and captions, variations, edits, bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from pipelines.single_image.runs import shipped_card, shipped_model
from tabs import single_image as tab

pytestmark = pytest.mark.slow


class _Progress:
    def __call__(self, *args, **kwargs):
        pass


def _photo(tmp_path, side=32, mode="RGB"):
    from skimage import data

    image = Image.fromarray(data.coffee()).resize((side, side), Image.Resampling.LANCZOS).convert(mode)
    path = tmp_path / f"photo_{mode}_{side}.png"
    image.save(path)
    return str(path)


TRAIN_SETTINGS = dict(backbone="fcn", text_mode="none", prompt="", contrastive=False, steps=20, width=8, seed=0,
                      blip="tiny:blip", clip="tiny:clip")


def _train(image, **changes):
    outputs = list(tab.train_model(image, *{**TRAIN_SETTINGS, **changes}.values(), progress=_Progress()))
    return outputs


def test_train_shows_previews_then_the_model_and_variations_and_edits_use_it(tmp_path, shared_cache_dir):
    image = _photo(tmp_path)
    assert "about" in tab.estimate(image, *TRAIN_SETTINGS.values()) and "32×32" in tab.estimate(
        image, *TRAIN_SETTINGS.values())
    outputs = _train(image, backbone="unet", text_mode="blip", contrastive=True)
    previews = [output[1] for output in outputs[:-1]]
    assert len(previews) == 10 and all(isinstance(picture, Image.Image) for picture in previews)
    status, _, model_path, label, captions = outputs[-1]
    assert "“photo_RGB_32”" in label  # named by default after the uploaded file
    assert "Trained 20 steps" in status and model_path.endswith("model.safetensors")
    from pipelines.core.runs import default_store

    trained = default_store().get(re.search(r"run ([0-9a-f]{12})", status).group(1))
    assert len(trained.params["detail_gain_db"]) == 1  # 32 px: one finer scale, its gain over upsampling recorded
    assert "test CLIP with random weights" in label
    rows = captions["value"]
    assert len(rows) == 8 and sum(row[2].startswith("P*") for row in rows) == 1
    again = _train(image, backbone="unet", text_mode="blip", contrastive=True)
    assert len(again) == 1 and "already trained" in again[0][0]  # cached by the image's hash

    gallery, scales, readout = tab.make_variations(model_path, 2, 7, 0, 1.5, 1.0, 10, progress=_Progress())
    assert len(gallery) == 2 and gallery[0][0].size == (48, 32) and len(scales) == 2 and "seeds 7, 8" in readout
    from pipelines.core.runs import rerun

    again = rerun(re.search(r"run ([0-9a-f]{12})", readout).group(1))  # History's re-run: the same images
    assert np.array_equal(np.asarray(Image.open(again.outputs[1])), np.asarray(gallery[1][0]))
    sharp, _, readout = tab.make_variations(model_path, 1, 7, 0, 1.0, 1.0, 10, "gpnn", progress=_Progress())
    assert "GPNN" in readout and sharp[0][0].size == (32, 32)
    again = rerun(re.search(r"run ([0-9a-f]{12})", readout).group(1))  # the detail choice is part of the record
    assert np.array_equal(np.asarray(Image.open(again.outputs[0])), np.asarray(sharp[0][0]))

    editor = tab.source_for_editor(model_path)
    assert editor["background"].size == (32, 32)
    layer = np.zeros((32, 32, 4), np.uint8)
    layer[4:12, 4:12, 3] = 255
    edits, prompts, readout = tab.make_edit(model_path, "red flowers", 30, 1.0, 0, 10,
                                            {"background": editor["background"], "layers": [layer]}, "tiny:clip",
                                            progress=_Progress())
    assert len(edits) == 2 and edits[0][1] == "before" and edits[0][0].size == (32, 32)  # before / after
    assert prompts.splitlines()[0] == "red flowers" and "random weights" in readout


def test_an_absent_clip_is_answered_without_wiping_the_page(monkeypatch):
    from pipelines.core.loader import ModelLoadError
    from pipelines.single_image import text

    def absent(self, source):
        raise ModelLoadError(f"{source} is not downloaded and the hub cannot be reached.")

    monkeypatch.setattr(text.ClipModel, "__init__", absent)
    gallery, prompts, status = tab.make_edit(str(shipped_model()), "snow", 20, 1, 0, 10, None,
                                             "openai/clip-vit-base-patch32", progress=_Progress())
    assert gallery == {"__type__": "update"} and prompts == {"__type__": "update"}  # left as they were
    assert "cannot be loaded" in status and "tiny test model" in status and "download" in status


def test_bad_input_is_answered_in_words(tmp_path):
    import gradio as gr

    with pytest.raises(gr.Error, match="Upload an image"):
        list(tab.friendly_errors(tab.train_model)(None, *TRAIN_SETTINGS.values(), progress=_Progress()))
    with pytest.raises(gr.Error, match="at least 25 px"):
        list(tab.friendly_errors(tab.train_model)(_photo(tmp_path, side=20), *TRAIN_SETTINGS.values(),
                                                  progress=_Progress()))
    with pytest.raises(gr.Error, match="needs a prompt"):
        list(tab.friendly_errors(tab.train_model)(_photo(tmp_path), *{**TRAIN_SETTINGS, "backbone": "unet",
                                                                       "text_mode": "arbitrary"}.values(),
                                                  progress=_Progress()))
    assert "downscaled to 128×128" in tab.estimate(_photo(tmp_path, side=300), *TRAIN_SETTINGS.values())
    assert "grayscale" in tab.estimate(_photo(tmp_path, mode="L"), *TRAIN_SETTINGS.values())
    assert "transparency" in tab.estimate(_photo(tmp_path, mode="RGBA"), *TRAIN_SETTINGS.values())
    with pytest.raises(gr.Error, match="no model yet"):
        tab.friendly_errors(tab.make_variations)("", 1, 0, 0, 1, 1, 10, progress=_Progress())
    model = str(shipped_model())
    with pytest.raises(gr.Error, match="edit prompt is empty"):
        tab.friendly_errors(tab.make_edit)(model, "  ", 20, 1, 0, 10, None, "tiny:clip", progress=_Progress())
    wrong = {"background": None, "layers": [np.full((10, 10, 4), 255, np.uint8)]}
    with pytest.raises(gr.Error, match="region mask is 10×10"):
        tab.friendly_errors(tab.make_edit)(model, "snow", 20, 1, 0, 10, wrong, "tiny:clip", progress=_Progress())


def test_the_shipped_model_makes_variations_on_first_open():
    path = shipped_model()
    assert path is not None and path.stat().st_size <= 20 * 2**20
    card = shipped_card()
    assert card["command"].startswith("python -m pipelines.single_image train skimage:coffee")
    assert "coffee" in tab.model_label(str(path))
    gallery, scales, readout = tab.make_variations(str(path), 1, 0, 0, 1.0, 1.0, 10, progress=_Progress())
    assert len(gallery) == 1 and gallery[0][0].size == tab.model_size(str(path))
    assert "Done" not in readout and "1 variations" in readout
