"""The Johnson et al. (2016) image transformation network in its two published PyTorch layouts.

* ``pytorch_examples`` — pytorch/examples ``fast_neural_style/neural_style/transformer_net.py``: reflection-padded
  convolutions, affine InstanceNorm, five residual blocks, nearest-neighbour upsampling followed by a convolution;
  input and output are RGB in 0–255. Home of the candy, mosaic, rain_princess and udnie checkpoints, whose older
  files still carry ``inN.running_mean/var`` entries from an InstanceNorm that no longer keeps running statistics.
* ``rrmina`` — rrmina/fast-neural-style-pytorch ``transformer.py``: the same encoder/residual trunk in
  ``nn.Sequential`` blocks, ConvTranspose2d upsampling; it reads images with OpenCV, so its input and output are
  BGR in 0–255 (no mean subtraction: that only happens in front of its VGG loss network).

Both are wrapped in :class:`StyleNet`, which takes and returns RGB in 0–1 and hides the colour order, the value
range and the size rounding (the networks produce 4·ceil(H/4) × 4·ceil(W/4); we crop back to H × W, which
equals the original code's output on the kept region).

This module imports torch at import time; the package's ``__init__`` imports it lazily.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.core.safeweights import save_safetensors

from . import STYLE_ARCHITECTURE as ARCHITECTURE  # the package registers build_transformer_net under this name

LAYOUT_EXAMPLES = "pytorch_examples"
LAYOUT_RRMINA = "rrmina"
LAYOUTS = (LAYOUT_EXAMPLES, LAYOUT_RRMINA)
MIN_NETWORK_SIDE = 8  # the 9×9 reflection padding needs more than 4 pixels; smaller inputs are edge-padded

# Entries old checkpoints carry that today's modules do not have (InstanceNorm running stats, BN counters).
_STALE_KEY = re.compile(r"(^|\.)(running_mean|running_var|num_batches_tracked)$")


# ---------------------------------------------------------------------------------------------- layout (a)
class _ReflectConv(nn.Module):
    """Reflection padding of kernel//2 then a convolution (pytorch/examples ``ConvLayer``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class _UpsampleConv(_ReflectConv):
    """Nearest ×2 upsampling, then a reflection-padded convolution (pytorch/examples ``UpsampleConvLayer``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"))


class _ExamplesResidual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _ReflectConv(channels, channels, 3, 1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = _ReflectConv(channels, channels, 3, 1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.in2(self.conv2(F.relu(self.in1(self.conv1(x)))))


class ExamplesTransformerNet(nn.Module):
    """pytorch/examples' TransformerNet; state-dict keys match its checkpoints. RGB 0–255 in and out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _ReflectConv(3, 32, 9, 1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = _ReflectConv(32, 64, 3, 2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = _ReflectConv(64, 128, 3, 2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        for index in range(1, 6):
            self.add_module(f"res{index}", _ExamplesResidual(128))
        self.deconv1 = _UpsampleConv(128, 64, 3, 1)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = _UpsampleConv(64, 32, 3, 1)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = _ReflectConv(32, 3, 9, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        y = F.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = F.relu(self.in4(self.deconv1(y)))
        y = F.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


# ---------------------------------------------------------------------------------------------- layout (b)
class _RrminaConv(nn.Module):
    """rrmina ``ConvLayer``: reflection pad, conv, optional affine InstanceNorm (``norm_layer``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, norm: bool = True):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv_layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride)
        self.norm_layer = nn.InstanceNorm2d(out_channels, affine=True) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_layer(self.reflection_pad(x))
        return self.norm_layer(x) if self.norm_layer is not None else x


class _RrminaDeconv(nn.Module):
    """rrmina ``DeconvLayer``: ConvTranspose2d(k, stride 2, padding k//2, output_padding 1) + InstanceNorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 2,
                 output_padding: int = 1) -> None:
        super().__init__()
        self.conv_transpose = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                                 output_padding)
        self.norm_layer = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_layer(self.conv_transpose(x))


class _RrminaResidual(nn.Module):
    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.conv1 = _RrminaConv(channels, channels, 3, 1)
        self.relu = nn.ReLU()
        self.conv2 = _RrminaConv(channels, channels, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class RrminaTransformerNet(nn.Module):
    """rrmina's TransformerNetwork (``tanh_multiplier`` set: its TransformerNetworkTanh). BGR 0–255 in and out."""

    def __init__(self, tanh_multiplier: float | None = None) -> None:
        super().__init__()
        self.ConvBlock = nn.Sequential(
            _RrminaConv(3, 32, 9, 1), nn.ReLU(), _RrminaConv(32, 64, 3, 2), nn.ReLU(),
            _RrminaConv(64, 128, 3, 2), nn.ReLU(),
        )
        self.ResidualBlock = nn.Sequential(*[_RrminaResidual(128) for _ in range(5)])
        self.DeconvBlock = nn.Sequential(
            _RrminaDeconv(128, 64), nn.ReLU(), _RrminaDeconv(64, 32), nn.ReLU(), _RrminaConv(32, 3, 9, 1, norm=False),
        )
        self.tanh_multiplier = tanh_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.DeconvBlock(self.ResidualBlock(self.ConvBlock(x)))
        return torch.tanh(out) * self.tanh_multiplier if self.tanh_multiplier else out


# ---------------------------------------------------------------------------------------------- state dicts
def _strip_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop a DataParallel ``module.`` prefix when every key has one."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key.removeprefix("module."): value for key, value in state_dict.items()}
    return dict(state_dict)


def detect_layout(state_dict: dict[str, Any]) -> str:
    """``"pytorch_examples"`` or ``"rrmina"`` from the key names; ValueError for anything else."""
    keys = set(_strip_prefix(state_dict))
    if "ConvBlock.0.conv_layer.weight" in keys and "DeconvBlock.0.conv_transpose.weight" in keys:
        return LAYOUT_RRMINA
    if "conv1.conv2d.weight" in keys and "deconv1.conv2d.weight" in keys:
        return LAYOUT_EXAMPLES
    sample = ", ".join(sorted(keys)[:5]) or "no tensors"
    raise ValueError(
        "These weights are not a fast-neural-style transformer network in a known layout (expected "
        "pytorch/examples keys such as 'conv1.conv2d.weight' or rrmina keys such as "
        f"'ConvBlock.0.conv_layer.weight'; found {sample})."
    )


def clean_state_dict(state_dict: dict[str, Any], module: nn.Module) -> dict[str, Any]:
    """Remove entries the module does not have that old checkpoints carry (``inN.running_mean/var`` …)."""
    expected = set(module.state_dict())
    return {key: value for key, value in _strip_prefix(state_dict).items()
            if key in expected or not _STALE_KEY.search(key)}


def make_network(layout: str, tanh_multiplier: float | None = None) -> nn.Module:
    if layout == LAYOUT_EXAMPLES:
        return ExamplesTransformerNet()
    if layout == LAYOUT_RRMINA:
        return RrminaTransformerNet(tanh_multiplier)
    raise ValueError(f"Unknown transformer-net layout {layout!r} (known: {', '.join(LAYOUTS)}).")


# ---------------------------------------------------------------------------------------------- fast path
# Row (or column) maps from the 3 taps of a 3×3 kernel applied after nearest ×2 upsampling + reflection pad 1
# to a 3-tap window over the *low-resolution* input padded by replication: output phase 0 (even rows) reads
# x[i-1], x[i], x[i] -> taps (w0, w1 + w2); phase 1 (odd rows) reads x[i], x[i], x[i+1] -> taps (w0 + w1, w2).
# Reflection padding of the upsampled image equals replication padding of the small one, so this is exact.
_PHASE_TAPS = (((1, 0, 0), (0, 1, 1), (0, 0, 0)), ((0, 0, 0), (1, 1, 0), (0, 0, 1)))


def subpixel_upsample_weight(weight: torch.Tensor) -> torch.Tensor:
    """O×I×3×3 kernel of "nearest ×2, reflection pad 1, conv" -> 4O×I×2×2 kernel, output channel o*4 + a*2 + b
    for output phase (row a, column b). Phase (a, b) applied at offset (a, b) of the small image padded by
    replication gives the same function with 4/9 of the multiply-adds."""
    taps = torch.tensor(_PHASE_TAPS, dtype=torch.float64)
    w = weight.detach().to(torch.float64)
    phases = torch.einsum("art,oits,bus->oabiru", taps, w, taps)  # 3×3 windows, zero outside each phase's 2×2
    out_ch, in_ch = weight.shape[:2]
    kernel = torch.empty(out_ch, 2, 2, in_ch, 2, 2, dtype=torch.float64)
    for a in range(2):
        for b in range(2):
            kernel[:, a, b] = phases[:, a, b, :, a:a + 2, b:b + 2]
    return kernel.reshape(out_ch * 4, in_ch, 2, 2).to(weight.dtype)


def subpixel_upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """"nearest ×2 -> reflection pad 1 -> 3×3 conv" computed on the small image (weights from
    subpixel_upsample_weight): one 2×2 convolution for all four phases, then one strided copy interleaves them."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate").contiguous(memory_format=torch.channels_last)
    y = F.conv2d(padded, weight, bias)  # B×4C×(H+1)×(W+1); channels-last is oneDNN's faster layout here
    channels = y.shape[1] // 4
    s_n, s_c, s_h, s_w = y.stride()
    # out[n, c, 2i + a, 2j + b] = y[n, 4c + 2a + b, i + a, j + b] is linear in (c, i, a, j, b) for any strides,
    # so one strided view, copied once into a contiguous image
    phases = y.as_strided((batch, channels, height, 2, width, 2),
                          (s_n, 4 * s_c, s_h, 2 * s_c + s_h, s_w, s_c + s_w))
    return phases.reshape(batch, channels, 2 * height, 2 * width)


def space_to_depth_weight9(weight: torch.Tensor) -> torch.Tensor:
    """O×I×9×9 stride-1 kernel -> 4O×4I×5×5 kernel acting on pixel_unshuffle(2) of the (even-sized, padded)
    input, whose pixel_shuffle(2) is the original convolution: wide channels suit the CPU's conv kernels far
    better than 3 output channels at full resolution."""
    out_ch, in_ch = weight.shape[:2]
    w = weight.detach().to(torch.float64)
    kernel = torch.zeros(out_ch, 2, 2, in_ch, 2, 2, 5, 5, dtype=torch.float64)
    for a in range(2):  # output row phase
        for c in range(2):  # input row phase
            for q in range(5):
                t = 2 * q + c - a
                if not 0 <= t <= 8:
                    continue
                for b in range(2):
                    for d in range(2):
                        for r in range(5):
                            s = 2 * r + d - b
                            if 0 <= s <= 8:
                                kernel[:, a, b, :, c, d, q, r] = w[:, :, t, s]
    return kernel.reshape(out_ch * 4, in_ch * 4, 5, 5).to(weight.dtype)


class _ExamplesFastForward:
    """Inference-only evaluation of an ExamplesTransformerNet with the same maths arranged for the CPU:
    sub-pixel 2×2 convolutions instead of upsample + 3×3 conv (4/9 of the work), the last 9×9 conv on a
    space-to-depth view (128 → 12 channels instead of 32 → 3), channels-last layout where oneDNN is faster,
    in-place ReLU and residual adds, the batch-norm kernel for single-image instance norm. Agrees with the plain
    forward to ~2e-6 relative (only the order of float additions differs)."""

    def __init__(self, net: ExamplesTransformerNet) -> None:
        self.net = net
        channels_last = torch.channels_last
        self.up1, self.up2 = ((subpixel_upsample_weight(layer.conv2d.weight).contiguous(memory_format=channels_last),
                               layer.conv2d.bias.repeat_interleave(4)) for layer in (net.deconv1, net.deconv2))
        last = space_to_depth_weight9(net.deconv3.conv2d.weight).contiguous(memory_format=channels_last)
        self.last = (last, net.deconv3.conv2d.bias.repeat_interleave(4))

    @staticmethod
    def _norm(x: torch.Tensor, norm: nn.InstanceNorm2d, relu: bool = True) -> torch.Tensor:
        if x.shape[0] == 1:  # instance norm of one image is batch norm with batch statistics, minus a reshape
            y = F.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)
        else:
            y = F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
        return y.relu_() if relu else y

    @staticmethod
    def _conv(x: torch.Tensor, layer: _ReflectConv) -> torch.Tensor:
        conv = layer.conv2d
        pad = conv.kernel_size[0] // 2
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), conv.weight, conv.bias, conv.stride)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        net, norm, conv = self.net, self._norm, self._conv
        y = norm(conv(x, net.conv1), net.in1)
        y = norm(conv(y, net.conv2), net.in2)
        y = norm(conv(y, net.conv3), net.in3)
        for block in (net.res1, net.res2, net.res3, net.res4, net.res5):
            h = norm(conv(y, block.conv1), block.in1)
            y = norm(conv(h, block.conv2), block.in2, relu=False).add_(y)
        for (weight, bias), layer_norm in ((self.up1, net.in4), (self.up2, net.in5)):
            y = norm(subpixel_upsample_conv(y, weight, bias), layer_norm)
        weight, bias = self.last  # y has even height and width here (it was just upsampled ×2)
        y = F.pixel_unshuffle(F.pad(y, (4, 4, 4, 4), mode="reflect"), 2)
        y = y.contiguous(memory_format=torch.channels_last)  # oneDNN's faster layout for this 128 -> 12 conv
        return F.pixel_shuffle(F.conv2d(y, weight, bias), 2).contiguous()


# ---------------------------------------------------------------------------------------------- wrapper
class StyleNet(nn.Module):
    """RGB 0–1 in, RGB 0–1 out (clamped), any size ≥ 1×1; the layout's colour order and range hidden."""

    def __init__(self, net: nn.Module, layout: str, fast: bool = True) -> None:
        super().__init__()
        self.net = net
        self.layout = layout
        self.bgr = layout == LAYOUT_RRMINA
        self.fast = fast  # use the re-arranged inference path where one exists (eval mode, no autograd)
        self._fast_forward: tuple[tuple, _ExamplesFastForward] | None = None

    def _weights_key(self, x: torch.Tensor) -> tuple:
        """Changes when any weight is replaced, moved or updated in place (inference tensors cannot be)."""
        return (x.dtype, x.device, *((p.data_ptr(), 0 if p.is_inference() else p._version)
                                     for p in self.net.parameters()))

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        use_fast = (self.fast and not self.training and not torch.is_grad_enabled()
                    and isinstance(self.net, ExamplesTransformerNet))
        if not use_fast:
            return self.net(x)
        key = self._weights_key(x)
        cached = self._fast_forward
        if cached is None or cached[0] != key:  # weights changed (training, .to()): rebuild the fused kernels
            cached = (key, _ExamplesFastForward(self.net))
            self._fast_forward = cached
        return cached[1](x)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"StyleNet expects a B×3×H×W tensor, got shape {tuple(rgb.shape)}.")
        height, width = rgb.shape[-2:]
        x = rgb.flip(1) if self.bgr else rgb
        x = x * 255.0
        pad_h, pad_w = max(0, MIN_NETWORK_SIDE - height), max(0, MIN_NETWORK_SIDE - width)
        if pad_h or pad_w:  # tiny inputs: edge-pad so the 9×9 reflection padding is defined
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        y = self._network(x)[..., :height, :width]
        if self.bgr:
            y = y.flip(1)
        return (y * (1.0 / 255.0)).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------- loading
def _float(value: Any) -> float | None:
    if value in (None, "", "none", "None"):
        return None
    return float(value)


def build_transformer_net(config: dict[str, Any], state_dict: dict[str, Any]) -> StyleNet:
    """Loader architecture ``johnson_transformer_net``: a StyleNet with the weights loaded (strictly)."""
    detected = detect_layout(state_dict)
    layout = config.get("layout") or detected
    if layout != detected:
        raise ValueError(f"The weights are in the {detected!r} layout but the file says {layout!r}.")
    net = make_network(layout, _float(config.get("tanh_multiplier")))
    cleaned = clean_state_dict(state_dict, net)
    missing, unexpected = (sorted(set(net.state_dict()) - set(cleaned)), sorted(set(cleaned) - set(net.state_dict())))
    if missing or unexpected:
        raise ValueError(f"The {layout} weights do not fit the network (missing: {missing[:4]}, "
                         f"unexpected: {unexpected[:4]}).")
    net.load_state_dict(cleaned, strict=True)
    return StyleNet(net, layout).eval()


def layout_metadata(layout: str, **extra: Any) -> dict[str, str]:
    """safetensors metadata naming the architecture and layout (what the loader reads)."""
    return {"architecture": ARCHITECTURE, "layout": layout, **{key: str(value) for key, value in extra.items()}}


def save_style(net: nn.Module, path: str | Path, layout: str, **extra: Any) -> Path:
    """Write a bare transformer network (or a StyleNet) as safetensors with layout metadata, atomically."""
    inner = net.net if isinstance(net, StyleNet) else net
    tensors = {key: value.detach().to("cpu", torch.float32) for key, value in inner.state_dict().items()}
    return save_safetensors(tensors, path, layout_metadata(layout, **extra))


def save_tiny_style(folder: Path) -> None:
    """The "tiny:style" test model: the real architecture with seeded random weights (output is noise)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's random stream
        torch.manual_seed(0)
        net = ExamplesTransformerNet()
    # Default init puts every output pixel near 0 of 0–255 (a black image that looks like a bug); scale the
    # last layer so the noise is visible around mid-grey. Still random weights, still labelled as noise.
    with torch.no_grad():
        last = net.deconv3.conv2d
        last.weight.mul_(60.0 / max(float(last.weight.std()) * (32 * 81) ** 0.5, 1e-8))
        last.bias.fill_(127.5)
    save_style(net, folder / "model.safetensors", LAYOUT_EXAMPLES)
    config = {"architecture": ARCHITECTURE, "layout": LAYOUT_EXAMPLES}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
