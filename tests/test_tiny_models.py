"""Tiny random-weight models: built once, deterministic, loadable through the one loader, and usable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core import loader, tiny_models
from pipelines.core.loader import ModelLoadError, load_model

OWN_MODELS = ["sd15", "controlnet", "clip", "blip", "inception"]  # the core's; methods register their own

LONG_TEXT = (
    "anime girl with long silver hair, blue eyes and a red ribbon standing under cherry blossoms at sunset "
    "beside a quiet river in a small mountain town, soft watercolor shading, clean line art, detailed "
    "background with paper lanterns; wooden bridges and distant snowy peaks, warm light, gentle breeze, "
    "petals falling, 8k, masterpiece, best quality, highly detailed face, looking at viewer, smiling "
    "softly while holding an umbrella decorated with golden koi fish and tiny stars, wearing a school "
    "uniform with a navy sailor collar, white gloves, black stockings and brown loafers, her cat sleeping "
    "on a stone lantern nearby, birds flying over rooftops, reflections shimmering on the calm water, "
    "studio ghibli inspired composition, cinematic lighting, depth of field, trending on pixiv"
)
LONG_PROMPT = " ".join(LONG_TEXT.split()[:100])
PROMPTS = [
    "a photo of a cat",
    "masterpiece, best quality, 1girl, solo, (long hair:1.2), [blue eyes]!!!",
    "Don't stop... it's 3:45pm — naïve café; she'll say: \"hello\"?",
    "  Multiple   SPACES\tand\nnew lines  ",
    "emoji 🐱 and 日本語 text, #hashtag @user 100% 2024-01-01",
    LONG_PROMPT,
]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("asl-cache")


@pytest.fixture
def tiny_cache(shared_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """One cache folder for the session (each tiny model is built once), an empty model cache per test."""
    monkeypatch.setenv("ASL_CACHE", str(shared_cache))
    monkeypatch.setenv("ASL_DEVICE", "cpu")
    monkeypatch.delenv("ASL_DTYPE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loader.CACHE.clear()
    yield shared_cache
    loader.CACHE.clear()


def _use_cache(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv("ASL_CACHE", str(folder))


def _gradient_image(size: int = 48, flip: bool = False) -> Image.Image:
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    rgb = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 90, np.uint8)],
                   axis=-1)
    return Image.fromarray(rgb[:, ::-1].copy() if flip else rgb)


# ---------------------------------------------------------------------------------------------- tokenizer
def test_clip_tokenizer_matches_open_clip(tmp_path: Path) -> None:
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    tiny_models.build_clip_tokenizer(tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    reference = SimpleTokenizer()
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    for prompt in PROMPTS:
        assert tokenizer(prompt).input_ids == [49406, *reference.encode(prompt), 49407], prompt
    assert len(LONG_PROMPT.split()) == 100
    padded = tokenizer(LONG_PROMPT, padding="max_length", truncation=True, max_length=tokenizer.model_max_length)
    assert tokenizer.model_max_length == 77
    assert len(padded.input_ids) == 77 and padded.input_ids[-1] == 49407
    assert tokenizer.decode(tokenizer("a photo of a cat").input_ids, skip_special_tokens=True) == "a photo of a cat"


def test_sd15_and_clip_use_the_real_tokenizer(tiny_cache: Path) -> None:
    pipe = load_model("diffusers_pipeline", "tiny:sd15")
    clip_tokenizer = load_model("transformers", "tiny:clip", class_name="CLIPTokenizer")
    for tokenizer in (pipe.tokenizer, clip_tokenizer):
        assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert pipe.text_encoder.config.vocab_size == 49408


# ---------------------------------------------------------------------------------------------- diffusion
def _generate(pipe, seed: int, **kwargs) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe("a cat in the rain", height=64, width=64, num_inference_steps=2, generator=generator,
                output_type="np", **kwargs).images


def test_sd15_generates_and_is_seeded(tiny_cache: Path) -> None:
    pipe = load_model("diffusers_pipeline", "tiny:sd15")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.in_channels == 4
    first, again, other = _generate(pipe, 1), _generate(pipe, 1), _generate(pipe, 2)
    assert first.shape == (1, 64, 64, 3) and np.isfinite(first).all()
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_controlnet_fits_the_sd15_unet_and_changes_the_output(tiny_cache: Path) -> None:
    from diffusers import StableDiffusionControlNetPipeline

    sd = load_model("diffusers_pipeline", "tiny:sd15")
    controlnet = load_model("diffusers_model", "tiny:controlnet", class_name="ControlNetModel")
    latents, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, sd.unet.config.cross_attention_dim)
    with torch.no_grad():
        down, mid = controlnet(latents, 10, encoder_hidden_states=text, controlnet_cond=torch.rand(1, 3, 64, 64),
                               return_dict=False)
        noise = sd.unet(latents, 10, encoder_hidden_states=text, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
    assert noise.shape == latents.shape

    parts = {name: getattr(sd, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    pipe = StableDiffusionControlNetPipeline(**parts, controlnet=controlnet, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    one = _generate(pipe, 3, image=_gradient_image(64))
    same = _generate(pipe, 3, image=_gradient_image(64))
    flipped = _generate(pipe, 3, image=_gradient_image(64, flip=True))
    assert one.shape == (1, 64, 64, 3)
    assert np.array_equal(one, same)
    assert not np.allclose(one, flipped)


# ---------------------------------------------------------------------------------------------- CLIP, BLIP
def test_clip_embeds_images_and_text_in_one_space(tiny_cache: Path) -> None:
    model = load_model("transformers", "tiny:clip", class_name="CLIPModel")
    processor = load_model("transformers", "tiny:clip", class_name="CLIPProcessor")
    inputs = processor(text=["a cat", "a dog on a red sofa"], images=[_gradient_image(), _gradient_image(flip=True)],
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    assert out.image_embeds.shape[0] == 2 and out.text_embeds.shape[0] == 2
    assert out.image_embeds.shape[1] == out.text_embeds.shape[1] == model.config.projection_dim
    assert out.logits_per_image.shape == (2, 2)
    assert not torch.allclose(out.image_embeds[0], out.image_embeds[1])


def test_blip_captions_an_image(tiny_cache: Path) -> None:
    model = load_model("transformers", "tiny:blip", class_name="BlipForConditionalGeneration")
    processor = load_model("transformers", "tiny:blip", class_name="BlipProcessor")
    inputs = processor(images=_gradient_image(), return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=6)
    assert ids.dtype == torch.long and ids.ndim == 2 and 1 < ids.shape[1] <= 7
    assert int(ids.max()) < len(processor.tokenizer)
    caption = processor.decode(ids[0], skip_special_tokens=True)
    assert isinstance(caption, str) and "[DEC]" not in caption
    tokens = processor.tokenizer("a girl with long hair").input_ids
    assert processor.tokenizer.unk_token_id not in tokens
    assert processor.decode(tokens, skip_special_tokens=True) == "a girl with long hair"


# ---------------------------------------------------------------------------------------------- Inception
@pytest.mark.parametrize("size", [(32, 32), (75, 120)])
def test_inception_has_fid_shaped_outputs(tiny_cache: Path, size: tuple[int, int]) -> None:
    model = load_model("torch_module", "tiny:inception")
    images = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(images)
        as_uint8 = model((images * 255).round().to(torch.uint8))
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert (out["pool"] >= 0).all() and not torch.allclose(out["pool"][0], out["pool"][1])
    assert torch.allclose(out["pool"], as_uint8["pool"], atol=1e-2)


# ---------------------------------------------------------------------------------------------- building
def test_build_twice_returns_the_same_folder_without_rebuilding(tiny_cache: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tiny_models.build("controlnet")
    assert folder == tiny_cache / "tiny" / "controlnet-v1" and folder.is_dir()
    weights = folder / "diffusion_pytorch_model.safetensors"
    stamp = weights.stat().st_mtime_ns

    def must_not_run(_: Path) -> None:
        raise AssertionError("rebuilt an existing tiny model")

    spec = tiny_models.TINY_MODELS["controlnet"]
    monkeypatch.setitem(tiny_models.TINY_MODELS, "controlnet", dataclasses.replace(spec, builder=must_not_run))
    assert tiny_models.build("controlnet") == folder
    assert weights.stat().st_mtime_ns == stamp


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_builds_are_byte_identical_across_cache_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = {}
    for seed, side in enumerate(("a", "b")):
        torch.manual_seed(seed)  # the builds must not depend on the caller's random state
        _use_cache(monkeypatch, tmp_path / side)
        built[side] = {name: _files(tiny_models.build(name)) for name in OWN_MODELS}
    for name in OWN_MODELS:
        assert any(key.endswith(".safetensors") for key in built["a"][name]), name
        assert built["a"][name] == built["b"][name], name


def test_build_keeps_the_callers_random_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_cache(monkeypatch, tmp_path)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_models.build("inception")
    assert torch.equal(torch.rand(3), expected)


def test_a_failed_build_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_cache(monkeypatch, tmp_path)

    def crash(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("builder crashed")

    spec = tiny_models.TINY_MODELS["inception"]
    monkeypatch.setitem(tiny_models.TINY_MODELS, "inception", dataclasses.replace(spec, builder=crash))
    with pytest.raises(RuntimeError, match="builder crashed"):
        tiny_models.build("inception")
    assert list((tmp_path / "tiny").iterdir()) == []


def test_unknown_name_is_a_clear_error(tiny_cache: Path) -> None:
    with pytest.raises(ValueError, match="sd15") as caught:
        tiny_models.build("sd99")
    assert all(name in str(caught.value) for name in tiny_models.TINY_MODELS)
    with pytest.raises(ModelLoadError, match="sd99"):
        load_model("diffusers_pipeline", "tiny:sd99")


# ---------------------------------------------------------------------------------------------- loader, labels
def test_loader_caches_tiny_models(tiny_cache: Path) -> None:
    first = tiny_models.load_tiny("inception")
    assert load_model("torch_module", "tiny:inception") is first
    assert tiny_models.load_tiny("inception") is first
    info = loader.model_info(first)
    assert info is not None and info.test_model and info.revision == "inception-v1"
    loader.CACHE.clear()
    assert tiny_models.load_tiny("inception") is not first


def test_specs_and_dropdown_choices() -> None:
    specs = tiny_models.all_tiny_models()  # the core's own and those the method packages register
    assert {*OWN_MODELS, "style", "lpips", "nima"} <= set(specs)  # style: neural_style; lpips, nima: metrics
    for name, spec in specs.items():
        assert spec.name == name and spec.family in loader.FAMILIES and spec.version >= 1
        label, value = tiny_models.dropdown_choice(name)
        assert value == f"tiny:{name}" and loader.is_test_model(value)
        assert tiny_models.TINY_LABEL in label and spec.label in label
    assert "tiny_inception" in loader.ARCHITECTURES


def test_style_builds_through_the_neural_style_module(tiny_cache: Path) -> None:
    try:
        import pipelines.neural_style.network  # noqa: F401
    except ImportError as err:
        pytest.skip(f"neural-style network not available yet: {err}")
    module = tiny_models.load_tiny("style")
    assert isinstance(module, torch.nn.Module)
    assert (tiny_models.build("style") / "model.safetensors").is_file()
