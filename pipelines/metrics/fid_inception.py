"""The FID Inception v3: pytorch-fid's network (TensorFlow's 2015 Inception ported to torchvision's blocks).

FID, KID, IS and seed 000's per-image scores are only comparable with published numbers when they use this
exact network: torchvision's Inception3 with 1008 classes and four patched blocks (average pools that leave
the zero padding out, and a max pool in the last block), loaded with the weights pytorch-fid publishes.

* Architecture ``fid_inception_v3`` (``make_fid_inception``) is registered with the core loader by the package, so a
  folder with ``config.json`` {"architecture": "fid_inception_v3"} and ``model.safetensors`` loads with
  ``loader.load_model("torch_module", folder)``. The state-dict key names are pytorch-fid's
  (``Conv2d_1a_3x3.conv.weight`` … ``Mixed_7c.branch_pool.conv.weight``, ``fc.weight``).
* Forward: Bx3xHxW images, uint8 in [0, 255] or float in [0, 1] -> {"pool": Bx2048 pool3 features,
  "logits": Bx1008}. As in pytorch-fid, images that are not 299x299 are resized bilinearly inside the
  network and then scaled to [-1, 1]; callers should resize the clean-fid way first
  (``pipelines.metrics.features.clean_resize``) so nothing is resized here.
* ``ensure_fid_inception()`` is a known download: on first use, when the download host can be reached, it
  fetches pytorch-fid's ``.pth`` (checked against the sha256 prefix in its name), reads it with
  ``torch.load(weights_only=True)`` (plain tensors, no code runs) and converts it to safetensors under
  ``settings.cache_dir()/metrics/fid-inception/``. Offline it raises ModelLoadError with a plain message.
"""

from __future__ import annotations

import json
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

from pipelines.core import network, settings
from pipelines.core.downloads import download_file, offline_reason, read_pth_state_dict
from pipelines.core.jobs import atomic_path
from pipelines.core.loader import ModelLoadError

from . import FID_INCEPTION_ARCHITECTURE as ARCHITECTURE  # the package registers make_fid_inception under it

MODEL_NAME = "FID Inception v3"
INPUT_SIZE = 299
NUM_CLASSES = 1008
POOL_FEATURES = 2048
# Inception weights ported to PyTorch by pytorch-fid from TensorFlow's inception-2015-12-05.tgz.
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the file name carries its hash prefix
FID_WEIGHTS_MAX_BYTES = 160 * 2**20  # the file is about 91 MB


# ---------------------------------------------------------------------------------------------- blocks
class FIDInceptionA(InceptionA):
    """InceptionA whose average pool leaves the zero padding out of the mean (as TensorFlow's does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class FIDInceptionC(InceptionC):
    """InceptionC with TensorFlow's average pool (padding not counted)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class _FIDInceptionE(InceptionE):
    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(self._pool(x))
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class FIDInceptionE1(_FIDInceptionE):
    """First InceptionE block (Mixed_7b): TensorFlow's average pool (padding not counted)."""

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionE2(_FIDInceptionE):
    """Second InceptionE block (Mixed_7c): the FID network uses a max pool here (a quirk of the TF graph)."""

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


# ---------------------------------------------------------------------------------------------- network
class FIDInceptionV3(Inception3):
    """pytorch-fid's fid_inception_v3(): torchvision's Inception3 (1008 classes, no aux head) with the FID
    blocks, returning the pool3 features and the logits."""

    def __init__(self) -> None:
        super().__init__(num_classes=NUM_CLASSES, aux_logits=False, transform_input=False, init_weights=False)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7b = FIDInceptionE1(1280)
        self.Mixed_7c = FIDInceptionE2(2048)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        dtype = self.fc.weight.dtype
        x = images.to(dtype) / 255.0 if images.dtype == torch.uint8 else images.to(dtype)
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):  # pytorch-fid's resize_input (bilinear)
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # pytorch-fid's normalize_input: (0, 1) -> (-1, 1)
        for block in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, self.maxpool1,
                      self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, self.maxpool2,
                      self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,
                      self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c, self.avgpool):
            x = block(x)
        pool = torch.flatten(x, 1)
        return {"pool": pool, "logits": self.fc(pool)}


def load_weights(module: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Load pytorch-fid weights strictly, tolerating only BatchNorm counters that old checkpoints lack."""
    result = module.load_state_dict(state_dict, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected tensors (e.g. {result.unexpected_keys[0]})")
        raise ValueError(f"the weights do not fit the FID Inception v3: {'; '.join(parts)}")
    return module


def make_fid_inception(config: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None) -> FIDInceptionV3:
    """The `fid_inception_v3` architecture for the loader's torch_module family."""
    module = FIDInceptionV3()
    if state_dict is not None:
        load_weights(module, state_dict)
    return module.eval()


# ---------------------------------------------------------------------------------------------- known downloads
def fetch_known_weights(url: str, model_name: str, *, sha256_prefix: str | None = None,
                        max_bytes: int = FID_WEIGHTS_MAX_BYTES) -> dict[str, torch.Tensor]:
    """Download a known PyTorch pickle and read its tensors safely; ModelLoadError("needs model …") if not."""
    reason = offline_reason(url)
    if reason:
        why = "HF_HUB_OFFLINE=1" if network.env_offline() else reason
        raise ModelLoadError(f"needs model {model_name}: not downloaded yet and offline ({why})")
    downloads = settings.cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads) as folder:
        path = Path(folder) / Path(url.split("?")[0]).name
        try:
            digest = download_file(url, path, max_bytes)
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
            raise ModelLoadError(f"needs model {model_name}: the download from {url} failed ({err})") from err
        if sha256_prefix and not digest.startswith(sha256_prefix):
            raise ModelLoadError(f"needs model {model_name}: the download from {url} is damaged (its checksum "
                                 f"does not match); try again later")
        try:
            return read_pth_state_dict(path)
        except Exception as err:  # an unreadable or unsafe pickle: never fall back to full unpickling
            raise ModelLoadError(f"needs model {model_name}: the download from {url} is not usable ({err})") from err


def weights_folder() -> Path:
    return settings.cache_dir() / "metrics" / "fid-inception"


def is_downloaded() -> bool:
    folder = weights_folder()
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


def convert_fid_weights(state_dict: dict[str, torch.Tensor], folder: Path | None = None) -> Path:
    """Check pytorch-fid's tensors against the architecture and save them as safetensors + config.json."""
    from pipelines.core.safeweights import save_safetensors

    folder = Path(folder) if folder is not None else weights_folder()
    module = make_fid_inception({}, state_dict)  # raises ValueError when the tensors do not fit
    tensors = {key: value.detach().contiguous() for key, value in module.state_dict().items()}
    save_safetensors(tensors, folder / "model.safetensors", {"architecture": ARCHITECTURE, "source": FID_WEIGHTS_URL})
    config = {"architecture": ARCHITECTURE, "source": FID_WEIGHTS_URL, "input_size": INPUT_SIZE,
              "features": POOL_FEATURES, "classes": NUM_CLASSES}
    with atomic_path(folder / "config.json") as tmp:  # written last: its presence marks a finished conversion
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


_DOWNLOAD_LOCK = threading.Lock()


def ensure_fid_inception() -> Path:
    """The folder holding the converted FID Inception weights, downloading them on first use."""
    if is_downloaded():
        return weights_folder()
    with _DOWNLOAD_LOCK:
        if is_downloaded():
            return weights_folder()
        state = fetch_known_weights(FID_WEIGHTS_URL, MODEL_NAME, sha256_prefix=FID_WEIGHTS_SHA256_PREFIX)
        try:
            return convert_fid_weights(state)
        except ValueError as err:
            raise ModelLoadError(f"needs model {MODEL_NAME}: the download from {FID_WEIGHTS_URL} is not usable "
                                 f"({err})") from err
