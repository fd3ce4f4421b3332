"""NIMA (Talebi & Milanfar 2018): a CNN that predicts how people would rate an image's aesthetics from 1 to 10,
as a distribution over the ten ratings; the score is that distribution's mean.

Architecture "nima" of the loader's torch_module family: a torchvision backbone without its classifier
(`base_model`) and `head` = ReLU, Dropout(0.75), Linear(features, 10), Softmax — the module layout of
truskovskiyk/nima.pytorch (ResNet backbones), so its checkpoints load once converted:

    python -m pipelines.metrics.nima convert best_state.pth OUT_DIR --backbone resnet34

reads the .pth with torch.load(weights_only=True) and writes OUT_DIR/config.json + model.safetensors. The app
uses a NIMA model when the host names one (ASL_NIMA_MODEL = such a folder, a single .safetensors with the
architecture in its metadata, or a hub id holding them); there is no public safetensors NIMA to download.
Inputs: RGB images resized to 224×224 (PIL bilinear, as torchvision's Resize on a PIL image), ImageNet-normalised
inside the module.

Written by hand because no installed library ships NIMA; the backbones are torchvision's.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import NIMA_ARCHITECTURE  # the package registers make_nima under this name

ENV_NIMA_MODEL = "ASL_NIMA_MODEL"
INPUT_SIZE = 224
RATINGS = 10
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def configured_source() -> str | None:
    """The NIMA model the host configured (ASL_NIMA_MODEL), or None."""
    return os.environ.get(ENV_NIMA_MODEL, "").strip() or None


def _backbone(config: dict[str, Any]) -> tuple[Any, int]:
    """(base_model, feature count): the torchvision network without its classifier, ending in global pooling."""
    import torchvision
    from torch import nn

    name = str(config.get("backbone", "resnet18"))
    if name not in BACKBONES:
        raise ValueError(f"unknown NIMA backbone {name!r}; known: {', '.join(BACKBONES)}")
    if name == "mobilenet_v2":
        net = torchvision.models.mobilenet_v2(weights=None, width_mult=float(config.get("width_mult", 1.0)))
        return nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1)), net.last_channel
    net = getattr(torchvision.models, name)(weights=None)
    return nn.Sequential(*list(net.children())[:-1]), net.fc.in_features


def make_nima(config: dict[str, Any], state_dict: dict[str, Any] | None = None) -> Any:
    """The `nima` architecture: forward(Bx3xHxW float in [0, 1]) -> B×10 probabilities of the ratings 1…10."""
    import torch
    from torch import nn

    class Nima(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base_model, features = _backbone(config)
            self.head = nn.Sequential(nn.ReLU(), nn.Dropout(p=0.75), nn.Linear(features, RATINGS), nn.Softmax(dim=1))
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.base_model((x - self.mean) / self.std).flatten(1))

    module = Nima()
    if state_dict is not None:
        module.load_state_dict(state_dict, strict=True)
    return module.eval()


def mean_rating(probabilities: np.ndarray) -> np.ndarray:
    """The NIMA score of each row: Σ_i i·p_i over the ratings i = 1…10."""
    p = np.asarray(probabilities, dtype=np.float64)
    return p @ np.arange(1, p.shape[1] + 1, dtype=np.float64)


def save_nima(state_dict: dict[str, Any], folder: Path, config: dict[str, Any]) -> Path:
    """Check `state_dict` against the architecture, then write folder/config.json + model.safetensors."""
    from pipelines.core.safeweights import save_safetensors

    config = {"architecture": NIMA_ARCHITECTURE, **config}
    module = make_nima(config, state_dict)  # raises when the weights do not fit
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().contiguous() for key, value in module.state_dict().items()}
    save_safetensors(tensors, folder / "model.safetensors", {key: str(value) for key, value in config.items()})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def build_tiny_nima(folder: Path) -> None:
    """The tiny test NIMA: a quarter-width MobileNetV2 with random weights (tiny_models seeds the RNG)."""
    config = {"backbone": "mobilenet_v2", "width_mult": 0.25, "test_model": True}
    save_nima(make_nima(config).state_dict(), folder, config)


def convert(checkpoint: Path, out_dir: Path, backbone: str) -> Path:
    """A truskovskiyk/nima.pytorch checkpoint (.pth, read with weights_only=True) as a loadable safetensors folder."""
    from pipelines.core.downloads import read_pth_state_dict

    state = read_pth_state_dict(Path(checkpoint))
    return save_nima(state, Path(out_dir), {"backbone": backbone, "converted_from": Path(checkpoint).name})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.metrics.nima", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert_parser = commands.add_parser("convert", help="convert a nima.pytorch .pth checkpoint to safetensors")
    convert_parser.add_argument("checkpoint", type=Path)
    convert_parser.add_argument("out_dir", type=Path)
    convert_parser.add_argument("--backbone", choices=BACKBONES, default="resnet18")
    args = parser.parse_args(argv)
    folder = convert(args.checkpoint, args.out_dir, args.backbone)
    print(f"Wrote {folder}. Use it with {ENV_NIMA_MODEL}={folder} (or pick it as the NIMA model).")


if __name__ == "__main__":
    main()
