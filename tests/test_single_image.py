"""Single-image variation (issue 11): scales, forward process and sampler algebra, backbones, text, edits — fast.

The trained-model tests (reconstruction, patch statistics, milestones, resume) are in test_single_image_train.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipelines.core.errors import UserError
from pipelines.single_image import model as M
from pipelines.single_image import text as T
from pipelines.single_image.sample import sample_scale


def test_scales_follow_the_factor_down_to_about_25_px():
    sizes = M.scale_sizes(128, 192)
    assert sizes[-1] == (128, 192)
    assert 20 <= min(sizes[0]) <= 30  # "until the coarsest side is about 25 px"
    for (h0, w0), (h1, w1) in zip(sizes, sizes[1:], strict=False):
        assert h1 / h0 == pytest.approx(M.SCALE_FACTOR, rel=0.06)
        assert w1 / w0 == pytest.approx(M.SCALE_FACTOR, rel=0.06)
    assert M.training_size(512, 1024) == (91, 181)  # area ≈ 128², aspect kept
    assert M.training_size(64, 80) == (64, 80)  # never upscaled


def test_cosine_schedule_is_nichol_dhariwal():
    alphas = M.alphas_cumprod(100)

    def f(t):  # Nichol & Dhariwal 2021, eq. 17, s = 0.008; betas capped at 0.999 (only the last step)
        return math.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 10, 50, 90):
        assert alphas[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-4)


def _pyramid_and_steps(seed=0, side=48):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, side, side, generator=generator) * 2 - 1
    sizes = M.scale_sizes(side, side)
    levels = M.pyramid(image, sizes)
    alphas = M.alphas_cumprod()
    return sizes, levels, alphas, M.start_steps(levels, alphas)


class _OracleNet(torch.nn.Module):
    """Predicts exactly the noise that makes x_t from the true image (or, at a finer scale with "detail", exactly the
    detail the upsampling lost): the sampler must then return that image."""

    def __init__(self, sizes, levels, alphas, starts, fine_prediction="epsilon"):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.levels, self.alphas = levels, alphas
        self.config = M.ModelConfig(sizes=tuple(sizes), start_steps=tuple(starts), fine_prediction=fine_prediction)

    def forward(self, x, t, scale, context=None):
        if scale > 0 and self.config.fine_prediction == "detail":
            return (self.levels[scale] - M.blurred(self.levels, scale)).expand_as(x)
        start = self.config.start_steps[scale]
        gamma = M.blend_weight(t, scale, start).view(-1, 1, 1, 1)
        alpha = self.alphas[t].view(-1, 1, 1, 1)
        mixture = gamma * M.blurred(self.levels, scale) + (1 - gamma) * self.levels[scale]
        return (x - alpha.sqrt() * mixture) / (1 - alpha).sqrt()


def test_forward_process_mixes_clean_blurred_and_noise():
    sizes, levels, alphas, starts = _pyramid_and_steps()
    scale, start = 2, starts[2]
    clean, blur = levels[scale], M.blurred(levels, scale)
    noise = torch.randn_like(clean)
    t = torch.tensor([start - 1])
    x_t = M.noised(clean, blur, noise, t, scale, start, alphas)
    gamma, alpha = M.BLEND_MAX, alphas[start - 1]
    assert torch.allclose(x_t, alpha.sqrt() * (gamma * blur + (1 - gamma) * clean) + (1 - alpha).sqrt() * noise,
                          atol=1e-5)
    assert torch.allclose(M.predicted_clean(x_t, noise, blur, t, scale, start, alphas), clean, atol=1e-4)
    # T_n: the noise level at the start covers the detail the upsampling lost
    missing = (clean - blur).pow(2).mean().sqrt()
    assert (1 - alphas[start - 1]).sqrt() >= missing or start == M.MIN_START_STEP


def test_the_implied_noise_inverts_the_forward_process():
    sizes, levels, alphas, starts = _pyramid_and_steps()
    for scale in range(len(sizes)):
        clean, blur = levels[scale], M.blurred(levels, scale)
        noise = torch.randn(3, *clean.shape[1:], generator=torch.Generator().manual_seed(scale))
        t = torch.tensor([0, starts[scale] // 2, starts[scale] - 1])
        x_t = M.noised(clean, blur, noise, t, scale, starts[scale], alphas)
        assert torch.allclose(M.implied_noise(clean, x_t, blur, t, scale, starts[scale], alphas), noise, atol=1e-3)
        detail = M.clean_estimate(clean - blur, x_t, blur, t, scale, starts[scale], alphas, "detail")
        expected = clean if scale else M.predicted_clean(x_t, clean - blur, blur, t, scale, starts[scale], alphas)
        assert torch.allclose(detail, expected.expand_as(detail), atol=1e-6)  # the coarsest always predicts ε


def test_a_model_file_from_before_the_fine_prediction_setting_predicts_noise():
    old = json.loads(_net("fcn").config.to_metadata()["model_config"])
    del old["fine_prediction"]
    assert M.ModelConfig.from_metadata({"model_config": json.dumps(old)}).fine_prediction == "epsilon"
    with pytest.raises(ValueError, match="fine-scale prediction"):
        M.MultiScaleDenoiser(M.ModelConfig(fine_prediction="x0"))


@pytest.mark.parametrize("fine_prediction", ["epsilon", "detail"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sampler_recovers_the_image_when_the_noise_prediction_is_exact(eta, fine_prediction):
    sizes, levels, alphas, starts = _pyramid_and_steps()
    oracle = _OracleNet(sizes, levels, alphas, starts, fine_prediction)
    for scale in range(len(sizes)):
        out = sample_scale(oracle, M.blurred(levels, scale), scale, torch.Generator().manual_seed(1), alphas, 12, eta)
        assert (out - levels[scale]).abs().max() < 1e-4


def _net(backbone, text_dim=0, width=16, dilations=M.DILATIONS):
    config = M.ModelConfig(backbone=backbone, width=width, sizes=((25, 25), (35, 35), (50, 50)),
                           start_steps=(100, 20, 20), text_dim=text_dim, text_tokens=4 if text_dim else 0,
                           dilations=dilations)
    torch.manual_seed(0)
    return M.MultiScaleDenoiser(config)


def _reach(net, side=81):
    """Pixels of the input that the output's centre pixel depends on (autograd), as a bounding-box side."""
    x = torch.randn(1, 3, side, side, requires_grad=True)
    for module in net.modules():  # zero-initialised layers would hide paths: perturb every weight
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.1)
    out = net(x, torch.tensor([5]), 2)
    out[0, :, side // 2, side // 2].sum().backward()
    rows = np.nonzero(x.grad[0].abs().sum(0).sum(1).numpy())[0]
    return rows.max() - rows.min() + 1


def test_fcn_receptive_field_is_35_px_and_unet_stays_local():
    assert _reach(_net("fcn")) == M.FullyConvDenoiser.receptive_field == 35
    assert _reach(_net("unet", text_dim=8)) < 60  # one downsampling: local, never the whole 81-px image
    wide = _net("fcn", dilations=(1, 2, 4, 8, 4))
    assert _reach(wide) == M.fcn_reach((1, 2, 4, 8, 4)) == 53
    assert M.ModelConfig.from_metadata(wide.config.to_metadata()).dilations == (1, 2, 4, 8, 4)
    old = json.loads(_net("fcn").config.to_metadata()["model_config"])
    del old["dilations"]  # a model file written before the setting existed loads with the default
    assert M.ModelConfig.from_metadata({"model_config": json.dumps(old)}).dilations == M.DILATIONS


def test_one_network_is_conditioned_on_timestep_and_scale():
    net = _net("fcn")
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.1)
    x = torch.randn(1, 3, 35, 35)
    base = net(x, torch.tensor([3]), 1)
    assert not torch.allclose(base, net(x, torch.tensor([30]), 1))
    assert not torch.allclose(base, net(x, torch.tensor([3]), 2))


def test_changing_the_text_changes_the_unet_output_and_not_the_fcn(shared_cache_dir):
    clip = T.ClipModel("tiny:clip")
    tokens_a, tokens_b = clip.text_tokens("a red house by the sea"), clip.text_tokens("snow on a mountain")
    net = _net("unet", text_dim=clip.token_width)
    x, t = torch.randn(1, 3, 35, 35), torch.tensor([10])
    out_a, out_b = net(x, t, 1, tokens_a), net(x, t, 1, tokens_b)
    assert (out_a - out_b).abs().mean() > 1e-3 * out_a.abs().mean()
    assert torch.equal(net(x, t, 1, tokens_a), out_a)  # deterministic: the change is the text's
    fcn = _net("fcn")
    assert torch.equal(fcn(x, t, 1, tokens_a), fcn(x, t, 1, tokens_b))


def test_prompt_split_median_and_keyword_on_known_captions():
    captions = ["a castle on a hill", "a castle in the fog", "a stone castle", "the castle wall", "red roof"]
    scores = [0.30, 0.28, 0.25, 0.10, 0.05]
    prompts = T.split_prompts(captions, scores)
    assert prompts.best == "a castle on a hill"
    assert prompts.median == pytest.approx(0.25)
    assert prompts.keyword == "castle"  # 4 of 5 captions; stop words ("a", "the", "on") never count
    assert prompts.positive == ["a castle in the fog", "a stone castle"]  # ≥ median, P* excluded
    assert prompts.negative == ["the wall", "red roof"]  # below the median, keyword removed
    roles = {row[0]: row[2] for row in prompts.table()}
    assert roles["a castle on a hill"].startswith("P*") and roles["red roof"].startswith("P−")


def test_prompt_augmentation_uses_synonyms_and_keeps_the_original():
    variants = T.augment_prompt("fire in the mountains", 4)
    assert variants[0] == "fire in the mountains" and len(variants) == 4 and len(set(variants)) == 4
    assert "flames in the mountains" in variants and "fire in the peaks" in variants
    assert T.augment_prompt("   ") == []


def test_one_contrastive_step_raises_similarity_to_p_plus_and_lowers_it_to_p_minus(shared_cache_dir):
    clip = T.ClipModel("tiny:clip")
    positive = clip.text_features(["a photo of a cat on grass", "a cat in a green field"])
    negative = clip.text_features(["a city street at night", "a red car on a road"])
    v_plus = torch.nn.functional.normalize(positive.mean(0, keepdim=True), dim=-1)
    v_minus = torch.nn.functional.normalize(negative.mean(0, keepdim=True), dim=-1)
    torch.manual_seed(0)
    image = torch.nn.Parameter(torch.rand(1, 3, 32, 32) * 2 - 1)
    optimizer = torch.optim.SGD([image], lr=0.5)

    def cosines():
        with torch.no_grad():
            embedding = clip.image_features(image)
        return (embedding @ v_plus.T).item(), (embedding @ v_minus.T).item()

    before = cosines()
    loss = T.contrastive_loss(clip.image_features(image), positive, negative)
    assert loss.item() == pytest.approx(-before[0] + before[1], abs=1e-5)  # L = −cos(P+) + cos(P−)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = cosines()
    assert after[0] > before[0] and after[1] < before[1]


def test_region_mask_must_match_the_image():
    from pipelines.single_image.sample import mask_tensor

    with pytest.raises(UserError, match="32×24 but the image is 40×30"):
        mask_tensor(np.ones((24, 32), np.uint8), (30, 40))
    with pytest.raises(UserError, match="empty"):
        mask_tensor(np.zeros((30, 40), np.uint8), (30, 40))
    assert mask_tensor(np.pad(np.ones((10, 10)), 10), (30, 30)).sum() == 100
