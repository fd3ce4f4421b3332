"""Single-file (A1111 / original Stable Diffusion) checkpoints of SD-1.5-family pipelines.

Reading one is diffusers' `from_single_file` (see models.py). Writing one has no function in the diffusers
package (only a script in its repository), and A1111/ComfyUI users need it to take home a fully fine-tuned model,
so the key mapping is written here. It is derived from the original LDM module layout and is generic over the
number of blocks and layers, so the tiny test UNet converts the same way as a real one; the test round-trips
the tiny pipeline through diffusers' own single-file reader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."

# Inside a ResNet block: diffusers name -> LDM name.
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_inside(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_key(key: str, layers_per_block: int) -> str:
    """A diffusers UNet2DConditionModel key in LDM's input_blocks/middle_block/output_blocks numbering."""
    for old, new in _UNET_TOP.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    parts = key.split(".")
    per_level_down = layers_per_block + 1  # each level: its layers, then a downsampler
    if parts[0] == "down_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":  # down_blocks.i.downsamplers.0.conv.* -> input_blocks.N.0.op.*
            return f"input_blocks.{1 + level * per_level_down + layers_per_block}.0.op." + ".".join(parts[5:])
        index, rest = int(parts[3]), ".".join(parts[4:])
        block = 1 + level * per_level_down + index
        if kind == "resnets":
            return f"input_blocks.{block}.0." + _rename_inside(rest, _UNET_RESNET)
        return f"input_blocks.{block}.1." + rest
    if parts[0] == "mid_block":
        kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":
            return f"middle_block.{2 * index}." + _rename_inside(rest, _UNET_RESNET)
        return "middle_block.1." + rest
    if parts[0] == "up_blocks":
        raise ValueError("up blocks need the block's attention layout; use unet_state_dict_to_ldm")
    return key


def _up_block_key(key: str, layers_per_block: int, has_attention: dict[int, bool]) -> str:
    parts = key.split(".")
    level, kind = int(parts[1]), parts[2]
    first = level * (layers_per_block + 1)
    if kind == "upsamplers":  # after the resnet (and attention, when the level has one) of the last layer
        slot = 2 if has_attention[level] else 1
        return f"output_blocks.{first + layers_per_block}.{slot}." + ".".join(parts[4:])
    index, rest = int(parts[3]), ".".join(parts[4:])
    if kind == "resnets":
        return f"output_blocks.{first + index}.0." + _rename_inside(rest, _UNET_RESNET)
    return f"output_blocks.{first + index}.1." + rest


def unet_state_dict_to_ldm(state_dict: dict[str, Any], config: Any) -> dict[str, Any]:
    layers = int(config["layers_per_block"])
    has_attention = {level: "CrossAttn" in name for level, name in enumerate(config["up_block_types"])}
    converted = {}
    for key, value in state_dict.items():
        new = _up_block_key(key, layers, has_attention) if key.startswith("up_blocks.") else unet_key(key, layers)
        converted[UNET_PREFIX + new] = value
    return converted


def vae_key(key: str, levels: int) -> str:
    parts = key.split(".")
    if len(parts) < 2 or parts[0] not in ("encoder", "decoder"):
        return key  # quant_conv, post_quant_conv
    side, rest = parts[0], parts[1:]
    if rest[0] == "conv_norm_out":
        return f"{side}.norm_out." + ".".join(rest[1:])
    if rest[0] in ("down_blocks", "up_blocks"):
        level = int(rest[1]) if side == "encoder" else levels - 1 - int(rest[1])
        group = "down" if side == "encoder" else "up"
        if rest[2] in ("downsamplers", "upsamplers"):
            sampler = "downsample" if side == "encoder" else "upsample"
            return f"{side}.{group}.{level}.{sampler}." + ".".join(rest[4:])
        inner = ".".join(rest[4:]).replace("conv_shortcut", "nin_shortcut")
        return f"{side}.{group}.{level}.block.{rest[3]}." + inner
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            inner = ".".join(rest[3:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.mid.block_{int(rest[2]) + 1}." + inner
        return f"{side}.mid.attn_1." + _rename_inside(".".join(rest[3:]), _VAE_ATTENTION)
    return key


def vae_state_dict_to_ldm(state_dict: dict[str, Any], config: Any) -> dict[str, Any]:
    levels = len(config["block_out_channels"])
    converted = {}
    for key, value in state_dict.items():
        new = vae_key(key, levels)
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)  # LDM's attention uses 1x1 convolutions
        converted[VAE_PREFIX + new] = value
    return converted


def text_encoder_state_dict_to_ldm(state_dict: dict[str, Any]) -> dict[str, Any]:
    """CLIP-L keys as the original checkpoints store them (transformers 5 drops the `text_model.` level)."""
    return {TEXT_PREFIX + key.removeprefix("text_model."): value for key, value in state_dict.items()
            if not key.endswith("position_ids")}


def pipeline_to_ldm(pipe: Any) -> dict[str, Any]:
    """The whole SD-1.5-family pipeline as one original-layout state dict."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        raise ValueError("Saving SDXL pipelines as a single file is not supported.")
    return {**unet_state_dict_to_ldm(pipe.unet.state_dict(), pipe.unet.config),
            **vae_state_dict_to_ldm(pipe.vae.state_dict(), pipe.vae.config),
            **text_encoder_state_dict_to_ldm(pipe.text_encoder.state_dict())}


def save_single_file(pipe: Any, path: str | os.PathLike, *, half: bool = False,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write `pipe` as an A1111/ComfyUI-loadable .safetensors checkpoint (atomically)."""
    import torch

    from pipelines.core.safeweights import save_safetensors

    state_dict = pipeline_to_ldm(pipe)
    if half:
        state_dict = {key: value.to(torch.float16) if value.is_floating_point() else value
                      for key, value in state_dict.items()}
    return save_safetensors({key: value.detach().cpu() for key, value in state_dict.items()}, path,
                            {"format": "pt", **(metadata or {})})
