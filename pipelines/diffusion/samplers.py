"""A1111 sampler names -> fresh diffusers schedulers, with A1111's (>= 1.9) "Schedule type" kept apart.

Users pick a sampler and a schedule type by the names A1111 shows; `make_scheduler` builds a new diffusers
scheduler for every call with `Class.from_config(base_config, **overrides)` (the cached pipeline's scheduler is
never touched). Old combined names ("DPM++ 2M Karras", "DPM++ 2M SDE Exponential", "k_dpmpp_2m_ka") are split by
`split_sampler_name`, the way A1111 reads old infotexts.

How A1111 discretizes (modules/sd_samplers_kdiffusion.py, sd_schedulers.py, sd_samplers_timesteps.py):
- k-diffusion samplers take sigmas. "Automatic" means the sampler's own default: Karras for DPM++ 2M, DPM++ SDE,
  DPM2 and DPM2 a; Exponential for the DPM++ 2M SDE pair; for the rest k-diffusion's CompVisDenoiser.get_sigmas(n),
  i.e. sigma(t) at t = linspace(999, 0, n), the same as the "Uniform" schedule. diffusers does that with
  `timestep_spacing="linspace"`; Karras and Exponential are `use_karras_sigmas` / `use_exponential_sigmas`
  (sigma_min and sigma_max of the model, rho 7), exactly A1111's formulas.
- DDIM, PLMS and UniPC are "timestep" samplers: A1111 ignores the schedule type for them. DDIM and PLMS run at
  t = range(0, 1000, 1000 // n) + 1 (CompVis "uniform"), which is diffusers' `timestep_spacing="leading"` with
  `steps_offset=1`, the SD 1.5 scheduler config: those two keep the model's own spacing.

| A1111 name        | diffusers class (overrides)                                              | Automatic =  | also   |
| ----------------- | ------------------------------------------------------------------------ | ------------ | ------ |
| DPM++ 2M          | DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint)             | Karras       | K, E   |
| DPM++ SDE         | DPMSolverSDEScheduler (Brownian tree noise, one tree per seed)           | Karras       | U, K, E|
| DPM++ 2M SDE      | DPMSolverMultistepScheduler (sde-dpmsolver++, order 2, midpoint)         | Exponential  | K, E   |
| DPM++ 2M SDE Heun | DPMSolverMultistepScheduler (sde-dpmsolver++, order 2, heun)             | Exponential  | K, E   |
| Euler a           | EulerAncestralDiscreteScheduler (linspace)                               | Uniform      | U      |
| Euler             | EulerDiscreteScheduler (linspace)                                        | Uniform      | U, K, E|
| LMS               | LMSDiscreteScheduler (linspace; order 4 is its step default)             | Uniform      | U, K, E|
| Heun              | HeunDiscreteScheduler (linspace)                                         | Uniform      | U, K, E|
| DPM2              | KDPM2DiscreteScheduler                                                   | Karras       | U, K, E|
| DPM2 a            | KDPM2AncestralDiscreteScheduler                                          | Karras       | U, K, E|
| DDIM              | DDIMScheduler (model spacing; clip_sample, set_alpha_to_one off; eta 0)  | own          | -      |
| PLMS              | PNDMScheduler (skip_prk_steps, model spacing, set_alpha_to_one off)      | own          | -      |
| UniPC             | UniPCMultistepScheduler (bh1, order 3, linspace, ends at sigma_min)      | own          | -      |
| LCM               | LCMScheduler (50 original steps)                                         | own          | -      |
(U Uniform, K Karras, E Exponential; "own": only Automatic, the sampler's own timesteps.)

The DPM++ 2M family (2M, 2M SDE, 2M SDE Heun) runs on `a1111_schedulers.A1111DPMSolverMultistepScheduler`:
diffusers' multistep solver with A1111's start (noise * sigma_0, where diffusers starts at noise *
sqrt(1 + sigma_0^2)) and the continuous timesteps A1111 hands the UNet (diffusers rounds or truncates them). With
the same noise it gives k-diffusion's `sample_dpmpp_2m` latents to float error (tests/test_diffusion_samplers.py).

Where this differs from A1111 (diffusers has no switch for it):
- DPM2 and DPM2 a: A1111 also drops the next-to-last sigma (it asks for n+1 sigmas); diffusers does not.
- DPM++ 2M (and 2M SDE) cannot do A1111's "Uniform": diffusers' linspace for that class stops at sigma(t~999/n),
  not at sigma_min, so it is refused rather than approximated. "SGM Uniform" is left out for the same reason:
  diffusers' documented match (`timestep_spacing="trailing"`) lands up to one training step off A1111's (~1 % sigma).
- DDIM/PLMS with n not dividing 1000: A1111's range() yields more than n timesteps (31 for n=30); diffusers n.
- DPM++ 2M SDE and 2M SDE Heun: the step noise is Gaussian noise from the generator, A1111's is a Brownian tree
  (see Noise below), so their images differ from A1111's for the same seed; the deterministic part is A1111's.
- UniPC follows A1111's defaults (variant bh1, time_uniform, order 3, lower order final, no denoise to zero);
  diffusers rounds the timesteps to integers (A1111 keeps them continuous): sigmas agree to ~0.2 %.
- LCM: diffusers' LCMScheduler spaces its steps over the 50 original LCM timesteps as the LCM paper does
  (4 steps: 999, 759, 499, 259); A1111's LCM sampler interpolates them linearly (about 999, 672, 346, 19).

Noise: Euler a, DPM2 a, the DPM++ 2M SDE pair and LCM draw their per-step noise from the pipeline's `generator`;
given a list of CPU generators (one per image) item i's noise comes only from generator i, so image i of a batch
equals image i alone. DPM++ SDE draws from its own Brownian tree: `seeds` gives one tree per image (diffusers'
BatchedBrownianTree, as A1111 does with the batch's seeds), so pass len(seeds) == number of images. Its noise is
drawn on the latents' device (as in A1111), so DPM++ SDE images can differ between CPU and GPU. A1111 draws the
DPM++ 2M SDE pair's noise from a Brownian tree too; diffusers' DPMSolverMultistepScheduler takes plain Gaussian
noise from the generator, so those two give other images than A1111 for the same seed (same quality, other noise).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import UserError

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

AUTOMATIC, UNIFORM, KARRAS, EXPONENTIAL = "Automatic", "Uniform", "Karras", "Exponential"
SCHEDULE_TYPES: tuple[str, ...] = (AUTOMATIC, UNIFORM, KARRAS, EXPONENTIAL)
SIGMA_SCHEDULES = (UNIFORM, KARRAS, EXPONENTIAL)

# A1111's other schedule types (names and labels): recognised so the message can say they are not offered here.
_A1111_ONLY_SCHEDULES = ("Polyexponential", "SGM Uniform", "KL Optimal", "Align Your Steps", "Simple", "Normal",
                         "DDIM", "Beta")


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler_class: str  # a diffusers class name
    overrides: tuple[tuple[str, Any], ...]  # config values that make the class this A1111 sampler
    default_schedule: str | None  # what Automatic means; None: the sampler's own timesteps, no schedule choice
    schedules: tuple[str, ...]  # sigma schedules besides Automatic
    aliases: tuple[str, ...] = ()  # A1111's API names
    own_noise: bool = False  # draws its noise itself (Brownian tree seeded by `seeds`), not from the generator


_KDIFF = (("timestep_spacing", "linspace"),)
_DPMPP = (*_KDIFF, ("solver_order", 2), ("lower_order_final", True), ("euler_at_final", False),
          ("final_sigmas_type", "zero"))
_ALL = SIGMA_SCHEDULES
_NOT_UNIFORM = (KARRAS, EXPONENTIAL)

_SAMPLER_LIST = (  # A1111's order
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler",
            (*_DPMPP, ("algorithm_type", "dpmsolver++"), ("solver_type", "midpoint")), KARRAS, _NOT_UNIFORM,
            ("k_dpmpp_2m",)),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", _KDIFF, KARRAS, _ALL, ("k_dpmpp_sde",), own_noise=True),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
            (*_DPMPP, ("algorithm_type", "sde-dpmsolver++"), ("solver_type", "midpoint")), EXPONENTIAL, _NOT_UNIFORM,
            ("k_dpmpp_2m_sde",)),
    Sampler("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler",
            (*_DPMPP, ("algorithm_type", "sde-dpmsolver++"), ("solver_type", "heun")), EXPONENTIAL, _NOT_UNIFORM,
            ("k_dpmpp_2m_sde_heun",)),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", _KDIFF, UNIFORM, (UNIFORM,),
            ("k_euler_a", "k_euler_ancestral")),
    Sampler("Euler", "EulerDiscreteScheduler", (*_KDIFF, ("interpolation_type", "linear")), UNIFORM, _ALL,
            ("k_euler",)),
    Sampler("LMS", "LMSDiscreteScheduler", _KDIFF, UNIFORM, _ALL, ("k_lms",)),
    Sampler("Heun", "HeunDiscreteScheduler", _KDIFF, UNIFORM, _ALL, ("k_heun",)),
    Sampler("DPM2", "KDPM2DiscreteScheduler", _KDIFF, KARRAS, _ALL, ("k_dpm_2",)),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", _KDIFF, KARRAS, _ALL, ("k_dpm_2_a",)),
    Sampler("DDIM", "DDIMScheduler", (("clip_sample", False), ("set_alpha_to_one", False)), None, (), ("ddim",)),
    Sampler("PLMS", "PNDMScheduler", (("skip_prk_steps", True), ("set_alpha_to_one", False)), None, (), ("plms",)),
    Sampler("UniPC", "UniPCMultistepScheduler",
            (*_KDIFF, ("solver_order", 3), ("solver_type", "bh1"), ("predict_x0", True), ("lower_order_final", True),
             ("final_sigmas_type", "sigma_min")), None, (), ("unipc",)),
    Sampler("LCM", "LCMScheduler", (("original_inference_steps", 50),), None, (), ("k_lcm", "lcm")),
)
_SAMPLERS = MappingProxyType({s.name: s for s in _SAMPLER_LIST})

SAMPLERS: tuple[str, ...] = tuple(_SAMPLERS)
SAMPLERS_WITH_OWN_NOISE: frozenset[str] = frozenset(s.name for s in _SAMPLER_LIST if s.own_noise)

# Old A1111 API aliases that carried the schedule (sd_samplers_kdiffusion.py before 1.9).
_COMBINED_ALIASES = MappingProxyType({
    "k_lms_ka": ("LMS", KARRAS), "k_dpm_2_ka": ("DPM2", KARRAS), "k_dpm_2_a_ka": ("DPM2 a", KARRAS),
    "k_dpmpp_2m_ka": ("DPM++ 2M", KARRAS), "k_dpmpp_sde_ka": ("DPM++ SDE", KARRAS),
    "k_dpmpp_2m_sde_ka": ("DPM++ 2M SDE", KARRAS), "k_dpmpp_2m_sde_exp": ("DPM++ 2M SDE", EXPONENTIAL),
    "k_dpmpp_2m_sde_heun_ka": ("DPM++ 2M SDE Heun", KARRAS),
    "k_dpmpp_2m_sde_heun_exp": ("DPM++ 2M SDE Heun", EXPONENTIAL),
})

# Config values reset on every build, so nothing from the model's own scheduler config (say a DPM++ config with
# Karras sigmas) leaks into another sampler; only the keys the target class accepts are passed.
_NEUTRAL = (("use_karras_sigmas", False), ("use_exponential_sigmas", False), ("use_beta_sigmas", False),
            ("use_lu_lambdas", False), ("use_flow_sigmas", False), ("use_dynamic_shifting", False),
            ("sigma_min", None), ("sigma_max", None), ("thresholding", False), ("timestep_type", "discrete"),
            ("final_sigmas_type", "zero"), ("noise_sampler_seed", None))
_SCHEDULE_OVERRIDES = MappingProxyType({
    UNIFORM: (),
    KARRAS: (("use_karras_sigmas", True),),
    EXPONENTIAL: (("use_exponential_sigmas", True),),
})


def _key(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def _find_sampler(name: str) -> Sampler | None:
    wanted = _key(name)
    for sampler in _SAMPLER_LIST:
        if wanted == _key(sampler.name) or wanted in sampler.aliases:
            return sampler
    return None


def _schedule_label(text: str) -> str | None:
    """A1111's label for a schedule type given by label or internal name ("karras", "sgm_uniform"), else None."""
    wanted = _key(text).replace("_", " ")
    for label in (*SCHEDULE_TYPES, *_A1111_ONLY_SCHEDULES):
        if wanted in (_key(label), _key(label).replace(" ", "")):
            return label
    return None


def _unknown_sampler(name: str) -> UserError:
    return UserError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)} "
                     f"(an old combined name such as 'DPM++ 2M Karras' works too).")


def split_sampler_name(name: str) -> tuple[str, str]:
    """("DPM++ 2M Karras") -> ("DPM++ 2M", "Karras"); ("Euler a") -> ("Euler a", "Automatic").

    A1111's rule: a name ending in a schedule type's label is that sampler with that schedule. Case and extra
    spaces do not matter; A1111's API aliases (k_dpmpp_2m, k_dpmpp_2m_ka, ...) are read too. A schedule A1111 has
    but this app does not ("Euler SGM Uniform") is returned as A1111 names it; `make_scheduler` refuses it."""
    text = " ".join(str(name).split())
    sampler = _find_sampler(text)
    if sampler is not None:
        return sampler.name, AUTOMATIC
    if _key(text) in _COMBINED_ALIASES:
        return _COMBINED_ALIASES[_key(text)]
    for label in sorted((*SCHEDULE_TYPES, *_A1111_ONLY_SCHEDULES), key=len, reverse=True):
        suffix = " " + _key(label)
        if _key(text).endswith(suffix):
            sampler = _find_sampler(_key(text)[: -len(suffix)])
            if sampler is not None:
                return sampler.name, label
    raise _unknown_sampler(name)


def _resolve(sampler: str, schedule: str) -> tuple[Sampler, str]:
    """The sampler and the schedule the user chose (Automatic when left to the sampler); UserError if refused."""
    sampler_name, named_schedule = split_sampler_name(sampler)
    spec = _SAMPLERS[sampler_name]
    label = _schedule_label(schedule) if schedule else AUTOMATIC
    if label is None:
        raise UserError(f"Unknown schedule type {schedule!r}; choose one of: {', '.join(SCHEDULE_TYPES)}.")
    if named_schedule != AUTOMATIC:
        if label not in (AUTOMATIC, named_schedule):
            raise UserError(f"The sampler {sampler!r} already names the {named_schedule} schedule, but the "
                            f"schedule type says {label}; pick the sampler {spec.name!r} and one schedule type.")
        label = named_schedule
    allowed = _schedule_types(spec)
    if label not in allowed:
        problem = (f"A1111's {label} schedule is not available here" if label in _A1111_ONLY_SCHEDULES
                   else f"The sampler {spec.name!r} cannot use the {label} schedule")
        raise UserError(f"{problem}; for {spec.name!r} choose one of: {', '.join(allowed)}.")
    return spec, label


def _schedule_types(spec: Sampler) -> tuple[str, ...]:
    return (AUTOMATIC, *(s for s in SCHEDULE_TYPES if s in spec.schedules))


def schedule_types_for(sampler: str) -> tuple[str, ...]:
    """The schedule types a sampler accepts here, Automatic first (for a dropdown that follows the sampler)."""
    return _schedule_types(_SAMPLERS[split_sampler_name(sampler)[0]])


def effective_schedule(sampler: str, schedule: str = AUTOMATIC) -> str:
    """The schedule actually used, by A1111's label. Automatic becomes the sampler's default where A1111 has one
    ("DPM++ 2M" -> "Karras", "DPM++ 2M SDE" -> "Exponential"; A1111 then writes that as "Schedule type") and
    stays "Automatic" where the sampler's own discretization is used (Euler a, LMS, DDIM, UniPC, ...)."""
    spec, label = _resolve(sampler, schedule)
    if label == AUTOMATIC and spec.default_schedule in (KARRAS, EXPONENTIAL):
        return spec.default_schedule
    return label


def check_sampler(sampler: str, schedule: str = AUTOMATIC) -> list[str]:
    """Plain messages for a sampler/schedule pair that cannot be built; empty when it can. Loads nothing."""
    try:
        _resolve(sampler, schedule)
    except UserError as error:
        return [str(error)]
    return []


def _accepted_keys(scheduler_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(scheduler_class.__init__).parameters) - {"self"}


def _scheduler_class(name: str) -> type:
    """The diffusers class by name; the multistep DPM-Solver as its A1111-start, continuous-t subclass."""
    if name == "DPMSolverMultistepScheduler":
        from .a1111_schedulers import A1111DPMSolverMultistepScheduler

        return A1111DPMSolverMultistepScheduler
    import diffusers

    return getattr(diffusers, name)


def make_scheduler(sampler: str, schedule: str, base_config: Mapping[str, Any], *,
                   seeds: Sequence[int] = ()) -> SchedulerMixin:
    """A new diffusers scheduler for an A1111 sampler and schedule type, built from the model's scheduler config
    (`pipe.scheduler.config`: betas, prediction type and spacing stay the model's).

    `seeds`: one per image in the batch. Only DPM++ SDE uses them (one Brownian tree per image, so image i of a
    batch equals image i alone); the other stochastic samplers take the pipeline's `generator` (a list of CPU
    generators, one per image). Unknown or refused names raise UserError with the valid choices."""
    spec, label = _resolve(sampler, schedule)
    if label == AUTOMATIC:
        label = spec.default_schedule or AUTOMATIC
    scheduler_class = _scheduler_class(spec.scheduler_class)
    accepted = _accepted_keys(scheduler_class)
    overrides = dict(_NEUTRAL) | dict(spec.overrides) | dict(_SCHEDULE_OVERRIDES.get(label, ()))
    if spec.own_noise and seeds:
        overrides["noise_sampler_seed"] = [int(seed) for seed in seeds]
    overrides = {key: value for key, value in overrides.items() if key in accepted}
    # Keys of another class's config are ignored by from_config anyway; dropping them avoids its warning.
    config = {key: value for key, value in base_config.items() if key.startswith("_") or key in accepted}
    return scheduler_class.from_config(config, **overrides)
