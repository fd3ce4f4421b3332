"""compare(): verdicts on sets whose truth is known, feature sharing, missing models, bad input, CLI, records."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pipelines.metrics import compare
from pipelines.metrics.imagesets import ImageSet, as_image_set, load_image_set, set_hash

TINY = {"inception": "tiny:inception", "clip": "tiny:clip", "lpips": "tiny:lpips"}


def _photos(count: int = 12, size: int = 64) -> list[np.ndarray]:
    """Crops of scikit-image's sample photos: a small 'real' set."""
    rng = np.random.default_rng(0)
    sources = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    crops = []
    for index in range(count):
        photo = sources[index % len(sources)]
        y, x = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        crops.append(np.ascontiguousarray(photo[y:y + size, x:x + size]))
    return crops


def _noisy(images: list[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8) for image in images]


def _save(images: list[np.ndarray], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"img{index:03d}.png")
    return folder


def test_paired_pixel_metrics_find_the_truly_better_set():
    reference = _photos()
    report = compare(_noisy(reference, 4, 1), _noisy(reference, 25, 2), ImageSet("ref", reference, []),
                     pairs="order", metrics=["ssim", "psnr"], n_bootstrap=300)
    for key in ("ssim", "psnr"):
        row = report.row(key)
        assert row.better == "A" and row.paired and row.high < 0 < row.a - row.b, row
        assert "A" in row.verdict and not row.test_model
    assert [item["ssim"] for item in report.per_image if item["set"] == "A"][0] > 0.5


def test_same_distribution_gets_no_verdict():
    reference = _photos(16)
    report = compare(_noisy(reference, 10, 1), _noisy(reference, 10, 2), ImageSet("ref", reference, []),
                     pairs="order", metrics=["psnr"], n_bootstrap=300)
    row = report.row("psnr")
    assert row.better == "none" and row.low < 0 < row.high


def test_network_metrics_with_test_models_are_labelled_and_share_features(monkeypatch):
    from pipelines.metrics import features

    calls = []
    real = features.inception_features

    def counting(images, source, *args, **kwargs):
        calls.append(len(images))
        return real(images, source, *args, **kwargs)

    monkeypatch.setattr(features, "inception_features", counting)
    reference = _photos(10)
    shifted = [255 - image for image in _photos(10)]
    report = compare(_noisy(reference, 3, 1), shifted, ImageSet("ref", reference, []),
                     metrics=["fid", "kid", "is", "fid_per_image", "kl_per_image", "cmmd", "clip_i"],
                     n_bootstrap=100, models=TINY)
    assert not report.skipped, report.skipped
    assert all(row.test_model and "not a real score" in row.verdict for row in report.rows)
    assert all(np.isfinite(row.a) and np.isfinite(row.b) for row in report.rows)
    assert len(report.scatter["A"]["kl"]) == 10 and len(report.scatter["B"]["fid"]) == 10
    assert report.test_model
    # each set's features are computed once, then cached for every other metric
    from pipelines.metrics.features import FEATURE_CACHE

    assert FEATURE_CACHE.computed("inception") == 3


def test_missing_feature_network_is_skipped_with_reason_and_pixels_still_work():
    reference = _photos(6)
    report = compare(_noisy(reference, 5, 1), _noisy(reference, 9, 2), ImageSet("ref", reference, []),
                     pairs="order", metrics=["fid", "ssim"], n_bootstrap=100,
                     models={"inception": "nobody/no-inception"})
    assert "needs model" in report.skipped["fid"] and [row.key for row in report.rows] == ["ssim"]


def test_reference_metrics_without_reference_are_skipped_plainly():
    report = compare(_photos(4), _photos(4), metrics=["fid", "ssim", "clip_score"], models=TINY, n_bootstrap=100)
    assert report.skipped["fid"].startswith("needs a reference") and "prompts" in report.skipped["clip_score"]


@pytest.mark.parametrize("make_b, message", [
    (lambda tmp: [], "no usable images"),
    (lambda tmp: [str(_save([np.zeros((64, 64, 3), np.uint8)] * 3, tmp / "three"))], "Folder paths are switched"),
])
def test_bad_sets_get_plain_messages(tmp_path, make_b, message):
    with pytest.raises(ValueError, match=message):
        compare(_photos(4), make_b(tmp_path), metrics=["psnr"])


def test_arrays_in_every_documented_form_give_the_same_set():
    photos = _photos(4)
    as_uint8 = as_image_set(photos, "A")
    for form in (np.stack(photos), [image / 255.0 for image in photos], np.stack(photos).astype(np.float32) / 255):
        image_set = as_image_set(form, "A")  # a stack, or floats in [0, 1]: never truncated to 0/1
        assert len(image_set) == 4 and image_set.content_hash() == as_uint8.content_hash()
    grey = as_image_set([image[:, :, 0] for image in photos], "A")
    assert grey.images[0].shape == (64, 64, 3) and grey.images[0].dtype == np.uint8
    assert as_uint8.content_hash() == set_hash(as_uint8.images)  # the feature cache's key
    with pytest.raises(ValueError, match=r"Set B: Image 1 is a float image outside \[0, 1\]"):
        as_image_set([photos[0].astype(np.float32)], "B")


def test_is_on_small_sets_still_tells_varied_from_uniform_predictions(monkeypatch):
    """10 images: ten 1-image splits would score 1 whatever the images are; the row keeps splits of 50+."""
    from pipelines.metrics import features

    varied, uniform = _photos(10), _noisy(_photos(10), 5, 3)
    classes = 1008
    predictions = {id(varied[0]): np.eye(classes)[np.arange(10)] * 0.99 + 0.01 / classes,
                   id(uniform[0]): np.full((10, classes), 1.0 / classes)}

    def fake_inception(images, source, batch_size=32, content_hash=None):  # hand-built class probabilities
        return np.zeros((len(images), 4)), predictions[id(images[0])], False

    monkeypatch.setattr(features, "inception_features", fake_inception)
    report = compare(varied, uniform, metrics=["is"], n_bootstrap=200, models=TINY)
    row = report.row("is")
    assert row.a > 8 and row.b == pytest.approx(1.0) and row.better == "A"


def test_image_sets_keep_their_hash_only_for_their_own_images():
    import dataclasses

    image_set = as_image_set(_photos(3), "A")
    changed = dataclasses.replace(image_set, images=_photos(3)[::-1])
    assert changed.content_hash() != image_set.content_hash() == set_hash(image_set.images)
    ints = as_image_set([image.astype(np.int64) for image in _photos(3)], "A")  # integer arithmetic results
    assert ints.content_hash() == image_set.content_hash()
    with pytest.raises(ValueError, match="outside \\[0, 255\\]"):
        as_image_set([_photos(1)[0].astype(np.int64) + 300], "A")


def test_zip_with_escaping_and_non_image_entries_is_read_safely(tmp_path):
    folder = _save(_photos(3), tmp_path / "imgs")
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.iterdir()):
            bundle.write(path, path.name)
        bundle.writestr("../escape.png", (folder / "img000.png").read_bytes())
        bundle.writestr("readme.txt", "hello")
    image_set = load_image_set([str(archive)], "A")
    assert len(image_set) == 3 and image_set.names == ["img000", "img001", "img002"]
    assert len(image_set.skipped) == 2


def test_pairing_mismatches_and_sizes_get_plain_messages():
    reference = _photos(4)
    with pytest.raises(ValueError, match="equal size"):
        compare(_photos(3), _photos(4), ImageSet("ref", reference, []), pairs="order", metrics=["ssim"])
    small = [image[:32, :32] for image in _photos(4)]
    with pytest.raises(ValueError, match="different sizes"):
        compare(small, small, ImageSet("ref", reference, []), pairs="order", metrics=["ssim"])


def test_single_image_sets_are_explained_and_small_sets_stay_finite():
    reference = _photos(3)
    single = compare(_photos(1), _noisy(_photos(1), 20, 3), ImageSet("ref", reference, []), metrics=["fid", "is"],
                     n_bootstrap=50, models=TINY)
    assert "at least 2 images" in single.skipped["fid"]
    is_row = single.row("is")  # one image: a value (a single split of one image scores 1), but no interval
    assert is_row.a == pytest.approx(1.0) and math.isnan(is_row.low) and "No verdict on IS" in is_row.verdict
    report = compare(_photos(2), _noisy(_photos(2), 20, 3), ImageSet("ref", reference, []), metrics=["fid"],
                     n_bootstrap=50, models=TINY)
    row = report.row("fid")
    assert np.isfinite(row.a) and np.isfinite(row.b) and np.isfinite(row.low) and np.isfinite(row.high)
    assert any("2048" in warning for warning in report.warnings)


def test_cli_writes_json(tmp_path, capsys):
    from pipelines.metrics.__main__ import main

    reference = _photos(6)
    folders = [_save(images, tmp_path / name) for name, images in
               (("a", _noisy(reference, 3, 1)), ("b", _noisy(reference, 30, 2)), ("ref", reference))]
    out = tmp_path / "report.json"
    code = main([str(folders[0]), str(folders[1]), "--ref", str(folders[2]), "--pairs", "name", "--metrics",
                 "ssim,psnr", "--bootstrap", "200", "--json", str(out)])
    assert code == 0 and "SSIM" in capsys.readouterr().out
    rows = {row["key"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["psnr"]["better"] == "A"


def test_comparison_is_recorded_with_files_and_can_be_rerun(tmp_path):
    from pipelines.core.records import RunStore
    from pipelines.core.runs import rerun
    from pipelines.metrics import run_compare

    store = RunStore(tmp_path / "runs.sqlite")
    reference = _photos(6)
    folders = [str(_save(images, tmp_path / name)) for name, images in
               (("a", _noisy(reference, 3, 1)), ("b", _noisy(reference, 30, 2)), ("ref", reference))]
    files_a = sorted(str(p) for p in Path(folders[0]).iterdir())
    files_b = sorted(str(p) for p in Path(folders[1]).iterdir())
    files_ref = sorted(str(p) for p in Path(folders[2]).iterdir())
    record, report, files = run_compare(files_a, files_b, files_ref, store=store, pairs="name",
                                        metrics=["ssim", "psnr"], n_bootstrap=100)
    saved = store.get(record.id)
    assert saved.status == "done" and saved.tab == "Metrics / A-B" and files.bar_chart.exists()
    assert "psnr" in files.rows_csv.read_text() and json.loads(files.json.read_text())["rows"]
    again = rerun(record.id, store)
    assert store.get(again.id).params["metrics"] == ["ssim", "psnr"]


def test_every_row_shows_b_minus_a_and_intervals_around_its_values():
    reference = _photos(10)
    report = compare(_noisy(reference, 3, 1), [255 - image for image in _photos(10)],
                     ImageSet("ref", reference, []), metrics=["is", "fid", "psnr"], pairs="order",
                     n_bootstrap=200, models=TINY)
    for row in report.rows:
        assert abs((row.b - row.a) - row.difference) <= 1e-9 * max(1.0, abs(row.difference)), row
        assert row.low <= row.difference <= row.high, row


# ------------------------------------------------------------------------------------------ identical images
def _psnr(image: np.ndarray, reference: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(reference, image, data_range=255))


def test_a_set_identical_to_its_reference_is_said_so_and_the_other_metrics_still_run():
    reference = _photos(6)
    noisy = _noisy(reference, 10, 2)
    report = compare([image.copy() for image in reference], noisy, ImageSet("ref", reference, []), pairs="order",
                     metrics=["ssim", "psnr", "lpips"], n_bootstrap=100, models=TINY)
    psnr = report.row("psnr")
    assert psnr.a == math.inf and psnr.better == "A" and psnr.low is None
    assert psnr.b == pytest.approx(np.mean([_psnr(b, r) for b, r in zip(noisy, reference, strict=True)]), rel=1e-9)
    assert "identical to their reference images (PSNR (dB) infinite)" in psnr.verdict
    assert any("6 of 6 images of A are identical to their reference image" in text for text in report.warnings)
    assert report.row("ssim").a == pytest.approx(1.0) and report.row("ssim").better == "A"
    assert report.row("lpips").a == 0.0  # LPIPS of an exact copy
    json.loads(report.to_json())  # infinity is written as text, the JSON stays valid


def test_identical_pairs_are_left_out_of_the_psnr_mean_and_named():
    reference = _photos(6)
    a = [image.copy() for image in reference[:2]] + _noisy(reference[2:], 5, 1)
    b = _noisy(reference, 12, 2)
    report = compare(a, b, ImageSet("ref", reference, []), pairs="order", metrics=["psnr"], n_bootstrap=100)
    row = report.row("psnr")
    assert row.a == pytest.approx(np.mean([_psnr(x, r) for x, r in zip(a[2:], reference[2:], strict=True)]))
    assert row.b == pytest.approx(np.mean([_psnr(x, r) for x, r in zip(b[2:], reference[2:], strict=True)]))
    assert row.low < row.high < 0 and row.better == "A"
    assert any("2 of 6 images of A are identical" in text and "left out" in text for text in report.warnings)


# ------------------------------------------------------------------------------------------ CLIP and LPIPS
def test_dino_i_is_the_cosine_of_dinov2_cls_embeddings_paired_or_to_the_reference_direction():
    """DINO-I against transformers' own Dinov2Model and image processor loaded from the tiny folder; the real
    DINOv2 is not on this machine, so it is skipped with why, not faked."""
    import torch
    from transformers import AutoImageProcessor, Dinov2Model

    from pipelines.core import tiny_models

    reference = _photos(6)
    a, b = _noisy(reference, 4, 1), [255 - image for image in reference]
    folder = tiny_models.build("dino")
    model, processor = Dinov2Model.from_pretrained(folder).eval(), AutoImageProcessor.from_pretrained(folder)

    def embed(images):
        with torch.inference_mode():
            pixels = processor(images=[Image.fromarray(image) for image in images], return_tensors="pt")
            cls = model(**pixels).last_hidden_state[:, 0].double().numpy()
        return cls / np.linalg.norm(cls, axis=1, keepdims=True)

    ea, eb, er = embed(a), embed(b), embed(reference)
    paired = compare(a, b, ImageSet("ref", reference, []), pairs="order", metrics=["dino_i"], n_bootstrap=100,
                     models={"dino": "tiny:dino"})
    assert paired.row("dino_i").test_model
    assert paired.row("dino_i").a == pytest.approx(np.mean(np.sum(ea * er, axis=1)), rel=1e-4)
    assert paired.row("dino_i").b == pytest.approx(np.mean(np.sum(eb * er, axis=1)), rel=1e-4)
    centroid = er.mean(axis=0) / np.linalg.norm(er.mean(axis=0))
    unpaired = compare(a, b, ImageSet("ref", reference, []), metrics=["dino_i"], n_bootstrap=100,
                       models={"dino": "tiny:dino"})
    assert unpaired.row("dino_i").b == pytest.approx(np.mean(eb @ centroid), rel=1e-4)
    offline = compare(a, b, ImageSet("ref", reference, []), metrics=["dino_i", "ssim"], pairs="order",
                      n_bootstrap=100)
    assert offline.skipped["dino_i"].startswith("needs model DINOv2 ViT-S/14") and offline.row("ssim")


def test_lpips_diversity_is_the_mean_pairwise_distance_within_each_set():
    """Against torchmetrics' LPIPS module on every pair; a set of copies has diversity 0; no reference needed."""
    import itertools

    import torch

    from pipelines.metrics import features

    photos = _photos(5)
    copies = [photos[0]] * 4
    report = compare(copies, photos, metrics=["lpips_diversity"], n_bootstrap=200, models=TINY)
    row = report.row("lpips_diversity")
    module = features.load_feature_network("lpips", "tiny:lpips")

    def signed(image):
        return torch.from_numpy(image / 127.5 - 1.0).permute(2, 0, 1)[None].float()

    with torch.inference_mode():
        pairwise = [float(module(signed(x), signed(y))) for x, y in itertools.combinations(photos, 2)]
    assert row.a == pytest.approx(0, abs=1e-6) and row.b == pytest.approx(np.mean(pairwise), rel=1e-5)
    assert row.better == "B" and row.test_model
    single = compare(copies[:1], photos, metrics=["lpips_diversity"], models=TINY)
    assert "at least 2 images in set A" in single.skipped["lpips_diversity"]


def _reference_clip():
    """The tiny CLIP loaded by transformers itself (not through the app's loader)."""
    from transformers import CLIPModel, CLIPProcessor

    from pipelines.core import tiny_models

    folder = tiny_models.build("clip")
    return CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)


def test_clip_and_lpips_metrics_run_end_to_end_with_the_tiny_networks():
    import scipy.linalg
    import torch
    from torchmetrics.functional.multimodal import clip_score

    reference = _photos(6)
    a, b = _noisy(reference, 4, 1), [255 - image for image in reference]
    prompts = ["a photo of an astronaut", "a cat", "a cup of coffee"] * 2
    report = compare(a, b, ImageSet("ref", reference, []), prompts=prompts, pairs="order",
                     metrics=["clip_score", "clip_score_hessel", "clip_i", "clip_fid", "lpips"], n_bootstrap=100,
                     models=TINY)
    assert not report.skipped, report.skipped
    assert [row.key for row in report.rows] == ["clip_score", "clip_score_hessel", "clip_i", "clip_fid", "lpips"]
    assert all(row.test_model and np.isfinite(row.a) and np.isfinite(row.b) for row in report.rows)

    model, processor = _reference_clip()

    def tensor(images):
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)

    class TensorFeatures(torch.nn.Module):  # torchmetrics expects transformers 4's tensors from get_*_features
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def get_image_features(self, *args, **kwargs):
            out = self.clip.get_image_features(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        def get_text_features(self, *args, **kwargs):
            out = self.clip.get_text_features(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        @property
        def config(self):
            return self.clip.config

    adapted = TensorFeatures(model)
    # CLIP score: torchmetrics' own function, one image at a time = 100·max(cos, 0) per image
    for label, images in (("A", a), ("B", b)):
        expected = [float(clip_score(tensor([image]), [prompt], model_name_or_path=lambda: (adapted, processor)))
                    for image, prompt in zip(images, prompts, strict=True)]
        row = report.row("clip_score")
        assert (row.a if label == "A" else row.b) == pytest.approx(np.mean(expected), rel=1e-4, abs=1e-4)
        hessel = report.row("clip_score_hessel")
        assert (hessel.a if label == "A" else hessel.b) == pytest.approx(np.mean(expected) * 0.025, rel=1e-4,
                                                                         abs=1e-4)

    def embed(images):
        with torch.inference_mode():
            pixels = processor(images=[Image.fromarray(image) for image in images], return_tensors="pt")
            output = model.get_image_features(**pixels)
            output = output if isinstance(output, torch.Tensor) else output.pooler_output
        array = output.double().numpy()
        return array / np.linalg.norm(array, axis=1, keepdims=True)

    ea, eb, er = embed(a), embed(b), embed(reference)
    assert report.row("clip_i").a == pytest.approx(np.mean(np.sum(ea * er, axis=1)), rel=1e-4)  # paired cosines
    assert report.row("clip_i").b == pytest.approx(np.mean(np.sum(eb * er, axis=1)), rel=1e-4)

    def frechet(x, y):  # the textbook formula with scipy's matrix square root
        mu_x, mu_y, cov_x, cov_y = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
        root = scipy.linalg.sqrtm(cov_x @ cov_y).real
        return float(np.sum((mu_x - mu_y) ** 2) + np.trace(cov_x + cov_y - 2 * root))

    assert report.row("clip_fid").a == pytest.approx(frechet(ea, er), rel=1e-3, abs=1e-6)
    assert report.row("clip_fid").b == pytest.approx(frechet(eb, er), rel=1e-3, abs=1e-6)
    lpips = report.row("lpips")
    assert 0 < lpips.a < lpips.b and lpips.better == "A"  # slightly noisy copies are closer than negatives


def test_lpips_weights_load_strictly_and_a_renamed_key_fails_loudly(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from pipelines.core import loader
    from pipelines.core.safeweights import load_safetensors
    from pipelines.core.tiny_models import build
    from pipelines.metrics import features

    folder = build("lpips")
    state, metadata = load_safetensors(folder / "model.safetensors")
    module = features.make_lpips({"net": "alex"}, state)  # the tiny file: every tensor is loaded
    for key, value in state.items():
        assert torch.equal(module.state_dict()[key], value), key
    assert torch.equal(module.lins[0].model[1].weight, state["lin0.model.1.weight"])  # aliases follow
    renamed = dict(state)
    renamed["lin3.model.1.weights"] = renamed.pop("lin3.model.1.weight")
    broken = tmp_path / "lpips-renamed"
    broken.mkdir()
    save_file(renamed, str(broken / "model.safetensors"), metadata=metadata)
    (broken / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(loader.ModelLoadError, match=r"missing \['lin3.model.1.weight'\].*unexpected "
                                                    r"\['lin3.model.1.weights'\]"):
        loader.load_model("torch_module", str(broken))
    # converting torchmetrics' packaged linear weights: a renamed key stops the build, no random layer is kept
    packaged = features._packaged_lpips_linear_weights("alex")
    packaged["lin0.model.1.bias"] = packaged.pop("lin0.model.1.weight")
    monkeypatch.setattr(features, "_packaged_lpips_linear_weights", lambda net: packaged)
    with pytest.raises(ValueError, match=r"torchmetrics' LPIPS linear weights do not fit LPIPS: missing "
                                         r"\['lin0.model.1.weight'\]"):
        features.build_tiny_lpips(tmp_path / "tiny-again")



# ------------------------------------------------------------------------------------------ defaults that answer
def test_defaults_without_a_reference_run_the_metrics_that_need_none_and_say_what_one_would_add():
    photos = _photos(6)
    a, b = _noisy(photos, 3, 1), _noisy(photos, 30, 2)
    report = compare(a, b, models=TINY, n_bootstrap=100)
    assert [row.key for row in report.rows] == ["lpips_diversity", "is"] and not report.skipped
    assert "No reference set: the metrics that need none were computed" in report.notes[0]
    assert "With prompts, CLIP score" in report.notes[0]
    assert "A reference set of real images would add" in report.notes[1]
    alone = compare(a, b, metrics=["lpips_diversity"], models=TINY, n_bootstrap=100).row("lpips_diversity")
    assert report.row("lpips_diversity").b == pytest.approx(alone.b)  # the same metric as when chosen by hand
    with_prompts = compare(a, b, prompts=["a photo"], models=TINY, n_bootstrap=100)
    assert "clip_score" in [row.key for row in with_prompts.rows]


def test_auto_pairing_pairs_by_file_name_when_the_names_match_and_says_so():
    from skimage.metrics import structural_similarity

    photos = _photos(4)
    names = [f"img{k}.png" for k in range(4)]
    a = ImageSet("A", _noisy(photos, 5, 1)[::-1], names[::-1])  # the same names in another order
    b = ImageSet("B", _noisy(photos, 40, 2), names)
    reference = ImageSet("reference", photos, names)
    report = compare(a, b, reference, pairs="auto", metrics=["ssim"], n_bootstrap=100)
    assert "Paired with the reference by file name, as the names match" in report.notes[0]
    expected = np.mean([structural_similarity(a.images[3 - k], photos[k], channel_axis=2, data_range=255)
                        for k in range(4)])  # skimage's own SSIM, each image with its namesake
    assert report.row("ssim").a == pytest.approx(expected, rel=1e-6) and report.row("ssim").better == "A"
    other = ImageSet("B", b.images, [f"other{k}.png" for k in range(4)])
    unpaired = compare(a, other, reference, pairs="auto", metrics=["ssim"], n_bootstrap=100)
    assert "do not match the reference's" in unpaired.notes[0] and "ssim" in unpaired.skipped
