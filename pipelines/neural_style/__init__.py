"""Neural style: fast feed-forward style transfer (Johnson et al. 2016), seed document 002.

A small convolutional network, trained once per style with a VGG16 perceptual loss, repaints any image in
that style in one forward pass. Pretrained styles from pytorch/examples and rrmina/fast-neural-style-pytorch
download on first use; you can also train your own.

    from pipelines.neural_style import load_style, stylize
    model = load_style("rain_princess")            # or a trained style's name, "tiny:style", a .safetensors path
    result = stylize([image], model, strength=0.8, preserve_color=True, max_size=1024)
    result.images[0].save("out.png"); print(result.seconds)

Importing this package is cheap (no torch, numpy or torchvision); they load on first use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.loader import register_architecture
from pipelines.core.methods import MethodCard, Reference, lazy
from pipelines.core.runs import register_rerunner
from pipelines.core.tiny_models import TinySpec, register_tiny

from .styles import (
    CANNOT_DOWNLOAD,
    PRETRAINED,
    TEST_STYLE_NOTE,
    TINY_LABEL,
    TINY_STYLE,
    TINY_STYLE_NOTE,
    StyleEntry,
    StyleUnavailableError,
    available_names,
    clean_style_name,
    import_style,
    list_styles,
    style_test_note,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from pipelines.core.jobs import CancelToken, ProgressCallback
    from pipelines.core.records import RunRecord, RunStore

    from .train import TrainResult

__all__ = [
    "CANNOT_DOWNLOAD", "METHOD_CARD", "PRETRAINED",
    "TAB", "TINY_LABEL", "TINY_STYLE", "StyleEntry", "StyleUnavailableError",
    "StylizeOutput", "clean_style_name", "import_style", "list_styles", "load_style", "run_stylize",
    "run_train_style", "stylize", "available_names", "style_test_note",
    "train_style", "train_style_job",
]

TAB = "Neural style"
STYLE_ARCHITECTURE = "johnson_transformer_net"  # what style .safetensors files name in their metadata
DEFAULT_MAX_SIZE = 1024
MIN_MAX_SIZE, MAX_MAX_SIZE = 16, 2048  # beyond 2048 px the activations alone need several GB

METHOD_CARD = MethodCard(
    name="Fast neural style transfer (feed-forward, Johnson et al. 2016)",
    tab=TAB,
    summary=(
        "One way models mimic an art or animation style is to *transfer* it onto an existing picture. A small "
        "image-to-image network is trained once per style so that its output keeps the photo's content (deep "
        "VGG16 features) while matching the style image's texture statistics (Gram matrices of VGG16 features). "
        "After that, stylizing is a single forward pass — fast enough for video and a webcam. The recommended "
        "model for this question, *NST-fast-neural-style-rain-princess*, is such a network "
        "(rrmina/fast-neural-style-pytorch; the rain-princess weights come from pytorch/examples)."
    ),
    inputs="a content image (photo, frame or webcam stream) and a chosen style (or a style image to train on)",
    model=(
        "Johnson et al.'s transformation network: 3 convolutions down, 5 residual blocks, 2 upsampling "
        "convolutions, instance normalisation, ~1.7 M parameters, one network per style"
    ),
    output="the same image, same size, repainted with the style's colours, strokes and textures",
    good_at=(
        "real-time speed: one pass, any image size, video and webcam",
        "copying a single artwork's palette, brush strokes and texture faithfully",
        "small models (~7 MB) you can train on your own style image",
        "predictable: the content's layout is kept; strength and colour preservation are easy controls",
    ),
    bad_at=(
        "it copies textures, not the *drawing conventions* of anime (line art, big eyes, flat cel shading of "
        "characters): faces are restyled, not redrawn",
        "one network per style; a new style needs training (hours on a GPU, with ImageNet VGG16 weights and "
        "many content photos)",
        "style scale is fixed by the training size; small or huge inputs look different",
        "frame-to-frame flicker on video; cannot invent new content from text, unlike diffusion models",
    ),
    references=(
        Reference("rrmina/fast-neural-style-pytorch (the seed's recommended model)",
                  "https://github.com/rrmina/fast-neural-style-pytorch"),
        Reference("pytorch/examples fast_neural_style (candy, mosaic, rain_princess, udnie)",
                  "https://github.com/pytorch/examples/tree/main/fast_neural_style"),
        Reference("Johnson, Alahi, Fei-Fei: Perceptual Losses for Real-Time Style Transfer and Super-Resolution "
                  "(2016)", "https://arxiv.org/abs/1603.08155"),
        Reference("IMAGINE-E: evaluation of text-to-image models, including multi-style creation (2025) — the "
                  "generative alternative", "http://arxiv.org/pdf/2501.13920v1.pdf"),
        Reference("Iteratively Prompting Multimodal LLMs to Reproduce Natural and AI-Generated Images (2024) — "
                  "mimicking an image's style through prompts", "http://arxiv.org/pdf/2404.13784v1.pdf"),
        Reference("Generative AI Beyond LLMs: System Implications of Multi-Modal Generation (2023) — convolutions "
                  "dominate the cost of such image models", "http://arxiv.org/pdf/2312.14385v2.pdf"),
    ),
    seed_document="002",
)


@dataclass
class StylizeOutput:
    images: list[Image.Image]
    seconds: float  # wall time of the whole call (all images)


# ---------------------------------------------------------------------------------------------- models
def load_style(name_or_path: str | os.PathLike, callback: ProgressCallback | None = None) -> torch.nn.Module:
    """A style network (RGB 0–1 in, RGB 0–1 out) from a pretrained name, a trained style's name, "tiny:style"
    or a path to a .safetensors file. Cached process-wide by the core loader. A pretrained style's first use
    downloads it, reporting the download's progress through `callback(step, total, message)`.

    Raises ValueError (unknown name, listing the available styles), UnsafeWeightsError (not safetensors by
    content), StyleUnavailableError (offline and not downloaded yet) or loader.ModelLoadError.
    """
    from pipelines.core import loader

    from . import styles

    resolved = styles.resolve(name_or_path, callback)
    options: dict[str, Any] = {}
    if resolved.kind != "test":
        stat = Path(resolved.source).stat()  # a re-trained style under the same name is a new cache entry
        # whatever a user file's metadata claims, it is built as a style network (and checked as one)
        options = {"config": {"architecture": STYLE_ARCHITECTURE},
                   "version": f"{stat.st_mtime_ns}-{stat.st_size}"}
    return loader.load_model("torch_module", resolved.source, **options)


def keep_content_chroma(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Luma (Y) of `stylized`, chroma (Cb, Cr) of `content`: full-range BT.601 YCbCr as in JPEG/PIL.

    Both HxWx3 RGB in 0–255 (any dtype); returns float32 RGB in 0–255 (clipped).
    """
    import numpy as np

    s, c = stylized.astype(np.float32), content.astype(np.float32)
    luma = s[..., 0] * 0.299 + s[..., 1] * 0.587 + s[..., 2] * 0.114
    cb = c[..., 0] * -0.168736 + c[..., 1] * -0.331264 + c[..., 2] * 0.5
    cr = c[..., 0] * 0.5 + c[..., 1] * -0.418688 + c[..., 2] * -0.081312
    rgb = np.stack([luma + 1.402 * cr, luma - 0.344136 * cb - 0.714136 * cr, luma + 1.772 * cb], axis=-1)
    return np.clip(rgb, 0.0, 255.0)


def _model_placement(model: torch.nn.Module) -> tuple[Any, Any]:
    import torch

    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    if tensor is None:
        return torch.device("cpu"), torch.float32
    return tensor.device, tensor.dtype


def _one_image(model: torch.nn.Module, content: Image.Image, strength: float, preserve_color: bool,
               device: Any, dtype: Any) -> Image.Image:
    import numpy as np
    import torch
    from PIL import Image

    if strength == 0.0:
        return content.copy()
    pixels = np.array(content, dtype=np.uint8)  # H×W×3, a writable copy
    x = torch.from_numpy(pixels).to(device).permute(2, 0, 1).unsqueeze(0).to(dtype).mul_(1.0 / 255.0)
    y = model(x)
    if tuple(y.shape[-2:]) != tuple(x.shape[-2:]):
        raise RuntimeError(f"The style network returned {tuple(y.shape[-2:])} for an input of {tuple(x.shape[-2:])}.")
    styled = y[0].clamp(0, 1).mul(255.0).permute(1, 2, 0).to("cpu", torch.float32).numpy()
    if preserve_color:
        styled = keep_content_chroma(styled, pixels)
    if strength < 1.0:
        styled = styled * np.float32(strength) + pixels.astype(np.float32) * np.float32(1.0 - strength)
    return Image.fromarray(np.clip(np.rint(styled), 0, 255).astype(np.uint8), "RGB")


def stylize(images: Sequence[Any] | Any, model: torch.nn.Module, strength: float = 1.0, preserve_color: bool = False,
            max_size: int | None = DEFAULT_MAX_SIZE, *, callback: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> StylizeOutput:
    """Stylize images (PIL images, HxWx3 arrays, paths or bytes) with a style network from load_style().

    strength blends the stylized image with the content (0 returns the content unchanged, 1 the full style);
    preserve_color keeps the content's chroma and takes only the luma from the style; the long side is
    downscaled to max_size (16–2048 px; None means 2048) first. Output sizes equal the (downscaled) input sizes.
    On cancel, the JobCancelled raised carries the images finished so far as `.partial` (a StylizeOutput).
    """
    import numpy as np
    import torch
    from PIL import Image

    from pipelines.core.images import load_image
    from pipelines.core.jobs import JobCancelled

    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"Strength must be between 0 and 1, got {strength}.")
    if max_size is not None and not MIN_MAX_SIZE <= int(max_size) <= MAX_MAX_SIZE:
        raise ValueError(f"Maximum size must be between {MIN_MAX_SIZE} and {MAX_MAX_SIZE} px, got {max_size}.")
    single = isinstance(images, (Image.Image, np.ndarray, str, bytes, os.PathLike))
    items = [images] if single else list(images)
    if not items:
        raise ValueError("There are no images to stylize.")
    limit = int(max_size) if max_size else MAX_MAX_SIZE  # never unbounded: activations grow with the area
    start = time.perf_counter()
    if model.training:
        model.eval()
    device, dtype = _model_placement(model)
    outputs: list[Image.Image] = []
    with torch.inference_mode():
        for index, item in enumerate(items):
            if cancel is not None and cancel.cancelled:
                cancelled = JobCancelled(f"Cancelled after {index} of {len(items)} images.")
                cancelled.partial = StylizeOutput(outputs, time.perf_counter() - start)  # type: ignore[attr-defined]
                raise cancelled
            label = None if isinstance(item, (str, os.PathLike)) else f"Image {index + 1}"  # paths: the file name
            content = load_image(item, max_side=limit, name=label)
            outputs.append(_one_image(model, content, strength, bool(preserve_color), device, dtype))
            if callback is not None:
                callback(index + 1, len(items), f"Stylized image {index + 1} of {len(items)}")
    return StylizeOutput(outputs, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- training
def train_style(style_image: Any, content_images: Sequence[Any], *, steps: int = 2000, image_size: int = 256,
                content_weight: float = 1e5, style_weight: float = 1e10, lr: float = 1e-3, batch_size: int = 4,
                vgg_weights: str | None = None, checkpoint_dir: str | os.PathLike | None = None, resume: bool = True,
                callback: ProgressCallback | None = None, cancel: CancelToken | None = None,
                name: str = "my_style", **options: Any) -> Path:
    """Train a style network on one style image and content images; returns outputs/styles/NAME.safetensors.

    See pipelines.neural_style.train.train for every option; train_style_job returns the full result.
    """
    return train_style_job(style_image, content_images, steps=steps, image_size=image_size,
                           content_weight=content_weight, style_weight=style_weight, lr=lr, batch_size=batch_size,
                           vgg_weights=vgg_weights, checkpoint_dir=checkpoint_dir, resume=resume, callback=callback,
                           cancel=cancel, name=name, **options).path


def train_style_job(style_image: Any, content_images: Sequence[Any], **options: Any) -> TrainResult:
    """train_style, returning a TrainResult (path, name, losses, whether VGG16 had ImageNet weights, summary)."""
    from .train import train

    return train(style_image, content_images, **options)


# ---------------------------------------------------------------------------------------------- runs
MAX_IMAGES_PER_RUN = 64  # all inputs and outputs of a run are held in memory at once


def _load_inputs(image_paths: Sequence[str], max_size: int) -> tuple[list[Image.Image], list[str]]:
    from pipelines.core.images import ImageInputError, load_image

    if len(image_paths) > MAX_IMAGES_PER_RUN:
        raise ValueError(f"{len(image_paths)} images at once is more than the {MAX_IMAGES_PER_RUN} a run takes; "
                         "please split them into smaller batches.")

    images, problems = [], []
    for path in image_paths:
        try:
            images.append(load_image(path, max_side=max_size))
        except ImageInputError as err:
            problems.append(str(err))
    if not images:
        detail = " ".join(problems) if problems else "No images were given."
        raise ValueError(f"None of the images can be used. {detail}")
    return images, problems


def run_stylize(image_paths: Sequence[str], style: str, strength: float = 1.0, preserve_color: bool = False,
                max_size: int = DEFAULT_MAX_SIZE, store: RunStore | None = None, *,
                callback: ProgressCallback | None = None, cancel: CancelToken | None = None) -> RunRecord:
    """Stylize files as one recorded run: PNGs with metadata under outputs/neural_style/, a run record, and
    copies of the inputs so History can re-run it. Unreadable files are skipped (params["skipped"]).

    A cancel (through `cancel`) keeps the images finished so far: they are saved, the record says "cancelled",
    and the JobCancelled raised says how many were done. A pretrained style's first download reports its
    progress through `callback`."""
    from pipelines.core import devices, loader
    from pipelines.core.jobs import JobCancelled
    from pipelines.core.records import RunRecord, default_store
    from pipelines.core.runs import save_input_copy, save_outputs

    if not MIN_MAX_SIZE <= int(max_size) <= MAX_MAX_SIZE:
        raise ValueError(f"Maximum size must be between {MIN_MAX_SIZE} and {MAX_MAX_SIZE} px, got {max_size}.")
    images, problems = _load_inputs(list(image_paths), int(max_size))
    store = store or default_store()
    params: dict[str, Any] = {"style": str(style), "strength": float(strength), "preserve_color": bool(preserve_color),
                              "max_size": int(max_size)}
    record = RunRecord(tab=TAB, params=params, attention=devices.attention_backend())
    with store.run(record):
        with record.stage("load"):
            model = load_style(style, callback)
            device, dtype = _model_placement(model)
            record.device = devices.describe(device, dtype)
            info = loader.model_info(model)
            record.models = [info.as_record()] if info else [{"id": str(style), "revision": "unknown",
                                                              "test_model": False}]
            note = style_test_note(style)
            if note:  # the tiny style, or one trained against a random VGG16: say so in the record
                record.models[0].update(test_model=True, test_note=note)
            params["images"] = [str(save_input_copy(image)) for image in images]
            if problems:
                params["skipped"] = problems
        partial = None
        with record.stage("stylize"):
            try:
                result = stylize(images, model, strength, preserve_color, max_size, callback=callback, cancel=cancel)
            except JobCancelled as err:
                partial = getattr(err, "partial", None) or StylizeOutput([], 0.0)
                result = partial
        with record.stage("save"):
            metadata = {"Style": str(style), "Strength": float(strength), "Preserve colors": bool(preserve_color),
                        "Max size": int(max_size), "Model id": info.source if info else str(style),
                        "Layout": getattr(model, "layout", "unknown"), "Device": record.device,
                        "Seconds": round(result.seconds, 4)}
            if note or (info and info.test_model):
                metadata["Test model"] = note or TINY_STYLE_NOTE
            save_outputs(record, result.images, metadata)
        if partial is not None:
            params["cancelled_after"] = len(partial.images)
            done = len(partial.images)
            raise JobCancelled(f"Stylizing cancelled after {done} of {len(images)} images; "
                               + (f"the {done} finished are saved (run {record.id})." if done else
                                  f"none was finished (run {record.id})."))
    return record


def _unpack_content(content_images: Sequence[str], folder: Path) -> tuple[list[str], list[str]]:
    """Content files as given, with every .zip among them unpacked (safely) into `folder`; plus skipped notes."""
    from pipelines.core.archives import extract_images

    paths, notes = [], []
    for item in content_images:
        if not str(item).lower().endswith(".zip"):
            paths.append(str(item))
            continue
        unpacked, skipped = extract_images(item, folder / f"zip{len(notes)}")
        if not unpacked:
            detail = f" ({'; '.join(skipped[:3])})" if skipped else ""
            raise ValueError(f"{Path(item).name} holds no images (PNG, JPEG, WebP, BMP or TIFF){detail}.")
        paths += [str(path) for path in unpacked]
        notes += [f"{Path(item).name}: {note}" for note in skipped]
    return paths, notes


def run_train_style(style_image: str, content_images: Sequence[str], *, name: str, store: RunStore | None = None,
                    **options: Any) -> tuple[RunRecord, TrainResult]:
    """train_style_job as one recorded run. Its output is a preview: the first content image in the new style.

    Content may include zips: they are unpacked under outputs/training/NAME/content-RUN/ (the run's inputs, for
    History's re-run), and that folder is removed again when the run fails, e.g. because the zip or its images
    are refused (core.archives.job_unpack_folder). A failed or cancelled training is recorded too (History shows
    why); the checkpoint stays for a resume.
    """
    from pipelines.core import devices, settings
    from pipelines.core.archives import job_unpack_folder
    from pipelines.core.images import load_image
    from pipelines.core.records import RunRecord, default_store
    from pipelines.core.runs import save_input_copy

    store = store or default_store()
    style_copy = str(save_input_copy(load_image(style_image, name=Path(str(style_image)).name)))
    params: dict[str, Any] = {"task": "train", "name": name, "style_image": style_copy,
                              "content_images": [str(path) for path in content_images],
                              **{key: value for key, value in options.items() if key not in ("callback", "cancel")}}
    record = RunRecord(tab=TAB, params=params, attention=devices.attention_backend())
    unpacked = settings.outputs_dir() / "training" / clean_style_name(name) / f"content-{record.id}"
    with job_unpack_folder(unpacked):
        return _recorded_training(record, store, style_copy, content_images, unpacked, name, options)


def _recorded_training(record: RunRecord, store: RunStore, style_copy: str, content_images: Sequence[str],
                       unpacked: Path, name: str, options: dict[str, Any]) -> tuple[RunRecord, TrainResult]:
    from pipelines.core import devices
    from pipelines.core.runs import save_outputs

    params = record.params
    with store.run(record):
        content, zip_notes = _unpack_content(content_images, unpacked)
        params["content_images"] = content
        if zip_notes:
            params["zip_skipped"] = zip_notes
        with record.stage("train"):
            result = train_style_job(style_copy, content, name=name, **options)
        params.update(style_path=str(result.path), vgg=result.vgg_note, final_loss=result.losses[-1])
        record.models = [{"id": "VGG16 (loss network)", "revision": "imagenet" if result.vgg_pretrained else "random",
                          "test_model": not result.vgg_pretrained}]
        preview_metadata: dict[str, Any] = {"Style": name, "Trained steps": result.steps,
                                            "Loss network": result.vgg_note}
        if not result.vgg_pretrained:
            params["test_model"] = True
            record.models[0]["test_note"] = TEST_STYLE_NOTE
            preview_metadata["Test model"] = TEST_STYLE_NOTE
        with record.stage("preview"):
            model = load_style(name)
            record.device = devices.describe(*_model_placement(model))
            preview_source = _load_inputs(content[:8], 512)[0][:1]  # the first readable one
            preview = stylize(preview_source, model).images
            save_outputs(record, preview, preview_metadata)
    return record, result


def _rerun(params: dict[str, Any], store: RunStore) -> RunRecord:
    if params.get("task") == "train":
        options = {key: value for key, value in params.items()
                   if key not in ("task", "name", "style_image", "content_images", "style_path", "vgg", "final_loss",
                                   "zip_skipped", "test_model")}
        return run_train_style(params["style_image"], params["content_images"], name=params["name"], store=store,
                               **options)[0]
    return run_stylize(list(params["images"]), params["style"], float(params.get("strength", 1.0)),
                       bool(params.get("preserve_color", False)), int(params.get("max_size", DEFAULT_MAX_SIZE)),
                       store=store)


# ---------------------------------------------------------------------------------------------- registrations
# What this method adds to the core's registries (network.py imports torch: it loads on first use).
_NETWORK = f"{__name__}.network"
register_architecture(STYLE_ARCHITECTURE, lazy(_NETWORK, "build_transformer_net"))
register_tiny(TinySpec("style", "torch_module", "fast style transfer network", 2, lazy(_NETWORK, "save_tiny_style")))
register_rerunner(TAB, _rerun)


def unavailable_models() -> list[tuple[str, str]]:
    """For the app's status banner: pretrained styles that cannot be had now, and why (no network call)."""
    from pipelines.core.network import known_offline

    status = known_offline()
    missing = [entry.name for entry in list_styles() if entry.kind == "pretrained" and not entry.available]
    if not missing or status is None or not status.offline:
        return []
    return [(f"Pretrained styles ({', '.join(missing)})", f"not downloaded yet, and {status.reason}")]
