"""Training a style network (Johnson et al. 2016) as pytorch/examples fast_neural_style does.

The loss is VGG16's perceptual loss: content = MSE of relu2_2 features between the output and the content
image; style = sum over relu1_2, relu2_2, relu3_3, relu4_3 of the MSE between the Gram matrices of the output and
of the style image; inputs are ImageNet-normalised from 0–255 RGB. The trained network is the pytorch/examples
layout (RGB 0–255 in and out), saved as safetensors in outputs/styles/NAME.safetensors.

VGG16 needs ImageNet weights to mean anything. They come from torchvision's download (when online) or its local
cache. Random VGG weights exist only so tests can train offline; a style trained with them is flagged
(``TrainResult.vgg_pretrained`` False, metadata ``vgg_weights``) and the progress messages say so.

It is a job: progress via ``callback(step, total, message)``, cancel via a CancelToken (a checkpoint is written,
then JobCancelled is raised), checkpoints written atomically every ``checkpoint_every`` steps, and ``resume``
continues from the last one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.core import devices, settings
from pipelines.core.errors import TrainingDiverged, UserError
from pipelines.core.images import ImageInputError, load_image
from pipelines.core.jobs import CancelToken, JobCancelled, ProgressCallback, atomic_path
from pipelines.core.safeweights import load_safetensors

from .network import LAYOUT_EXAMPLES, ExamplesTransformerNet, save_style
from .styles import TEST_STYLE_NOTE, clean_style_name, user_style_path

log = logging.getLogger(__name__)

VGG_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
VGG_CONTENT_LAYER = "relu2_2"
_VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23))  # torchvision vgg16.features indices ending at each relu
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_VGG_NOTE = "VGG16 with RANDOM weights (test only: the result is not a real style)"
IMAGENET_VGG_NOTE = "VGG16 with ImageNet weights"
STATE_FILE = "state.json"


@dataclass
class TrainResult:
    name: str
    path: Path  # outputs/styles/NAME.safetensors
    steps: int
    losses: list[float]  # total loss of every step, including those done before a resume
    content_losses: list[float]
    style_losses: list[float]
    vgg_pretrained: bool  # False: trained against a random-weight VGG16 (tests only)
    vgg_note: str
    resumed_from: int  # 0 for a fresh run
    seconds: float
    skipped: list[str] = field(default_factory=list)  # content images that could not be read

    @property
    def summary(self) -> str:
        first, last = (self.losses[0], self.losses[-1]) if self.losses else (float("nan"), float("nan"))
        if self.steps and self.resumed_from >= self.steps:
            return (f"**{self.name}** was already trained with these exact settings and images ({self.steps} "
                    f"steps, final loss {last:.4g}); its finished checkpoint was reused. Change a setting or the "
                    "name to train again.")
        lines = [f"Trained **{self.name}**: {self.steps} steps in {self.seconds:.0f} s"
                 + (f" (resumed from step {self.resumed_from})" if self.resumed_from else "")
                 + f"; loss {first:.4g} → {last:.4g}. Loss network: {self.vgg_note}."]
        if not self.vgg_pretrained:
            lines.append("⚠️ The loss network had random weights, so this style is only a test.")
        if self.skipped:
            lines.append("Skipped: " + "; ".join(self.skipped))
        return "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------- VGG16
class VGGFeatures(nn.Module):
    """torchvision VGG16 ``features[:23]``, returning relu1_2, relu2_2, relu3_3, relu4_3; frozen."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.slices = nn.ModuleList(nn.Sequential(*[features[i] for i in range(a, b)]) for a, b in _VGG_SLICES)
        for param in self.parameters():
            param.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1).mul(255.0), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1).mul(255.0), persistent=False)

    def forward(self, rgb_0_255: torch.Tensor) -> dict[str, torch.Tensor]:
        h = (rgb_0_255 - self.mean) / self.std  # = pytorch/examples normalize_batch (divide by 255, then ImageNet)
        outputs = {}
        for name, block in zip(VGG_STYLE_LAYERS, self.slices, strict=True):
            h = block(h)
            outputs[name] = h
        return outputs


def _host_reachable(host: str) -> bool:
    from pipelines.core import network

    return not network.url_status(f"https://{host}").offline


def _imagenet_vgg_state() -> dict[str, torch.Tensor] | None:
    """torchvision's ImageNet VGG16 weights from its cache, or downloaded when online; None when neither."""
    from urllib.parse import urlparse

    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if not cached.exists() and not _host_reachable(urlparse(url).hostname or ""):
        return None
    try:  # a known download: torchvision's own file, read with weights_only=True
        return torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not available"; the caller says so
        log.warning("Could not get the ImageNet VGG16 weights: %s", err)
        return None


def vgg16_features() -> nn.Sequential:
    """torchvision ``vgg16().features[:23]`` (up to relu4_3) with the same indices and initialisation, without
    building the 120 M-parameter classifier the loss never uses."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512):
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        conv = nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        in_channels = int(item)
    return nn.Sequential(*layers)


def _load_features(features: nn.Sequential, state: dict[str, torch.Tensor]) -> None:
    """Load torchvision VGG16 weights ("features.N.weight" or bare "N.weight") into the first 23 layers."""
    wanted = set(features.state_dict())
    trimmed = {key.removeprefix("features."): value for key, value in state.items()}
    features.load_state_dict({key: value for key, value in trimmed.items() if key in wanted}, strict=True)


class StyleTrainingUnavailable(UserError, RuntimeError):
    """Training cannot run here (e.g. no ImageNet VGG16 weights offline); the message says why."""


def build_vgg(vgg_weights: str | None, seed: int = 0) -> tuple[VGGFeatures, bool, str]:
    """(features, pretrained, note). vgg_weights: None or "imagenet" (required: a style trained against a
    random VGG is not a style), "random" (tests only) or a path to a torchvision-VGG16 .safetensors file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = vgg16_features()
    choice = vgg_weights or "imagenet"
    if choice == "imagenet":
        state = _imagenet_vgg_state()
        if state is None:
            raise StyleTrainingUnavailable(
                "Training needs torchvision's ImageNet VGG16 weights, which are not on this machine and cannot be "
                "downloaded now (offline). Connect once so they can be fetched, or give a VGG16 .safetensors file.")
        _load_features(features, state)
        return VGGFeatures(features), True, IMAGENET_VGG_NOTE
    if choice == "random":
        return VGGFeatures(features), False, RANDOM_VGG_NOTE
    state, _ = load_safetensors(choice)  # a user file: safetensors only, checked by content
    _load_features(features, state)
    return VGGFeatures(features), True, f"VGG16 weights from {Path(choice).name}"


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat.bmm(flat.transpose(1, 2)) / (c * h * w)


# ---------------------------------------------------------------------------------------------- data
def _square_crop(image: Any, size: int) -> torch.Tensor:
    """Resize the short side to `size` and centre-crop (torchvision Resize + CenterCrop); 3×S×S float 0–255."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                           Image.Resampling.BILINEAR)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    crop = resized.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1).float()


def load_content(content_images: Sequence[Any], size: int) -> tuple[torch.Tensor, list[str]]:
    """N×3×S×S uint8 content batch plus messages for the files that could not be used."""
    tensors, problems = [], []
    for index, item in enumerate(content_images):
        try:
            label = None if isinstance(item, (str, os.PathLike)) else f"Content image {index + 1}"
            image = load_image(item, max_side=max(4 * size, 1024), name=label)
        except ImageInputError as err:
            problems.append(str(err))
            continue
        except OSError as err:  # a header cut short: PIL raises it from Image.open itself
            problems.append(f"{label or Path(str(item)).name} cannot be read ({err}).")
            continue
        tensors.append(_square_crop(image, size).to(torch.uint8))
    if not tensors:
        raise ValueError("None of the content images can be used. " + " ".join(problems))
    return torch.stack(tensors), problems


def _batch_indices(step: int, batch_size: int, count: int, seed: int) -> list[int]:
    """The images of step `step`: a fresh seeded permutation per pass over the data, so resuming reproduces it."""
    indices = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, count)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        indices.append(int(order[offset]))
    return indices


# ---------------------------------------------------------------------------------------------- checkpoints
def test_metadata(pretrained: bool) -> dict[str, str]:
    """safetensors metadata that marks a network trained against a random VGG16 as a test model."""
    return {} if pretrained else {"test_model": "true", "test_note": TEST_STYLE_NOTE}


def _write_checkpoint(folder: Path, step: int, net: nn.Module, optimizer: torch.optim.Optimizer,
                      history: dict[str, list[float]], config: dict[str, Any], pretrained: bool = True) -> None:
    """model-STEP.safetensors and optimizer-STEP.pt, then state.json naming them (each written atomically, the
    state last), then older step files removed: an interrupted write leaves the previous checkpoint intact."""
    folder.mkdir(parents=True, exist_ok=True)
    model_file, optimizer_file = f"model-{step:07d}.safetensors", f"optimizer-{step:07d}.pt"
    save_style(net, folder / model_file, LAYOUT_EXAMPLES, step=step, **test_metadata(pretrained))
    with atomic_path(folder / optimizer_file) as tmp:
        torch.save({"step": step, "optimizer": optimizer.state_dict()}, tmp)
    state = {"step": step, "model": model_file, "optimizer": optimizer_file, "config": config, **history}
    with atomic_path(folder / STATE_FILE) as tmp:
        tmp.write_text(json.dumps(state))
    for old in [*folder.glob("model-*.safetensors"), *folder.glob("optimizer-*.pt")]:
        if old.name not in (model_file, optimizer_file):
            old.unlink(missing_ok=True)


def read_checkpoint(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The last checkpoint's state (step, losses, file names), or None when there is none."""
    path = Path(folder) / STATE_FILE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if not (Path(folder) / state["model"]).exists() or not (Path(folder) / state["optimizer"]).exists():
        return None
    return state


def _restore(folder: Path, state: dict[str, Any], net: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    tensors, _ = load_safetensors(folder / state["model"])
    net.load_state_dict(tensors)
    saved = torch.load(folder / state["optimizer"], map_location="cpu", weights_only=True)  # our own file
    if int(saved["step"]) != int(state["step"]):
        raise RuntimeError(f"The checkpoint in {folder} is inconsistent; train again with resume off.")
    optimizer.load_state_dict(saved["optimizer"])


# ---------------------------------------------------------------------------------------------- training
def train(style_image: Any, content_images: Sequence[Any], *, steps: int = 2000, image_size: int = 256,
          style_size: int | None = 512, content_weight: float = 1e5, style_weight: float = 1e10, lr: float = 1e-3,
          batch_size: int = 4, vgg_weights: str | None = None, checkpoint_dir: str | os.PathLike | None = None,
          checkpoint_every: int | None = None, resume: bool = True, callback: ProgressCallback | None = None,
          cancel: CancelToken | None = None, name: str = "my_style", seed: int = 42,
          device: str | None = None) -> TrainResult:
    """Train a pytorch/examples-layout style network; returns a TrainResult (the style is saved as NAME).

    style_size caps the style image's long side (None: as given). checkpoint_dir defaults to
    outputs/training/NAME/checkpoints; checkpoint_every defaults to every 5% of the steps (at least 10).
    """
    name = clean_style_name(name)
    steps, image_size, batch_size = int(steps), int(image_size), int(batch_size)
    if steps < 1 or not 16 <= image_size <= 1024 or batch_size < 1:
        raise ValueError("Training needs steps ≥ 1, an image size of 16–1024 px and a batch size ≥ 1.")
    started = time.perf_counter()
    target_device = devices.resolve_device(device)
    folder = Path(checkpoint_dir) if checkpoint_dir else settings.outputs_dir() / "training" / name / "checkpoints"
    every = int(checkpoint_every) if checkpoint_every else max(10, steps // 20)
    report = callback or (lambda step, total, message: None)

    content, skipped = load_content(content_images, image_size)
    style = load_image(style_image, max_side=style_size, name="The style image")
    vgg, pretrained, vgg_note = build_vgg(vgg_weights, seed)
    vgg = vgg.to(target_device).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ExamplesTransformerNet()
    net = net.to(target_device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=float(lr))

    style_digest = hashlib.sha256(style.tobytes() + repr(style.size).encode()).hexdigest()[:16]
    content_digest = hashlib.sha256(content.numpy().tobytes()).hexdigest()[:16]
    config = {"name": name, "image_size": image_size, "batch_size": batch_size, "content_weight": content_weight,
              "style_weight": style_weight, "lr": lr, "seed": seed, "vgg": vgg_note, "style_digest": style_digest,
              "content_digest": content_digest}
    history: dict[str, list[float]] = {"losses": [], "content_losses": [], "style_losses": []}
    start_step = 0
    state = read_checkpoint(folder) if resume else None
    if state is not None and state.get("config") != config:  # resuming is only sound with identical settings
        report(0, steps, "The checkpoint found was trained with other settings or images; starting afresh.")
        state = None
    if state is not None:
        _restore(folder, state, net, optimizer)
        start_step = min(int(state["step"]), steps)
        history = {key: list(state.get(key, []))[:start_step] for key in history}
        report(start_step, steps, f"Resuming from step {start_step}")

    with torch.no_grad():
        style_tensor = torch.from_numpy(np.array(style, dtype=np.uint8)).permute(2, 0, 1)
        style_features = vgg(style_tensor.unsqueeze(0).float().to(target_device))
        style_grams = {layer: gram_matrix(style_features[layer]) for layer in VGG_STYLE_LAYERS}
    prefix = "" if pretrained else "[random VGG: test only] "

    step = start_step
    try:
        while step < steps:
            if cancel is not None and cancel.cancelled:
                raise JobCancelled(f"Training cancelled by the user at step {step} of {steps}; its checkpoint is "
                                   "saved: press Train again with the same settings to resume.")
            batch = content[_batch_indices(step, batch_size, len(content), seed)].to(target_device).float()
            optimizer.zero_grad(set_to_none=True)
            output = net(batch)
            features_y = vgg(output)
            with torch.no_grad():
                features_x = vgg(batch)
            content_loss = content_weight * F.mse_loss(features_y[VGG_CONTENT_LAYER], features_x[VGG_CONTENT_LAYER])
            style_loss = sum(F.mse_loss(gram_matrix(features_y[layer]), style_grams[layer].expand(len(batch), -1, -1))
                             for layer in VGG_STYLE_LAYERS) * style_weight
            total = content_loss + style_loss
            if not torch.isfinite(total.detach()):
                raise TrainingDiverged(f"The loss became {total.item()} at step {step + 1}; lower the learning "
                                         "rate or the style weight.")
            total.backward()
            optimizer.step()
            step += 1
            losses = (total.item(), content_loss.item(), style_loss.item())
            for key, value in zip(history, losses, strict=True):
                history[key].append(value)
            report(step, steps, f"{prefix}step {step}/{steps}: loss {losses[0]:.4g} "
                                f"(content {losses[1]:.4g}, style {losses[2]:.4g})")
            if step % every == 0 and step < steps:
                _write_checkpoint(folder, step, net, optimizer, history, config, pretrained)
    except JobCancelled:
        _write_checkpoint(folder, step, net, optimizer, history, config, pretrained)
        report(step, steps, f"Cancelled at step {step}; the checkpoint is saved, train again to resume.")
        raise
    _write_checkpoint(folder, step, net, optimizer, history, config, pretrained)

    path = save_style(net.eval(), user_style_path(name), LAYOUT_EXAMPLES, steps=step, image_size=image_size,
                      content_weight=content_weight, style_weight=style_weight,
                      vgg_weights="imagenet" if pretrained else "random (test only)", vgg_note=vgg_note,
                      **test_metadata(pretrained))
    return TrainResult(name, path, step, history["losses"], history["content_losses"], history["style_losses"],
                       pretrained, vgg_note, start_step, time.perf_counter() - started, skipped)
