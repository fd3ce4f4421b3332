"""Exports of a trained style load back elsewhere and reproduce the trained model: the diffusers LoRA through
diffusers' `load_lora_weights`, the A1111/kohya LoRA through the same and through the diffusion core (keys checked
against kohya's naming), the embedding through diffusers' `load_textual_inversion` and the core's A1111 reader."""

from __future__ import annotations

import re
from contextlib import nullcontext

import pytest
import torch

from pipelines.style_finetune.apply import export_training
from pipelines.style_finetune.train import _caption_text, optimizer_step, start_phase, training_folder
from tests.test_style_finetune_train import TRIGGER, config, setup

KOHYA_KEY = re.compile(r"^(lora_unet|lora_te)_([a-z0-9_]+)\.(lora_down\.weight|lora_up\.weight|alpha)$")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_cache_dir):
    """A tiny embedding+LoRA model, trained a few steps per phase with large rates so that both move, exported."""
    outputs = tmp_path_factory.mktemp("export-outputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASL_OUTPUTS", str(outputs))
        patch.setenv("ASL_CACHE", str(shared_cache_dir))
        yield _train_and_export(), outputs


def _train_and_export():
    cfg = config(name="exp", method="embedding+lora", steps=4, embedding_share=0.5, vectors=2, rank=4,
                 alpha=2.0, learning_rate=5e-2, embedding_learning_rate=5e-2)
    models, data, _ = setup(cfg)
    for step in range(cfg.steps):
        job = start_phase(models, cfg, "embedding" if step < 2 else "lora", [])
        optimizer_step(models, cfg, data, None, step, job, nullcontext)
    models.unet.eval()
    files = export_training(models, cfg, TRIGGER, training_folder(cfg.name))
    return models, cfg, files


def fresh_pipeline():
    from diffusers import StableDiffusionPipeline

    from pipelines.core.tiny_models import build

    return StableDiffusionPipeline.from_pretrained(build("sd15"), safety_checker=None)


def unet_output(unet) -> torch.Tensor:
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    hidden = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return unet(sample, 400, hidden).sample


@pytest.mark.slow
def test_lora_files_load_in_diffusers_and_reproduce_the_trained_unet(trained):
    (models, _, files), _ = trained
    expected = unet_output(models.unet)
    base = unet_output(fresh_pipeline().unet)
    assert not torch.allclose(expected, base, atol=1e-6)  # the LoRA did learn something
    for kind in ("lora_diffusers", "lora_a1111"):
        pipe = fresh_pipeline()
        pipe.load_lora_weights(str(files[kind]))
        assert torch.allclose(unet_output(pipe.unet), expected, atol=1e-5), kind


@pytest.mark.slow
def test_kohya_keys_follow_the_format(trained):
    from safetensors import safe_open

    (models, cfg, files), _ = trained
    with safe_open(str(files["lora_a1111"]), "pt") as handle:
        keys = list(handle.keys())
        alphas = {key: handle.get_tensor(key) for key in keys if key.endswith(".alpha")}
        metadata = handle.metadata()
    assert keys and all(KOHYA_KEY.match(key) for key in keys)
    modules = {KOHYA_KEY.match(key).group(2) for key in keys if key.startswith("lora_unet_")}
    # each module is a UNet attention projection written with "_" for "." (A1111's convert_diffusers_name_to_compvis)
    linear = {name.replace(".", "_") for name, module in fresh_pipeline().unet.named_modules()
              if isinstance(module, torch.nn.Linear) and name.endswith(("to_q", "to_k", "to_v", "to_out.0"))}
    assert modules == linear
    for module in modules:
        assert {f"lora_unet_{module}.{part}" for part in ("lora_down.weight", "lora_up.weight", "alpha")} <= set(keys)
    assert all(float(value) == cfg.alpha for value in alphas.values())
    assert metadata["ss_base_model_version"] == "sd_v1"


@pytest.mark.slow
def test_embedding_files_reproduce_the_trained_text_encoding(trained):
    from pipelines.diffusion.embeddings import read_embedding
    from pipelines.diffusion.prompts import encode_prompts

    (models, _, files), _ = trained
    caption = f"{TRIGGER}, shapes"
    ids = models.tokenizer(_caption_text(caption, TRIGGER, models.placeholder), padding="max_length",
                           max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = models.text_encoder(ids)[0]

    pipe = fresh_pipeline()
    pipe.load_textual_inversion(str(files["embedding_diffusers"]), token=TRIGGER)
    loaded, _ = pipe.encode_prompt(caption, "cpu", 1, False)
    assert torch.allclose(loaded, expected, atol=1e-5)

    embedding = read_embedding(files["embedding_installed"])  # the A1111 file, named by the trigger word
    assert embedding.name == TRIGGER and embedding.count == 2
    core = encode_prompts(fresh_pipeline(), caption, embeddings={embedding.name: embedding.vectors}).cond
    assert torch.allclose(core, expected, atol=1e-5)
    plain = encode_prompts(fresh_pipeline(), caption).cond
    assert not torch.allclose(plain, expected, atol=1e-3)


@pytest.mark.slow
def test_the_core_generates_differently_with_the_installed_files(trained, monkeypatch):
    from pipelines.diffusion.generate import GenerateRequest, generate

    (_, cfg, files), outputs = trained
    monkeypatch.setenv("ASL_OUTPUTS", str(outputs))  # where the LoRA and embedding were installed
    request = GenerateRequest(prompt=f"{TRIGGER}, shapes", model="tiny:sd15", steps=2, width=64, height=64, seed=3)
    import dataclasses

    with_lora = generate(dataclasses.replace(request, loras=((str(files["lora_a1111"]), 1.0),))).images[0]
    by_name = generate(dataclasses.replace(request, prompt=f"{TRIGGER}, shapes <lora:{cfg.name}:1>")).images[0]
    import numpy as np

    assert np.array_equal(np.asarray(with_lora), np.asarray(by_name))  # kohya file == installed diffusers file
    plain = generate(dataclasses.replace(request, prompt="shapes")).images[0]
    assert not np.array_equal(np.asarray(plain), np.asarray(by_name))


@pytest.mark.slow
def test_full_unet_exports_load_back_as_models():
    from pipelines.diffusion.models import load_pipeline

    cfg = config(name="full_exp", method="full", steps=1, learning_rate=1e-2)
    models, data, _ = setup(cfg)
    job = start_phase(models, cfg, "full", [])
    optimizer_step(models, cfg, data, None, 0, job, nullcontext)
    models.unet.eval()
    files = export_training(models, cfg, TRIGGER, training_folder(cfg.name))
    expected = unet_output(models.unet)
    assert not torch.allclose(expected, unet_output(fresh_pipeline().unet), atol=1e-4)
    folder = load_pipeline(str(files["model"]))
    assert torch.allclose(unet_output(folder.unet), expected, atol=1e-6)
    single = load_pipeline(str(files["model_single_file"]))  # A1111's layout, fp16 weights
    assert torch.allclose(unet_output(single.unet.float()), expected, atol=2e-2)


def test_a_second_training_with_the_same_trigger_word_says_it_replaced_the_installed_embedding(tmp_path,
                                                                                                monkeypatch):
    from pipelines.core.settings import outputs_dir
    from pipelines.style_finetune.apply import export_embedding

    monkeypatch.setenv("ASL_OUTPUTS", str(tmp_path))
    rows = torch.randn(1, 32)
    first = export_embedding(rows, TRIGGER, tmp_path / "a", "first", notes := [])
    assert notes == [] and first["embedding_installed"] == outputs_dir() / "embeddings" / f"{TRIGGER}.safetensors"
    export_embedding(rows + 1, TRIGGER, tmp_path / "a", "first", notes)  # the same training again: no note
    assert notes == []
    export_embedding(rows + 2, TRIGGER, tmp_path / "b", "second", notes)
    assert len(notes) == 1 and "'first'" in notes[0] and "replaced" in notes[0]
