"""Style fine-tuning in half precision (the default on CUDA): every method trains, validates and exports with the
base model in fp16 or bf16, validation images are drawn at the training resolution, a training that stopped at its
final validation resumes into a finished one, and a half-precision validation image matches diffusers' plain fp32
pipeline on the same weights. fp16 runs on this CPU too (torch ≥ 2.4 has CPU fp16 kernels); bf16 is native here."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.style_finetune.data import Dataset
from pipelines.style_finetune.train import TrainConfig, load_models, read_state, train, validation_images

TRIGGER = "zqstyle"
SIZE = 32  # not the tiny UNet's own 64 px: validation must follow the training resolution


def small_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    images = tuple(Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(2))
    return Dataset(images, ("0.png", "1.png"), (f"{TRIGGER}, noise",) * 2, TRIGGER, SIZE)


def half_config(name: str, dtype: str, **overrides) -> TrainConfig:
    base = {"name": name, "model": "tiny:sd15", "steps": 1, "mixed_precision": dtype, "checkpoint_every": 100,
            "validation_steps": 2, "validation_seeds": (1,)}
    return TrainConfig(**{**base, **overrides})


EXPECTED_FILES = {
    "lora": {"lora_diffusers", "lora_a1111", "lora_installed"},
    "embedding": {"embedding_a1111", "embedding_diffusers", "embedding_installed"},
    "embedding+lora": {"lora_diffusers", "lora_a1111", "lora_installed", "embedding_a1111", "embedding_diffusers",
                       "embedding_installed"},
    "full": {"model", "model_single_file"},
}


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "method", "joint", "autocast"), [
    ("bf16", "lora", False, "no"),  # half-precision weights and no autocast at all
    ("bf16", "embedding+lora", True, "bf16"), ("bf16", "full", False, "bf16"),
    ("fp16", "embedding+lora", False, "fp16"),  # an embedding step, then a LoRA step
    ("fp16", "full", False, "fp16"),
])
def test_every_method_validates_and_exports_with_a_half_precision_base(monkeypatch, dtype, method, joint, autocast):
    monkeypatch.setenv("ASL_DTYPE", dtype)  # the base pipeline loads in half precision, as on CUDA
    steps = 2 if method == "embedding+lora" and not joint else 1  # two phases: an embedding step, then a LoRA one
    result = train(half_config("half", autocast, method=method, joint=joint, steps=steps), small_dataset())
    assert result.finished and all(np.isfinite(result.losses))
    assert set(result.files) == EXPECTED_FILES[method]
    assert all(path.is_file() or path.is_dir() for path in result.files.values())
    (step, paths), = result.validation
    with Image.open(paths[0]) as image:
        assert image.size == (SIZE, SIZE)
        assert np.asarray(image).std() > 0  # NaNs decode to a flat black image


@pytest.mark.slow
def test_a_training_stopped_at_its_final_validation_resumes_and_exports(monkeypatch):
    """Train again with the same settings after the final validation failed: the run resumes at its last step, and
    validates and exports instead of failing the same way again."""
    import importlib

    training = importlib.import_module("pipelines.style_finetune.train")  # the module (the package exports train())

    monkeypatch.setenv("ASL_DTYPE", "bf16")
    config, dataset = half_config("again", "bf16", method="lora"), small_dataset()
    real = training.validation_images

    def fails_once(*args, **kwargs):
        monkeypatch.setattr(training, "validation_images", real)
        raise RuntimeError("mat1 and mat2 must have the same dtype")  # what the old validation raised

    monkeypatch.setattr(training, "validation_images", fails_once)
    with pytest.raises(RuntimeError):
        train(config, dataset)
    assert read_state("again")["step"] == 1
    result = train(config, dataset)
    assert result.finished and result.resumed_from == 1 and "lora_installed" in result.files


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bf16"])
def test_half_precision_validation_matches_diffusers_fp32_pipeline(monkeypatch, dtype):
    """The reference: diffusers' StableDiffusionPipeline called with the prompt, every module an fp32 copy of the
    training's (a LoRA with non-zero up weights included), the same scheduler, seed and size."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    monkeypatch.setenv("ASL_DTYPE", dtype)
    config = half_config("ref", dtype, method="lora", validation_prompt="a picture", validation_steps=3)
    models = load_models(config, TRIGGER, [])
    with torch.no_grad():
        for name, param in models.unet.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))))
    ours = np.asarray(validation_images(models, config, TRIGGER, SIZE)[0], dtype=np.float32) / 255
    plain = StableDiffusionPipeline(
        vae=copy.deepcopy(models.vae).float(), text_encoder=copy.deepcopy(models.text_encoder).float(),
        tokenizer=models.tokenizer, unet=copy.deepcopy(models.unet).float(),
        scheduler=DPMSolverMultistepScheduler.from_config(models.pipe.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    reference = plain("a picture", num_inference_steps=3, generator=torch.Generator().manual_seed(1), height=SIZE,
                      width=SIZE, output_type="np").images[0]
    assert ours.shape == reference.shape == (SIZE, SIZE, 3)
    assert np.abs(ours - reference).mean() < 0.01  # 0.003 measured in bf16
