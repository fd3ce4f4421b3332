"""A training as a History run (paused by its time budget, resumed by Re-run), base-vs-tuned images through the
diffusion core on the same seeds, and the evaluation labelled as test scores on tiny networks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipelines.style_finetune.train import TrainConfig
from tests.test_style_finetune_train import TRIGGER, palette_dataset

CONFIG = TrainConfig(name="ab", method="embedding+lora", steps=4, embedding_share=0.5, learning_rate=1e-2,
                     embedding_learning_rate=1e-2, mixed_precision="no", validation_steps=1, validation_seeds=(1,))


@pytest.fixture(scope="module")
def trained_outputs(tmp_path_factory, shared_cache_dir):
    """One finished tiny training for the module (training is the slow part); its outputs folder."""
    from pipelines.style_finetune.runs import run_train

    outputs = tmp_path_factory.mktemp("ab-outputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASL_OUTPUTS", str(outputs))
        patch.setenv("ASL_CACHE", str(shared_cache_dir))
        record, result = run_train(CONFIG, palette_dataset())
    assert record.status == "done" and result.finished
    return outputs


@pytest.fixture
def trained(trained_outputs, monkeypatch):
    monkeypatch.setenv("ASL_OUTPUTS", str(trained_outputs))
    return trained_outputs


@pytest.mark.slow
def test_a_paused_training_shows_unfinished_in_history_and_rerun_resumes_it():
    from pipelines.core.records import default_store
    from pipelines.core.runs import rerun
    from pipelines.style_finetune.runs import run_train

    record, result = run_train(dataclasses.replace(CONFIG, name="paused"), palette_dataset(), time_budget_s=0)
    assert not result.finished and result.steps == 1  # a call always makes one step, so slices progress
    assert default_store().get(record.id).status == "paused"
    again = rerun(record.id)  # History's Re-run: the same settings and the saved dataset
    assert again.status == "done" and again.params["steps_done"] == 4 and again.params["finished"]
    assert any(path.endswith("paused.safetensors") for path in again.outputs)


@pytest.mark.slow
def test_base_and_tuned_share_seeds_and_the_lora_scale_acts(trained):
    from pipelines.diffusion.generate import generate
    from pipelines.style_finetune.apply import (
        GRID_GUTTER,
        CompareRequest,
        compare_base_tuned,
        grid_label_height,
        requests_for,
    )

    request = CompareRequest(tuned="ab", prompt=f"{TRIGGER}, shapes", count=2, steps=2, size=64, seed=5)
    output = compare_base_tuned(request)
    assert output.seeds == [5, 6] and output.test_model
    band, gap = grid_label_height(64), GRID_GUTTER  # each row under its label band, gutters between pictures
    assert output.grid.size == (2 * 64 + gap, 2 * (band + 64) + gap)
    for column, (top, bottom) in enumerate(zip(output.base, output.tuned, strict=True)):
        left = column * (64 + gap)
        assert np.array_equal(np.asarray(output.grid.crop((left, band, left + 64, band + 64))), np.asarray(top))
        lower = 2 * band + 64 + gap
        assert np.array_equal(np.asarray(output.grid.crop((left, lower, left + 64, lower + 64))), np.asarray(bottom))
    assert output.prompts[0] == "shapes"  # the base never learned the trigger word
    assert output.prompts[1] == f"{TRIGGER}, shapes, <lora:ab:1>"  # as written into the PNGs, for A1111
    base_request, tuned_request, _ = requests_for(request)
    assert dataclasses.replace(tuned_request, prompt="", loras=(), model="") == \
        dataclasses.replace(base_request, prompt="", model="")  # only prompt and LoRA differ
    plain_base = generate(base_request).images
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain_base, output.base, strict=True))
    no_lora = compare_base_tuned(dataclasses.replace(request, lora_scale=0.0), record=False).tuned
    embedding_only = generate(dataclasses.replace(tuned_request, loras=())).images  # the embedding still applies
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(no_lora, embedding_only, strict=True))
    assert not np.array_equal(np.asarray(no_lora[0]), np.asarray(output.tuned[0]))


@pytest.mark.slow
def test_evaluation_on_test_networks_is_labelled_and_has_intervals(trained):
    from pipelines.style_finetune.evaluate import EVALUATION_METRICS, TEST_NETWORKS, EvaluateRequest, evaluate

    reference = list(palette_dataset().images)
    result = evaluate(EvaluateRequest(tuned="ab", count=4, steps=2, size=64, networks=TEST_NETWORKS,
                                      n_bootstrap=50), reference)
    report = result.report
    assert report.test_model and len(result.base) == len(result.tuned) == 4
    assert {row.key for row in report.rows} | set(report.skipped) == set(EVALUATION_METRICS)
    assert {"fid", "kl_per_image", "fid_per_image", "clip_i", "clip_score"} <= {row.key for row in report.rows}
    for row in report.rows:
        assert row.test_model and row.a is not None and row.b is not None
        assert row.low is not None and row.low <= row.difference <= row.high, row.key
    assert set(report.scatter) == {"A", "B"} and len(report.scatter["B"]["kl"]) == 4


@pytest.mark.slow
def test_the_fast_preview_samples_four_lcm_steps_with_lcm_lora_on_both_sides(trained):
    from pipelines.core.tiny_models import LCM_LORA_FILE
    from pipelines.style_finetune.apply import CompareRequest, compare_base_tuned, requests_for

    request = CompareRequest(tuned="ab", prompt=f"{TRIGGER}, shapes", count=1, steps=20, size=64, seed=3,
                             fast_preview=True)
    base, tuned, notes = requests_for(request)
    for side in (base, tuned):
        assert (side.sampler, side.steps, side.cfg_scale) == ("LCM", 4, 1.0)
        assert side.loras[-1][0].endswith(LCM_LORA_FILE) and side.loras[-1][1] == 1.0
    assert len(tuned.loras) == 2 and any("Fast preview" in note for note in notes)
    calls = []
    output = compare_base_tuned(request, callback=lambda step, total, message: calls.append((step, total)))
    assert calls.count((4, 4)) == 2  # four UNet passes per side, whatever the steps setting said
    full = compare_base_tuned(dataclasses.replace(request, fast_preview=False, steps=4, sampler="LCM",
                                                  schedule="Automatic", cfg_scale=1.0))
    assert not np.array_equal(np.asarray(output.base[0]), np.asarray(full.base[0]))  # the LCM-LoRA acts


@pytest.mark.slow
def test_an_evaluation_is_in_history_with_its_images_and_reruns_the_same(trained):
    """Evaluate is a recorded run: History lists it (kind evaluation, the style's name), each base and tuned
    image a PNG equal to the one scored, and its Re-run generates the same images again."""
    from PIL import Image

    from pipelines.core.records import default_store
    from pipelines.core.runs import rerun
    from pipelines.style_finetune.evaluate import TEST_NETWORKS, EvaluateRequest
    from pipelines.style_finetune.runs import run_evaluate

    def pixels(path):
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    record, result = run_evaluate(EvaluateRequest(tuned="ab", count=4, steps=2, size=64, networks=TEST_NETWORKS,
                                                  n_bootstrap=20))
    stored = default_store().get(record.id)
    assert stored.status == "done" and stored.params["kind"] == "evaluation" and stored.params["name"] == "ab"
    assert len(stored.outputs) == 8
    from tabs.history import run_summary

    assert run_summary(stored).startswith("Evaluation") and "named ab" in run_summary(stored)
    for path, image in zip(stored.outputs, [*result.base, *result.tuned], strict=True):
        assert np.array_equal(pixels(path), np.asarray(image.convert("RGB")))
    again = rerun(record.id)
    assert again.id != record.id and again.params["kind"] == "evaluation"
    assert np.array_equal(pixels(again.outputs[5]), pixels(stored.outputs[5]))
