"""A reference image through IP-Adapter in the diffusion core, on the tiny SD 1.5 pipeline and tiny:ip_adapter (laid
out as h94/IP-Adapter): it matches diffusers' own IP-Adapter path, it steers the image, and it leaves the shared
pipeline as it found it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.diffusion.generate import GenerateRequest, check, generate
from pipelines.diffusion.ip_adapter import TEST_IP_ADAPTER, ReferenceImage

FAST = GenerateRequest(prompt="1girl, smile", negative_prompt="", width=64, height=64, steps=3, sampler="Euler",
                       schedule="Automatic", seed=7, cfg_scale=5.0)


def face(colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (64, 64), (240, 230, 220))
    image.paste(colour, (16, 12, 48, 52))
    return image


def reference(colour: tuple[int, int, int] = (200, 40, 40), scale: float = 1.0) -> ReferenceImage:
    return ReferenceImage(face(colour), scale=scale, model=TEST_IP_ADAPTER)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_our_reference_path_equals_diffusers_own_ip_adapter_loading() -> None:
    """diffusers loads the same folder by itself (load_ip_adapter from the repo layout, image encoder included) and
    draws from the same latents and sampler: the images agree."""
    from diffusers import StableDiffusionPipeline

    from pipelines.core.loader import resolve_path_or_id
    from pipelines.core.seeds import cpu_generator
    from pipelines.diffusion.models import load_pipeline
    from pipelines.diffusion.samplers import make_scheduler

    request = dataclasses.replace(FAST, reference=reference())
    ours = pixels(generate(request).images[0])

    shared = load_pipeline("tiny:sd15")
    theirs_pipe = StableDiffusionPipeline(
        vae=shared.vae, text_encoder=shared.text_encoder, tokenizer=shared.tokenizer,
        unet=_copy(shared.unet), scheduler=make_scheduler("Euler", "Automatic", shared.scheduler.config, seeds=[7]),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    theirs_pipe.set_progress_bar_config(disable=True)
    theirs_pipe.load_ip_adapter(resolve_path_or_id(TEST_IP_ADAPTER), subfolder="models",
                                weight_name="ip-adapter-plus-face_sd15.safetensors")
    theirs_pipe.set_ip_adapter_scale(1.0)
    latents = torch.randn((1, 4, 8, 8), generator=cpu_generator(FAST.seed))
    theirs = theirs_pipe(FAST.prompt, negative_prompt="", ip_adapter_image=face((200, 40, 40)),
                         num_inference_steps=3, guidance_scale=5.0, height=64, width=64, latents=latents,
                         generator=cpu_generator(FAST.seed), output_type="pil").images[0]
    assert np.abs(ours - pixels(theirs)).max() <= 1


def _copy(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module)


def test_the_reference_steers_the_image_and_strength_zero_removes_it() -> None:
    plain = pixels(generate(FAST).images[0])
    red = pixels(generate(dataclasses.replace(FAST, reference=reference((200, 40, 40)))).images[0])
    blue = pixels(generate(dataclasses.replace(FAST, reference=reference((40, 40, 200)))).images[0])
    assert np.abs(red - blue).max() > 2 and np.abs(red - plain).max() > 2
    off = pixels(generate(dataclasses.replace(FAST, reference=reference(scale=0.0))).images[0])
    assert np.abs(off - plain).max() <= 1


def test_the_shared_pipeline_is_left_as_it_was() -> None:
    from pipelines.diffusion.models import load_pipeline

    pipe = load_pipeline("tiny:sd15")
    processors = dict(pipe.unet.attn_processors)
    plain = pixels(generate(FAST).images[0])
    output = generate(dataclasses.replace(FAST, reference=reference()))
    assert "ip-adapter-plus-face_sd15" in output.infotexts[0]["IP-Adapter"]
    assert any(model["id"] == TEST_IP_ADAPTER for model in output.models)
    after = pipe.unet.attn_processors
    assert all(after[name] is processor for name, processor in processors.items())
    assert pipe.unet.encoder_hid_proj is None and pipe.unet.config.encoder_hid_dim_type is None
    assert getattr(pipe, "image_encoder", None) is None
    assert np.array_equal(pixels(generate(FAST).images[0]), plain)


def test_a_recorded_run_keeps_the_reference_and_reruns_to_the_same_image() -> None:
    from pipelines.core.records import default_store
    from pipelines.core.runs import rerun
    from pipelines.diffusion.runs import run_generate

    record, _ = run_generate(dataclasses.replace(FAST, reference=reference(scale=0.8)))
    assert record.params["reference"]["scale"] == 0.8
    again = rerun(record.id, default_store())
    with Image.open(record.outputs[0]) as first, Image.open(again.outputs[0]) as second:
        assert np.array_equal(pixels(first), pixels(second))


@pytest.mark.parametrize(("change", "words"), [
    ({"scale": 3.0}, "reference strength"),
    ({"image": None}, "reference image is missing"),
    ({"weights": "models/ip-adapter.bin"}, ".safetensors only"),
])
def test_bad_references_get_plain_messages(change: dict, words: str) -> None:
    problems = check(dataclasses.replace(FAST, reference=dataclasses.replace(reference(), **change)))
    assert any(words in problem for problem in problems), problems


def test_sdxl_is_refused_with_a_reason() -> None:
    from pipelines.core.errors import UserError

    with pytest.raises(UserError, match="SD 1.5"):
        generate(dataclasses.replace(FAST, model="tiny:sdxl", reference=reference()))
