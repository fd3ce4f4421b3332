"""Style fine-tuning's training loop on the tiny SD 1.5 (CPU, seconds): what each method may change, that LoRA
training lowers the denoising loss, and that a resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pipelines.core.jobs import CancelToken, JobCancelled
from pipelines.core.safeweights import load_safetensors
from pipelines.style_finetune.data import Dataset
from pipelines.style_finetune.train import (
    TrainConfig,
    check,
    denoising_loss,
    encode_images,
    load_models,
    optimizer_step,
    phase_at,
    read_state,
    resolved,
    start_phase,
    train,
    training_folder,
)

TRIGGER = "zqstyle"
PALETTE = ((230, 60, 90), (40, 40, 60), (250, 220, 120))


def palette_images(count: int = 4, size: int = 64) -> list[Image.Image]:
    """Flat cartoon shapes in one fixed three-colour palette: a 'style' whose statistics are known."""
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        image = Image.new("RGB", (size, size), PALETTE[2])
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = rng.integers(0, size - 20, 2)
            draw.ellipse((int(x), int(y), int(x) + 20, int(y) + 24), fill=PALETTE[int(rng.integers(0, 2))])
        images.append(image)
    return images


def palette_dataset(count: int = 4) -> Dataset:
    images = palette_images(count)
    return Dataset(tuple(images), tuple(f"{i}.png" for i in range(count)), (f"{TRIGGER}, shapes",) * count,
                   TRIGGER, 64)


def config(**overrides) -> TrainConfig:
    base = {"name": "t", "model": "tiny:sd15", "steps": 4, "mixed_precision": "no", "checkpoint_every": 100,
            "validation_steps": 2, "validation_seeds": (1,)}
    return resolved(TrainConfig(**{**base, **overrides}), 4)


def fixed_loss(models, data, draws: int = 8) -> float:
    """The denoising loss on every training image at fixed noise draws (the same for both models compared)."""
    indices = torch.arange(len(data.mean))
    with torch.no_grad():
        return float(np.mean([denoising_loss(models, data, indices, torch.Generator().manual_seed(1000 + k)).mean()
                              .item() for k in range(draws)]))


def setup(cfg: TrainConfig):
    notes: list[str] = []
    dataset = palette_dataset()
    models = load_models(cfg, TRIGGER, notes)
    from pipelines.style_finetune.train import _caption_text

    captions = [_caption_text(c, TRIGGER, models.placeholder) for c in dataset.captions]
    return models, encode_images(models, dataset.images, captions), notes


@pytest.mark.slow
def test_embedding_phase_changes_only_the_new_token_rows():
    cfg = config(method="embedding", vectors=2, embedding_learning_rate=5e-3)
    models, data, _ = setup(cfg)
    matrix_before = models.text_encoder.get_input_embeddings().weight.detach().clone()
    other_before = {k: v.clone() for k, v in models.text_encoder.state_dict().items() if "token_embedding" not in k}
    unet_before = {k: v.clone() for k, v in models.unet.state_dict().items()}
    job = start_phase(models, cfg, "embedding", [])
    for step in range(3):
        optimizer_step(models, cfg, data, None, step, job, nullcontext)
    matrix = models.text_encoder.get_input_embeddings().weight.detach()
    new = torch.zeros(matrix.shape[0], dtype=torch.bool)
    new[models.new_ids] = True
    assert len(models.new_ids) == 2
    assert torch.equal(matrix[~new], matrix_before[~new])  # bit-identical, every other row
    assert not torch.equal(matrix[new], matrix_before[new])
    assert all(torch.equal(v, other_before[k]) for k, v in models.text_encoder.state_dict().items()
               if "token_embedding" not in k)
    assert all(torch.equal(v, unet_before[k]) for k, v in models.unet.state_dict().items())


@pytest.mark.slow
def test_joint_training_moves_the_new_rows_and_the_lora_at_their_own_rates_and_nothing_else():
    cfg = config(method="embedding+lora", joint=True, embedding_learning_rate=5e-3, learning_rate=1e-3)
    assert {phase_at(cfg, step) for step in range(cfg.steps)} == {"joint"}
    models, data, _ = setup(cfg)
    matrix_before = models.text_encoder.get_input_embeddings().weight.detach().clone()
    job = start_phase(models, cfg, "joint", [])
    assert [group["lr"] for group in job.optimizer.param_groups] == [5e-3, 1e-3]
    for step in range(3):
        optimizer_step(models, cfg, data, None, step, job, nullcontext)
    matrix = models.text_encoder.get_input_embeddings().weight.detach()
    new = torch.zeros(matrix.shape[0], dtype=torch.bool)
    new[models.new_ids] = True
    assert torch.equal(matrix[~new], matrix_before[~new]) and not torch.equal(matrix[new], matrix_before[new])
    assert any(p.abs().sum() > 0 for name, p in models.unet.named_parameters() if "lora_B" in name)
    assert any("Joint" in problem for problem in check(dataclasses.replace(cfg, method="lora"), 4))


@pytest.mark.slow
def test_lora_starts_as_the_base_changes_only_lora_and_lowers_the_training_loss():
    cfg = config(method="lora", learning_rate=1e-2, rank=4, alpha=4.0)
    models, data, _ = setup(cfg)
    base_unet = models.pipe.unet  # the shared cached pipeline's UNet: never touched by training
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    hidden = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(models.unet(sample, 500, hidden).sample, base_unet(sample, 500, hidden).sample)
    base_params = {k: v.clone() for k, v in base_unet.state_dict().items()}
    untrained = fixed_loss(models, data)
    job = start_phase(models, cfg, "lora", [])
    for step in range(20):
        optimizer_step(models, cfg, data, None, step, job, nullcontext)
    trained = fixed_loss(models, data)
    assert trained < 0.9 * untrained, (untrained, trained)
    changed = {name for name, value in models.unet.state_dict().items()
               if name.replace("base_layer.", "") in base_params
               and not torch.equal(value, base_params[name.replace("base_layer.", "")])}
    assert changed == set()  # base weights of the training copy did not move
    lora_moved = [name for name, p in models.unet.named_parameters() if "lora_B" in name and p.abs().sum() > 0]
    assert lora_moved
    assert all(torch.equal(v, base_params[k]) for k, v in base_unet.state_dict().items())  # cache untouched
    with torch.no_grad():
        assert not torch.equal(models.unet(sample, 500, hidden).sample, base_unet(sample, 500, hidden).sample)


@pytest.mark.slow
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one():
    dataset = palette_dataset()
    common = {"method": "embedding+lora", "steps": 6, "embedding_share": 0.5, "mixed_precision": "no",
              "checkpoint_every": 2, "learning_rate": 1e-3, "validation_steps": 2, "validation_seeds": (1,)}
    whole = train(TrainConfig(name="whole", **common), dataset, export=False)
    assert whole.finished and len(whole.losses) == 6 and all(np.isfinite(whole.losses))
    assert [phase_at(resolved(TrainConfig(**common), 4), s) for s in range(6)] == ["embedding"] * 3 + ["lora"] * 3

    cancel = CancelToken()

    def stop_at_four(step: int, loss: float) -> None:
        if step == 4:  # inside phase 2: the embedding, the LoRA and its optimizer state must all come back
            cancel.cancel()

    with pytest.raises(JobCancelled):
        train(TrainConfig(name="parts", **common), dataset, cancel=cancel, on_step=stop_at_four, export=False)
    assert read_state("parts")["step"] == 4
    resumed = train(TrainConfig(name="parts", **common), dataset, export=False)
    assert resumed.resumed_from == 4 and resumed.losses == whole.losses

    def final(name: str) -> dict[str, torch.Tensor]:
        state = read_state(name)
        return load_safetensors(training_folder(name) / "checkpoints" / state["folder"] / "adapter.safetensors")[0]

    a, b = final("whole"), final("parts")
    assert set(a) == set(b) and any(k.startswith("unet.") for k in a) and "embedding" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(list((training_folder("parts") / "checkpoints").glob("step-*"))) == 2  # only the newest two kept


@pytest.mark.slow
def test_the_same_loop_runs_all_four_methods_with_finite_losses():
    dataset = palette_dataset()
    for method in ("embedding", "lora", "full", "embedding+lora"):
        result = train(TrainConfig(name=f"m_{method.replace('+', '_')}", method=method, steps=2,
                                   mixed_precision="no", validation_steps=1, validation_seeds=(1,)), dataset,
                       export=False)
        assert result.finished and len(result.losses) == 2 and all(np.isfinite(result.losses)), method
        state = read_state(f"m_{method.replace('+', '_')}")
        assert state["method"] == method and state["step"] == 2
        assert len(result.validation[-1][1]) == 1


def test_bad_settings_get_plain_messages():
    from pipelines.style_finetune.train import check

    problems = " ".join(check(TrainConfig(method="magic", rank=0, steps=-1, embedding_learning_rate=1.0)))
    assert "Unknown method" in problems and "rank" in problems and "Steps" in problems
    assert "Embedding learning rate" in problems
    assert check(TrainConfig()) == []


def test_a_second_training_of_the_same_name_is_refused_while_the_first_runs(tmp_path, monkeypatch):
    """The lock is a file lock: here another process holds it, as a second server or the CLI would."""
    import subprocess
    import sys

    from pipelines.core.errors import UserError
    from pipelines.style_finetune.train import train, training_folder

    monkeypatch.setenv("ASL_OUTPUTS", str(tmp_path))
    lock_path = training_folder("busy").parent / ".busy.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    script = ("import sys, time, filelock; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); "
              "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="running already"):
            train(config(name="busy", steps=1), palette_dataset())
    finally:
        holder.kill()
        holder.wait()
