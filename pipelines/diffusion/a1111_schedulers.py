"""diffusers' multistep DPM-Solver made to run the way A1111 runs k-diffusion's DPM++ 2M family (issue #22).

Two things make diffusers' DPMSolverMultistepScheduler give another image than A1111's `sample_dpmpp_2m` /
`sample_dpmpp_2m_sde` for the same noise, sigmas and model (the update formulas themselves are the same):

- The start. diffusers works on the variance-preserving latents x / sqrt(1 + sigma^2) and starts them at the unit
  noise (`init_noise_sigma` 1), i.e. at k-diffusion's x = noise * sqrt(1 + sigma_0^2). A1111 starts at
  x = noise * sigma_0 (its "SGM noise multiplier" option, off by default, is what diffusers does). Here
  `init_noise_sigma` is sigma_0 / sqrt(1 + sigma_0^2), which the pipeline multiplies the noise with: A1111's start.
- The timesteps the UNet gets. diffusers rounds them to whole numbers (Karras) or truncates them (Exponential,
  through the int64 cast); A1111's CompVisDenoiser passes the continuous t of each sigma (log-sigma interpolated
  between whole timesteps, k-diffusion's `sigma_to_t` without quantization, A1111's default). Here the timesteps
  are that continuous t (float32). The solver's own sigmas are unchanged.

Imports diffusers at import time: import this module only where a scheduler is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler


def continuous_timesteps(sigmas: np.ndarray, alphas_cumprod: np.ndarray) -> np.ndarray:
    """k-diffusion's DiscreteSchedule.sigma_to_t (quantize off): t where log sigma(t), linear between whole
    timesteps, equals log sigma."""
    log_model_sigmas = np.log(np.sqrt((1 - alphas_cumprod) / alphas_cumprod))
    log_sigmas = np.log(np.asarray(sigmas, dtype=np.float64))
    dists = log_sigmas[None, :] - log_model_sigmas[:, None]
    low = np.clip(np.cumsum(dists >= 0, axis=0).argmax(axis=0), None, len(log_model_sigmas) - 2)
    high = low + 1
    low_value, high_value = log_model_sigmas[low], log_model_sigmas[high]
    weight = np.clip((low_value - log_sigmas) / (low_value - high_value), 0, 1)
    return (1 - weight) * low + weight * high


class A1111DPMSolverMultistepScheduler(DPMSolverMultistepScheduler):
    """DPMSolverMultistepScheduler with A1111's start (noise * sigma_0) and continuous timesteps (module doc)."""

    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        super().set_timesteps(*args, **kwargs)
        device = kwargs.get("device", args[1] if len(args) > 1 else None)
        sigmas = self.sigmas.double().numpy()
        running = sigmas[: len(self.timesteps)]  # the last sigma (0) is where the solver ends, not a UNet call
        timesteps = continuous_timesteps(running, self.alphas_cumprod.double().numpy())
        self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.float32)
        sigma_0 = float(sigmas[0])
        self.init_noise_sigma = sigma_0 / (1.0 + sigma_0**2) ** 0.5
