"""The Start page's examples: shipped for exactly the methods that give a real result offline, small, and what the
app makes from each example's JSON (so "Try it" makes the same picture again); each "Try it" button is wired to
its tab's inputs and run button."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tabs.start import EXAMPLES_DIR, INTROS, SD_TABS, about_seconds, load_examples, start_here_text, took
from tools.make_examples import THUMB, _strip

REAL_OFFLINE = {"single_image", "landmark_faces", "metrics"}


def _cell(strip_path, index: int) -> np.ndarray:
    """The index-th THUMB-px cell of an example strip (cells are 4 px apart)."""
    with Image.open(strip_path) as strip:
        left = index * (THUMB + 4)
        return np.asarray(strip.convert("RGB").crop((left, 0, left + THUMB, THUMB)), dtype=float)


def test_examples_exist_for_the_real_methods_only_and_are_small():
    examples = load_examples()
    assert set(examples) == REAL_OFFLINE  # no example for the SD tabs or Neural style: no real weights offline
    assert not set(examples) & set(SD_TABS)
    for name, card in examples.items():
        png = EXAMPLES_DIR / card["image"]
        assert png.stat().st_size < 150_000, name
        assert card["made_by"] == f"python -m tools.make_examples {name}"
        assert card["params"] and card["caption"] and card["seconds"] >= 0
        assert "test" not in card["model"].lower() and "random" not in card["model"].lower(), card["model"]
    assert {intro.tab_id for intro in INTROS} >= REAL_OFFLINE | set(SD_TABS) | {"neural_style"}


def test_the_start_here_line_leads_to_the_quick_example():
    examples = load_examples()
    text = start_here_text(examples)
    assert "New here? Press Try it under Single-image variation" in text
    assert about_seconds(examples["single_image"]["seconds"]) in text
    assert about_seconds(0.2) == "under a second" and about_seconds(17.0) == "about 20 s"
    assert about_seconds(54.0) == "about 55 s" and about_seconds(61) == "about 2 min"
    assert start_here_text({}).startswith("Each tab")  # without examples: no promise of one


def test_the_time_an_example_took_says_where():
    assert took({"seconds": 17.0, "device": "cpu float32", "cpu_cores": 2, "load": 1.2}) == (
        "it took 17.0 s on a 2-core processor")
    assert took({"seconds": 47.4, "device": "cpu float32", "cpu_cores": 2, "load": 9.1}).endswith(
        "(busy with other work then)")
    assert took({"seconds": 1.5, "device": "cuda float16"}) == "it took 1.5 s on cuda float16"


def test_the_metrics_example_verdict_is_true_of_its_images():
    """A has less noise than B, so it is closer to the reference: checked with scikit-image, not the app."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    card = json.loads((EXAMPLES_DIR / "metrics.json").read_text())
    from tabs.start import ROOT

    def score(metric, label):
        values = []
        for mine, real in zip(card["files"][label], card["files"]["reference"], strict=True):
            a = np.asarray(Image.open(ROOT / mine).convert("RGB"))
            r = np.asarray(Image.open(ROOT / real).convert("RGB"))
            values.append(metric(r, a, channel_axis=2) if metric is structural_similarity else metric(r, a))
        return float(np.mean(values))

    for metric, name in ((structural_similarity, "SSIM"), (peak_signal_noise_ratio, "PSNR")):
        assert score(metric, "a") > score(metric, "b")
        assert any(line.startswith(f"A is closer to the reference than B on {name}") for line in card["verdicts"])


@pytest.mark.slow
def test_the_single_image_example_is_what_the_shipped_model_makes_from_its_json():
    from pipelines.single_image.runs import shipped_model
    from pipelines.single_image.sample import VariationRequest, variations

    card = json.loads((EXAMPLES_DIR / "single_image.json").read_text())
    request = VariationRequest(**{**card["params"], "count": 1})  # variation i uses seed + i: the first one
    first = variations(shipped_model(), request).images[0]
    made = np.asarray(_strip([first]), dtype=float)
    assert np.abs(made - _cell(EXAMPLES_DIR / card["image"], 1)).mean() < 1.0  # 0 here; another seed gives 3–4


def _shipped_model(name: str):
    if name == "landmark_faces":
        from pipelines.landmark_faces import SHIPPED_MODEL

        return SHIPPED_MODEL
    from pipelines.single_image.runs import shipped_model

    return shipped_model()


@pytest.mark.parametrize("name", ["landmark_faces", "single_image"])
def test_each_model_example_was_made_by_the_model_shipped_now(name):
    """A new model shipped without its example fails here: run `python -m tools.make_examples NAME`. (Drawing the
    landmark example again takes half a minute on a CPU; the single-image one is drawn again above.)"""
    import hashlib

    from tabs.start import ROOT

    card = json.loads((EXAMPLES_DIR / f"{name}.json").read_text())
    path = _shipped_model(name)
    assert ROOT / card["model_file"] == path
    assert card["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_try_it_buttons_fill_their_tab_and_open_it():
    """Each example's button switches to its tab and sets the inputs the example names; the SD tabs only open."""
    import app

    demo = app.build_app()
    by_id = {block._id: block for block in demo.blocks.values()}
    tabs = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "asl-tabs")

    def outputs_of(elem_id):
        button = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)
        events = [dep for dep in demo.fns.values() if any(target[0] == button._id for target in dep.targets)]
        assert len(events) == 1, elem_id
        return [by_id[block._id] for block in events[0].outputs]

    expected = {"single_image": {"si-count"}, "metrics": {"mt-files-a", "mt-files-b", "mt-files-r"},
                "landmark_faces": {"lf-steps", "lf-yaw", "lf-mouth_open"}}
    for tab_id, elem_ids in expected.items():
        outputs = outputs_of(f"start-try-{tab_id}")
        assert outputs[0] is tabs
        assert elem_ids <= {block.elem_id for block in outputs if block.elem_id}, tab_id
    for tab_id in SD_TABS:
        assert outputs_of(f"start-open-{tab_id}") == [tabs]


def test_the_sd_cards_say_whether_a_real_model_is_here(monkeypatch):
    """Offline with nothing cached: said plainly; with a checkpoint in the models folder: named (no example made)."""
    import pipelines.diffusion.models as models
    from pipelines.core import catalog
    from tabs.start import sd_model_status

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(catalog, "is_cached", lambda entry: False)  # as on a machine that downloaded nothing
    monkeypatch.setattr(models, "local_checkpoints", lambda: [])
    assert "none is on this machine" in sd_model_status()
    monkeypatch.setattr(models, "local_checkpoints", lambda: ["models/anything-v5.safetensors"])
    assert sd_model_status() == "A real model is here: **anything-v5.safetensors**."


def test_the_neural_style_card_offers_a_run_only_with_a_real_style(monkeypatch):
    import pipelines.neural_style as neural_style
    from pipelines.neural_style import StyleEntry
    from tabs.start import neural_style_status

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    test_style = StyleEntry("tiny", "tiny (test, random weights)", "test", True, "random weights")
    candy = StyleEntry("candy", "Candy", "pretrained", False, "hub")
    monkeypatch.setattr(neural_style, "list_styles", lambda: [candy, test_style])
    ready, note = neural_style_status()
    assert not ready and "not on this machine" in note
    monkeypatch.setattr(neural_style, "list_styles", lambda: [StyleEntry("candy", "Candy", "pretrained", True, "hub"),
                                                              test_style])
    ready, note = neural_style_status()
    assert ready and "Candy" in note
