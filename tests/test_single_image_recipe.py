"""The training recipe (issue 25): how the steps are spread over the scales and the learning-rate schedule, each
checked against something independent of train.py — the closed form written out here, and torch's own schedulers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines.single_image.model import ModelConfig
from pipelines.single_image.train import TrainConfig, _scale_of, _step_draws, learning_rate, scale_shares

SIZES = ((4, 4), (5, 5), (6, 6), (7, 7), (8, 8), (9, 9))  # six scales, tiny so 6000 draws take a second
DRAWS = 6000


@pytest.mark.parametrize("coarse_share", [0.4, 0.7])
def test_the_per_scale_step_share_follows_the_schedule(coarse_share):
    """Coarsest: `coarse_share` of the steps; each of the five finer scales: (1 − coarse_share) / 5. Every
    observed share must lie within 4.5 binomial standard deviations (a uniform draw, 1/6 each, is 20+ away)."""
    config = TrainConfig(coarse_share=coarse_share, batch_size=1)
    model_config = ModelConfig(sizes=SIZES, start_steps=(100, 20, 15, 10, 8, 5))
    counts = torch.zeros(len(SIZES))
    for step in range(DRAWS):
        scale, t, noise, _ = _step_draws(config, step, model_config)
        counts[scale] += 1
        assert 0 <= int(t.max()) < model_config.start_steps[scale] and tuple(noise.shape[-2:]) == SIZES[scale]
    expected = [coarse_share] + [(1 - coarse_share) / 5] * 5
    for observed, share in zip((counts / DRAWS).tolist(), expected, strict=True):
        sigma = math.sqrt(share * (1 - share) / DRAWS)
        assert abs(observed - share) < 4.5 * sigma, (observed, share)


@pytest.mark.parametrize("weights", [(0, 0, 0, 0, 0, 1), (2, 0, 1, 1, 0, 4)])
def test_explicit_scale_weights_set_each_scale_s_share(weights):
    """With scale_weights, scale i trains on weights[i] / sum of the steps (binomial bounds as above); a weight of
    0 is never drawn, and the coarse_share rule is set aside."""
    config = TrainConfig(batch_size=1, scale_weights=weights, coarse_share=0.7)
    model_config = ModelConfig(sizes=SIZES, start_steps=(100, 20, 15, 10, 8, 5))
    counts = torch.zeros(len(SIZES))
    for step in range(DRAWS):
        counts[_step_draws(config, step, model_config)[0]] += 1
    for observed, weight in zip((counts / DRAWS).tolist(), weights, strict=True):
        share = weight / sum(weights)
        assert abs(observed - share) <= 4.5 * math.sqrt(share * (1 - share) / DRAWS), (observed, share)  # 0 → exact


def test_scale_weights_that_cannot_be_used_are_a_user_error(tmp_path):
    """All zero or negative: refused by the config check; a count that is not the image's scale count: refused
    before training starts, naming the count."""
    from PIL import Image

    from pipelines.core.errors import UserError
    from pipelines.single_image.train import train

    for weights in ((0, 0, 0), (1, -1, 1)):
        with pytest.raises(UserError, match="weights"):
            TrainConfig(scale_weights=weights).check()
    image = Image.fromarray((np.random.default_rng(0).random((30, 30, 3)) * 255).astype(np.uint8))
    with pytest.raises(UserError, match="one weight per scale"):
        train(TrainConfig(steps=20, width=8, batch_size=1, scale_weights=(1, 1, 1, 1, 1, 1, 1, 1)), image,
              folder=tmp_path, resume=False)
    assert not (tmp_path / "model.safetensors").exists()


def test_the_draws_of_a_step_are_the_same_on_every_call():
    """Resume repeats a run exactly because a step's draws depend only on (seed, step)."""
    config, model_config = TrainConfig(batch_size=2), ModelConfig(sizes=SIZES, start_steps=(100, 20, 15, 10, 8, 5))
    first, again = _step_draws(config, 123, model_config), _step_draws(config, 123, model_config)
    assert first[0] == again[0] and torch.equal(first[1], again[1]) and torch.equal(first[2], again[2])


@pytest.mark.parametrize("steps", [50, 1000])
def test_the_learning_rate_is_warm_up_then_cosine_decay_as_torch_schedules_it(steps):
    """Reference: torch's LinearLR (warm-up over 2% of the steps, from lr/warmup to lr) then CosineAnnealingLR
    down to 5% of lr at the last step, driven through a real optimizer."""
    config = TrainConfig(steps=steps, lr=3e-3)
    warmup = max(1, round(0.02 * steps))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    schedules = [torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, end_factor=1.0,
                                                   total_iters=max(1, warmup - 1)),
                 torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - 1 - warmup,
                                                            eta_min=0.05 * config.lr)]
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, schedules, milestones=[warmup])
    for step in range(steps):
        assert learning_rate(config, step) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-6), step
        optimizer.step()
        schedule.step()
    assert learning_rate(config, steps - 1) == pytest.approx(0.05 * config.lr)
    assert max(learning_rate(config, step) for step in range(steps)) == pytest.approx(config.lr)


def test_the_constant_schedule_keeps_the_first_recipe():
    config = TrainConfig(steps=100, lr=1e-3, lr_schedule="constant")
    assert {learning_rate(config, step) for step in range(100)} == {1e-3}


def test_the_time_probe_knows_which_scale_each_step_trains():
    """The probe rescales its timing by the scales its window drew: those must be the scales training draws, and
    the coarsest scale's own batch size must reach the noise drawn there."""
    config = TrainConfig(batch_size=2, coarsest_batch_size=5)
    model_config = ModelConfig(sizes=SIZES, start_steps=(100, 20, 15, 10, 8, 5))
    shares = scale_shares(len(SIZES), config.coarse_share)
    for step in range(300):
        scale, t, noise, _ = _step_draws(config, step, model_config)
        assert _scale_of(config, step, shares) == scale
        assert len(t) == noise.shape[0] == (5 if scale == 0 else 2)


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.05])
def test_gradient_clipping_bounds_the_norm_each_step_applies(monkeypatch, tmp_path, max_grad_norm):
    """The norm of the gradient the optimizer steps with, computed here from the parameters' .grad: at most
    `max_grad_norm` when set; unclipped (0) the tiny model's gradients are larger than that."""
    from PIL import Image

    from pipelines.single_image.train import train

    norms = []
    plain_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad.flatten() for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.cat(grads).norm()))
        return plain_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    image = Image.fromarray((np.random.default_rng(0).random((30, 30, 3)) * 255).astype(np.uint8))
    config = TrainConfig(steps=20, width=8, batch_size=1, max_grad_norm=max_grad_norm, fine_prediction="detail")
    train(config, image, folder=tmp_path, resume=False)
    assert len(norms) == 20
    if max_grad_norm:
        assert max(norms) <= max_grad_norm * (1 + 1e-4)
    else:
        assert max(norms) > 0.05


def test_window_draws_are_in_bounds_repeat_on_resume_and_slice_the_level():
    """With crops set, every draw is a window of the crop side (the level's side where that is smaller) lying
    inside the level; the windows are the level's pixels there (numpy slicing as the reference); without crops
    the draws are those of the plain recipe, so old runs resume unchanged."""
    from pipelines.single_image.train import windows

    sizes = ((6, 9), (12, 20), (30, 44))
    model_config = ModelConfig(sizes=sizes, start_steps=(100, 10, 6))
    config = TrainConfig(batch_size=3, coarsest_batch_size=5, coarsest_crop=8, fine_crop=16)
    levels = [torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h)) for h, w in sizes]
    seen = set()
    for step in range(200):
        scale, t, noise, corners = _step_draws(config, step, model_config)
        h, w = sizes[scale]
        side = 8 if scale == 0 else 16
        assert tuple(noise.shape[-2:]) == (min(h, side), min(w, side)) and corners.shape == (len(t), 2)
        crop = windows(levels[scale], corners, tuple(noise.shape[-2:]), len(t))
        for item, (y, x) in enumerate(corners.tolist()):
            assert 0 <= y <= h - noise.shape[-2] and 0 <= x <= w - noise.shape[-1]
            expected = levels[scale][0].numpy()[:, y:y + noise.shape[-2], x:x + noise.shape[-1]]
            np.testing.assert_array_equal(crop[item].numpy(), expected)
            seen.add((scale, y, x))
        again = _step_draws(config, step, model_config)
        assert torch.equal(again[3], corners) and torch.equal(again[2], noise)
    assert len(seen) > 30  # the windows move
    plain = TrainConfig(batch_size=3, coarsest_batch_size=5, coarsest_crop=0, fine_crop=0)
    scale, t, noise, corners = _step_draws(plain, 7, model_config)
    assert corners is None and tuple(noise.shape[-2:]) == sizes[scale]


@pytest.mark.parametrize("cover", [1.0, 3.0])
def test_a_finer_scale_starts_at_the_first_step_whose_noise_covers_its_missing_detail(cover):
    """T_n − 1 is the first step t with sqrt(1 − ᾱ_t) ≥ cover × RMS(x_n − up(x_{n−1})), ᾱ from diffusers' cosine
    scheduler and the detail from torch's own bicubic interpolation, written out here (T_n at least 5)."""
    from diffusers import DDPMScheduler

    from pipelines.single_image import model as M

    generator = torch.Generator().manual_seed(3)  # smooth shapes plus a little grain: the detail is small
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 12, generator=generator) * 2 - 1, size=(64, 96),
                                            mode="bilinear") + 0.05 * torch.randn(1, 3, 64, 96, generator=generator)
    levels = M.pyramid(image, M.scale_sizes(64, 96))
    noise_std = (1 - DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2").alphas_cumprod).sqrt()
    steps = M.start_steps(levels, M.alphas_cumprod(), cover)
    assert steps[0] == 100 and len(steps) == len(levels) > 2
    for scale in range(1, len(levels)):
        up = torch.nn.functional.interpolate(levels[scale - 1], size=levels[scale].shape[-2:], mode="bicubic",
                                             align_corners=False)
        missing = cover * (levels[scale] - up).pow(2).mean().sqrt()
        first = next((t for t in range(100) if noise_std[t] >= missing), 99)
        assert steps[scale] == min(100, max(5, first + 1))
    if cover > 1:
        assert sum(steps) > sum(M.start_steps(levels, M.alphas_cumprod(), 1.0))
