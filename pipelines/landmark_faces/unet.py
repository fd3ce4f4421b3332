"""The seed's landmark-conditioned pixel-space U-Net (seed 003, §4.2), with a configurable width.

Layout as the seed draws it (widths for `width` = 64, the seed's): DoubleConv 64 → Down 128 → Attention → Down
256 → Attention → Down 256 → bottleneck DoubleConv 512, 512, 256 → Up 128 → Attention → Up 64 → Attention → Up 64
→ 1×1 conv to 3 channels; GELU in the DoubleConvs; skip connections; a sinusoidal time embedding added at every
Down/Up. The blocks follow the public code the seed's figures match (dome272/Diffusion-Models-pytorch:
DoubleConv with GroupNorm(1) and an optional residual, Down = max-pool + 2 DoubleConvs, Up = bilinear ×2 + skip
concatenation + 2 DoubleConvs, Attention = multi-head self-attention with a LayerNorm and a feed-forward).

Conditioning (§4.2.7): the landmark dot mask goes through a conv to `width` channels and the caption embedding,
projected to the same width, is ADDED to it; that condition map enters at the input (concatenated) and, resized
and projected by a 1×1 conv, is added at every Down and Up stage. The caption embedding here is the model's own
learned tag embedding (a vocabulary of tags, mean of the present tags' vectors; a learned "no tags" vector for
classifier-free guidance), 512-d like the seed's OpenCLIP text vector, so a shipped model gives the same output on
every machine with no text encoder to download. Hand-written because no library ships this network.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.core.userjson import parse_json

ARCHITECTURE = "landmark_unet"
TEXT_DIM = 512


@dataclass(frozen=True)
class UNetConfig:
    width: int = 64  # the seed's first DoubleConv; the other widths scale with it
    image_size: int = 64
    tags: tuple[str, ...] = ()  # the tag vocabulary the embedding table is indexed by
    time_dim: int = 256
    heads: int = 4
    attention_max_size: int = 0  # attention only on feature maps of at most this side (0: every level, the seed's)

    def to_metadata(self) -> dict[str, str]:
        return {"architecture": ARCHITECTURE, "unet_config": json.dumps(asdict(self))}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> UNetConfig:
        raw = metadata.get("unet_config")
        values = parse_json(raw, "The model file's settings") if isinstance(raw, str) else dict(raw or {})
        values["tags"] = tuple(values.get("tags", ()))
        return cls(**values)


class DoubleConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None,
                 residual: bool = False) -> None:
        super().__init__()
        mid = mid_channels or out_channels
        self.residual = residual
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False), nn.GroupNorm(1, mid), nn.GELU(),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False), nn.GroupNorm(1, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.block(x)) if self.residual else self.block(x)


class Down(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, time_dim: int, cond_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, in_channels, residual=True),
                                   DoubleConv(in_channels, out_channels))
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, out_channels))
        self.cond = nn.Conv2d(cond_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        return x + self.time(t)[:, :, None, None] + self.cond(_resize(cond, x))


class Up(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, time_dim: int, cond_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(DoubleConv(in_channels, in_channels, residual=True),
                                   DoubleConv(in_channels, out_channels, in_channels // 2))
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, out_channels))
        self.cond = nn.Conv2d(cond_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        x = self.convs(torch.cat([skip, x], dim=1))
        return x + self.time(t)[:, :, None, None] + self.cond(_resize(cond, x))


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.feed_forward = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, channels), nn.GELU(),
                                          nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        normed = self.norm(tokens)
        tokens = tokens + self.attention(normed, normed, normed, need_weights=False)[0]
        tokens = tokens + self.feed_forward(tokens)
        return tokens.transpose(1, 2).reshape(b, c, h, w)


def _resize(cond: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if cond.shape[-2:] == like.shape[-2:]:
        return cond
    return F.adaptive_avg_pool2d(cond, like.shape[-2:])  # a dot must not vanish between pixels when shrunk


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class LandmarkUNet(nn.Module):
    """eps = model(noisy RGB in [-1, 1], timesteps, dot mask (B×1×S×S), tag multi-hot (B×V) or None)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c, td = config.width, config.time_dim
        self.tag_embedding = nn.Parameter(torch.randn(max(1, len(config.tags)), TEXT_DIM) * 0.02)
        self.null_text = nn.Parameter(torch.zeros(TEXT_DIM))
        self.text_projection = nn.Linear(TEXT_DIM, c)
        self.landmark_conv = nn.Conv2d(1, c, 3, padding=1)
        self.inc = DoubleConv(3 + c, c)
        # At 64 px the seed's attention on the 32×32 maps costs more than the rest of the network on a CPU; a
        # config may keep it to the small maps (attention_max_size), where it still relates the two eyes.
        half, quarter = config.image_size // 2, config.image_size // 4
        self.down1, self.att1 = Down(c, 2 * c, td, c), self._attention(2 * c, half)
        self.down2, self.att2 = Down(2 * c, 4 * c, td, c), self._attention(4 * c, quarter)
        self.down3 = Down(4 * c, 4 * c, td, c)
        self.bottleneck = nn.Sequential(DoubleConv(4 * c, 8 * c), DoubleConv(8 * c, 8 * c), DoubleConv(8 * c, 4 * c))
        self.up1, self.att3 = Up(8 * c, 2 * c, td, c), self._attention(2 * c, quarter)
        self.up2, self.att4 = Up(4 * c, c, td, c), self._attention(c, half)
        self.up3 = Up(2 * c, c, td, c)
        self.out = nn.Conv2d(c, 3, 1)

    def _attention(self, channels: int, side: int) -> nn.Module:
        limit = self.config.attention_max_size
        return Attention(channels, self.config.heads) if not limit or side <= limit else nn.Identity()

    def text_vector(self, tag_hot: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The caption's 512-d vector: the mean of its tags' embeddings; the learned null vector when it has none."""
        null = self.null_text.expand(batch, -1)
        if tag_hot is None:
            return null
        tag_hot = tag_hot.to(self.tag_embedding.dtype)
        count = tag_hot.sum(dim=1, keepdim=True)
        mean = tag_hot @ self.tag_embedding / count.clamp(min=1.0)
        return torch.where(count > 0, mean, null)

    def forward(self, x: torch.Tensor, t: torch.Tensor, landmarks: torch.Tensor,
                tag_hot: torch.Tensor | None = None) -> torch.Tensor:
        temb = timestep_embedding(t.reshape(-1).expand(x.shape[0]), self.config.time_dim).to(x.dtype)
        text = self.text_projection(self.text_vector(tag_hot, x.shape[0]).to(x.dtype))
        cond = self.landmark_conv(landmarks.to(x.dtype)) + text[:, :, None, None]  # the seed's addition
        x1 = self.inc(torch.cat([x, cond], dim=1))
        x2 = self.att1(self.down1(x1, temb, cond))
        x3 = self.att2(self.down2(x2, temb, cond))
        x4 = self.bottleneck(self.down3(x3, temb, cond))
        y = self.att3(self.up1(x4, x3, temb, cond))
        y = self.att4(self.up2(y, x2, temb, cond))
        y = self.up3(y, x1, temb, cond)
        return self.out(y)

    def tag_vector(self, tags: Any) -> torch.Tensor:
        """Multi-hot (V,) for a list of tags; tags outside the vocabulary are ignored (see `unknown_tags`)."""
        hot = torch.zeros(max(1, len(self.config.tags)))
        index = {tag: i for i, tag in enumerate(self.config.tags)}
        for tag in tags:
            if tag in index:
                hot[index[tag]] = 1.0
        return hot


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(config: UNetConfig, seed: int = 0) -> LandmarkUNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LandmarkUNet(config)


def save_unet(model: LandmarkUNet, path: str | Path, half: bool = False, **extra: Any) -> Path:
    """Safetensors with the architecture and config in its metadata (what the core loader reads); `half` stores
    fp16 (to fit a size limit), loaded back as fp32."""
    from pipelines.core.safeweights import save_safetensors

    dtype = torch.float16 if half else torch.float32
    tensors = {key: value.detach().to("cpu", dtype) for key, value in model.state_dict().items()}
    metadata = {**model.config.to_metadata(), **{key: str(value) for key, value in extra.items()}}
    return save_safetensors(tensors, path, metadata)


def build_landmark_unet(config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> LandmarkUNet:
    """Loader architecture `landmark_unet`: the network of the file's config, weights loaded strictly (fp32)."""
    model = LandmarkUNet(UNetConfig.from_metadata(config))
    model.load_state_dict({key: value.float() for key, value in state_dict.items()}, strict=True)
    model.train_config = config.get("train_config")  # the noise schedule sampling must match
    model.trained_on = config.get("trained_on", "")
    return model.eval()


TINY_CONFIG = UNetConfig(width=8, image_size=32, tags=("smile", "open_mouth"), time_dim=32, heads=2)


def save_tiny_unet(folder: Path) -> None:
    """"tiny:landmark_unet": the real architecture at width 8 with seeded random weights (output is noise)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_unet(build(TINY_CONFIG), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architecture": ARCHITECTURE, "test_model": "true"}))
