"""ZeroGPU slots: a training asks for at most the longest slot ZeroGPU grants and trains in resumable slices there
(time budget = slot − reserve); elsewhere it is not limited. A sliced training resumes to the same end."""

from __future__ import annotations

import pytest

from pipelines.core import gpu


def test_training_slices_only_on_zerogpu(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert gpu.training_budget_s() is None
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # what a ZeroGPU Space sets (the `spaces` package reads it)
    assert gpu.training_budget_s() == gpu.TRAIN_SLICE_S - gpu.TRAIN_RESERVE_S
    assert 0 < gpu.training_budget_s() < gpu.TRAIN_SLICE_S <= gpu.ZEROGPU_MAX_S


def test_the_style_tab_asks_for_a_slot_zerogpu_grants():
    pytest.importorskip("gradio")
    import tabs.style_finetune as tab

    assert tab.TRAIN_SLOT_S <= gpu.ZEROGPU_MAX_S


@pytest.mark.slow
def test_a_training_in_time_budget_slices_ends_where_one_uninterrupted_run_ends():
    """A zero budget: every call trains one step, checkpoints and pauses; calls repeat until finished."""
    import numpy as np
    import torch

    from pipelines.core.safeweights import load_safetensors
    from pipelines.style_finetune.train import TrainConfig, read_state, train, training_folder
    from tests.test_style_finetune_precision import small_dataset

    common = {"model": "tiny:sd15", "method": "lora", "steps": 3, "mixed_precision": "no", "validation_steps": 1,
              "validation_seeds": (1,), "checkpoint_every": 100}
    whole = train(TrainConfig(name="whole", **common), small_dataset(), export=False)
    calls = 0
    while True:
        calls += 1
        sliced = train(TrainConfig(name="sliced", **common), small_dataset(), time_budget_s=0.0, export=False)
        if sliced.finished:
            break
        assert sliced.steps == calls and "paused" in sliced.summary
    assert calls == 3 and sliced.losses == whole.losses  # one step per call, the last one validates too
    assert np.isfinite(sliced.losses).all()

    def final(name):
        state = read_state(name)
        return load_safetensors(training_folder(name) / "checkpoints" / state["folder"] / "adapter.safetensors")[0]

    a, b = final("whole"), final("sliced")
    assert all(torch.equal(a[key], b[key]) for key in a)
