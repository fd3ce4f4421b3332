"""Limits of a landmark-faces request, importable without torch (the tab's sliders take their bounds from here)."""

from __future__ import annotations

MIN_STEPS, MAX_STEPS = 1, 200
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 15.0
MAX_FACES = 16
