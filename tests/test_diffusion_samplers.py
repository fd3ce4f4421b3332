"""Samplers by A1111's names (issue #7): each name builds the scheduler and the schedule A1111's name implies.

The expected sigmas are computed here from SD 1.5's betas with the formulas A1111/k-diffusion use (never with
the scheduler under test): model sigmas sqrt((1 - abar) / abar); Karras (rho 7); Exponential; k-diffusion's
CompVisDenoiser.get_sigmas(n) (sigma at t = linspace(999, 0, n), log-sigma interpolated); DDIM/PLMS timesteps
range(0, 1000, 1000 // n) + 1 (A1111's sd_samplers_timesteps.get_timesteps).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.core.errors import UserError
from pipelines.diffusion import samplers

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (the SD 1.5 family's, anime checkpoints included).
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}

# ---- closed forms (float64) --------------------------------------------------------------------------------
BETAS = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2  # "scaled_linear"
ALPHAS_CUMPROD = np.cumprod(1.0 - BETAS)
MODEL_SIGMAS = np.sqrt((1.0 - ALPHAS_CUMPROD) / ALPHAS_CUMPROD)
SIGMA_MIN, SIGMA_MAX = MODEL_SIGMAS[0], MODEL_SIGMAS[-1]


def sigma_at(t: np.ndarray) -> np.ndarray:
    """k-diffusion's DiscreteSchedule.t_to_sigma: log sigma interpolated linearly between whole timesteps."""
    t = np.asarray(t, dtype=np.float64)
    low = np.floor(t).astype(int)
    high = np.minimum(low + 1, 999)
    w = t - low
    return np.exp((1 - w) * np.log(MODEL_SIGMAS[low]) + w * np.log(MODEL_SIGMAS[high]))


def uniform_sigmas(n: int) -> np.ndarray:  # A1111 "Uniform" = CompVisDenoiser.get_sigmas(n), zero appended
    return np.append(sigma_at(np.linspace(999, 0, n)), 0.0)


def karras_sigmas(n: int, rho: float = 7.0) -> np.ndarray:  # Karras et al. (2022) eq. 5, zero appended
    i = np.arange(n)
    inv_max, inv_min = SIGMA_MAX ** (1 / rho), SIGMA_MIN ** (1 / rho)
    return np.append((inv_max + i / (n - 1) * (inv_min - inv_max)) ** rho, 0.0)


def exponential_sigmas(n: int) -> np.ndarray:  # k-diffusion get_sigmas_exponential, zero appended
    return np.append(np.exp(np.linspace(np.log(SIGMA_MAX), np.log(SIGMA_MIN), n)), 0.0)


def unipc_time_uniform_sigmas(n: int) -> np.ndarray:  # A1111 UniPC: t uniform from 999 to 0 (n + 1 points)
    return sigma_at(np.linspace(999, 0, n + 1))


def a1111_timesteps(n: int) -> list[int]:  # sd_samplers_timesteps.CompVisSampler.get_timesteps, high to low
    return sorted((min(t + 1, 999) for t in range(0, 1000, 1000 // n)), reverse=True)


CLOSED_FORMS = {"Uniform": uniform_sigmas, "Karras": karras_sigmas, "Exponential": exponential_sigmas,
                "UniPC": unipc_time_uniform_sigmas}
# Tolerances (relative): Karras/Exponential are the same formula in float32 -> 1e-4. Uniform: diffusers
# interpolates sigma linearly between whole timesteps, k-diffusion log-linearly; the gap is at most
# (d log sigma)^2 / 8 per interval, ~2e-5 here -> 2e-4. UniPC: diffusers rounds its timesteps to whole numbers
# (A1111 keeps them continuous), half a timestep moves sigma by up to ~0.2 % -> 5e-3.
TOLERANCE = {"Uniform": 2e-4, "Karras": 1e-4, "Exponential": 1e-4, "UniPC": 5e-3}


@pytest.fixture(scope="module")
def base_config():
    """A real scheduler config object, as `pipe.scheduler.config` hands it over (FrozenDict)."""
    import diffusers

    return diffusers.PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG).config


# (sampler, schedule) -> diffusers class, key config values, which closed form its sigmas follow.
CASES = [
    ("DPM++ 2M", "Automatic", "DPMSolverMultistepScheduler",
     {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, "Karras"),
    ("DPM++ 2M", "Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "Karras"),
    ("DPM++ 2M", "Exponential", "DPMSolverMultistepScheduler", {"use_exponential_sigmas": True}, "Exponential"),
    ("DPM++ SDE", "Automatic", "DPMSolverSDEScheduler", {"use_karras_sigmas": True}, "Karras"),
    ("DPM++ SDE", "Uniform", "DPMSolverSDEScheduler", {"use_karras_sigmas": False}, "Uniform"),
    ("DPM++ SDE", "Exponential", "DPMSolverSDEScheduler", {"use_exponential_sigmas": True}, "Exponential"),
    ("DPM++ 2M SDE", "Automatic", "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "solver_type": "midpoint", "use_exponential_sigmas": True}, "Exponential"),
    ("DPM++ 2M SDE", "Karras", "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}, "Karras"),
    ("DPM++ 2M SDE Heun", "Automatic", "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}, "Exponential"),
    ("Euler a", "Automatic", "EulerAncestralDiscreteScheduler", {"timestep_spacing": "linspace"}, "Uniform"),
    ("Euler", "Automatic", "EulerDiscreteScheduler", {"use_karras_sigmas": False}, "Uniform"),
    ("Euler", "Karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}, "Karras"),
    ("Euler", "Exponential", "EulerDiscreteScheduler", {"use_exponential_sigmas": True}, "Exponential"),
    ("LMS", "Automatic", "LMSDiscreteScheduler", {"use_karras_sigmas": False}, "Uniform"),
    ("LMS", "Karras", "LMSDiscreteScheduler", {"use_karras_sigmas": True}, "Karras"),
    ("Heun", "Automatic", "HeunDiscreteScheduler", {"use_karras_sigmas": False}, "Uniform"),
    ("Heun", "Karras", "HeunDiscreteScheduler", {"use_karras_sigmas": True}, "Karras"),
    ("DPM2", "Automatic", "KDPM2DiscreteScheduler", {"use_karras_sigmas": True}, "Karras"),
    ("DPM2", "Uniform", "KDPM2DiscreteScheduler", {"use_karras_sigmas": False}, "Uniform"),
    ("DPM2 a", "Automatic", "KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}, "Karras"),
    ("DPM2 a", "Exponential", "KDPM2AncestralDiscreteScheduler", {"use_exponential_sigmas": True}, "Exponential"),
    ("UniPC", "Automatic", "UniPCMultistepScheduler",
     {"solver_order": 3, "solver_type": "bh1", "predict_x0": True, "final_sigmas_type": "sigma_min"}, "UniPC"),
]


def _schedule_mismatches(base_config, sampler, schedule, class_name, config, sigmas, steps) -> list[str]:
    scheduler = samplers.make_scheduler(sampler, schedule, base_config)
    where = f"{sampler} / {schedule} / {steps} steps"
    if class_name not in [kind.__name__ for kind in type(scheduler).__mro__]:
        return [f"{where}: built {type(scheduler).__name__}, expected {class_name}"]
    wanted = {**config, "beta_schedule": "scaled_linear"}  # the model's betas are kept
    problems = [f"{where}: config {key}={scheduler.config[key]!r}, expected {value!r}"
                for key, value in wanted.items() if scheduler.config[key] != value]
    scheduler.set_timesteps(steps)
    # Second-order schedulers list each sigma twice (Heun, DPM2, DPM++ SDE): the schedule is the distinct run.
    got = torch.unique_consecutive(scheduler.sigmas).double().numpy()
    expected = CLOSED_FORMS[sigmas](steps)
    if got.shape != expected.shape:
        return [*problems, f"{where}: {len(got)} sigmas, expected {len(expected)}"]
    error = np.max(np.abs(got[:-1] - expected[:-1]) / expected[:-1])
    if error > TOLERANCE[sigmas] or abs(got[-1] - expected[-1]) > 1e-6:
        problems.append(f"{where}: sigmas off the {sigmas} closed form by {error:.2e} (last {got[-1]:.4g})")
    return problems


def test_each_named_sampler_builds_the_scheduler_and_sigmas_a1111_implies(base_config):
    """One test over every case (a test item each would spend most of the time in the shared teardown)."""
    problems = [problem for case in CASES for steps in (20, 7)
                for problem in _schedule_mismatches(base_config, *case, steps)]
    assert not problems, "\n".join(problems)


def test_a_wrong_mapping_would_be_caught(base_config):
    """The check above fails when the class, a config value or the schedule is not the expected one."""
    assert _schedule_mismatches(base_config, "Euler", "Karras", "EulerDiscreteScheduler", {}, "Uniform", 20)
    assert _schedule_mismatches(base_config, "Euler", "Karras", "EulerDiscreteScheduler", {}, "Exponential", 20)
    assert _schedule_mismatches(base_config, "DPM++ 2M", "Karras", "DPMSolverMultistepScheduler",
                                {"algorithm_type": "sde-dpmsolver++"}, "Karras", 20)
    assert _schedule_mismatches(base_config, "Heun", "Automatic", "EulerDiscreteScheduler", {}, "Uniform", 20)
    assert not _schedule_mismatches(base_config, "Euler", "Karras", "EulerDiscreteScheduler", {}, "Karras", 20)


def test_the_closed_forms_tell_the_schedules_apart():
    """The tolerances above are far below the gaps between schedules, so a wrong mapping fails."""
    for first, second in [("Uniform", "Karras"), ("Karras", "Exponential"), ("Uniform", "Exponential")]:
        a, b = CLOSED_FORMS[first](20)[:-1], CLOSED_FORMS[second](20)[:-1]
        assert np.max(np.abs(a - b) / b) > 100 * TOLERANCE[first]


def test_ddim_and_plms_run_at_a1111s_compvis_uniform_timesteps(base_config):
    for steps in (10, 20, 25, 50):
        assert_ddim_and_plms_match_a1111(base_config, steps)


def assert_ddim_and_plms_match_a1111(base_config, steps):
    ddim = samplers.make_scheduler("DDIM", "Automatic", base_config)
    assert type(ddim).__name__ == "DDIMScheduler"
    assert (ddim.config.clip_sample, ddim.config.set_alpha_to_one) == (False, False)
    ddim.set_timesteps(steps)
    assert ddim.timesteps.tolist() == a1111_timesteps(steps)
    # A1111's ddim() steps from alphas_cumprod[t] to alphas_cumprod[previous t], and to alphas_cumprod[0] last.
    np.testing.assert_allclose(ddim.alphas_cumprod[ddim.timesteps].double().numpy(),
                               ALPHAS_CUMPROD[a1111_timesteps(steps)], rtol=1e-5)
    assert float(ddim.final_alpha_cumprod) == pytest.approx(ALPHAS_CUMPROD[0], rel=1e-6)

    plms = samplers.make_scheduler("PLMS", "Automatic", base_config)
    assert type(plms).__name__ == "PNDMScheduler" and plms.config.skip_prk_steps
    plms.set_timesteps(steps)
    # diffusers' PLMS warm-up repeats its second timestep (CompVis PLMS also evaluates twice on its first step).
    assert torch.unique_consecutive(plms.timesteps).tolist() == a1111_timesteps(steps)


def test_lcm_uses_the_lcm_papers_skipping_schedule(base_config):
    scheduler = samplers.make_scheduler("LCM", "Automatic", base_config)
    assert type(scheduler).__name__ == "LCMScheduler"
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 759, 499, 259]  # the documented 4-step LCM schedule
    origin = np.arange(1, 51) * 20 - 1  # the 50 original LCM timesteps
    for steps in (2, 6, 8):
        scheduler.set_timesteps(steps)
        picks = np.floor(np.linspace(0, 50, steps, endpoint=False)).astype(int)
        assert scheduler.timesteps.tolist() == origin[::-1][picks].tolist()


def test_every_call_gives_a_fresh_scheduler_and_leaves_the_config_alone(base_config):
    before = dict(base_config)
    first = samplers.make_scheduler("Euler a", "Automatic", base_config)
    second = samplers.make_scheduler("Euler a", "Automatic", base_config)
    assert first is not second
    first.set_timesteps(5)
    second.set_timesteps(30)
    assert len(first.timesteps) == 5
    assert dict(base_config) == before


def test_the_models_own_config_does_not_leak_into_another_sampler():
    """A checkpoint shipped with a DPM++ 2M SDE Karras config still gets plain Euler (uniform) for "Euler"."""
    import diffusers

    shipped = diffusers.DPMSolverMultistepScheduler.from_config(
        SD15_SCHEDULER_CONFIG, use_karras_sigmas=True, algorithm_type="sde-dpmsolver++", timestep_spacing="trailing",
        solver_order=3).config
    euler = samplers.make_scheduler("Euler", "Automatic", shipped)
    assert not euler.config.use_karras_sigmas
    euler.set_timesteps(20)
    np.testing.assert_allclose(euler.sigmas[:-1].double().numpy(), uniform_sigmas(20)[:-1], rtol=2e-4)
    dpm = samplers.make_scheduler("DPM++ 2M", "Exponential", shipped)
    assert (dpm.config.algorithm_type, dpm.config.solver_order, dpm.config.use_karras_sigmas) == ("dpmsolver++", 2,
                                                                                                    False)


SPLITS = [
    ("Euler a", ("Euler a", "Automatic")),
    ("DPM++ 2M", ("DPM++ 2M", "Automatic")),
    ("DPM++ 2M Karras", ("DPM++ 2M", "Karras")),
    ("DPM++ SDE Karras", ("DPM++ SDE", "Karras")),
    ("LMS Karras", ("LMS", "Karras")),
    ("DPM2 a Karras", ("DPM2 a", "Karras")),
    ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "Exponential")),
    ("DPM++ 2M SDE Heun Karras", ("DPM++ 2M SDE Heun", "Karras")),
    ("DPM++ 2M SDE", ("DPM++ 2M SDE", "Automatic")),
    ("  dpm++  2m   karras ", ("DPM++ 2M", "Karras")),
    ("k_dpmpp_2m_ka", ("DPM++ 2M", "Karras")),
    ("k_euler_a", ("Euler a", "Automatic")),
    ("Euler SGM Uniform", ("Euler", "SGM Uniform")),  # A1111's, refused by make_scheduler
    ("DDIM", ("DDIM", "Automatic")),
]


def test_split_sampler_name_reads_a1111_names():
    assert [samplers.split_sampler_name(name) for name, _ in SPLITS] == [expected for _, expected in SPLITS]


def test_combined_names_build_the_same_scheduler_as_the_split_pair(base_config):
    combined = samplers.make_scheduler("DPM++ 2M SDE Karras", "Automatic", base_config)
    split = samplers.make_scheduler("DPM++ 2M SDE", "Karras", base_config)
    assert dict(combined.config) == dict(split.config)
    with pytest.raises(UserError, match="already names the Karras schedule"):
        samplers.make_scheduler("DPM++ 2M Karras", "Exponential", base_config)


def test_unknown_names_give_a_user_error_listing_the_choices(base_config):
    with pytest.raises(UserError) as error:
        samplers.make_scheduler("Euler b", "Automatic", base_config)
    assert all(name in str(error.value) for name in samplers.SAMPLERS)
    with pytest.raises(UserError) as error:
        samplers.split_sampler_name("DPM++ 9M Karras")
    assert "DPM++ 2M" in str(error.value)
    with pytest.raises(UserError) as error:
        samplers.make_scheduler("Euler", "Wobbly", base_config)
    assert all(name in str(error.value) for name in samplers.SCHEDULE_TYPES)


REFUSED = [("DDIM", "Karras"), ("PLMS", "Exponential"), ("UniPC", "Karras"), ("LCM", "Uniform"), ("Euler a", "Karras"),
           ("DPM++ 2M", "Uniform"), ("Euler", "SGM Uniform")]


def test_a_schedule_the_sampler_cannot_do_is_refused_with_its_choices(base_config):
    for sampler, schedule in REFUSED:
        with pytest.raises(UserError) as error:
            samplers.make_scheduler(sampler, schedule, base_config)
        message = str(error.value)
        assert schedule in message and sampler in message and "Automatic" in message, message
        assert samplers.check_sampler(sampler, schedule) == [message]


def test_schedule_choices_and_effective_schedule():
    assert samplers.SCHEDULE_TYPES[:1] == ("Automatic",)
    assert {"Automatic", "Karras", "Exponential"} <= set(samplers.SCHEDULE_TYPES)
    assert samplers.schedule_types_for("DDIM") == ("Automatic",)
    assert samplers.schedule_types_for("Euler") == ("Automatic", "Uniform", "Karras", "Exponential")
    assert samplers.schedule_types_for("DPM++ 2M Karras") == ("Automatic", "Karras", "Exponential")
    assert samplers.effective_schedule("DPM++ 2M", "Automatic") == "Karras"
    assert samplers.effective_schedule("DPM++ 2M SDE", "Automatic") == "Exponential"
    assert samplers.effective_schedule("Euler a", "Automatic") == "Automatic"
    assert samplers.effective_schedule("Euler", "Karras") == "Karras"
    assert samplers.effective_schedule("LMS Karras", "Automatic") == "Karras"
    assert samplers.check_sampler("DPM++ SDE", "Karras") == []
    for name in ("Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DDIM",
                 "PLMS", "UniPC", "LCM"):
        assert name in samplers.SAMPLERS


# ---- batches: item i of a batch equals item i generated alone ------------------------------------------------
def _fake_eps(sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A stand-in for the U-Net: elementwise, so batch items cannot see each other."""
    return torch.tanh(sample) * 0.7 + float(t) / 5000.0


def _denoise(scheduler, latents: torch.Tensor, steps: int = 4, generator=None) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    sample = latents * scheduler.init_noise_sigma
    extra = {} if generator is None else {"generator": generator}
    for t in scheduler.timesteps:
        eps = _fake_eps(scheduler.scale_model_input(sample, t), t)
        sample = scheduler.step(eps, t, sample, **extra).prev_sample
    return sample


def _latents(*seeds: int) -> torch.Tensor:  # CPU noise per seed, as the core draws it
    return torch.cat([torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(s)) for s in seeds])


# torchsde warns when diffusers' float32 sigma_min sits a rounding error below the tree's start (harmless).
@pytest.mark.filterwarnings("ignore:Should have ta>=t0")
def test_dpmpp_sde_item_i_of_a_batch_equals_its_seed_alone(base_config):
    import diffusers

    batch = _denoise(samplers.make_scheduler("DPM++ SDE", "Karras", base_config, seeds=[101, 202]), _latents(1, 2))
    alone = _denoise(samplers.make_scheduler("DPM++ SDE", "Karras", base_config, seeds=[202]), _latents(2))
    torch.testing.assert_close(batch[1:], alone, rtol=0, atol=1e-5)
    other = _denoise(samplers.make_scheduler("DPM++ SDE", "Karras", base_config, seeds=[303, 202]), _latents(1, 2))
    torch.testing.assert_close(other[1:], alone, rtol=0, atol=1e-5)
    assert (other[0] - batch[0]).abs().max() > 1e-2  # the Brownian noise is used, and follows the seed

    # Control: one seed for the whole batch (diffusers' plain noise_sampler_seed) breaks the equality.
    whole = diffusers.DPMSolverSDEScheduler.from_config(base_config, use_karras_sigmas=True, noise_sampler_seed=202)
    single = diffusers.DPMSolverSDEScheduler.from_config(base_config, use_karras_sigmas=True, noise_sampler_seed=202)
    assert (_denoise(whole, _latents(1, 2))[1:] - _denoise(single, _latents(2))).abs().max() > 1e-2


def _generators(*seeds: int) -> list[torch.Generator]:  # one CPU generator per image, as the lead passes them
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_generator_driven_samplers_item_i_of_a_batch_equals_it_alone(base_config):
    for sampler in ("Euler a", "DPM2 a", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "LCM"):
        build = lambda sampler=sampler: samplers.make_scheduler(sampler, "Automatic", base_config)  # noqa: E731
        batch = _denoise(build(), _latents(1, 2), generator=_generators(101, 202))
        alone = _denoise(build(), _latents(2), generator=_generators(202))
        torch.testing.assert_close(batch[1:], alone, rtol=0, atol=1e-5, msg=sampler)
        other = _denoise(build(), _latents(1, 2), generator=_generators(303, 202))
        torch.testing.assert_close(other[1:], alone, rtol=0, atol=1e-5, msg=sampler)
        assert (other[0] - batch[0]).abs().max() > 1e-3, sampler  # step noise is drawn, from item 0's generator

    # Control: one generator for the whole batch breaks the equality.
    euler_a = lambda: samplers.make_scheduler("Euler a", "Automatic", base_config)  # noqa: E731
    shared = _denoise(euler_a(), _latents(1, 2), generator=torch.Generator().manual_seed(202))
    alone = _denoise(euler_a(), _latents(2), generator=torch.Generator().manual_seed(202))
    assert (shared[1:] - alone).abs().max() > 1e-3


# ---- the DPM++ 2M family against k-diffusion's update, as A1111 runs it (issue #22) --------------------------
# Written here from k-diffusion's sampling.py (sample_dpmpp_2m, sample_dpmpp_2m_sde) and A1111's CompVisDenoiser:
# the variance-exploding x starts at noise * sigma_0, the denoiser is D(x, sigma) = x - sigma * eps(x * c_in, t)
# with c_in = 1 / sqrt(sigma^2 + 1) and t the continuous timestep of sigma (log sigma interpolated).
def _continuous_t(sigma: float) -> float:
    return float(np.interp(np.log(sigma), np.log(MODEL_SIGMAS), np.arange(1000)))


def _toy_eps(sample: torch.Tensor, t: float) -> torch.Tensor:
    """A stand-in U-Net whose output depends on t enough that half a timestep shows (~4e-3)."""
    return 0.8 * torch.tanh(sample) + 0.3 * np.sin(float(t) / 37.0)


def _denoised(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return x - sigma * _toy_eps(x / (sigma**2 + 1) ** 0.5, _continuous_t(sigma))


def _kdiffusion_2m(noise: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    x, old = noise.double() * sigmas[0], None
    for i in range(len(sigmas) - 1):
        denoised = _denoised(x, sigmas[i])
        t, t_next = -np.log(sigmas[i]), (-np.log(sigmas[i + 1]) if sigmas[i + 1] > 0 else np.inf)
        h = t_next - t
        ratio = np.exp(-t_next) / np.exp(-t)
        if old is None or sigmas[i + 1] == 0:
            x = ratio * x - np.expm1(-h) * denoised
        else:
            r = (t - (-np.log(sigmas[i - 1]))) / h
            x = ratio * x - np.expm1(-h) * ((1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old)
        old = denoised
    return x


def _kdiffusion_2m_sde(noise: torch.Tensor, sigmas: np.ndarray, step_noise: torch.Generator,
                       solver: str) -> torch.Tensor:
    x, old, h_last = noise.double() * sigmas[0], None, None
    for i in range(len(sigmas) - 1):
        denoised = _denoised(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = np.log(sigmas[i]) - np.log(sigmas[i + 1])  # eta 1: eta_h = h
            x = sigmas[i + 1] / sigmas[i] * np.exp(-h) * x - np.expm1(-2 * h) * denoised
            if old is not None:
                r = h_last / h
                if solver == "heun":
                    x = x + (-np.expm1(-2 * h) / (-2 * h) + 1) * (1 / r) * (denoised - old)
                else:
                    x = x + 0.5 * -np.expm1(-2 * h) * (1 / r) * (denoised - old)
            # the same Gaussian draws diffusers takes from the generator (A1111 uses a Brownian tree: documented)
            draw = torch.randn(noise.shape, generator=step_noise).double()
            x = x + draw * sigmas[i + 1] * np.sqrt(-np.expm1(-2 * h))
            h_last = h
        old = denoised
    return x


def _diffusers_run(scheduler, noise: torch.Tensor, steps: int, generator=None) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    sample = noise * scheduler.init_noise_sigma
    extra = {} if generator is None else {"generator": generator}
    for t in scheduler.timesteps:
        eps = _toy_eps(scheduler.scale_model_input(sample, t), float(t)).float()
        sample = scheduler.step(eps, t, sample, **extra).prev_sample
    return sample


DPMPP_2M_FAMILY = [("DPM++ 2M", "Automatic", "Karras"), ("DPM++ 2M", "Karras", "Karras"),
                   ("DPM++ 2M", "Exponential", "Exponential"), ("DPM++ 2M SDE", "Automatic", "Exponential"),
                   ("DPM++ 2M SDE", "Karras", "Karras"), ("DPM++ 2M SDE Heun", "Exponential", "Exponential")]


@pytest.mark.parametrize("steps", [12, 25])
def test_the_dpmpp_2m_family_gives_k_diffusions_latents(base_config, steps):
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    problems = []
    for sampler, schedule, sigmas in DPMPP_2M_FAMILY:
        sigma_values = CLOSED_FORMS[sigmas](steps)
        scheduler = samplers.make_scheduler(sampler, schedule, base_config)
        if "SDE" in sampler:
            ours = _diffusers_run(scheduler, noise, steps, torch.Generator().manual_seed(11))
            solver = "heun" if sampler.endswith("Heun") else "midpoint"
            reference = _kdiffusion_2m_sde(noise, sigma_values, torch.Generator().manual_seed(11), solver)
        else:
            ours, reference = _diffusers_run(scheduler, noise, steps), _kdiffusion_2m(noise, sigma_values)
        # float32 solver against a float64 reference: ~1e-5 of the latents' spread; the two fixed causes
        # (start at noise * sqrt(1 + sigma_0^2), whole-number timesteps) each make ~1e-3 to 1e-2.
        error = float((ours.double() - reference).abs().max() / reference.std())
        if error > 2e-4:
            problems.append(f"{sampler} / {schedule} / {steps} steps: {error:.2e} of the latents' std off")
    assert not problems, problems


def test_the_dpmpp_2m_unet_gets_continuous_timesteps(base_config):
    scheduler = samplers.make_scheduler("DPM++ 2M", "Karras", base_config)
    scheduler.set_timesteps(20)
    expected = [_continuous_t(sigma) for sigma in karras_sigmas(20)[:-1]]
    np.testing.assert_allclose(scheduler.timesteps.double().numpy(), expected, rtol=0, atol=2e-3)
    assert any(abs(t - round(t)) > 0.1 for t in expected)  # whole numbers would fail the line above


def test_importing_samplers_stays_light():
    import subprocess
    import sys

    code = ("import sys; import pipelines.diffusion.samplers as s; s.split_sampler_name('DPM++ 2M Karras'); "
            "s.check_sampler('DDIM', 'Karras'); print('diffusers' in sys.modules, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
