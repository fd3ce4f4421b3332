"""SD 1.5 at its real size with random weights, built from the configs the app ships (assets/configs/): UNet
859.5 M parameters, CLIP ViT-L/14 text encoder 123.1 M, VAE 83.7 M, ControlNet 361.3 M (DESIGN.md "Real sizes
without weights"). They run every path a real checkpoint runs — shapes, dtypes, layer mappings, memory — and say
nothing about image quality. The real-size test (`pytest -m realsize`), bench/bench_real_size.py and
bench/gpu_smoke.py use them.

    folder = build_sd15()            # once per cache folder; fp16 on disk (1.7 GB), as SD 1.5 checkpoints ship
    pipe = load_pipeline(str(folder))

Only tests and benches load them: they are not in any dropdown.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipelines.core import settings

CONFIGS = Path(__file__).resolve().parents[2] / "assets" / "configs"
VERSION = 1
# Parameter counts of the real checkpoints (runwayml SD 1.5, lllyasviel ControlNet 1.1, h94 IP-Adapter plus-face
# with laion's ViT-H/14 image encoder): what the built models must have.
PARAMETERS = {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863, "controlnet": 361_279_120}


def sd15_folder() -> Path:
    return settings.cache_dir() / "real_size" / f"sd15-v{VERSION}"


def controlnet_folder() -> Path:
    return settings.cache_dir() / "real_size" / f"sd15-controlnet-v{VERSION}"


def build_sd15(seed: int = 0) -> Path:
    """The SD 1.5 pipeline folder at real size (random weights, fp16 safetensors), built once."""
    target = sd15_folder()
    if target.is_dir():
        return target
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipelines.core.jobs import atomic_folder

    from .models import sd15_config_folder

    configs = sd15_config_folder()  # the shipped configs plus the CLIP tokenizer built from open_clip's vocabulary
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(target) as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        shutil.copytree(configs / "tokenizer", tmp / "tokenizer")
        PNDMScheduler.from_pretrained(configs, subfolder="scheduler").save_pretrained(tmp / "scheduler")
        for name, build in (("unet", lambda: UNet2DConditionModel.from_config(_config(configs, "unet"))),
                            ("vae", lambda: AutoencoderKL.from_config(_config(configs, "vae"))),
                            ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig.from_pretrained(
                                configs / "text_encoder")))):
            model = _materialized(build)  # one at a time
            model.save_pretrained(tmp / name, safe_serialization=True)
            del model
        index = json.loads((configs / "model_index.json").read_text())
        (tmp / "model_index.json").write_text(json.dumps(index, indent=1))
    return target


def build_controlnet(seed: int = 1) -> Path:
    """A ControlNet at real size (assets/configs/sd15_controlnet), random weights, fp16 safetensors."""
    target = controlnet_folder()
    if target.is_dir():
        return target
    import torch
    from diffusers import ControlNetModel

    from pipelines.core.jobs import atomic_folder

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(target) as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _materialized(lambda: ControlNetModel.from_config(_config(CONFIGS / "sd15_controlnet", "")))
        model.save_pretrained(tmp, safe_serialization=True)
    return target


def _materialized(build: Any) -> Any:
    """The model `build` makes, built on the meta device and then filled in fp16 with a fast init: norm weights 1,
    biases 0, other weights N(0, 1/fan_in) drawn from one pool of 2^20 normal numbers, each tensor reading it from
    its own offset. PyTorch's default init (or one fresh normal number per weight) of 1.4 G parameters takes minutes
    on a shared CPU; this takes seconds, and for shapes, dtypes and memory random is random enough. Buffers are
    left unset: they are not saved (position ids) or are rebuilt when the folder is loaded."""
    import torch

    with torch.device("meta"):
        model = build()
    model = model.to(torch.float16).to_empty(device="cpu")
    pool = torch.randn(1 << 20, generator=torch.Generator().manual_seed(torch.initial_seed() % 2**63))
    with torch.no_grad():
        for index, (name, param) in enumerate(model.named_parameters()):
            if param.ndim == 1:
                param.fill_(1.0 if name.endswith("weight") and "norm" in name else 0.0)
                continue
            flat, start = param.view(-1), (index * 7919) % pool.numel()
            cycle = torch.cat([pool[start:], pool[:start]]) * param[0].numel() ** -0.5
            for offset in range(0, flat.numel(), cycle.numel()):
                piece = flat[offset:offset + cycle.numel()]
                piece.copy_(cycle[:piece.numel()])
    return model


def _config(folder: Path, subfolder: str) -> dict[str, Any]:
    return json.loads((folder / subfolder / "config.json").read_text())


def parameter_count(module: Any) -> int:
    return sum(param.numel() for param in module.parameters())
