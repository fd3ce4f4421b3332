"""SD 1.5 at its real size (random weights from the shipped configs, pipelines/diffusion/real_size.py) through the
paths a real checkpoint takes: loading through the core loader, generating, and a LoRA training step with its
validation and export in bf16 autocast on a bf16 base (the half-precision path a GPU takes). The smallest size
(64 px, 1 step): this is about shapes, dtypes and layer mappings, not images. Marker `realsize`; CI runs it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.realsize, pytest.mark.slow]

# SD 1.5's published sizes (runwayml/stable-diffusion-v1-5): the UNet's 859.52 M parameters, CLIP ViT-L/14's text
# tower 123.06 M, the KL-f8 VAE 83.65 M; and its layout: 16 transformer blocks (down 6, mid 1, up 9), each with a
# self- and a cross-attention, so 32 attention layers with q, k, v and out projections.
SD15_PARAMETERS = {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863}
SD15_ATTENTION_LAYERS = 32


@pytest.fixture
def real_sd15(monkeypatch):
    from pipelines.diffusion.real_size import build_sd15

    monkeypatch.setenv("ASL_DTYPE", "bf16")
    return str(build_sd15())


def test_real_size_sd15_generates_and_trains_validates_and_exports_a_lora_in_bf16(real_sd15):
    from safetensors import safe_open

    from pipelines.diffusion.generate import GenerateRequest, generate
    from pipelines.diffusion.models import load_pipeline
    from pipelines.diffusion.real_size import parameter_count
    from pipelines.style_finetune.data import Dataset
    from pipelines.style_finetune.train import TrainConfig, train

    pipe = load_pipeline(real_sd15)
    assert {name: parameter_count(getattr(pipe, name)) for name in SD15_PARAMETERS} == SD15_PARAMETERS
    output = generate(GenerateRequest(prompt="1girl, smile", model=real_sd15, width=64, height=64, steps=1,
                                      sampler="Euler a", schedule="Automatic", seed=1))
    assert output.images[0].size == (64, 64) and output.infotexts[0]["Steps"] == 1
    assert "bfloat16" in output.device

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    dataset = Dataset((image,), ("0.png",), ("zqstyle, noise",), "zqstyle", 64)
    result = train(TrainConfig(name="real", model=real_sd15, method="lora", steps=1, rank=4, mixed_precision="bf16",
                               validation_steps=1, validation_seeds=(1,)), dataset)
    assert result.finished and np.isfinite(result.losses).all() and "Precision: bf16" in result.notes[0]
    with Image.open(result.validation[-1][1][0]) as validation:
        assert validation.size == (64, 64)
    with safe_open(result.files["lora_diffusers"], "pt") as lora:
        names = lora.keys()  # a safe_open handle is not iterable
    down = [key for key in names if "lora_A" in key or "lora.down" in key]
    assert len(down) == SD15_ATTENTION_LAYERS * 4  # every attention layer's q, k, v and out of the 16 blocks
    with safe_open(result.files["lora_a1111"], "pt") as kohya:
        kohya_names = kohya.keys()
    assert sum(key.endswith("lora_down.weight") for key in kohya_names) == SD15_ATTENTION_LAYERS * 4
