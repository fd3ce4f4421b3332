"""Single-image variation: real (short) CPU training on a photo scikit-image ships, and what it must achieve.

One model is trained once for the module (a 36×36 crop-free downscale of skimage's `coffee`, 2 scales, width 16,
600 steps of the default recipe): about 6 s of CPU on this machine. The thresholds are set by independent
references, not by our code:
- reconstruction: the source's coarsest scale → finest through the model must be closer to the source than the
  source moved by one pixel, and better than an untrained network's;
- patch statistics: a variation's mean nearest-neighbour patch distance to the source must be well below that of
  the source with its pixels shuffled (same colours, no structure) and of noise with the source's mean and std.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.core.jobs import CancelToken, JobCancelled
from pipelines.core.safeweights import load_safetensors
from pipelines.single_image.model import alphas_cumprod, blurred, pyramid
from pipelines.single_image.sample import EditRequest, VariationRequest, edit, reconstruct, sample_scale, variations
from pipelines.single_image.train import TrainConfig, image_tensor, load_milestone, train

pytestmark = pytest.mark.slow

SIDE = 36


def _photo(side=SIDE):
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.coffee()).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4 / (a - b).pow(2).mean()))  # images in [-1, 1]: peak-to-peak 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single-image-model")
    config = TrainConfig(steps=600, width=16, batch_size=2, lr=2e-3, seed=0)
    return train(config, _photo(), folder=folder, resume=False, checkpoint_every=300)


def test_training_lowers_the_noise_prediction_loss_and_writes_milestones(trained):
    assert trained.finished and trained.steps == 600 and len(trained.milestones) == 10
    assert all(path.exists() for path in trained.milestones)
    assert np.mean(trained.losses[-50:]) < 0.8 * np.mean(trained.losses[:20])
    # L1 of predicting zero noise is E|ε| = sqrt(2/π) ≈ 0.80: the model must do clearly better than that
    assert np.mean(trained.losses[-50:]) < 0.6


def test_reconstruction_from_the_coarsest_scale_beats_the_references(trained):
    """Threshold: the source moved by one pixel (every edge misplaced by 1 px; 17.5 dB here). A reconstruction
    closer than that has rebuilt the finer scale from the coarsest one (measured: 27.5 dB). The same network with
    small random weights (it predicts almost no noise) must do worse (measured: 19.1 dB)."""
    source = image_tensor(_photo())
    model_psnr = _psnr(reconstruct(trained.model_path).tensor, source)
    shifted_psnr = _psnr(source[..., 1:], source[..., :-1])
    untrained = load_milestone(trained.model_path)
    for module in untrained.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(module.weight, std=0.02)
    assert model_psnr > shifted_psnr
    assert model_psnr > _psnr(reconstruct(untrained).tensor, source) + 0.5


@pytest.fixture(scope="module")
def trained_epsilon(tmp_path_factory):
    """The default recipe but with the finer scales predicting the noise, as SinDDM and the first recipe."""
    folder = tmp_path_factory.mktemp("single-image-epsilon-model")
    config = TrainConfig(steps=600, width=16, batch_size=2, lr=2e-3, seed=0, fine_prediction="epsilon")
    return train(config, _photo(), folder=folder, resume=False, checkpoint_every=300)


def _finer_scale_psnrs(model_path) -> tuple[float, float]:
    """(PSNR of the finer scale's reverse process, of its upsampled input x̃) against the true finer level, starting
    from the true coarser level: bicubic upsampling is the reference a finer scale has to beat."""
    model = load_milestone(model_path)
    levels = pyramid(image_tensor(_photo()), list(model.config.sizes))
    blur, alphas = blurred(levels, 1), alphas_cumprod(model.config.diffusion_steps)
    finer = sample_scale(model, blur, 1, torch.Generator().manual_seed(0), alphas, 20, eta=0.0)
    return _psnr(finer, levels[1]), _psnr(blur, levels[1])


def test_predicting_the_detail_makes_the_finer_scale_add_what_upsampling_lost(trained, trained_epsilon):
    """The quantity fine_prediction="detail" changes: with the same 600 steps, its finer scale lands above its
    upsampled input, and far above the noise-predicting model's, which lands below it (measured: 27.5 dB against
    26.4 for x̃ and 19.0 for ε; chelsea at 128 px showed the same, ε 0.8–5.8 dB below x̃, the detail 1.5–21 above)."""
    assert TrainConfig().fine_prediction == "detail"  # `trained` is the default recipe
    detail, upsampled = _finer_scale_psnrs(trained.model_path)
    noise, _ = _finer_scale_psnrs(trained_epsilon.model_path)
    assert detail > upsampled + 0.3
    assert detail > noise + 3.0


def test_a_finer_scale_that_learned_no_detail_is_reported(trained, tmp_path):
    """Closed form: with its detail output zeroed, a finer scale gives back its upsampled input, clamped to the
    pixel range (so almost nothing added, about 0 dB gained), and the check tells the user. The trained model's
    recorded gain is the PSNR difference measured here by the test's own reverse process and PSNR."""
    from pipelines.single_image.model import save_model
    from pipelines.single_image.sample import detail_gains
    from pipelines.single_image.train import check_detail

    detail, upsampled = _finer_scale_psnrs(trained.model_path)
    assert trained.detail_gain_db == [pytest.approx(detail - upsampled, abs=0.01)]
    model = load_milestone(trained.model_path)
    torch.nn.init.zeros_(model.net.detail_tail[1].weight)
    torch.nn.init.zeros_(model.net.detail_tail[1].bias)
    soft = tmp_path / "soft.safetensors"
    save_model(model, soft)
    (zeroed,) = detail_gains(soft)
    levels = pyramid(image_tensor(_photo()), list(model.config.sizes))
    blur, clamped = blurred(levels, 1), blurred(levels, 1).clamp(-1, 1)
    assert zeroed.upsampled_db == pytest.approx(upsampled, abs=1e-3)
    assert zeroed.gain_db == pytest.approx(_psnr(clamped, levels[1]) - upsampled, abs=1e-3)
    missing = (levels[1] - blur).pow(2).mean().sqrt()
    assert zeroed.added == pytest.approx(float((clamped - blur).pow(2).mean().sqrt() / missing), abs=1e-4)
    assert abs(zeroed.gain_db) < 0.1 and zeroed.added < 0.1
    notes: list[str] = []
    assert check_detail(soft, notes) == [pytest.approx(zeroed.gain_db, abs=0.01)]
    assert len(notes) == 1 and "little detail" in notes[0]


def _patches(image: torch.Tensor, size: int = 5) -> torch.Tensor:
    return torch.nn.functional.unfold(image, size).squeeze(0).T  # N × (3·size²)


def _patch_distance(image: torch.Tensor, source: torch.Tensor) -> float:
    """Mean distance from each patch of `image` to its nearest patch of `source` (SinGAN-style patch statistics)."""
    return float(torch.cdist(_patches(image), _patches(source)).min(dim=1).values.mean())


def test_variations_differ_from_the_source_but_keep_its_patch_statistics(trained):
    source = image_tensor(_photo())
    output = variations(trained.model_path, VariationRequest(count=3, seed=5))
    assert len(output.images) == 3 and len(output.per_scale[0]) == 2  # an image at every scale
    generator = torch.Generator().manual_seed(0)
    flat = source.flatten(2)
    shuffled = flat[:, :, torch.randperm(flat.shape[-1], generator=generator)].reshape(source.shape)
    noise = (source.mean() + source.std() * torch.randn(source.shape, generator=generator)).clamp(-1, 1)
    references = min(_patch_distance(shuffled, source), _patch_distance(noise, source))
    for image in output.images:
        variation = image_tensor(image)
        assert (variation - source).abs().mean() > 0.05  # not a copy of the source
        # "well below": at least 25% below both structureless references (measured: 0.65 of them)
        assert _patch_distance(variation, source) < 0.75 * references
    assert not np.array_equal(np.asarray(output.images[0]), np.asarray(output.images[1]))
    same = variations(trained.model_path, VariationRequest(count=1, seed=5))
    assert np.array_equal(np.asarray(same.images[0]), np.asarray(output.images[0]))  # a seed is reproducible


def test_gpnn_detail_draws_the_models_layout_with_the_source_patches(trained):
    """detail="gpnn": the model makes the layout at the start scale (the same draw as a plain variation of that
    seed), GPNN draws exactly that layout with the photo's patches, and the result is closer to the source's patch
    statistics than the model's own finer scales. (That GPNN keeps a layout's arrangement is tested in
    test_single_image_gpnn.py on a known layout: this small model's layouts are mostly noise.)"""
    from pipelines.core.errors import UserError
    from pipelines.single_image.gpnn import finish_layout

    source = image_tensor(_photo())
    plain = variations(trained.model_path, VariationRequest(count=2, seed=3, steps_per_scale=6))
    finished = variations(trained.model_path, VariationRequest(count=2, seed=3, steps_per_scale=6, detail="gpnn"))
    assert "GPNN" in " ".join(finished.notes)
    for index, image in enumerate(finished.images):
        layout = plain.per_scale[index][0]
        np.testing.assert_array_equal(np.asarray(finished.per_scale[index][0]), np.asarray(layout))
        expected = finish_layout((source + 1) / 2, (image_tensor(layout) + 1) / 2, (SIDE, SIDE))[-1] * 2 - 1
        assert (image_tensor(image) - expected).abs().max() <= 1 / 127.5 + 1e-6  # uint8 rounding
        assert _patch_distance(image_tensor(image), source) < _patch_distance(image_tensor(plain.images[index]), source)
    with pytest.raises(UserError, match="detail"):
        variations(trained.model_path, VariationRequest(count=1, detail="photo"))


def test_a_later_milestone_is_closer_to_the_source(trained):
    source = image_tensor(_photo())
    early = _psnr(reconstruct(trained.model_path, milestone=2).tensor, source)
    late = _psnr(reconstruct(trained.model_path, milestone=10).tensor, source)
    assert late > early


def test_output_size_multiplier_and_start_scale(trained):
    wide = variations(trained.model_path, VariationRequest(count=1, seed=0, width_scale=1.5, steps_per_scale=6))
    assert wide.images[0].size == (54, 36)
    kept = variations(trained.model_path, VariationRequest(count=1, seed=0, start_scale=1, steps_per_scale=6))
    source = image_tensor(_photo())
    free = variations(trained.model_path, VariationRequest(count=1, seed=0, steps_per_scale=6))
    # starting at a finer scale keeps the source's layout: closer to it than a variation from pure noise
    assert _psnr(image_tensor(kept.images[0]), source) > _psnr(image_tensor(free.images[0]), source)


def test_edit_inside_a_region_leaves_the_outside_unchanged(trained, shared_cache_dir):
    from pipelines.single_image.text import ClipModel

    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[8:24, 10:30] = 255
    output = edit(trained.model_path, EditRequest(prompt="red flowers", guidance=50, mask=mask, steps_per_scale=6),
                  clip=ClipModel("tiny:clip"))
    result, source = np.asarray(output.images[0]).astype(int), np.asarray(_photo()).astype(int)
    outside = mask == 0
    assert np.abs(result[outside] - source[outside]).max() <= 1  # uint8 rounding only
    assert np.abs(result[~outside] - source[~outside]).mean() > 2  # the region did change
    assert output.prompts[0] == "red flowers" and len(output.prompts) > 1
    assert any("random weights" in note for note in output.notes)


def test_resume_after_cancel_continues_from_the_checkpoint(tmp_path):
    photo = _photo(32)
    config = TrainConfig(steps=20, width=8, batch_size=1, seed=3, precision="fp32")
    straight = train(config, photo, folder=tmp_path / "straight", resume=False, checkpoint_every=10)
    token = CancelToken()

    def cancel_at_ten(step, total, message):
        if step == 10:
            token.cancel()

    with pytest.raises(JobCancelled):
        train(config, photo, folder=tmp_path / "resumed", callback=cancel_at_ten, cancel=token, checkpoint_every=10)
    resumed = train(config, photo, folder=tmp_path / "resumed", checkpoint_every=10)
    assert resumed.resumed_from == 10 and resumed.steps == 20
    assert resumed.losses[:10] == straight.losses[:10]
    first, _ = load_safetensors(straight.model_path)
    second, _ = load_safetensors(resumed.model_path)
    for key in first:
        assert torch.allclose(first[key].float(), second[key].float(), atol=1e-6), key
    cached = train(config, photo, folder=tmp_path / "resumed")
    assert cached.cached  # the same image and settings: the finished model is reused


def _coarsest_samples_distance(folder, crop: int) -> list[float]:
    """Mean absolute difference to the photo of 3 samples from pure noise of a one-scale model (chelsea at 26×40,
    the size of its coarsest level in the recipe) trained on its whole level (crop 0) or on windows."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.chelsea()).convert("RGB").resize((40, 26), Image.Resampling.LANCZOS)
    config = TrainConfig(steps=1500, width=16, batch_size=8, coarsest_batch_size=8, coarsest_side=26,
                         coarsest_crop=crop, seed=0)
    result = train(config, photo, folder=folder, resume=False)
    assert load_milestone(result.model_path).config.scales == 1
    samples = variations(result.model_path, VariationRequest(count=3, seed=0)).images
    return [float((image_tensor(image) - image_tensor(photo)).abs().mean()) for image in samples]


def test_windows_keep_the_coarsest_scale_from_memorising_its_layout(tmp_path):
    """The quantity coarsest_crop changes: trained on its whole level the coarsest scale drifts toward the photo (its
    borders tell every pixel where it is; at 6,000 steps and width 32 its samples were near-copies, 0.015–0.020);
    trained on windows its samples are new layouts — every one past the bench's near-copy line (0.1 mean absolute
    difference) and farther from the photo than any whole-level sample."""
    whole = _coarsest_samples_distance(tmp_path / "whole", 0)
    windows = _coarsest_samples_distance(tmp_path / "windows", 18)
    assert min(windows) > 0.1
    assert min(windows) > max(whole) + 0.03, (whole, windows)


def test_the_cli_writes_the_model_and_its_card_with_the_detail_gains(tmp_path):
    """The command that made the shipped model: its --out file loads with the trained config, and its --card records
    the run, including each finer scale's measured gain (one per finer scale)."""
    import json
    import os
    import subprocess
    import sys

    from pipelines.single_image.model import load_model_file

    _photo(48).save(tmp_path / "photo.png")
    env = {**os.environ, "ASL_OUTPUTS": str(tmp_path / "outputs")}
    subprocess.run([sys.executable, "-m", "pipelines.single_image", "train", str(tmp_path / "photo.png"),
                    "--steps", "20", "--width", "8", "--batch-size", "1", "--out", str(tmp_path / "m.safetensors"),
                    "--card", str(tmp_path / "m.json")], check=True, env=env, capture_output=True, timeout=300)
    card = json.loads((tmp_path / "m.json").read_text())
    model, _ = load_model_file(tmp_path / "m.safetensors")
    assert card["steps"] == 20 and card["config"]["width"] == model.config.width == 8
    assert len(card["detail_gain_db"]) == model.config.scales - 1 >= 1
    assert all(isinstance(gain, float) for gain in card["detail_gain_db"])
