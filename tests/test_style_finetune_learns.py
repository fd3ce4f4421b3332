"""Issue #8, "it learns": trained on images of one flat palette, each method moves what the model generates toward
the training latents — the distance between the generated latents' per-channel mean/std and the training
latents' falls by at least 30%. The measurement, its settings and why they are what they are live in
tests/support/style_learning.py (the benchmark's --learn runs the same). CPU, fp32, about a minute for the four."""

from __future__ import annotations

import pytest

from tests.support.style_learning import SETTINGS, measure_learning

EMBEDDING_CANNOT = (
    "tiny:sd15's UNet has random weights: its samples are off by their std (about 9 against 0.18), which only "
    "training the UNet fixes. Text reaches it only through cross-attention, under the text encoder's final "
    "LayerNorm; a whole prompt moves its noise prediction by about 0.03 of 0.34, and even 77 token states "
    "optimized freely within that bound lower the distance by about 5%. Textual inversion finds a conditioning "
    "the base already renders; a random UNet renders none. strict: this test fails once it passes."
)
METHODS = [pytest.param(method, marks=pytest.mark.xfail(strict=True, reason=EMBEDDING_CANNOT))
           if method == "embedding" else method for method in SETTINGS]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_fine_tuning_moves_the_generated_latents_toward_the_training_latents(method):
    result = measure_learning(method)
    assert result.after <= 0.7 * result.before, result.line()
