"""Seeds: noise is drawn on the CPU so that a seed gives the same image on any device."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAX_SEED = 2**31 - 1


def randomize_seed(seed: int, randomize: bool) -> int:
    """The seed to use: a fresh random one when asked, else the given one checked for range."""
    if randomize:
        return random.randint(0, MAX_SEED)
    seed = int(seed)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"Seed must be between 0 and {MAX_SEED}, got {seed}.")
    return seed


def cpu_generator(seed: int) -> torch.Generator:
    import torch

    return torch.Generator(device="cpu").manual_seed(int(seed))


def seeded_noise(shape: tuple[int, ...], seed: int, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise from `seed`, drawn on the CPU in float32 and then moved."""
    import torch

    noise = torch.randn(shape, generator=cpu_generator(seed), dtype=torch.float32)
    return noise.to(device=device or "cpu", dtype=dtype or torch.float32)
