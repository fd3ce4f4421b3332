"""The diffusion core end to end on the tiny SD 1.5 pipeline: seeds, single files, ControlNets, bad input, runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.core.errors import UserError
from pipelines.core.jobs import CancelToken, JobCancelled
from pipelines.diffusion.generate import ControlUnit, GenerateRequest, check, generate

FAST = GenerateRequest(prompt="1girl, (smile:1.2), looking at viewer", negative_prompt="lowres", width=64,
                       height=64, steps=3, sampler="Euler a", schedule="Automatic", seed=1234, cfg_scale=6.0)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_same_seed_same_settings_is_bit_identical() -> None:
    first = generate(FAST).images[0]
    second = generate(FAST).images[0]
    assert np.array_equal(pixels(first), pixels(second))
    other_seed = generate(dataclasses.replace(FAST, seed=FAST.seed + 7)).images[0]
    assert not np.array_equal(pixels(first), pixels(other_seed))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DPM++ SDE"])
def test_batch_item_i_equals_seed_plus_i_alone(sampler: str) -> None:
    """A1111's rule; the stochastic samplers also draw their step noise per item."""
    request = dataclasses.replace(FAST, sampler=sampler, batch_size=3)
    batch = generate(request)
    assert batch.seeds == [1234, 1235, 1236]
    for index, image in enumerate(batch.images):
        alone = generate(dataclasses.replace(request, batch_size=1, seed=request.seed + index)).images[0]
        assert np.abs(pixels(image) - pixels(alone)).max() <= 1, f"item {index} differs from its seed alone"


def test_a_lora_and_an_embedding_named_in_the_prompt_apply_and_leave_the_shared_pipeline_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """<lora:name:w> and an embedding's name, found in the folders the settings name, change the image while they
    are in the prompt; afterwards the cached pipeline (modules, weights, scheduler, processors) is as before."""
    import torch

    from pipelines.core.safeweights import save_safetensors
    from pipelines.diffusion.models import load_pipeline
    from tests.test_diffusion_lora import assert_same_model, model_snapshot, save_diffusers_lora

    pipe = load_pipeline("tiny:sd15")
    before = model_snapshot(pipe)
    scheduler_before = type(pipe.scheduler)
    processors_before = {name: type(proc) for name, proc in pipe.unet.attn_processors.items()}
    save_diffusers_lora(pipe, tmp_path / "loras", "cel_shading", seed=3)
    width = pipe.text_encoder.get_input_embeddings().embedding_dim
    save_safetensors({"emb_params": torch.randn(2, width, generator=torch.Generator().manual_seed(5))},
                     tmp_path / "embeddings" / "easynegative.safetensors")
    monkeypatch.setenv("ASL_LORA_DIRS", str(tmp_path / "loras"))
    monkeypatch.setenv("ASL_EMBEDDING_DIRS", str(tmp_path / "embeddings"))

    plain = pixels(generate(FAST).images[0])
    with_lora = generate(dataclasses.replace(FAST, prompt=FAST.prompt + " <lora:cel_shading:1>"))
    assert np.abs(pixels(with_lora.images[0]) - plain).max() > 2
    assert "cel_shading: " in with_lora.infotexts[0]["Lora hashes"]
    weight_zero = generate(dataclasses.replace(FAST, prompt=FAST.prompt + " <lora:cel_shading:0>")).images[0]
    assert np.abs(pixels(weight_zero) - plain).max() <= 1
    with_embedding = generate(dataclasses.replace(FAST, negative_prompt="easynegative, lowres")).images[0]
    without = generate(dataclasses.replace(FAST, negative_prompt="lowres")).images[0]
    assert np.abs(pixels(with_embedding) - pixels(without)).max() > 2
    assert_same_model(pipe, before)
    assert type(pipe.scheduler) is scheduler_before
    assert {name: type(proc) for name, proc in pipe.unet.attn_processors.items()} == processors_before
    assert np.array_equal(pixels(generate(FAST).images[0]), plain)


def test_a_lora_given_outside_the_prompt_is_written_into_the_prompt(tmp_path: Path) -> None:
    from pipelines.diffusion.models import load_pipeline
    from tests.test_diffusion_lora import save_diffusers_lora

    path = save_diffusers_lora(load_pipeline("tiny:sd15"), tmp_path, "flat_colors", seed=4)
    output = generate(dataclasses.replace(FAST, loras=((str(path), 0.6),)))
    assert output.prompt.endswith("<lora:flat_colors:0.6>")
    with pytest.raises(UserError, match="not installed"):  # a prompt never names a path on the server
        generate(dataclasses.replace(FAST, prompt=f"1girl <lora:{path}:0.6>"))


def test_single_file_checkpoint_loads_back_offline_and_gives_the_same_image(tmp_path: Path) -> None:
    from pipelines.diffusion.checkpoint import save_single_file
    from pipelines.diffusion.models import load_pipeline

    pipe = load_pipeline("tiny:sd15")
    path = save_single_file(pipe, tmp_path / "tiny_anime.safetensors", metadata={"asl_base_config": "tiny:sd15"})
    from_folder = generate(FAST)
    from_file = generate(dataclasses.replace(FAST, model=str(path)))
    assert np.array_equal(pixels(from_folder.images[0]), pixels(from_file.images[0]))
    import hashlib

    assert from_file.infotexts[0]["Model hash"] == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert from_file.infotexts[0]["Model"] == "tiny_anime"


def test_pickle_checkpoints_are_refused_with_the_reason(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really")
    with pytest.raises(UserError, match="pickle"):
        generate(dataclasses.replace(FAST, model=str(ckpt)))
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    with pytest.raises(UserError, match="not a safetensors file"):
        generate(dataclasses.replace(FAST, model=str(disguised)))


@pytest.mark.parametrize(("change", "words"), [
    ({"sampler": "Euler z"}, "Unknown sampler"),
    ({"width": 100}, "multiple of 8"),
    ({"steps": 0}, "Steps must be"),
    ({"cfg_scale": 99.0}, "CFG scale must be"),
    ({"clip_skip": 0}, "Clip skip"),
    ({"batch_size": 50}, "Batch size"),
])
def test_bad_settings_get_plain_messages_before_any_model_loads(change: dict, words: str) -> None:
    request = dataclasses.replace(FAST, model="nobody/not-a-model", **change)
    assert any(words in problem for problem in check(request))
    with pytest.raises(UserError, match=words):
        generate(request)


def test_an_empty_prompt_is_allowed() -> None:
    assert check(dataclasses.replace(FAST, prompt="", negative_prompt="")) == []
    assert generate(dataclasses.replace(FAST, prompt="", negative_prompt="")).images[0].size == (64, 64)


def test_a_lora_named_in_the_prompt_that_is_not_installed_is_named() -> None:
    with pytest.raises(UserError, match="'missing_style'.*not installed"):
        generate(dataclasses.replace(FAST, prompt="1girl <lora:missing_style:0.7>"))


def control_image(size: int = 64) -> Image.Image:
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[size // 4: 3 * size // 4, size // 3] = 255  # a vertical line, like a line-art sketch
    return Image.fromarray(canvas)


def test_controlnets_change_the_image_and_scale_zero_removes_them() -> None:
    plain = generate(FAST).images[0]
    unit = ControlUnit("tiny:controlnet", control_image(), scale=1.0)
    controlled = generate(dataclasses.replace(FAST, controlnets=(unit,))).images[0]
    assert not np.array_equal(pixels(plain), pixels(controlled))
    off = generate(dataclasses.replace(FAST, controlnets=(dataclasses.replace(unit, scale=0.0),))).images[0]
    assert np.abs(pixels(off) - pixels(plain)).max() <= 1
    two = generate(dataclasses.replace(FAST, controlnets=(unit, dataclasses.replace(unit, start=0.5)))).images[0]
    assert not np.array_equal(pixels(two), pixels(controlled))


def test_a_control_image_of_another_size_is_resized_and_the_user_told() -> None:
    unit = ControlUnit("tiny:controlnet", control_image(40))
    output = generate(dataclasses.replace(FAST, controlnets=(unit,)))
    assert any("resized" in note for note in output.notes)


def test_progress_previews_and_cancel() -> None:
    seen, previews = [], []
    generate(dataclasses.replace(FAST, steps=4), callback=lambda step, total, _: seen.append((step, total)),
             on_preview=lambda step, images: previews.append((step, images)), preview_every=2)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [step for step, _ in previews] == [2, 4] and previews[0][1][0].mode == "RGB"
    token = CancelToken()

    def cancel_after_first(step: int, total: int, message: str) -> None:
        token.cancel()

    with pytest.raises(JobCancelled):
        generate(FAST, callback=cancel_after_first, cancel=token)


def test_a_recorded_run_writes_a1111_pngs_and_reruns_to_the_same_image() -> None:
    from pipelines.core.pngmeta import read_png_metadata
    from pipelines.core.records import default_store
    from pipelines.core.runs import rerun
    from pipelines.diffusion.runs import TAB, run_generate

    record, output = run_generate(dataclasses.replace(FAST, batch_size=2))
    assert record.tab == TAB and record.status == "done" and len(record.outputs) == 2
    with Image.open(record.outputs[1]) as image:
        text = image.text["parameters"]
    assert "Seed: 1235" in text and "Sampler: Euler a" in text and "Size: 64x64" in text
    assert read_png_metadata(record.outputs[1])["settings"]["Seed"] == 1235
    again = rerun(record.id, default_store())
    with Image.open(record.outputs[0]) as first, Image.open(again.outputs[0]) as second:
        assert np.array_equal(pixels(first), pixels(second))
    assert output.test_model and all(info["Test model"] for info in output.infotexts)


def test_a_vae_override_and_the_low_memory_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny pipeline's own VAE given as an override changes nothing; "low" slices attention and decodes in
    tiles (at 128 px the tiny VAE's 64 px tiles are used), and "auto" on a CPU needs neither."""
    from pipelines.diffusion.models import load_pipeline

    plain = generate(FAST)
    with_vae = generate(dataclasses.replace(FAST, vae="tiny:sd15"))
    assert np.array_equal(pixels(plain.images[0]), pixels(with_vae.images[0]))
    assert with_vae.infotexts[0]["VAE"] == "tiny:sd15"
    assert load_pipeline("tiny:sd15", memory="auto").asl_memory_preset == "none"  # CPU
    low_pipe = load_pipeline("tiny:sd15", memory="low")
    assert low_pipe.asl_memory_preset == "low" and low_pipe.vae.use_tiling
    assert "Sliced" in type(next(iter(low_pipe.unet.attn_processors.values()))).__name__
    tiles = []
    tiled_decode = low_pipe.vae.tiled_decode
    monkeypatch.setattr(low_pipe.vae, "tiled_decode", lambda *a, **k: tiles.append(1) or tiled_decode(*a, **k))
    large = generate(dataclasses.replace(FAST, memory="low", width=128, height=128)).images[0]
    assert tiles and large.size == (128, 128)


def test_settings_read_from_an_a1111_png_become_a_request() -> None:
    from pipelines.diffusion.generate import request_from_infotext

    settings = {"Steps": "30", "Sampler": "DPM++ 2M Karras", "CFG scale": "6.5", "Seed": "99", "Size": "512x768",
                "Clip skip": "2", "Denoising strength": "0.4", "Hires upscale": "2"}
    request, notes = request_from_infotext("1girl", "lowres", settings, "tiny:sd15")
    assert (request.sampler, request.schedule, request.steps, request.cfg_scale) == ("DPM++ 2M", "Karras", 30, 6.5)
    assert (request.seed, request.width, request.height, request.clip_skip) == (99, 512, 768, 2)
    assert any("hires-fix" in note for note in notes) and any("img2img" in note for note in notes)
    assert check(request) == []


def _header_only_checkpoint(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    import torch

    from pipelines.core.safeweights import save_safetensors

    return save_safetensors({key: torch.zeros(shape, dtype=torch.float16) for key, shape in shapes.items()}, path)


def test_the_shipped_sd15_config_has_real_sd15_checkpoint_layout() -> None:
    """A real SD 1.5 checkpoint's tensor names and shapes (as A1111 files hold them) come out of the shipped
    config through our LDM mapping, and its tokenizer is CLIP's."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    from pipelines.diffusion.checkpoint import unet_state_dict_to_ldm, vae_state_dict_to_ldm
    from pipelines.diffusion.models import sd15_config_folder

    folder = sd15_config_folder()
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
    unet_keys = {key: tuple(v.shape) for key, v in unet_state_dict_to_ldm(unet.state_dict(), unet.config).items()}
    vae_keys = {key: tuple(v.shape) for key, v in vae_state_dict_to_ldm(vae.state_dict(), vae.config).items()}
    assert len(unet_keys) == 686 and len(vae_keys) == 248  # the counts in every SD 1.5 checkpoint
    assert unet_keys["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert unet_keys["model.diffusion_model.output_blocks.11.0.skip_connection.weight"] == (320, 640, 1, 1)
    assert unet_keys["model.diffusion_model.output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert unet_keys["model.diffusion_model.output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert vae_keys["first_stage_model.decoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert vae_keys["first_stage_model.encoder.down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_single_files_are_told_apart_by_their_tensors(tmp_path: Path) -> None:
    from pipelines.diffusion.models import single_file_base, single_file_config

    sd15 = _header_only_checkpoint(tmp_path / "anime_v1.safetensors", {
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)})
    sdxl = _header_only_checkpoint(tmp_path / "xl.safetensors", {
        "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,)})
    inpaint = _header_only_checkpoint(tmp_path / "inpaint.safetensors", {
        "model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)})
    assert single_file_base(sd15) == "sd15" and Path(single_file_config(sd15), "unet", "config.json").exists()
    assert single_file_base(sdxl) == "sdxl" and single_file_config(sdxl) is None
    with pytest.raises(UserError, match="inpainting"):
        single_file_base(inpaint)


def test_sdxl_generates_through_the_same_code(tmp_path: Path) -> None:
    """The tiny SDXL pipeline (two text encoders, pooled and size conditioning) with the same request type: weighted
    prompts, seeds per batch item, and a LoRA made for SD 1.5 refused by name."""
    request = dataclasses.replace(FAST, model="tiny:sdxl", sampler="Euler", batch_size=2)
    output = generate(request)
    assert [image.size for image in output.images] == [(64, 64), (64, 64)]
    alone = generate(dataclasses.replace(request, batch_size=1, seed=request.seed + 1)).images[0]
    assert np.abs(pixels(output.images[1]) - pixels(alone)).max() <= 1
    assert output.infotexts[0]["Model"] == "tiny:sdxl"
    from pipelines.diffusion.models import load_pipeline
    from tests.test_diffusion_lora import save_diffusers_lora

    sd15_lora = save_diffusers_lora(load_pipeline("tiny:sd15"), tmp_path, "sd15_style")
    with pytest.raises(UserError, match="sd15_style.*different base model"):
        generate(dataclasses.replace(request, loras=((str(sd15_lora), 1.0),)))


def test_running_out_of_memory_names_the_setting_to_change(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pipelines.diffusion import models

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(models, "pipeline_for_call", lambda *args, **kwargs: out_of_memory)
    with pytest.raises(UserError, match="ran out of memory.*Memory to 'low'"):
        generate(FAST)


def test_a_prompt_per_image_with_a_sketch_per_image_equals_each_image_alone() -> None:
    """A storyboard's batch: panel i with its own prompt and condition image is the image that prompt, image and
    seed + i give alone."""
    sketches = (control_image(), Image.fromarray(255 - np.asarray(control_image())))
    request = dataclasses.replace(FAST, prompt="", prompts=("1girl, (smile:1.2)", "1boy, sitting, on a bench"),
                                  batch_size=2, controlnets=(ControlUnit("tiny:controlnet", sketches),))
    batch = generate(request)
    assert batch.prompts == list(request.prompts)
    for index in range(2):
        alone = generate(dataclasses.replace(FAST, prompt=request.prompts[index], seed=FAST.seed + index,
                                             controlnets=(ControlUnit("tiny:controlnet", sketches[index]),)))
        assert np.abs(pixels(batch.images[index]) - pixels(alone.images[0])).max() <= 1
    problems = check(dataclasses.replace(request, batch_size=3))
    assert any("2 prompts for 3 images" in problem for problem in problems)
    assert any("2 condition images for 3" in problem for problem in problems)


def test_prompts_of_different_lengths_are_padded_to_one_chunk_count() -> None:
    """A 2-chunk panel beside a 1-chunk one: the short one gets an empty chunk (as A1111 pads cond against uncond),
    which moves its image only a little."""
    from pipelines.diffusion.models import load_pipeline
    from pipelines.diffusion.prompts import encode_prompt_batch, encode_prompts

    pipe = load_pipeline("tiny:sd15")
    long_prompt = ", ".join(["1girl, silver hair, school uniform, cherry blossoms"] * 12)
    batch = encode_prompt_batch(pipe, ["1girl", long_prompt], "lowres")
    short = encode_prompts(pipe, "1girl", "lowres")
    assert batch.cond.shape[:2] == (2, 154) and batch.uncond.shape == batch.cond.shape and batch.chunks == 2
    assert np.allclose(batch.cond[0, :77].numpy(), short.cond[0].numpy(), atol=1e-6)
    empty = encode_prompts(pipe, "", "").cond
    assert np.allclose(batch.cond[0, 77:].numpy(), empty[0].numpy(), atol=1e-6)
    output = generate(dataclasses.replace(FAST, prompt="", prompts=("1girl", long_prompt), batch_size=2))
    alone = generate(dataclasses.replace(FAST, prompt="1girl"))
    assert np.abs(pixels(output.images[0]) - pixels(alone.images[0])).mean() < 3
