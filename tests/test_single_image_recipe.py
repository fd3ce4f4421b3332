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
        scale, t, noise = _step_draws(config, step, model_config)
        counts[scale] += 1
        assert 0 <= int(t.max()) < model_config.start_steps[scale] and tuple(noise.shape[-2:]) == SIZES[scale]
    expected = [coarse_share] + [(1 - coarse_share) / 5] * 5
    for observed, share in zip((counts / DRAWS).tolist(), expected, strict=True):
        sigma = math.sqrt(share * (1 - share) / DRAWS)
        assert abs(observed - share) < 4.5 * sigma, (observed, share)


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
        scale, t, noise = _step_draws(config, step, model_config)
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
