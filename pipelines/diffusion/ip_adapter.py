"""IP-Adapter (Ye et al. 2023): a reference image steers what is generated, through diffusers' own loader.

    GenerateRequest(prompt="1girl, smile", reference=ReferenceImage(face, scale=0.6))

The default is h94/IP-Adapter's "plus-face" adapter for SD 1.5 (a resampler over the CLIP ViT-H image encoder's
hidden states, trained on cropped faces); `tiny:ip_adapter` has the same layout with random weights. A source is
a hub repo or a local folder laid out as h94/IP-Adapter is (`models/<weights>.safetensors`, `models/image_encoder/`);
weights load from safetensors only.

The adapter changes the UNet's attention processors and adds an image projection to it, and the UNet is shared by
every call on the cached pipeline. So, like LoRAs, it goes in for one call only, under the pipeline's call lock,
and `applied_ip_adapter` puts back exactly the processors and projection it found (diffusers' own
`unload_ip_adapter` would replace every processor with a fresh default one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pipelines.core.errors import UserError
from pipelines.core.tiny_models import IP_ADAPTER_ENCODER, IP_ADAPTER_WEIGHTS

DEFAULT_IP_ADAPTER = "h94/IP-Adapter"
TEST_IP_ADAPTER = "tiny:ip_adapter"
MAX_REFERENCE_SCALE = 1.5


@dataclass(frozen=True)
class ReferenceImage:
    """A reference image and how strongly the output follows it (0: not at all; IP-Adapter's usual 0.5–1)."""

    image: Any  # a PIL image
    scale: float = 0.6
    model: str = DEFAULT_IP_ADAPTER
    weights: str = IP_ADAPTER_WEIGHTS  # inside `model`
    encoder: str = IP_ADAPTER_ENCODER  # the CLIP vision encoder's folder inside `model`


@dataclass
class LoadedAdapter:
    image_encoder: Any
    state_dict: dict[str, dict[str, Any]]  # {"image_proj": …, "ip_adapter": …}, as diffusers' loader takes it
    name: str  # the weights file's stem, for the infotext


def check_reference(reference: ReferenceImage | None) -> list[str]:
    if reference is None:
        return []
    problems = []
    if reference.image is None:
        problems.append("The reference image is missing.")
    if not 0.0 <= float(reference.scale) <= MAX_REFERENCE_SCALE:
        problems.append(f"The reference strength must be between 0 and {MAX_REFERENCE_SCALE:g}, got "
                        f"{reference.scale}.")
    if not str(reference.weights).endswith(".safetensors"):
        problems.append("IP-Adapter weights are accepted as .safetensors only.")
    return problems


def load_adapter(reference: ReferenceImage, pipe: Any) -> LoadedAdapter:
    """The adapter's weights and image encoder, through the core loader's cache, for `pipe`'s device and dtype."""
    from pathlib import Path

    from pipelines.core.loader import load_model

    from .models import base_of

    if base_of(pipe) != "sd15":
        raise UserError("The reference image (IP-Adapter) works with SD 1.5-family models here; this model is SDXL.")
    tensors = load_model("state_dict", reference.model, filename=reference.weights)
    split: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in tensors.items():
        part, _, rest = key.partition(".")
        if part in split:
            split[part][rest] = value
    if not split["image_proj"] or not split["ip_adapter"]:
        raise UserError(f"'{reference.weights}' in {reference.model} is not an IP-Adapter file (it has no "
                        "image_proj / ip_adapter weights).")
    device = getattr(pipe, "_execution_device", pipe.device)
    encoder = load_model("transformers", reference.model, class_name="CLIPVisionModelWithProjection",
                         subfolder=reference.encoder, dtype=pipe.dtype, device=device)
    return LoadedAdapter(encoder, split, Path(reference.weights).stem)


@contextmanager
def applied_ip_adapter(call_pipe: Any, adapter: LoadedAdapter | None, scale: float) -> Iterator[None]:
    """The adapter in `call_pipe`'s (shared) UNet for the `with` block; the caller holds the pipeline's call lock.
    The image encoder is registered on the per-call pipeline only."""
    if adapter is None:
        yield
        return
    unet = call_pipe.unet
    processors = dict(unet.attn_processors)
    projection, projection_type = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    call_pipe.register_modules(image_encoder=adapter.image_encoder)
    try:
        call_pipe.load_ip_adapter(adapter.state_dict, subfolder=None, weight_name=None)
        call_pipe.set_ip_adapter_scale(float(scale))
        yield
    finally:
        unet.encoder_hid_proj = projection  # first: the resampler's own attention layers count as processors
        unet.config.encoder_hid_dim_type = projection_type
        unet.set_attn_processor(processors)
