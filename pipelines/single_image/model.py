"""The multi-scale diffusion model of seed 004 (building on SinDDM): scales, forward process, the two backbones.

Written by hand because it is the method itself: no library has SinDDM's blur-and-noise forward process or a
denoiser shared across scales. What libraries do have is used: diffusers' DDPMScheduler supplies the cosine
("squaredcos_cap_v2") noise schedule, its `get_timestep_embedding` the sinusoidal timestep features, its `Attention`
the U-Net's cross-attention, and `diffusers.training_utils.EMAModel` the weight average (train.py).

Forward process at scale n (coarsest n = 0), with x_n the image at that scale and x̃_n = up(x_{n-1}) its blurred
version (the coarser scale bicubically upsampled), t in 0 … T_n − 1:

    x_{n,t} = sqrt(ᾱ_t) · (γ_t x̃_n + (1 − γ_t) x_n) + sqrt(1 − ᾱ_t) · ε,   γ_t = γ_max · (t + 1) / T_n

so the clean image slides toward its blurred version as the noise grows (SinDDM's eq. 1 of the seed); at the
coarsest scale γ = 0 and T_0 = 100 (plain DDPM from pure noise). The network predicts ε there, and at the finer
scales ε or their missing detail (FINE_PREDICTIONS). From a noise prediction, because x̃_n is known
when sampling (it is the coarser result, upsampled), the predicted blend gives the clean image exactly:
x̂_n = x̃_n + (m̂ − x̃_n) / (1 − γ_t). That division multiplies the network's error by 1 / (1 − γ_t); with SinDDM's
γ → 1 it grew up to T_n-fold and a briefly trained network's samples fell apart (measured: reconstructions at 8 dB),
so γ stops at γ_max = 0.5 (error at most doubled). Sampling a finer scale starts from x̃_n noised to T_n, i.e. it
takes the blend at T_n to be x̃_n; the half of the missing detail this ignores is below the noise there, because
T_n is the first step whose noise level covers the detail the upsampling lost (RMS of x_n − x̃_n), as SinDDM sets
its per-scale noise — or a multiple of it (start_steps' `cover`; the recipe's is 3, TrainConfig.fine_noise).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.core.safeweights import load_safetensors, save_safetensors
from pipelines.core.userjson import parse_json

ARCHITECTURE = "single_image_multiscale_diffusion"
SCALE_FACTOR = 1.411
COARSEST_SIDE = 25
CPU_MAX_AREA = 128 * 128  # training image area cap on CPU (a larger cap is allowed on a GPU)
GPU_MAX_AREA = 256 * 256
DIFFUSION_STEPS = 100
MIN_START_STEP = 5
BLEND_MAX = 0.5  # γ_max: see the module docstring
BACKBONES = ("fcn", "unet")
# What the network outputs at the finer scales (the coarsest always predicts the noise ε):
# "epsilon" — the noise, as SinDDM and the first recipe; "detail" — the missing detail x_n − x̃_n, so that
# x̂_n = x̃_n + output. Issue 25 measured why: at a finer scale every step is a low-noise one (σ ≤ 0.08), where a
# noise estimate must be nearly exact to give a usable clean image (its error is multiplied by σ_t/sqrt(ᾱ_t) and by
# 1/(1 − γ_t)); trained only on the finer scales of chelsea for 3,000 steps, ε-prediction's one-scale results were
# 0.8–5.8 dB *below* the plain upsampled input (deterministic sampling), the detail's 1.5–21 dB above it.
FINE_PREDICTIONS = ("epsilon", "detail")
DILATIONS = (2, 2, 2, 2, 2)  # of the FCN's five blocks' second convolutions: SinDDM's 35 px receptive field
# The training recipe's (issue 25): 53 px, so at the coarsest scale (~26×40) every pixel sees the whole image and
# its borders, which tell it where it is; with 35 px the coarsest scale never drew the cup of the coffee photo.
WIDE_DILATIONS = (1, 2, 4, 8, 4)


def fcn_reach(dilations: tuple[int, ...]) -> int:
    """The FCN's receptive field in px: head 3×3, per block a 3×3 plus a 3×3 dilated by d, tail 3×3."""
    return 3 + sum(2 + 2 * d for d in dilations) + 2


# ---------------------------------------------------------------------------------------------- scales
def training_size(height: int, width: int, max_area: int = CPU_MAX_AREA) -> tuple[int, int]:
    """(h, w) with the aspect kept and the area at most `max_area` (never upscaled)."""
    factor = min(1.0, math.sqrt(max_area / (height * width)))
    return max(1, round(height * factor)), max(1, round(width * factor))


def scale_sizes(height: int, width: int, factor: float = SCALE_FACTOR,
                coarsest_side: int = COARSEST_SIDE) -> list[tuple[int, int]]:
    """Sizes from coarsest to finest: divide by `factor` per scale until the short side is about `coarsest_side`."""
    downsamplings = max(0, round(math.log(min(height, width) / coarsest_side) / math.log(factor)))
    return [(max(1, round(height / factor ** k)), max(1, round(width / factor ** k)))
            for k in range(downsamplings, -1, -1)]


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize, antialiased when shrinking (the pyramid's and the upsampling's one operator)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=shrinking)


def pyramid(image: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """The image at every scale (1×3×h×w in [-1, 1]), each resized from the finest."""
    return [resize(image, size).clamp(-1, 1) for size in sizes]


def blurred(levels: list[torch.Tensor], scale: int) -> torch.Tensor:
    """x̃_n: the coarser level upsampled to this scale (zeros at the coarsest, where γ is 0 anyway)."""
    if scale == 0:
        return torch.zeros_like(levels[0])
    return resize(levels[scale - 1], tuple(levels[scale].shape[-2:]))


# ---------------------------------------------------------------------------------------------- schedule
def alphas_cumprod(steps: int = DIFFUSION_STEPS) -> torch.Tensor:
    """ᾱ_t of the cosine schedule (Nichol & Dhariwal), from diffusers' scheduler rather than re-derived."""
    return _alphas_cumprod(int(steps)).clone()  # a copy: the cached one is never handed out


@functools.lru_cache(maxsize=4)
def _alphas_cumprod(steps: int) -> torch.Tensor:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=steps, beta_schedule="squaredcos_cap_v2",
                              prediction_type="epsilon")
    return scheduler.alphas_cumprod.to(torch.float32).clone()


def start_steps(levels: list[torch.Tensor], alphas: torch.Tensor, cover: float = 1.0) -> list[int]:
    """T_n per scale: all steps at the coarsest; at a finer scale, the first step whose noise std covers
    `cover` times the detail that upsampling the coarser level loses (SinDDM picks its per-scale noise the same way
    with cover 1; see TrainConfig.fine_noise for a larger one)."""
    noise_std = (1 - alphas).sqrt()
    steps = [len(alphas)]
    for scale in range(1, len(levels)):
        missing = cover * (levels[scale] - blurred(levels, scale)).pow(2).mean().sqrt().item()
        first = int(torch.searchsorted(noise_std, torch.tensor(missing)).item()) + 1
        steps.append(min(len(alphas), max(MIN_START_STEP, first)))
    return steps


def blend_weight(t: torch.Tensor, scale: int, start: int) -> torch.Tensor:
    """γ_t: how far the clean image has slid toward its blurred version at step t (0 at the coarsest scale)."""
    if scale == 0:
        return torch.zeros_like(t, dtype=torch.float32)
    return BLEND_MAX * (t.float() + 1) / start


def noised(clean: torch.Tensor, blur: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, scale: int, start: int,
           alphas: torch.Tensor) -> torch.Tensor:
    """x_{n,t} of the forward process (see the module docstring); t is one step per batch item."""
    gamma = blend_weight(t, scale, start).view(-1, 1, 1, 1)
    alpha = alphas[t].view(-1, 1, 1, 1)
    return alpha.sqrt() * (gamma * blur + (1 - gamma) * clean) + (1 - alpha).sqrt() * noise


def predicted_clean(x_t: torch.Tensor, eps: torch.Tensor, blur: torch.Tensor, t: torch.Tensor, scale: int,
                    start: int, alphas: torch.Tensor) -> torch.Tensor:
    """x̂_n from a noise prediction: undo the noise, then the blend (x̃_n is known)."""
    gamma = blend_weight(t, scale, start).view(-1, 1, 1, 1)
    alpha = alphas[t].view(-1, 1, 1, 1)
    mixture = (x_t - (1 - alpha).sqrt() * eps) / alpha.sqrt()
    return blur + (mixture - blur) / (1 - gamma)


def predicts_noise(scale: int, fine_prediction: str) -> bool:
    """Whether the network's output at this scale is a noise estimate (else the missing detail)."""
    return scale == 0 or fine_prediction == "epsilon"


def clean_estimate(output: torch.Tensor, x_t: torch.Tensor, blur: torch.Tensor, t: torch.Tensor, scale: int,
                   start: int, alphas: torch.Tensor, fine_prediction: str) -> torch.Tensor:
    """x̂_n from the network's output: a noise estimate (the coarsest scale, or fine_prediction "epsilon"), or at a
    finer scale with "detail" the missing detail itself, added to the known x̃_n."""
    if predicts_noise(scale, fine_prediction):
        return predicted_clean(x_t, output, blur, t, scale, start, alphas)
    return blur + output


def implied_noise(clean: torch.Tensor, x_t: torch.Tensor, blur: torch.Tensor, t: torch.Tensor, scale: int,
                  start: int, alphas: torch.Tensor) -> torch.Tensor:
    """The ε for which the forward process maps the clean estimate to x_t (inverts `noised` for the noise)."""
    gamma = blend_weight(t, scale, start).view(-1, 1, 1, 1)
    alpha = alphas[t].view(-1, 1, 1, 1)
    return (x_t - alpha.sqrt() * (gamma * blur + (1 - gamma) * clean)) / (1 - alpha).sqrt()


# ---------------------------------------------------------------------------------------------- backbones
@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network and sample from it; stored in the safetensors metadata."""

    backbone: str = "fcn"
    width: int = 64
    sizes: tuple[tuple[int, int], ...] = ((25, 25),)
    start_steps: tuple[int, ...] = (DIFFUSION_STEPS,)
    text_dim: int = 0  # width of the text tokens the U-Net attends to (0: the FCN, no text)
    text_tokens: int = 0
    dilations: tuple[int, ...] = DILATIONS  # the FCN's (see fcn_reach)
    fine_prediction: str = "epsilon"  # see FINE_PREDICTIONS; model files written before it existed predict ε
    diffusion_steps: int = DIFFUSION_STEPS
    extra: dict[str, str] = field(default_factory=dict)  # what it was trained on, prompts, encoders (for records)

    @property
    def scales(self) -> int:
        return len(self.sizes)

    def to_metadata(self) -> dict[str, str]:
        import json

        data = asdict(self)
        return {"architecture": ARCHITECTURE, "model_config": json.dumps(data)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> ModelConfig:

        data = metadata["model_config"]
        data = parse_json(data, "The model file's settings") if isinstance(data, str) else data
        data["sizes"] = tuple(tuple(size) for size in data["sizes"])
        data["start_steps"] = tuple(data["start_steps"])
        data["dilations"] = tuple(data.get("dilations", DILATIONS))
        data.setdefault("fine_prediction", "epsilon")
        return cls(**data)


class Conditioning(nn.Module):
    """Timestep (sinusoidal, diffusers' function) plus a learned scale embedding → one vector per sample."""

    def __init__(self, width: int, scales: int) -> None:
        super().__init__()
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, 4 * width))
        self.scale_embedding = nn.Embedding(scales, 4 * width)

    def forward(self, t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        from diffusers.models.embeddings import get_timestep_embedding

        features = get_timestep_embedding(t, self.width, flip_sin_to_cos=True, downscale_freq_shift=0)
        return F.silu(self.time_mlp(features.to(self.time_mlp[0].weight.dtype)) + self.scale_embedding(scale))


class ConditionedBlock(nn.Module):
    """Two 3×3 convolutions (the second dilated by `dilation`) with the condition added between them; residual.

    No GroupNorm: its statistics span the whole image, which would give every pixel a global view and defeat the
    small receptive field that makes a single-image model learn patches instead of the image."""

    def __init__(self, channels_in: int, channels: int, condition_dim: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, padding=1)
        self.condition = nn.Linear(condition_dim, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable without normalisation
        self.skip = nn.Conv2d(channels_in, channels, 1) if channels_in != channels else nn.Identity()

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(x))
        h = h + self.condition(condition)[:, :, None, None].to(h.dtype)
        return self.skip(x) + self.conv2(F.silu(h))


def output_head(width: int) -> nn.Module:
    return nn.Sequential(nn.SiLU(), nn.Conv2d(width, 3, 3, padding=1))


def detail_head(width: int, fine_prediction: str) -> nn.Module | None:
    """A second last layer for the finer scales' missing detail (fine_prediction "detail"); `tail` keeps predicting
    the noise. Two heads because the two outputs mean different things: on the tests' photo the coarsest scale's
    layouts scored patch distance 2.96–3.09 with one shared head, 2.73–2.89 with two (noise prediction throughout:
    2.18–2.38). A new module rather than a wider `tail`, so the old files' weights load unchanged."""
    return output_head(width) if fine_prediction == "detail" else None


def apply_heads(tail: nn.Module, detail_tail: nn.Module | None, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    finer = scale > 0
    if detail_tail is None or not bool(finer.any()):
        return tail(h)
    if bool(finer.all()):
        return detail_tail(h)
    return torch.where(finer.view(-1, 1, 1, 1), detail_tail(h), tail(h))


class FullyConvDenoiser(nn.Module):
    """SinDDM-style denoiser: convolutions only, receptive field fcn_reach(dilations) — 35 px with SinDDM's, 53 px
    with the recipe's — so at the finer scales it learns patch statistics rather than the whole image. No
    downsampling: every layer sees the full resolution."""

    receptive_field = fcn_reach(DILATIONS)  # the default; a model's own is fcn_reach(config.dilations)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.width
        self.conditioning = Conditioning(width, config.scales)
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList(ConditionedBlock(width, width, 4 * width, dilation=d) for d in config.dilations)
        self.tail = output_head(width)
        self.detail_tail = detail_head(width, config.fine_prediction)

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        condition = self.conditioning(t, scale)
        h = self.head(x)
        for block in self.blocks:
            h = block(h, condition)
        return apply_heads(self.tail, self.detail_tail, h, scale)


class CrossAttentionBlock(nn.Module):
    """Each pixel (query) attends to the text tokens (keys/values), diffusers' Attention with a residual. Pixels
    never attend to other pixels, so the text adds no spatial reach and the receptive field stays small."""

    def __init__(self, channels: int, text_dim: int) -> None:
        super().__init__()
        from diffusers.models.attention_processor import Attention

        heads = max(1, channels // 32)
        self.norm = nn.LayerNorm(channels)  # per pixel, so no pixel sees another's statistics
        self.attention = Attention(query_dim=channels, cross_attention_dim=text_dim, heads=heads,
                                   dim_head=channels // heads, out_bias=True)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        attended = self.attention(tokens, encoder_hidden_states=context.to(tokens.dtype))
        return x + attended.transpose(1, 2).reshape(b, c, h, w)


class ShallowTextUNet(nn.Module):
    """The seed's U-Net, kept shallow (one downsampling) so its receptive field stays near SinDDM's and it does not
    memorise the image, with cross-attention to the text tokens of the prompt P* at the bottom."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.width
        self.conditioning = Conditioning(width, config.scales)
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.down_block = ConditionedBlock(width, width, 4 * width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.middle1 = ConditionedBlock(2 * width, 2 * width, 4 * width)
        self.cross = CrossAttentionBlock(2 * width, config.text_dim)
        self.middle2 = ConditionedBlock(2 * width, 2 * width, 4 * width)
        self.up = nn.Conv2d(2 * width, width, 3, padding=1)
        self.up_block = ConditionedBlock(2 * width, width, 4 * width)
        self.tail = output_head(width)
        self.detail_tail = detail_head(width, config.fine_prediction)
        # The prompt the model was trained with, kept in the weights file so sampling needs no text encoder; an
        # untrained "no text" token stands in when the ablation trains the U-Net without a prompt.
        self.register_buffer("context", torch.zeros(1, max(1, config.text_tokens), config.text_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        condition = self.conditioning(t, scale)
        context = self.context if context is None else context
        context = context.expand(x.shape[0], -1, -1) if context.shape[0] == 1 else context
        skip = self.down_block(self.head(x), condition)
        h = self.middle1(self.down(skip), condition)
        h = self.middle2(self.cross(h, context), condition)
        h = self.up(F.interpolate(h, size=skip.shape[-2:], mode="nearest"))
        return apply_heads(self.tail, self.detail_tail, self.up_block(torch.cat([h, skip], dim=1), condition), scale)


class MultiScaleDenoiser(nn.Module):
    """One network shared across all scales, with the config it was built from (sizes, T_n, text)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.fine_prediction not in FINE_PREDICTIONS:
            raise ValueError(f"Unknown fine-scale prediction {config.fine_prediction!r}; choose one of "
                             f"{FINE_PREDICTIONS}.")
        if config.backbone not in BACKBONES:
            raise ValueError(f"Unknown backbone {config.backbone!r}; choose one of {BACKBONES}.")
        if config.backbone == "unet" and config.text_dim <= 0:
            raise ValueError("The U-Net backbone needs text_dim > 0 (the width of its text tokens).")
        self.config = config
        self.net = FullyConvDenoiser(config) if config.backbone == "fcn" else ShallowTextUNet(config)
        # The training image (uint8), kept in the weights file: variations that start at a finer scale, the
        # reconstruction and region edits need it, and a model file is then complete on its own.
        self.register_buffer("source", torch.zeros(1, 3, *config.sizes[-1], dtype=torch.uint8))

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale: torch.Tensor | int,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """The raw output: a noise estimate, or at a finer scale the missing detail (see `clean_estimate`)."""
        if isinstance(scale, int):
            scale = torch.full((x.shape[0],), scale, dtype=torch.long, device=x.device)
        return self.net(x, t, scale, context)

    @property
    def has_text(self) -> bool:
        return self.config.backbone == "unet"

    def set_source(self, image: torch.Tensor) -> None:
        """Store the training image (1×3×H×W in [-1, 1]) in the `source` buffer."""
        self.source.copy_(((image.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))

    def source_image(self) -> torch.Tensor:
        """The training image as 1×3×H×W float in [-1, 1]."""
        return self.source.float() / 127.5 - 1


# ---------------------------------------------------------------------------------------------- files
def build(config: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None) -> MultiScaleDenoiser:
    """The core loader's builder for ARCHITECTURE (`torch_module` family): config from the file's metadata."""
    model = MultiScaleDenoiser(ModelConfig.from_metadata(config))
    if state_dict is not None:
        model.load_state_dict({key: value.float() if value.is_floating_point() else value
                               for key, value in state_dict.items()})
    return model


def save_model(model: MultiScaleDenoiser, path: Any, half: bool = False, **metadata: Any) -> Any:
    """safetensors with the architecture and config in its metadata (fp16 storage when `half`, to stay small)."""
    tensors = {key: (value.half() if half and value.is_floating_point() else value).detach().cpu()
               for key, value in model.state_dict().items()}
    meta = {**model.config.to_metadata(), **{key: str(value) for key, value in metadata.items()}}
    return save_safetensors(tensors, path, meta)


def load_model_file(path: Any) -> tuple[MultiScaleDenoiser, dict[str, str]]:
    """A model file written by save_model (checked safetensors; nothing unpickled) and its metadata, with what it
    was trained on (the config's `extra`: image, steps, prompt, text encoder) merged in."""
    state, metadata = load_safetensors(path)
    model = build(metadata, state).eval()
    return model, {**model.config.extra, **metadata}
