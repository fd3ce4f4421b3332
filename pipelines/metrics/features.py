"""Feature networks for the metrics: Inception (FID, KID, IS, per-image FID/KL), CLIP (CMMD, CLIP score,
CLIP-I) and LPIPS — loaded through the core loader, run in batches, and cached per image set.

* Images are uint8 HxWx3 arrays (grey and RGBA are converted; float arrays must be in [0, 1]).
* Inception inputs are resized to 299x299 the clean-fid way (`clean_resize`: PIL bicubic on each channel in
  float, clipped to [0, 255]), never by the network and never through JPEG.
* LPIPS inputs are mapped to [-1, 1] here, from uint8 [0, 255] or float [0, 1]; the user never does it.
* Features are computed once per (network kind, source, set content hash) and kept in `FEATURE_CACHE`.
* A network that cannot be loaded raises ModelLoadError("needs model X: reason"); callers skip its metrics.
* "tiny:…" sources are random-weight test networks: their numbers are noise, never real scores.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core import catalog, loader, settings
from pipelines.core.cache import KeyedCache
from pipelines.core.downloads import read_pth_state_dict
from pipelines.core.jobs import atomic_path
from pipelines.core.loader import TINY_LABEL, ModelLoadError

from . import LPIPS_ARCHITECTURE  # the package registers make_lpips under this name
from .imagesets import rgb_array, set_hash, uint8_rgb, unit_float

DEFAULT_BATCH_SIZE = 32
INCEPTION_SIZE = (299, 299)
LPIPS_MIN_SIDE = 31  # AlexNet's second max pool needs at least this many pixels
LPIPS_BATCH_PIXELS = 16 * 2**20  # images of a batch together (bounds the backbone's activations)
# torchvision's AlexNet_Weights.IMAGENET1K_V1 (what torchmetrics' LPIPS downloads for its backbone).
ALEXNET_WEIGHTS_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class FeatureNetwork:
    kind: str  # "inception", "clip" or "lpips"
    source: str  # what load_feature_network() takes
    name: str  # the model named in "needs model NAME: reason"
    label: str  # what a dropdown shows
    test_model: bool  # random weights: never a real score


KIND_NAMES = {"inception": "Inception network", "clip": "CLIP model", "lpips": "LPIPS network",
              "nima": "NIMA model", "dino": "DINO model"}
NO_NIMA_REASON = ("no NIMA model is configured on this server (the host sets ASL_NIMA_MODEL to a converted "
                  "NIMA folder; see pipelines/metrics/nima.py)")

NETWORKS: dict[str, dict[str, FeatureNetwork]] = {
    "inception": {
        "fid-inception": FeatureNetwork("inception", "fid-inception", "FID Inception v3",
                                        "FID Inception v3 (pytorch-fid / TensorFlow weights)", False),
        "tiny:inception": FeatureNetwork("inception", "tiny:inception", "FID Inception v3 (tiny test network)",
                                         f"Inception — {TINY_LABEL}", True),
    },
    "clip": {
        "openai/clip-vit-base-patch32": FeatureNetwork(
            "clip", "openai/clip-vit-base-patch32", "CLIP ViT-B/32 (openai/clip-vit-base-patch32)",
            "CLIP ViT-B/32 (openai/clip-vit-base-patch32)", False),
        "tiny:clip": FeatureNetwork("clip", "tiny:clip", "CLIP (tiny test model)", f"CLIP — {TINY_LABEL}", True),
    },
    "lpips": {
        "lpips-alex": FeatureNetwork("lpips", "lpips-alex", "LPIPS (AlexNet)",
                                     "LPIPS (AlexNet backbone, linear weights from torchmetrics)", False),
        "tiny:lpips": FeatureNetwork("lpips", "tiny:lpips", "LPIPS (tiny test network)",
                                     f"LPIPS — {TINY_LABEL}: random AlexNet backbone", True),
    },
    # DINO-I (DreamBooth's subject-fidelity metric): self-supervised ViT features tell apart identity and look
    # that CLIP, trained on captions, tends to merge; DINOv2 ViT-S/14 through transformers.
    "dino": {
        "facebook/dinov2-small": FeatureNetwork("dino", "facebook/dinov2-small",
                                                "DINOv2 ViT-S/14 (facebook/dinov2-small)",
                                                "DINOv2 ViT-S/14 (facebook/dinov2-small)", False),
        "tiny:dino": FeatureNetwork("dino", "tiny:dino", "DINO (tiny test model)", f"DINO — {TINY_LABEL}", True),
    },
    # the host's own NIMA model (ASL_NIMA_MODEL) is added by network_choices; none can be downloaded
    "nima": {
        "": FeatureNetwork("nima", "", "NIMA", "None configured on this server", False),
        "tiny:nima": FeatureNetwork("nima", "tiny:nima", "NIMA (tiny test network)", f"NIMA — {TINY_LABEL}", True),
    },
}


def _check_kind(kind: str) -> None:
    if kind not in NETWORKS:
        raise ValueError(f"Unknown feature network kind {kind!r}; known: {', '.join(NETWORKS)}.")


def network_for(kind: str, source: str) -> FeatureNetwork:
    """The registry entry for `source`, or an entry describing a user-given hub id or folder."""
    _check_kind(kind)
    if source in NETWORKS[kind]:
        return NETWORKS[kind][source]
    test = loader.is_test_model(source)
    name = f"{KIND_NAMES[kind]} '{source}'"
    return FeatureNetwork(kind, source, name, f"{name} — {TINY_LABEL}" if test else name, test)


def network_label(kind: str, source: str) -> str:
    return network_for(kind, source).label


def is_test_network(source: str) -> bool:
    return loader.is_test_model(str(source))


def is_downloaded(kind: str, source: str) -> bool | None:
    """Whether a known network's weights are already here (None when it cannot be told without loading)."""
    if kind == "inception" and source == "fid-inception":
        return _ready(fid_inception_folder())
    if kind == "lpips" and source == "lpips-alex":
        return _lpips_alex_ready()
    if kind in ("clip", "dino") and not loader.is_test_model(source) and not Path(source).exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(source, "config.json"), str)
        except Exception:  # an id the hub library rejects: unknown
            return None
    return True if loader.is_test_model(source) else None


def network_choices(kind: str) -> list[tuple[str, str]]:
    """(label, source) pairs for a dropdown: real networks first, then the tiny test ones."""
    _check_kind(kind)
    entries = list(NETWORKS[kind].values())
    if kind == "nima":
        from .nima import configured_source

        configured = configured_source()
        if configured:  # the host's model replaces "none configured"
            register_host_nima(configured)
            entries = [network_for(kind, configured)] + [entry for entry in entries
                                                         if entry.source not in ("", configured)]
    from pipelines.core.network import known_offline

    status = known_offline()  # never probes: the dropdowns are built at page load
    missing = " (not here — cannot be downloaded offline)" if status and status.offline else " (downloads on first use)"
    choices = []
    for entry in sorted(entries, key=lambda item: item.test_model):
        label = _label_with_size(entry)
        if not entry.test_model and is_downloaded(kind, entry.source) is False:
            label += missing
        choices.append((label, entry.source))
    return choices


def _label_with_size(entry: FeatureNetwork) -> str:
    """The dropdown label with the catalog's licence and download size for a real network it lists."""
    known = None if entry.test_model else catalog.entry_for(entry.source)
    return entry.label if known is None else f"{entry.label} — {known.licence}, {known.size_text}"


def default_network(kind: str) -> str:
    """The dropdown's default: the real network whenever it is here or may be fetched; the tiny test network only
    when the real one is missing and the Hub is known to be unreachable. NIMA keeps the host's choice."""
    options = network_choices(kind)
    first = options[0][1]
    if kind == "nima" or is_test_network(first) or is_downloaded(kind, first) is not False \
            or catalog.hub_may_be_used():
        return first
    return next((source for _, source in options if is_test_network(source)), first)


def register_host_nima(source: str) -> None:
    """The host's NIMA model (ASL_NIMA_MODEL) is offered to every visitor: list it in the catalog so a multi-user
    server's source check accepts it wherever the host keeps it."""
    path = Path(source)
    size = sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) if path.is_dir() else \
        (path.stat().st_size if path.is_file() else 0)
    catalog.register(catalog.CatalogEntry("nima", source, "NIMA (this server's)", "set by the host", size,
                                          verified="configured by the host (ASL_NIMA_MODEL)"))


def _reason_of(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    # the loader's "Could not load the model 'X': reason." and "Could not load 'X': reason."
    if text.startswith(("Could not load the model '", "Could not load '")) and "': " in text:
        text = text.split("': ", 1)[1]
    return text.rstrip(".")


def needs_model_message(kind: str, source: str, err: BaseException | str) -> str:
    """The plain "needs model X: reason" message for a network that cannot be loaded."""
    text = str(err).strip()
    if text.startswith("needs model "):
        return text.rstrip(".")
    reason = err if isinstance(err, str) else _reason_of(err)
    return f"needs model {network_for(kind, source).name}: {str(reason).rstrip('.')}"


# ---------------------------------------------------------------------------------------------- loading
def _float32() -> Any:
    import torch

    return torch.float32  # metrics are defined in float32 (never fp16, even on a GPU)


def load_feature_network(kind: str, source: str) -> Any:
    """The network of `kind` from `source`, through the core loader (and its cache).

    inception -> module returning {"pool", "logits"}; clip -> (CLIPModel, CLIPProcessor); lpips -> module
    taking two [-1, 1] batches; nima -> module giving the probabilities of the ratings 1…10 for [0, 1] batches;
    dino -> (Dinov2Model, its image processor).
    Raises ModelLoadError("needs model X: reason") when it cannot be had.
    """
    _check_kind(kind)
    source = str(source)
    if kind == "nima" and not source:
        raise ModelLoadError(needs_model_message(kind, source, NO_NIMA_REASON))
    try:
        if kind == "inception":
            return _load_inception(source)
        if kind == "clip":
            model = loader.load_model("transformers", source, class_name="CLIPModel", dtype=_float32())
            processor = loader.load_model("transformers", source, class_name="CLIPProcessor")
            return model, processor
        if kind == "dino":
            model = loader.load_model("transformers", source, class_name="Dinov2Model", dtype=_float32())
            return model, loader.load_model("transformers", source, class_name="AutoImageProcessor")
        if kind == "nima":
            from . import nima  # (registers the architecture)

            if source == nima.configured_source():
                register_host_nima(source)

            return loader.load_model("torch_module", source, dtype=_float32())
        return _load_lpips(source)
    except Exception as err:
        raise ModelLoadError(needs_model_message(kind, source, err)) from err


def _load_inception(source: str) -> Any:
    if source == "fid-inception":
        from . import fid_inception

        source = str(fid_inception.ensure_fid_inception())
    else:
        from . import fid_inception  # noqa: F401  (registers the architecture for user folders)
    return loader.load_model("torch_module", source, dtype=_float32())


def _model_device(model: Any) -> Any:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------- feature cache
class FeatureCache(KeyedCache):
    """Features by (network kind, source, set content hash), computed once and shared; thread safe.

    Least recently used entries are dropped beyond `budget_bytes`. Cached arrays are read-only.
    """

    def __init__(self, budget_bytes: int = 1 << 30) -> None:
        super().__init__(budget_bytes)
        self._computed: dict[str, int] = {}

    def get_or_compute(self, kind: str, source: str, content_hash: str, compute: Callable[[], Any]) -> Any:
        def create() -> tuple[Any, int]:
            value = _read_only(compute())
            with self._lock:
                self._computed[kind] = self._computed.get(kind, 0) + 1
            return value, _nbytes(value)

        return self.get_or_create((kind, str(source), content_hash), create)

    def has(self, kind: str, source: str, content_hash: str) -> bool:
        """Whether get_or_compute would find these features without computing them."""
        return (kind, str(source), content_hash) in self

    def computed(self, kind: str) -> int:
        """How many times features of `kind` were computed (cache misses) since the last clear()."""
        with self._lock:
            return self._computed.get(kind, 0)

    def clear(self) -> None:
        with self._lock:
            super().clear()
            self._computed.clear()


def _read_only(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, tuple):
        for item in value:
            _read_only(item)
    return value


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(item) for item in value)
    return 64


FEATURE_CACHE = FeatureCache()


def _text_hash(prompts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(prompts), ensure_ascii=False).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------- images
def _check_nonempty(images: Sequence[Any], what: str = "images") -> None:
    if len(images) == 0:
        raise ValueError(f"No {what} to compute features of.")


def clean_resize(image_uint8: np.ndarray, size: tuple[int, int] = INCEPTION_SIZE) -> tuple[np.ndarray, bool]:
    """Resize like clean-fid's make_resizer("PIL", False, "bicubic", size): each channel as a 32-bit float
    PIL image, bicubic (antialiased when shrinking), clipped to [0, 255], never quantised.

    `size` is (width, height) as PIL takes it. Returns (float32 HxWx3 array in [0, 255], resized); an image
    already of that size comes back unchanged (as float32) with resized False.
    """
    from PIL import Image

    image = np.asarray(image_uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"clean_resize needs a height x width x 3 image, not shape {image.shape}.")
    width, height = int(size[0]), int(size[1])
    if image.shape[:2] == (height, width):
        return image.astype(np.float32), False
    channels = []
    for channel in range(3):
        plane = Image.fromarray(np.ascontiguousarray(image[:, :, channel], dtype=np.float32))  # mode "F"
        resized = plane.resize((width, height), resample=Image.Resampling.BICUBIC)
        channels.append(np.asarray(resized, dtype=np.float32).clip(0, 255))
    return np.stack(channels, axis=2), True


def _batches(count: int, batch_size: int) -> list[range]:
    size = max(1, int(batch_size))
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


# ---------------------------------------------------------------------------------------------- Inception
def inception_features(images: Sequence[np.ndarray], source: str, batch_size: int = DEFAULT_BATCH_SIZE,
                       content_hash: str | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(pool N x 2048 float64, softmax probabilities N x 1008 float64, whether any image was resized).

    Images are clean-resized to 299x299 first; cached per (source, set content). content_hash: the images'
    set_hash when the caller already has it (an ImageSet keeps it), which spares hashing the set again.
    """
    _check_nonempty(images)
    rgb = [uint8_rgb(image, index) for index, image in enumerate(images)]

    def compute() -> tuple[np.ndarray, np.ndarray, bool]:
        import torch

        model = load_feature_network("inception", source)
        device = _model_device(model)
        pools, probabilities, resized = [], [], False
        with torch.inference_mode():
            for batch in _batches(len(rgb), batch_size):
                arrays = []
                for index in batch:
                    array, was_resized = clean_resize(rgb[index])
                    arrays.append(array)
                    resized |= was_resized
                x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device) / 255.0
                out = model(x)
                if not isinstance(out, dict) or "pool" not in out or "logits" not in out:
                    raise ModelLoadError(needs_model_message("inception", source, "it does not give Inception "
                                                             "pool features and logits"))
                pools.append(out["pool"].double().cpu().numpy())
                probabilities.append(torch.softmax(out["logits"].double(), dim=1).cpu().numpy())
        return np.concatenate(pools), np.concatenate(probabilities), resized

    return FEATURE_CACHE.get_or_compute("inception", source, content_hash or set_hash(rgb), compute)


# ---------------------------------------------------------------------------------------------- CLIP
def _projected(output: Any) -> Any:
    """get_image/text_features return a tensor (transformers 4) or an output whose pooler_output is it (5)."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _unit_rows(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


def clip_image_embeddings(images: Sequence[np.ndarray], source: str, batch_size: int = DEFAULT_BATCH_SIZE,
                          content_hash: str | None = None) -> np.ndarray:
    """CLIP image embeddings, N x D float64, L2-normalised; cached per (source, set content, as for
    inception_features)."""
    _check_nonempty(images)
    rgb = [uint8_rgb(image, index) for index, image in enumerate(images)]

    def compute() -> np.ndarray:
        import torch

        model, processor = load_feature_network("clip", source)
        device = _model_device(model)
        chunks = []
        with torch.inference_mode():
            for batch in _batches(len(rgb), batch_size):
                inputs = processor.image_processor([rgb[index] for index in batch], return_tensors="pt",
                                                   input_data_format="channels_last")
                pixels = inputs["pixel_values"].to(device=device, dtype=torch.float32)
                chunks.append(_projected(model.get_image_features(pixel_values=pixels)).double().cpu().numpy())
        return _unit_rows(np.concatenate(chunks))

    return FEATURE_CACHE.get_or_compute("clip", source, content_hash or set_hash(rgb), compute)


# ---------------------------------------------------------------------------------------------- DINO
def dino_image_embeddings(images: Sequence[np.ndarray], source: str, batch_size: int = DEFAULT_BATCH_SIZE,
                          content_hash: str | None = None) -> np.ndarray:
    """DINO image embeddings (the ViT's CLS token, as DreamBooth's DINO metric uses), N x D float64,
    L2-normalised; cached per (source, set content)."""
    _check_nonempty(images)
    rgb = [uint8_rgb(image, index) for index, image in enumerate(images)]

    def compute() -> np.ndarray:
        import torch

        model, processor = load_feature_network("dino", source)
        device = _model_device(model)
        chunks = []
        with torch.inference_mode():
            for batch in _batches(len(rgb), batch_size):
                inputs = processor([rgb[index] for index in batch], return_tensors="pt",
                                   input_data_format="channels_last")
                pixels = inputs["pixel_values"].to(device=device, dtype=torch.float32)
                cls = model(pixel_values=pixels).last_hidden_state[:, 0]
                chunks.append(cls.double().cpu().numpy())
        return _unit_rows(np.concatenate(chunks))

    return FEATURE_CACHE.get_or_compute("dino", source, content_hash or set_hash(rgb), compute)


def build_tiny_dino(folder: Path) -> None:
    """A random-weight DINOv2 with the real model's layout and preprocessing (resize 256, crop 224 → here 32)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                          image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(folder, safe_serialization=True)
    BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                      do_convert_rgb=True).save_pretrained(folder)


def _context_length(model: Any, tokenizer: Any) -> int:
    length = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None) or 77
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < length:
        length = model_max
    return int(length)


def clip_text_embeddings(prompts: Sequence[str], source: str, batch_size: int = DEFAULT_BATCH_SIZE
                         ) -> tuple[np.ndarray, list[bool]]:
    """(CLIP text embeddings N x D float64 L2-normalised, per prompt whether it was longer than CLIP's context
    (77 tokens with the start and end tokens) and so was cut)."""
    _check_nonempty(prompts, "prompts")
    texts = [str(prompt) for prompt in prompts]

    def compute() -> tuple[np.ndarray, tuple[bool, ...]]:
        import torch

        model, processor = load_feature_network("clip", source)
        tokenizer = processor.tokenizer
        device = _model_device(model)
        length = _context_length(model, tokenizer)
        counts = [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
        truncated = tuple(count > length for count in counts)
        chunks = []
        with torch.inference_mode():
            for batch in _batches(len(texts), batch_size):
                tokens = tokenizer([texts[index] for index in batch], padding="max_length", truncation=True,
                                   max_length=length, return_tensors="pt")
                tokens = {key: value.to(device) for key, value in tokens.items()
                          if key in ("input_ids", "attention_mask")}
                chunks.append(_projected(model.get_text_features(**tokens)).double().cpu().numpy())
        return _unit_rows(np.concatenate(chunks)), truncated

    embeddings, truncated = FEATURE_CACHE.get_or_compute("clip_text", source, _text_hash(texts), compute)
    return embeddings, list(truncated)


# ---------------------------------------------------------------------------------------------- NIMA
def nima_scores(images: Sequence[np.ndarray], source: str, batch_size: int = DEFAULT_BATCH_SIZE,
                content_hash: str | None = None) -> np.ndarray:
    """NIMA's mean rating (1 to 10) of each image, float64 (N,); cached per (source, set content).

    Images are resized to 224×224 with PIL's bilinear filter (torchvision's Resize on PIL images, which the
    published NIMA models were trained with) and given to the model in [0, 1]; it normalises them itself.
    """
    from PIL import Image

    from .nima import INPUT_SIZE, mean_rating

    _check_nonempty(images)
    rgb = [uint8_rgb(image, index) for index, image in enumerate(images)]

    def compute() -> np.ndarray:
        import torch

        model = load_feature_network("nima", source)
        device = _model_device(model)
        chunks = []
        with torch.inference_mode():
            for batch in _batches(len(rgb), batch_size):
                arrays = [np.asarray(Image.fromarray(rgb[index]).resize((INPUT_SIZE, INPUT_SIZE),
                                                                        Image.Resampling.BILINEAR))
                          for index in batch]
                x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device, torch.float32) / 255.0
                chunks.append(model(x).double().cpu().numpy())
        return mean_rating(np.concatenate(chunks))

    return FEATURE_CACHE.get_or_compute("nima", source, content_hash or set_hash(rgb), compute)


# ---------------------------------------------------------------------------------------------- LPIPS
def make_lpips(config: dict[str, Any], state_dict: dict[str, Any] | None = None) -> Any:
    """The `lpips` architecture: torchmetrics' LPIPS module (backbone + linear layers), built without any
    download; its weights come from `state_dict`. Forward(in0, in1) takes Bx3xHxW batches in [-1, 1]."""
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    net = str(config.get("net", "alex"))
    module = _NoTrainLpips(pretrained=False, net=net, pnet_rand=True, use_dropout=True, eval_mode=True)
    if state_dict is not None:
        load_lpips_weights(module, state_dict, "the weights")
    return module.eval()


def load_lpips_weights(module: Any, state: dict[str, Any], what: str) -> None:
    """Load every tensor of an LPIPS module strictly: a missing, renamed or extra key raises ValueError naming
    it, so no layer is ever left with its random initialisation. `lins.N` (torchmetrics' aliases of `linN`) are
    filled from `linN`."""
    expected = {key for key in module.state_dict() if not key.startswith("lins.")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{what} do not fit LPIPS: missing {missing[:3]}, unexpected {unexpected[:3]}")
    aliases = {f"lins.{key[3]}{key[4:]}": value for key, value in state.items() if re.match(r"lin\d\.", key)}
    module.load_state_dict({**state, **aliases}, strict=True)


def _lpips_state(module: Any) -> dict[str, Any]:
    """The module's tensors without the `lins.N` aliases (safetensors refuses shared tensors)."""
    return {key: value.detach().contiguous() for key, value in module.state_dict().items()
            if not key.startswith("lins.")}


def _packaged_lpips_linear_weights(net: str) -> dict[str, Any]:
    """The LPIPS linear-layer weights torchmetrics ships (a few KB), read with weights_only=True."""
    import torch
    from torchmetrics.functional.image import lpips as tm_lpips

    path = Path(tm_lpips.__file__).parent / "lpips_models" / f"{net}.pth"
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _save_lpips(module: Any, folder: Path, config: dict[str, Any]) -> Path:
    from pipelines.core.safeweights import save_safetensors

    metadata = {key: str(value) for key, value in config.items()}
    save_safetensors(_lpips_state(module), folder / "model.safetensors", metadata)
    with atomic_path(folder / "config.json") as tmp:  # written last: marks a finished folder
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def fid_inception_folder() -> Path:
    """Where fid_inception.ensure_fid_inception() keeps the converted weights (same path as its weights_folder)."""
    return settings.cache_dir() / "metrics" / "fid-inception"


def _ready(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


_LPIPS_LOCK = threading.Lock()


def build_tiny_lpips(folder: Path) -> None:
    """The tiny test LPIPS (built by tiny_models, which seeds the RNG): the same computation with a random-weight
    AlexNet backbone (no download) and torchmetrics' linear weights."""
    module = make_lpips({"net": "alex"})
    random_backbone = {key: value for key, value in _lpips_state(module).items() if key.startswith("net.")}
    load_lpips_weights(module, {**random_backbone, **_packaged_lpips_linear_weights("alex")},
                       "torchmetrics' LPIPS linear weights")
    _save_lpips(module, folder, {"architecture": LPIPS_ARCHITECTURE, "net": "alex", "backbone": "random",
                                 "test_model": True, "label": TINY_LABEL})


def lpips_alex_folder() -> Path:
    return settings.cache_dir() / "metrics" / "lpips-alex"


def _torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch when it is not loaded yet (dropdowns are built at start-up)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir())
    default = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "torch"
    return Path(os.environ.get("TORCH_HOME", default)).expanduser() / "hub"


def _torch_hub_alexnet_file() -> Path:
    """Where torchvision keeps the AlexNet weights it downloaded (used when already there)."""
    return _torch_hub_dir() / "checkpoints" / Path(ALEXNET_WEIGHTS_URL).name


def _lpips_alex_ready() -> bool:
    return _ready(lpips_alex_folder()) or _torch_hub_alexnet_file().is_file()


def _alexnet_backbone_state(alexnet: dict[str, Any], module: Any) -> dict[str, Any]:
    """torchvision AlexNet `features.I.*` tensors renamed to LPIPS's `net.sliceK.I.*`."""
    slice_of = {}
    for slice_name, child in module.net.named_children():
        for index, _ in child.named_children():
            slice_of[index] = slice_name
    state = {}
    for key, value in alexnet.items():
        parts = key.split(".")
        if parts[0] == "features" and parts[1] in slice_of:
            state[f"net.{slice_of[parts[1]]}.{'.'.join(parts[1:])}"] = value
    return state


def ensure_lpips_alex() -> Path:
    """LPIPS with the real AlexNet backbone (torchvision's ImageNet weights, taken from torch's hub cache or
    downloaded once when online, read with weights_only=True) and torchmetrics' linear weights, converted to
    safetensors under settings.cache_dir()/metrics/lpips-alex/."""
    folder = lpips_alex_folder()
    if _ready(folder):
        return folder
    with _LPIPS_LOCK:
        if _ready(folder):
            return folder
        from . import fid_inception

        name = NETWORKS["lpips"]["lpips-alex"].name
        url = ALEXNET_WEIGHTS_URL
        cached = _torch_hub_alexnet_file()
        if cached.is_file():
            try:
                alexnet = read_pth_state_dict(cached)
            except Exception as err:
                raise ModelLoadError(f"needs model {name}: the AlexNet weights in {cached} are not usable "
                                     f"({err})") from err
        else:
            prefix = Path(url).stem.rsplit("-", 1)[-1]  # torchvision names carry a sha256 prefix
            alexnet = fid_inception.fetch_known_weights(url, name, sha256_prefix=prefix, max_bytes=300 * 2**20)
        module = make_lpips({"net": "alex"})
        backbone = _alexnet_backbone_state(alexnet, module)
        if len(backbone) != 10:
            raise ModelLoadError(f"needs model {name}: the AlexNet weights from {url} do not have the expected "
                                 "layers")
        try:
            load_lpips_weights(module, {**backbone, **_packaged_lpips_linear_weights("alex")},
                               f"the AlexNet weights from {url} with torchmetrics' linear weights")
        except ValueError as err:
            raise ModelLoadError(f"needs model {name}: {err}") from err
        return _save_lpips(module, folder, {"architecture": LPIPS_ARCHITECTURE, "net": "alex",
                                            "backbone": url, "test_model": False})


def _load_lpips(source: str) -> Any:
    if source == "lpips-alex":
        source = str(ensure_lpips_alex())
    return loader.load_model("torch_module", source, dtype=_float32())


def _checked_for_lpips(images: Sequence[np.ndarray], which: str) -> list[np.ndarray]:
    """RGB images whose range is known (uint8, or floats in [0, 1]); converted to [-1, 1] batch by batch later."""
    checked = []
    for index, image in enumerate(images):
        try:
            array = rgb_array(image, index)
            if array.dtype != np.uint8:
                unit_float(array, index)  # raises for ambiguous ranges
        except ValueError as err:
            raise ValueError(f"Set {which}: {err}") from err
        checked.append(array)
    return checked


def _signed_unit_batch(images: list[np.ndarray]) -> Any:
    """Bx3xHxW float32 in [-1, 1] (what LPIPS expects), via float64 [0, 1] so uint8 and unit floats agree."""
    import torch

    unit = np.stack([unit_float(image, index) for index, image in enumerate(images)])
    return torch.from_numpy(unit * 2.0 - 1.0).permute(0, 3, 1, 2).to(torch.float32)


def _lpips_layers(model: Any, x: Any) -> list[Any] | None:
    """The image half of torchmetrics' LPIPS forward (scaling, backbone, unit-normalised layers), so one image's
    layers serve several comparisons; None for a module without that layout (then it is called whole)."""
    from torchmetrics.functional.image.lpips import _normalize_tensor

    if not all(hasattr(model, name) for name in ("scaling_layer", "net", "lins", "L")) \
            or getattr(model, "resize", None) is not None or getattr(model, "spatial", False):
        return None
    outputs = model.net.forward(model.scaling_layer(x))
    return [_normalize_tensor(outputs[k]) for k in range(model.L)]


def _lpips_from_layers(model: Any, first: list[Any], second: list[Any]) -> Any:
    """The pair half of torchmetrics' LPIPS forward: linear layers on squared differences, spatially averaged."""
    from torchmetrics.functional.image.lpips import _spatial_average

    return sum(_spatial_average(model.lins[k]((first[k] - second[k]) ** 2), keep_dim=True) for k in range(model.L))


def _check_lpips_pairs(candidates: list[list[np.ndarray]], references: list[np.ndarray], names: list[str]) -> None:
    for images, name in zip(candidates, names, strict=True):
        where = f" of set {name}" if len(candidates) > 1 else ""
        for index, (first, second) in enumerate(zip(images, references, strict=True)):
            if first.shape[:2] != second.shape[:2]:
                raise ValueError(f"Pair {index + 1}{where}: the images differ in size ({first.shape[1]}x"
                                 f"{first.shape[0]} and {second.shape[1]}x{second.shape[0]}); LPIPS compares images "
                                 "of the same size.")
            if min(first.shape[:2]) < LPIPS_MIN_SIDE:
                raise ValueError(f"Pair {index + 1}{where}: the images are {first.shape[1]}x{first.shape[0]}; LPIPS "
                                 f"needs at least {LPIPS_MIN_SIDE}x{LPIPS_MIN_SIDE} pixels.")


def lpips_distances_to(candidates: Sequence[Sequence[np.ndarray]], references: Sequence[np.ndarray], source: str,
                       batch_size: int = DEFAULT_BATCH_SIZE, labels: Sequence[str] = ("A", "B"),
                       reference_label: str = "reference") -> list[np.ndarray]:
    """LPIPS distance of candidates[k][i] to references[i], for every list k: one float64 (N,) array per list.

    Each reference image goes through the backbone once for all lists (A and B against one reference set:
    3 backbone passes per pair of pairs instead of 4). Inputs are uint8 [0, 255] or float [0, 1]; this function
    maps them to [-1, 1]. The two images of a pair must have the same size (ValueError otherwise); different
    pairs may differ in size. Results are cached per (list, references) content. labels name the lists (and
    reference_label the references) in error messages.
    """
    names = [labels[k] if k < len(labels) else f"{k + 1}" for k in range(len(candidates))]
    for images in candidates:
        if len(images) != len(references):
            raise ValueError(f"LPIPS compares pairs: got {len(images)} and {len(references)} images.")
    _check_nonempty(references)
    refs = _checked_for_lpips(references, reference_label)
    lists = [_checked_for_lpips(images, name) for images, name in zip(candidates, names, strict=True)]
    _check_lpips_pairs(lists, refs, names)
    ref_hash = set_hash(refs)
    keys = [hashlib.sha256((set_hash(images) + ref_hash).encode()).hexdigest() for images in lists]
    missing = [k for k, key in enumerate(keys) if not FEATURE_CACHE.has("lpips", source, key)]
    computed = _compute_lpips([lists[k] for k in missing], refs, source, batch_size) if missing else []
    fresh = dict(zip(missing, computed, strict=True))  # the uncached lists, in one shared reference pass

    def distances(k: int) -> np.ndarray:  # a list cached before (and evicted since) is computed alone
        return fresh[k] if k in fresh else _compute_lpips([lists[k]], refs, source, batch_size)[0]

    return [FEATURE_CACHE.get_or_compute("lpips", source, key, functools.partial(distances, k))
            for k, key in enumerate(keys)]


def _compute_lpips(lists: list[list[np.ndarray]], refs: list[np.ndarray], source: str, batch_size: int
                   ) -> list[np.ndarray]:
    import torch

    model = load_feature_network("lpips", source)
    device = _model_device(model)
    distances = [np.zeros(len(refs), dtype=np.float64) for _ in lists]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(refs):
        by_shape.setdefault(image.shape[:2], []).append(index)
    with torch.inference_mode():
        for shape, indices in by_shape.items():
            per_batch = max(1, min(int(batch_size), LPIPS_BATCH_PIXELS // (shape[0] * shape[1])))
            for batch in _batches(len(indices), per_batch):
                chosen = [indices[n] for n in batch]
                ref_x = _signed_unit_batch([refs[i] for i in chosen]).to(device)
                ref_layers = _lpips_layers(model, ref_x)
                for k, images in enumerate(lists):
                    x = _signed_unit_batch([images[i] for i in chosen]).to(device)
                    value = (model(x, ref_x) if ref_layers is None
                             else _lpips_from_layers(model, _lpips_layers(model, x), ref_layers))
                    distances[k][chosen] = value.reshape(len(chosen)).double().cpu().numpy()
    return distances


def lpips_distances(images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray], source: str,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """LPIPS distance of each pair (images_a[i], images_b[i]), float64 (N,); 0 for identical images.

    Inputs are uint8 [0, 255] or float [0, 1]; this function maps them to [-1, 1]. The two images of a pair
    must have the same size (ValueError otherwise); different pairs may differ in size.
    """
    return lpips_distances_to([images_a], images_b, source, batch_size, reference_label="B")[0]
