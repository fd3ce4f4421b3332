"""Several processes (as `accelerate launch --multi_gpu` starts them; here torchrun on the CPU, gloo): two processes
with batch 1 must train exactly as one process accumulating two micro-batches — the same draws, the averaged
gradient — which is what data-parallel training promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_style_finetune_train import palette_dataset

SETTINGS = ["--model", "tiny:sd15", "--method", "lora", "--steps", "3", "--mixed-precision", "no",
            "--learning-rate", "0.001", "--validation-steps", "1", "--validation-seeds", "1", "--seed", "4"]


@pytest.mark.slow
def test_two_processes_train_exactly_as_one_accumulating_two_micro_batches(tmp_path, monkeypatch, shared_cache_dir):
    from safetensors.torch import load_file

    from pipelines.style_finetune.data import save_dataset
    from pipelines.style_finetune.runs import dataset_folder
    from pipelines.style_finetune.train import training_folder

    monkeypatch.setenv("ASL_OUTPUTS", str(tmp_path))
    monkeypatch.setenv("ASL_CACHE", str(shared_cache_dir))
    for name in ("two", "one"):
        save_dataset(palette_dataset(), dataset_folder(name))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "-m", "pipelines.style_finetune", "train", "--name", "two",
                               "--gradient-accumulation", "1", *SETTINGS],
                              env=env, capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, [line for line in launched.stderr.splitlines() if "error" in line.lower()]
    single = subprocess.run([sys.executable, "-m", "pipelines.style_finetune", "train", "--name", "one",
                             "--gradient-accumulation", "2", *SETTINGS],
                            env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    states = [json.loads((training_folder(n) / "checkpoints" / "state.json").read_text()) for n in ("two", "one")]
    assert len(states[0]["losses"]) == 3
    torch.testing.assert_close(torch.tensor(states[0]["losses"]), torch.tensor(states[1]["losses"]),
                               rtol=1e-5, atol=1e-6)
    two, one = (load_file(training_folder(n) / "export" / f"{n}.safetensors") for n in ("two", "one"))
    assert two.keys() == one.keys() and two
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)
    ups = [key for key in one if "up" in key or "lora_B" in key]
    assert ups and any(one[key].abs().sum() > 0 for key in ups)  # trained: the zero-started up matrices moved
    assert launched.stdout.count("lora_diffusers:") == 1  # process 0 alone exported and reported
