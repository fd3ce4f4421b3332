"""NIMA: the architecture, scores as the mean of the rating distribution, checkpoint conversion, and compare()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core.loader import ModelLoadError
from pipelines.metrics import compare, features, nima
from pipelines.metrics.features import FEATURE_CACHE


@pytest.fixture(autouse=True)
def empty_feature_cache():
    FEATURE_CACHE.clear()
    yield
    FEATURE_CACHE.clear()


def _images(count: int, seed: int, size: int = 80) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8) for _ in range(count)]


def _by_hand(module, images: list[np.ndarray]) -> np.ndarray:
    """The documented preprocessing and score, step by step: PIL bilinear 224×224, [0, 1], Σ i·p_i."""
    resized = [np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BILINEAR)) for image in images]
    x = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        probabilities = module(x).double().numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    return probabilities @ np.arange(1, 11)


def test_tiny_nima_scores_are_the_mean_rating_and_are_cached():
    images = _images(5, seed=1)
    scores = features.nima_scores(images, "tiny:nima", batch_size=2)
    assert scores.shape == (5,) and ((scores >= 1) & (scores <= 10)).all()
    module = features.load_feature_network("nima", "tiny:nima")
    np.testing.assert_allclose(scores, _by_hand(module, images), rtol=1e-5)
    assert features.nima_scores(images, "tiny:nima") is scores and FEATURE_CACHE.computed("nima") == 1


def test_mean_rating_of_known_distributions():
    certain = np.eye(10)  # all mass on rating i+1
    np.testing.assert_array_equal(nima.mean_rating(certain), np.arange(1, 11))
    assert nima.mean_rating(np.full((1, 10), 0.1))[0] == pytest.approx(5.5)


def test_a_nima_pytorch_checkpoint_converts_and_loads_with_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    original = nima.make_nima({"backbone": "resnet18"})
    checkpoint = tmp_path / "best_state.pth"  # nima.pytorch's layout: the state dict under "state_dict"
    torch.save({"state_dict": original.state_dict(), "model_type": "resnet18", "epoch": 3}, checkpoint)
    folder = nima.convert(checkpoint, tmp_path / "nima-resnet18", "resnet18")
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    images = _images(3, seed=2)
    scores = features.nima_scores(images, str(folder))
    np.testing.assert_allclose(scores, _by_hand(original, images), rtol=1e-5)
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        nima.convert(checkpoint, tmp_path / "wrong", "resnet50")  # weights of another backbone do not fit


def test_nima_in_compare_is_skipped_without_a_model_and_labelled_with_the_test_one(monkeypatch):
    monkeypatch.delenv(nima.ENV_NIMA_MODEL, raising=False)
    set_a, set_b = _images(6, seed=3), _images(6, seed=4)
    report = compare(set_a, set_b, metrics=["nima"], n_bootstrap=100)
    assert report.skipped["nima"].startswith("needs model NIMA: no NIMA model is configured")
    report = compare(set_a, set_b, metrics=["nima"], n_bootstrap=100, models={"nima": "tiny:nima"})
    row = report.row("nima")
    assert row.test_model and not row.paired and "random weights" in row.verdict
    module = features.load_feature_network("nima", "tiny:nima")
    assert row.a == pytest.approx(_by_hand(module, set_a).mean(), rel=1e-5)
    assert row.b == pytest.approx(_by_hand(module, set_b).mean(), rel=1e-5)
    with pytest.raises(ModelLoadError, match="needs model NIMA"):
        features.load_feature_network("nima", "")


def test_the_hosts_nima_model_is_offered_first(monkeypatch):
    monkeypatch.delenv(nima.ENV_NIMA_MODEL, raising=False)
    assert features.network_choices("nima")[0] == ("None configured on this server", "")
    monkeypatch.setenv(nima.ENV_NIMA_MODEL, "models/nima")  # listed without being loaded
    choices = features.network_choices("nima")
    assert [value for _, value in choices] == ["models/nima", "tiny:nima"]  # no "none configured" any more
    from pipelines.metrics.comparison import default_models

    assert default_models()["nima"] == "models/nima"
