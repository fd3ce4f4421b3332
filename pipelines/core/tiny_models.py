"""Tiny random-weight models, built from configs on first use, for tests and the offline demo.

Each tiny model has the shape of a real one (an SD-1.5 pipeline, its ControlNet, CLIP, BLIP, the FID
Inception, a fast style network) but only a few MB of random weights, so it builds in seconds on a CPU. It is
saved once under `settings.cache_dir() / "tiny" / "NAME-vVERSION"` and then loaded like any local folder by
`loader.load_model(family, "tiny:NAME")`. Its output is noise: the app labels it so and never reports a metric
computed with one as a real score.

The CLIP tokenizer is the real one (built from the BPE merges open_clip ships), so prompts tokenize exactly as
with a real Stable Diffusion or CLIP checkpoint.

The core builds the generic families (sd15, controlnet, clip, blip, inception). A new method adds its own from
its package's __init__ with `tiny_models.register_tiny(TinySpec(NAME, FAMILY, LABEL, VERSION, lazy(MODULE,
"build_tiny")))` (see methods.py); "tiny:NAME" then works anywhere, even before the package is imported: a name
not registered yet makes the core import the method packages once (methods.discover_methods) and look again.
"""

from __future__ import annotations

import gzip
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from . import loader, settings
from .loader import TINY_LABEL
from .methods import discover_methods, discovery_note

CLIP_CONTEXT_LENGTH = 77
INCEPTION_ARCHITECTURE = "tiny_inception"


@dataclass(frozen=True)
class TinySpec:
    """One tiny model: registered with register_tiny, built by `builder` on first use, loaded as "tiny:NAME"."""

    name: str
    family: str  # a loader family: diffusers_pipeline, diffusers_model, transformers, torch_module
    label: str  # what the real model it stands in for is
    version: int  # bump when the builder changes: a new folder is built, old ones are left alone
    builder: Callable[[Path], None]  # writes the model into an empty folder
    options: dict[str, Any] = field(default_factory=dict)  # load_model options, e.g. {"class_name": ...}


# ---------------------------------------------------------------------------------------------- CLIP tokenizer
@cache
def _clip_vocab_and_merges() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The CLIP BPE vocabulary exactly as open_clip's SimpleTokenizer builds it (49408 entries)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1])
    byte_chars = list(bytes_to_unicode().values())
    vocab = [*byte_chars, *(char + "</w>" for char in byte_chars), *("".join(merge) for merge in merges),
             "<|startoftext|>", "<|endoftext|>"]
    return tuple(vocab), merges


def build_clip_tokenizer(folder: Path) -> None:
    """Write a real CLIP tokenizer (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json) to `folder`."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    encoder = {token: index for index, token in enumerate(vocab)}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=encoder, merges=list(merges), model_max_length=CLIP_CONTEXT_LENGTH)
    tokenizer.save_pretrained(folder)


def _clip_text_config(**overrides: Any) -> Any:
    from transformers import CLIPTextConfig

    vocab, _ = _clip_vocab_and_merges()
    settings_ = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "max_position_embeddings": CLIP_CONTEXT_LENGTH,
                 "bos_token_id": len(vocab) - 2, "eos_token_id": len(vocab) - 1, "pad_token_id": len(vocab) - 1}
    return CLIPTextConfig(**{**settings_, **overrides})


# ---------------------------------------------------------------------------------------------- SD 1.5
UNET_BLOCKS = {"block_out_channels": (32, 64), "layers_per_block": 2, "cross_attention_dim": 32,
               "attention_head_dim": 8, "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D")}


def _build_sd15(folder: Path) -> None:
    """SD-1.5 layout: VAE downscale 8, 4 latent channels, CLIP text encoder, PNDM scheduler as SD 1.5 ships."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4,
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **UNET_BLOCKS)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, sample_size=64, scaling_factor=0.18215)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
    text_encoder = CLIPTextModel(_clip_text_config())
    _offset_final_norm(text_encoder)
    build_clip_tokenizer(folder / "tokenizer")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    build_clip_tokenizer(folder / "tokenizer")  # keep vocab.json/merges.txt beside tokenizer.json, as on the Hub


def _build_sdxl(folder: Path) -> None:
    """SDXL layout in small (as diffusers' own SDXL tests build it): two CLIP text encoders, the second with a
    projection whose pooled output and the size/crop "time ids" condition the UNet (text_time embedding)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 32,
                                cross_attention_dim=64, norm_num_groups=1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, sample_size=64, scaling_factor=0.13025)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    text_encoder = CLIPTextModel(_clip_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(projection_dim=32))
    build_clip_tokenizer(folder / "tokenizer")
    build_clip_tokenizer(folder / "tokenizer_2")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2", pad_token="!")  # as SDXL's second one
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)


def _offset_final_norm(text_encoder: Any) -> None:
    """A fresh LayerNorm has zero bias, so its outputs average to ~0; real CLIP's do not. A1111's prompt weighting
    rescales by that average, which would divide by ~0 on a tiny model, so give the bias a real-looking offset."""
    import torch

    with torch.no_grad():
        bias = getattr(text_encoder, "text_model", text_encoder).final_layer_norm.bias  # transformers 4 or 5 layout
        bias.copy_(0.3 + 0.2 * torch.randn_like(bias))


def _build_controlnet(folder: Path) -> None:
    """A ControlNet for the tiny SD 1.5 UNet; its zero convolutions get small random weights so that the
    conditioning image visibly changes the output (as diffusers' own fast tests do)."""
    import torch
    from diffusers import ControlNetModel

    controlnet = ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(16, 16, 32, 32), **UNET_BLOCKS)
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                  controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=0.02)
            torch.nn.init.normal_(conv.bias, std=0.02)
    controlnet.save_pretrained(folder, safe_serialization=True)


IP_ADAPTER_WEIGHTS = "models/ip-adapter-plus-face_sd15.safetensors"  # h94/IP-Adapter's layout, file for file
IP_ADAPTER_ENCODER = "models/image_encoder"


def _build_ip_adapter(folder: Path) -> None:
    """An IP-Adapter "plus" (a perceiver resampler over the image encoder's penultimate hidden states) for the tiny
    SD 1.5 UNet, laid out as h94/IP-Adapter ships it: the original key names (`image_proj.latents`,
    `image_proj.layers.0.0.to_kv.weight`, …, `ip_adapter.1.to_k_ip.weight`, …) that diffusers converts on load,
    and the CLIP vision encoder beside it, so that the real repo and this one go through the same code."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.embeddings import IPAdapterPlusImageProjection
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from .safeweights import save_safetensors

    width = UNET_BLOCKS["cross_attention_dim"]
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=width, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=4, projection_dim=width))
    encoder.save_pretrained(folder / IP_ADAPTER_ENCODER)
    resampler = IPAdapterPlusImageProjection(embed_dims=width, output_dims=width, hidden_dims=width, heads=1,
                                             num_queries=4)
    tensors = {f"image_proj.{key}": value for key, value in _original_resampler_keys(resampler.state_dict()).items()}
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4,
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **UNET_BLOCKS)
    widths = {"down_blocks": list(unet.config.block_out_channels), "mid_block": [unet.config.block_out_channels[-1]],
              "up_blocks": list(reversed(unet.config.block_out_channels))}
    cross_attention = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    for index, name in enumerate(cross_attention):  # diffusers numbers them 1, 3, 5, … in this order
        block, _, rest = name.partition(".")
        hidden = widths[block][0 if block == "mid_block" else int(rest.split(".")[0])]
        for projection in ("to_k_ip", "to_v_ip"):
            tensors[f"ip_adapter.{2 * index + 1}.{projection}.weight"] = torch.randn(hidden, width) * 0.1
    save_safetensors({key: value.contiguous() for key, value in tensors.items()}, folder / IP_ADAPTER_WEIGHTS)


def _original_resampler_keys(state: dict[str, Any]) -> dict[str, Any]:
    """diffusers' resampler names back to the original IP-Adapter ones (the inverse of diffusers' converter)."""
    import torch

    renames = {"ln0": "0.norm1", "ln1": "0.norm2", "attn.to_q": "0.to_q", "attn.to_out.0": "0.to_out",
               "ff.0": "1.0", "ff.1.net.0.proj": "1.1", "ff.1.net.2": "1.3"}
    original = {}
    for key, value in state.items():
        if ".attn.to_v." in key:
            continue
        if ".attn.to_k." in key:
            original[key.replace("attn.to_k", "0.to_kv")] = torch.cat([value, state[key.replace("to_k", "to_v")]])
            continue
        for old, new in renames.items():
            key = key.replace(f".{old}.", f".{new}.")
        original[key] = value
    return original


LCM_LORA_FILE = "pytorch_lora_weights.safetensors"  # as latent-consistency/lcm-lora-sdv1-5 names it


def _build_lcm_lora(folder: Path) -> None:
    """A LoRA for the tiny SD 1.5 UNet in LCM-LoRA's file layout (diffusers keys, same file name), random weights:
    it exercises the few-step preview path (LCM sampler + LoRA) without learning anything."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4,
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **UNET_BLOCKS)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (a no-op LoRA); give it weights
                param.normal_(std=0.05)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, weight_name=LCM_LORA_FILE)


# ---------------------------------------------------------------------------------------------- CLIP, BLIP
def _build_clip(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": 32, "patch_size": 4}
    config = CLIPConfig(text_config=_clip_text_config().to_dict(), vision_config=vision, projection_dim=32)
    CLIPModel(config).save_pretrained(folder)
    build_clip_tokenizer(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=CLIPTokenizer.from_pretrained(folder)).save_pretrained(
        folder)
    build_clip_tokenizer(folder)  # the processor's save rewrote the tokenizer files; restore the plain ones


BLIP_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BLIP_WORDS_TEXT = """
a an the of in on at with and or to from by for is are was be it its this that there here one two three some
many few all no not very more most other another same new old big small large little long short tall high low
young good bad black white red green blue yellow orange pink purple brown gray grey gold silver dark light bright
man woman boy girl child children people person men women baby face faces eye eyes hair hand hands head arm arms
leg legs body smile mouth nose ear ears cat cats dog dogs bird birds horse fish animal animals flower flowers tree
trees grass sky cloud clouds sun moon star stars water sea ocean river lake beach sand snow rain mountain mountains
hill field forest park road street city town building buildings house room wall window door floor table chair
bed sofa couch desk car cars bus train bike boat plane truck picture photo image drawing painting sketch
illustration cartoon anime character manga art style background foreground scene view close up top side front
back left right middle center standing sitting walking running looking holding wearing playing eating smiling
dress shirt hat glasses jacket coat skirt uniform school kimono sword book cup food cake plate phone bag
night day morning evening sunset sunrise summer winter spring autumn fall inside outside near next over under
behind above below together alone has have his her their him them he she they
"""
BLIP_WORDPIECES = ["##s", "##es", "##ed", "##ing", "##er", "##ly", "##y", "##n", "##d", "##t"]
BLIP_PUNCTUATION = list(".,!?'\"-:;()/&")


def blip_vocab() -> list[str]:
    """A small BERT WordPiece vocabulary: specials, letters and digits (so nothing is [UNK] for plain English
    text), punctuation, a few hundred common words and suffix pieces, and the BLIP decoder's [DEC] start token."""
    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    pieces = [*letters, *(str(digit) for digit in range(10)), *BLIP_PUNCTUATION, *BLIP_WORDS_TEXT.split()]
    continuations = [*BLIP_WORDPIECES, *(f"##{char}" for char in letters + [str(d) for d in range(10)])]
    return list(dict.fromkeys([*BLIP_SPECIAL_TOKENS, *pieces, *continuations, "[DEC]"]))


def _build_blip(folder: Path) -> None:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab = blip_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    ids = {token: index for index, token in enumerate(vocab)}
    text = {"vocab_size": len(vocab), "hidden_size": 32, "encoder_hidden_size": 32, "intermediate_size": 37,
            "projection_dim": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64,
            "bos_token_id": ids["[DEC]"], "eos_token_id": ids["[SEP]"], "sep_token_id": ids["[SEP]"],
            "pad_token_id": ids["[PAD]"]}
    vision = {"hidden_size": 32, "intermediate_size": 37, "projection_dim": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "image_size": 32, "patch_size": 4}
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=32, image_text_hidden_size=32)
    model = BlipForConditionalGeneration(config)
    model.generation_config.max_length = 20
    model.save_pretrained(folder)
    tokenizer = BertTokenizer(vocab=ids, bos_token="[DEC]", model_max_length=64)
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


# ---------------------------------------------------------------------------------------------- Inception
def _tiny_inception_class() -> type:
    import torch
    import torch.nn.functional as F
    from torch import nn

    def conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.ReLU())

    class MixedBlock(nn.Module):
        """Inception's mixed block in small: 1x1, 3x3, double 3x3 and pooled branches, concatenated."""

        def __init__(self, cin: int, width: int) -> None:
            super().__init__()
            self.branch1 = conv(cin, width, 1)
            self.branch3 = nn.Sequential(conv(cin, width, 1), conv(width, width, 3))
            self.branch3dbl = nn.Sequential(conv(cin, width, 1), conv(width, width, 3), conv(width, width, 3))
            self.branch_pool = nn.Sequential(nn.AvgPool2d(3, 1, 1), conv(cin, width, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.branch1(x), self.branch3(x), self.branch3dbl(x), self.branch_pool(x)], dim=1)

    class TinyInception(nn.Module):
        """Inception-shaped in its outputs: Bx3xHxW images in [0, 1] (any size; uint8 is scaled) ->
        {"pool": Bx`features` non-negative pool features, "logits": Bx`classes`}, like the FID Inception's
        2048-d pool3 features and 1008 logits. Random weights: the numbers mean nothing."""

        def __init__(self, width: int = 16, input_size: int = 64, features: int = 2048, classes: int = 1008):
            super().__init__()
            self.input_size, self.num_features, self.num_classes = input_size, features, classes
            self.stem = nn.Sequential(conv(3, width, 3, 2), conv(width, 2 * width, 3), nn.MaxPool2d(3, 2, 1))
            self.mixed = nn.Sequential(MixedBlock(2 * width, width), MixedBlock(4 * width, width))
            self.expand = conv(4 * width, features, 1)
            self.fc = nn.Linear(features, classes)

        def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
            if images.dtype == torch.uint8:
                images = images.float() / 255.0
            x = images.to(self.fc.weight.dtype)
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
            x = self.expand(self.mixed(self.stem(x * 2.0 - 1.0)))
            pool = F.adaptive_avg_pool2d(x, 1).flatten(1)
            return {"pool": pool, "logits": self.fc(pool)}

    return TinyInception


INCEPTION_CONFIG = {"architecture": INCEPTION_ARCHITECTURE, "width": 16, "input_size": 64, "features": 2048,
                    "classes": 1008}


def make_tiny_inception(config: dict[str, Any], state_dict: dict[str, Any] | None = None) -> Any:
    """The `tiny_inception` architecture for loader's torch_module family (config values may be strings)."""
    keys = ("width", "input_size", "features", "classes")
    module = _tiny_inception_class()(**{key: int(config[key]) for key in keys if key in config})
    if state_dict is not None:
        module.load_state_dict(state_dict, strict=True)
    return module


def _build_inception(folder: Path) -> None:
    from .safeweights import save_safetensors

    module = make_tiny_inception(INCEPTION_CONFIG)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(INCEPTION_CONFIG, indent=2) + "\n", encoding="utf-8")
    save_safetensors(module.state_dict(), folder / "model.safetensors", {"architecture": INCEPTION_ARCHITECTURE})


# ---------------------------------------------------------------------------------------------- registry
TINY_MODELS: dict[str, TinySpec] = {}  # name -> spec: the core's below, each method's from its package


def register_tiny(spec: TinySpec) -> TinySpec:
    """Make "tiny:NAME" loadable. Registering the same name again replaces it (a re-import), but a name that
    another model already uses (a different family, label or version) is refused: pick another name."""
    existing = TINY_MODELS.get(spec.name)
    if existing is not None and (existing.family, existing.label, existing.version) != (
            spec.family, spec.label, spec.version):
        raise ValueError(f"The tiny model name {spec.name!r} is already taken by {existing.label!r}.")
    TINY_MODELS[spec.name] = spec
    return spec


def all_tiny_models() -> dict[str, TinySpec]:
    """Every tiny model, the methods' included (imports the method packages once)."""
    discover_methods()
    return dict(TINY_MODELS)


loader.register_architecture(INCEPTION_ARCHITECTURE, make_tiny_inception)
register_tiny(TinySpec("sd15", "diffusers_pipeline", "Stable Diffusion 1.5", 2, _build_sd15))
register_tiny(TinySpec("sdxl", "diffusers_pipeline", "Stable Diffusion XL", 1, _build_sdxl))
register_tiny(TinySpec("controlnet", "diffusers_model", "ControlNet for SD 1.5", 1, _build_controlnet,
                       {"class_name": "ControlNetModel"}))
register_tiny(TinySpec("clip", "transformers", "CLIP", 1, _build_clip, {"class_name": "CLIPModel"}))
register_tiny(TinySpec("blip", "transformers", "BLIP captioning", 1, _build_blip,
                       {"class_name": "BlipForConditionalGeneration"}))
register_tiny(TinySpec("inception", "torch_module", "FID Inception v3", 1, _build_inception))
register_tiny(TinySpec("lcm_lora", "state_dict", "LCM-LoRA for SD 1.5", 1, _build_lcm_lora,
                       {"filename": LCM_LORA_FILE}))
register_tiny(TinySpec("ip_adapter", "state_dict", "IP-Adapter plus-face for SD 1.5", 1, _build_ip_adapter,
                       {"filename": IP_ADAPTER_WEIGHTS}))

_BUILD_LOCK = threading.Lock()
STALE_TEMP_SECONDS = 3600


def spec_for(name: str) -> TinySpec:
    if name not in TINY_MODELS:
        discover_methods()  # a method's tiny model, its package not imported yet
    if name not in TINY_MODELS:
        raise ValueError(f"Unknown tiny model {name!r}; known tiny models: {', '.join(TINY_MODELS)}"
                         f"{discovery_note()}")
    return TINY_MODELS[name]


def folder_for(name: str) -> Path:
    spec = spec_for(name)
    return settings.cache_dir() / "tiny" / f"{spec.name}-v{spec.version}"


def build(name: str) -> Path:
    """Build tiny model `name` once (into a temporary sibling folder, then renamed) and return its folder."""
    target = folder_for(name)
    if target.is_dir():
        return target
    with _BUILD_LOCK:
        if target.is_dir():
            return target
        import torch

        from .jobs import atomic_folder

        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_folders(target)
        with atomic_folder(target) as tmp, torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # same weights every build; the caller's RNG is untouched
            spec_for(name).builder(tmp)
    return target


def _remove_stale_temp_folders(target: Path) -> None:
    """Temporary folders left by a killed build (a live build in another process is younger than an hour)."""
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            if time.time() - leftover.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def load_tiny(name: str) -> Any:
    spec = spec_for(name)
    return loader.load_model(spec.family, f"{loader.TINY_PREFIX}{name}", **spec.options)


def dropdown_choice(name: str) -> tuple[str, str]:
    """(label, value) for a model dropdown; the label says plainly that the output is noise."""
    spec = spec_for(name)
    return f"{spec.label} — {TINY_LABEL}, output is noise", f"{loader.TINY_PREFIX}{name}"
