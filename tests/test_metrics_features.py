"""Feature networks for the metrics: clean-fid resizing, the FID Inception v3 architecture and its known
download, the feature cache, CLIP embeddings and prompt truncation, LPIPS input ranges, plain messages."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch

import pipelines.metrics.fid_inception as fid_inception  # registers the fid_inception_v3 architecture
from pipelines.core import loader, network
from pipelines.core.loader import ModelLoadError
from pipelines.core.safeweights import save_safetensors
from pipelines.metrics import features
from pipelines.metrics.features import FEATURE_CACHE


@pytest.fixture(autouse=True)
def empty_feature_cache():
    FEATURE_CACHE.clear()
    yield
    FEATURE_CACHE.clear()


def _random_images(count: int, height: int = 48, width: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


# ---------------------------------------------------------------------------------------------- clean resize
def _pil_bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """PIL's resampling coefficients (Resample.c precompute_coeffs, bicubic a = -0.5), written out in numpy:
    the kernel is stretched by the scale when shrinking (antialiasing) and each row is normalised."""

    def cubic(x: np.ndarray) -> np.ndarray:
        a, x = -0.5, np.abs(x)
        near = ((a + 2) * x - (a + 3)) * x * x + 1
        far = (((x - 5) * x + 8) * x - 4) * a
        return np.where(x < 1, near, np.where(x < 2, far, 0.0))

    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    weights = np.zeros((out_size, in_size))
    for out in range(out_size):
        center = (out + 0.5) * scale
        low = max(int(center - support + 0.5), 0)
        high = min(int(center + support + 0.5), in_size)
        taps = np.arange(low, high)
        row = cubic((taps - center + 0.5) / stretch)
        weights[out, low:high] = row / row.sum()
    return weights


def _clean_fid_reference(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """clean-fid's PIL float resize, independently: horizontal pass, float32 intermediate, vertical pass,
    clip to [0, 255]."""
    horizontal = _pil_bicubic_weights(image.shape[1], width)
    vertical = _pil_bicubic_weights(image.shape[0], height)
    channels = []
    for channel in range(3):
        plane = image[:, :, channel].astype(np.float64)
        rows = (plane @ horizontal.T).astype(np.float32).astype(np.float64)
        channels.append(np.clip(vertical @ rows, 0, 255))
    return np.stack(channels, axis=2)


@pytest.mark.parametrize("shape, size", [((97, 131), (299, 299)), ((512, 384), (299, 299)), ((80, 120), (50, 40))])
def test_clean_resize_equals_clean_fids_pil_bicubic(shape, size):
    image = _random_images(1, *shape, seed=3)[0]
    resized, was_resized = features.clean_resize(image, size)
    expected = _clean_fid_reference(image, *size)
    assert was_resized and resized.dtype == np.float32 and resized.shape == (size[1], size[0], 3)
    assert np.abs(resized - expected).max() < 2e-3
    assert resized.min() >= 0 and resized.max() <= 255
    assert not np.array_equal(np.round(resized), resized)  # floats, never quantised to uint8


def test_clean_resize_leaves_299_images_untouched():
    image = _random_images(1, 299, 299, seed=4)[0]
    resized, was_resized = features.clean_resize(image)
    assert not was_resized and resized.dtype == np.float32
    np.testing.assert_array_equal(resized, image.astype(np.float32))


# ---------------------------------------------------------------------------------------------- FID Inception
PYTORCH_FID_KEYS = [  # names in pytorch-fid's pt_inception-2015-12-05 state dict (torchvision Inception3 names)
    "Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_var", "Conv2d_4a_3x3.bn.bias",
    "Mixed_5b.branch5x5_1.conv.weight", "Mixed_5b.branch_pool.conv.weight", "Mixed_6a.branch3x3.conv.weight",
    "Mixed_6e.branch7x7dbl_5.bn.running_mean", "Mixed_7b.branch3x3_2a.conv.weight",
    "Mixed_7c.branch3x3dbl_3b.bn.weight", "Mixed_7c.branch_pool.conv.weight", "fc.weight", "fc.bias",
]


@pytest.fixture(scope="module")
def random_fid_inception():
    """The FID Inception with seeded random weights, a batch of two images and its outputs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = fid_inception.make_fid_inception({})
        for name, buffer in module.named_buffers():  # non-trivial BatchNorm statistics
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    images = torch.from_numpy(np.stack(_random_images(2, 299, 299, seed=5))).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        expected = module(images)
    return module, images, expected


def test_fid_inception_has_pytorch_fids_layout(random_fid_inception):
    module, _, expected = random_fid_inception
    state = module.state_dict()
    assert all(key in state for key in PYTORCH_FID_KEYS)
    assert not [key for key in state if key.startswith("AuxLogits")]
    assert tuple(state["fc.weight"].shape) == (1008, 2048)
    assert tuple(state["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    assert isinstance(module.Mixed_7c, fid_inception.FIDInceptionE2)  # the max-pool block
    assert tuple(expected["pool"].shape) == (2, 2048) and tuple(expected["logits"].shape) == (2, 1008)
    assert torch.isfinite(expected["pool"]).all() and (expected["pool"] >= 0).all()


def test_fid_inception_loads_from_safetensors_through_the_loader(random_fid_inception, tmp_path):
    module, images, expected = random_fid_inception
    folder = tmp_path / "fid-inception-random"
    save_safetensors(module.state_dict(), folder / "model.safetensors", {"architecture": "fid_inception_v3"})
    (folder / "config.json").write_text(json.dumps({"architecture": "fid_inception_v3"}))
    loaded = loader.load_model("torch_module", str(folder), dtype=torch.float32, device="cpu")
    assert isinstance(loaded, fid_inception.FIDInceptionV3)
    with torch.inference_mode():
        out = loaded(images)
        from_floats = loaded(images.float() / 255.0)  # [0, 1] floats and uint8 are the same input
    assert tuple(out["pool"].shape) == (2, 2048) and tuple(out["logits"].shape) == (2, 1008)
    torch.testing.assert_close(out["pool"], expected["pool"])
    torch.testing.assert_close(from_floats["logits"], out["logits"], rtol=1e-5, atol=1e-5)


def test_fid_inception_known_download_is_converted_to_safetensors(random_fid_inception, tmp_path, monkeypatch):
    """The download itself is simulated (no network here); checksum, safe reading and conversion are real."""
    module, images, expected = random_fid_inception
    monkeypatch.setenv("ASL_CACHE", str(tmp_path / "cache"))  # a private cache: never a fake "real" network
    pth = tmp_path / "pt_inception.pth"
    old_style = {key: value for key, value in module.state_dict().items() if not key.endswith("num_batches_tracked")}
    torch.save(old_style, pth)
    digest = hashlib.sha256(pth.read_bytes()).hexdigest()
    fetched = []

    def fake_download(url, target, max_bytes):
        fetched.append(url)
        shutil.copyfile(pth, target)
        return digest

    monkeypatch.setattr(network, "url_status", lambda url: network.HubStatus(False, "reachable"))
    monkeypatch.setattr(fid_inception, "download_file", fake_download)
    monkeypatch.setattr(fid_inception, "FID_WEIGHTS_SHA256_PREFIX", "0" * 8 if digest[:8] != "0" * 8 else "1" * 8)
    with pytest.raises(ModelLoadError, match="needs model FID Inception v3: .*damaged"):
        fid_inception.ensure_fid_inception()
    assert not fid_inception.is_downloaded()

    monkeypatch.setattr(fid_inception, "FID_WEIGHTS_SHA256_PREFIX", digest[:8])
    folder = fid_inception.ensure_fid_inception()
    assert fetched == [fid_inception.FID_WEIGHTS_URL] * 2
    assert json.loads((folder / "config.json").read_text())["architecture"] == "fid_inception_v3"
    assert features.is_downloaded("inception", "fid-inception") and folder == features.fid_inception_folder()
    assert not list(folder.glob("*.pth")) and not list((tmp_path / "cache" / "downloads").iterdir())
    network_ = features.load_feature_network("inception", "fid-inception")
    assert fid_inception.ensure_fid_inception() == folder and len(fetched) == 2  # converted once, then reused
    with torch.inference_mode():
        out = network_(images.to(features._model_device(network_)))
    torch.testing.assert_close(out["logits"].cpu(), expected["logits"])


def test_real_networks_offline_give_plain_needs_model_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("ASL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no AlexNet weights cached by torchvision
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    images = _random_images(2)
    with pytest.raises(ModelLoadError) as caught:
        features.inception_features(images, "fid-inception")
    assert str(caught.value) == "needs model FID Inception v3: not downloaded yet and offline (HF_HUB_OFFLINE=1)"
    with pytest.raises(ModelLoadError, match=r"^needs model LPIPS \(AlexNet\): not downloaded yet and offline"):
        features.lpips_distances(images, images, "lpips-alex")
    with pytest.raises(ModelLoadError, match=r"^needs model CLIP ViT-B/32 \(openai/clip-vit-base-patch32\): "):
        features.clip_image_embeddings(images, "openai/clip-vit-base-patch32")
    with pytest.raises(ModelLoadError, match=r"^needs model Inception network 'nobody/no-inception': .*offline"):
        features.inception_features(images, "nobody/no-inception")
    assert FEATURE_CACHE.computed("inception") == 0  # failures are not cached
    labels = dict((source, label) for label, source in features.network_choices("inception"))
    assert labels["fid-inception"].endswith("(not here — cannot be downloaded offline)")  # offline: no promise


def test_labels_mark_test_networks():
    for kind in features.NETWORKS:
        for label, source in features.network_choices(kind):
            assert ("tiny (test, random weights)" in label) == source.startswith("tiny:"), label
            assert features.network_for(kind, source).test_model == source.startswith("tiny:")
    message = features.needs_model_message("clip", "tiny:clip", ModelLoadError("Could not load the model 'x': gone."))
    assert message == "needs model CLIP (tiny test model): gone"


# ---------------------------------------------------------------------------------------------- feature cache
def test_tiny_inception_features_are_cached_per_set_content():
    network_ = features.load_feature_network("inception", "tiny:inception")
    calls = []
    handle = network_.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    try:
        images = _random_images(3, 64, 64, seed=1)
        pool, probabilities, resized = features.inception_features(images, "tiny:inception", batch_size=2)
        assert calls == [2, 1] and resized
        assert pool.shape == (3, 2048) and pool.dtype == np.float64
        assert probabilities.shape == (3, 1008) and np.allclose(probabilities.sum(axis=1), 1.0)

        again = features.inception_features([image.copy() for image in images], "tiny:inception", batch_size=2)
        assert calls == [2, 1] and again[0] is pool  # same content: nothing recomputed
        assert FEATURE_CACHE.computed("inception") == 1
        with pytest.raises(ValueError):
            pool[0, 0] = 1.0  # cached arrays are read-only

        changed = [image.copy() for image in images]
        changed[2][10, 20, 1] ^= 1
        assert features.set_hash(changed) != features.set_hash(images)
        assert features.set_hash([image.copy() for image in images]) == features.set_hash(images)
        other = features.inception_features(changed, "tiny:inception", batch_size=2)
        assert calls == [2, 1, 2, 1] and FEATURE_CACHE.computed("inception") == 2
        np.testing.assert_allclose(other[0][:2], pool[:2])
    finally:
        handle.remove()


def test_feature_cache_computes_once_under_concurrent_requests():
    cache = features.FeatureCache()
    runs = []

    def slow():
        runs.append(1)
        time.sleep(0.2)
        return np.arange(3.0)

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", "s", "h", slow)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 1 and cache.computed("k") == 1 and all(result is results[0] for result in results)


# ---------------------------------------------------------------------------------------------- CLIP
def test_clip_embeddings_are_unit_norm_and_long_prompts_are_flagged():
    images = _random_images(3, 40, 56, seed=2)
    embeddings = features.clip_image_embeddings(images, "tiny:clip", batch_size=2)
    assert embeddings.shape[0] == 3
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-9)

    long_prompt = " ".join(f"word{index % 7}" for index in range(100))
    prompts = ["an anime girl with red hair", long_prompt, long_prompt + " and then a completely different end"]
    texts, truncated = features.clip_text_embeddings(prompts, "tiny:clip")
    assert truncated == [False, True, True]
    assert texts.shape == (3, embeddings.shape[1])
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(texts[1], texts[2], atol=1e-6)  # cut at 77 tokens: the extra end is ignored
    assert not np.allclose(texts[0], texts[1])


# ---------------------------------------------------------------------------------------------- LPIPS
def test_lpips_is_the_same_for_uint8_and_unit_float_inputs():
    a = _random_images(3, 48, 48, seed=6) + _random_images(1, 40, 64, seed=7)
    b = _random_images(3, 48, 48, seed=8) + _random_images(1, 40, 64, seed=9)
    b[1] = a[1].copy()
    from_uint8 = features.lpips_distances(a, b, "tiny:lpips", batch_size=2)
    from_floats = features.lpips_distances([image / 255.0 for image in a], [image / 255.0 for image in b],
                                           "tiny:lpips")
    assert from_uint8.shape == (4,)
    np.testing.assert_allclose(from_floats, from_uint8, rtol=1e-6, atol=1e-9)
    assert from_uint8[1] == 0.0  # identical images
    assert (np.delete(from_uint8, 1) > 0).all()
    assert abs(from_uint8[0] - features.lpips_distances(a[:1], b[:1], "tiny:lpips")[0]) < 1e-6  # batch-free


def test_lpips_against_a_shared_reference_equals_the_module_on_each_pair():
    import torch

    reference = _random_images(3, 48, 48, seed=10) + _random_images(2, 40, 64, seed=11)
    set_a = _random_images(3, 48, 48, seed=12) + _random_images(2, 40, 64, seed=13)
    set_b = [np.clip(image.astype(int) + 20, 0, 255).astype(np.uint8) for image in reference]
    features.FEATURE_CACHE.clear()
    shared_a, shared_b = features.lpips_distances_to([set_a, set_b], reference, "tiny:lpips", batch_size=2)
    assert features.FEATURE_CACHE.computed("lpips") == 2
    module = features.load_feature_network("lpips", "tiny:lpips")

    def signed(image):  # the documented mapping [0, 255] -> [-1, 1]
        return torch.from_numpy(image / 127.5 - 1.0).permute(2, 0, 1)[None].float()

    with torch.inference_mode():  # torchmetrics' own forward, one pair at a time
        whole = {label: np.array([float(module(signed(x), signed(r))) for x, r in zip(images, reference, strict=True)])
                 for label, images in (("A", set_a), ("B", set_b))}
    np.testing.assert_allclose(shared_a, whole["A"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(shared_b, whole["B"], rtol=1e-5, atol=1e-8)
    # the same numbers come back from the cache for the single-list call
    np.testing.assert_array_equal(features.lpips_distances(set_b, reference, "tiny:lpips"), shared_b)
    assert features.FEATURE_CACHE.computed("lpips") == 2


def test_lpips_refuses_pairs_of_different_sizes_and_ambiguous_ranges():
    a, b = _random_images(1, 48, 48), _random_images(1, 48, 64)
    with pytest.raises(ValueError, match="differ in size"):
        features.lpips_distances(a, b, "tiny:lpips")
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        features.lpips_distances([a[0].astype(np.float32)], a, "tiny:lpips")
    with pytest.raises(ValueError, match="pairs"):
        features.lpips_distances(a + a, a, "tiny:lpips")
    with pytest.raises(ValueError, match="LPIPS compares pairs: got 1 and 0 images"):
        features.lpips_distances(a, [], "tiny:lpips")
    with pytest.raises(ValueError, match="Pair 1 of set B: the images differ in size"):
        features.lpips_distances_to([a, b], a, "tiny:lpips")
