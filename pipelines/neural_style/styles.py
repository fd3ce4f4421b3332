"""Named styles: pretrained downloads, styles trained or added here, and the tiny test style.

* Pretrained styles are published as PyTorch pickles (``.pth``). They are fetched on first use only, from the
  address their authors publish, read with ``torch.load(weights_only=True)`` (no code runs), converted to
  safetensors under ``settings.cache_dir()/styles/NAME.safetensors`` and loaded from there ever after.
* Trained and user-added styles live in ``settings.outputs_dir()/styles/NAME.safetensors``; they are
  safetensors only, checked by content.
* ``tiny:style`` is the random-weight test network built by ``pipelines.core.tiny_models``.

Importing this module is cheap (no torch); nothing touches the network until a style is asked for.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.core import settings
from pipelines.core.downloads import download_file, offline_reason, read_pth_state_dict
from pipelines.core.errors import UserError
from pipelines.core.jobs import ProgressCallback, atomic_path
from pipelines.core.loader import TINY_LABEL
from pipelines.core.safeweights import check_safetensors

TINY_STYLE = "tiny:style"
TINY_STYLE_NOTE = "random weights, output is noise"
# What a style trained against a random VGG16 is labelled with, in its file, its PNGs and its run records.
TEST_STYLE_NOTE = "trained with a random-weight VGG16 loss network: test only, not a real style"

PROBE_TIMEOUT_S = 3
MAX_DOWNLOAD_BYTES = 200 * 2**20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")

EXAMPLES_REPO = "https://github.com/pytorch/examples/tree/main/fast_neural_style"
# pytorch/examples fast_neural_style/download_saved_models.py downloads this zip; it holds saved_models/NAME.pth.
EXAMPLES_ZIP = "https://www.dropbox.com/s/lrvwfehqdcxoza8/saved_models.zip?dl=1"
RRMINA_REPO = "https://github.com/rrmina/fast-neural-style-pytorch"
RRMINA_RAW = "https://github.com/rrmina/fast-neural-style-pytorch/raw/master/transforms/{}.pth"


@dataclass(frozen=True)
class PretrainedStyle:
    name: str
    label: str
    layout: str  # "pytorch_examples" or "rrmina"
    url: str  # what is downloaded
    member: str | None  # the file inside a zip download, or None when the url is the .pth itself
    source: str  # the repository that publishes it


def _examples(name: str, label: str) -> PretrainedStyle:
    return PretrainedStyle(name, label, "pytorch_examples", EXAMPLES_ZIP, f"saved_models/{name}.pth", EXAMPLES_REPO)


def _rrmina(name: str, file: str, label: str) -> PretrainedStyle:
    return PretrainedStyle(name, label, "rrmina", RRMINA_RAW.format(file), None, RRMINA_REPO)


PRETRAINED: dict[str, PretrainedStyle] = {style.name: style for style in (
    _examples("rain_princess", "Rain Princess (Leonid Afremov) — pytorch/examples"),
    _examples("candy", "Candy — pytorch/examples"),
    _examples("mosaic", "Mosaic — pytorch/examples"),
    _examples("udnie", "Udnie (Francis Picabia) — pytorch/examples"),
    _rrmina("tokyo_ghoul", "tokyo_ghoul", "Tokyo Ghoul (manga art) — rrmina"),
    _rrmina("starry_night", "starry", "Starry Night (van Gogh) — rrmina"),
    _rrmina("great_wave", "wave", "The Great Wave (Hokusai) — rrmina"),
    _rrmina("rrmina_mosaic", "mosaic", "Mosaic — rrmina"),
    _rrmina("rrmina_udnie", "udnie", "Udnie — rrmina"),
    _rrmina("lazy", "lazy", "Lazy — rrmina"),
    _rrmina("bayanihan", "bayanihan", "Bayanihan (Botong Francisco) — rrmina"),
)}


class StyleUnavailableError(UserError, RuntimeError):
    """A pretrained style that is not downloaded yet and cannot be downloaded now; the message says why."""


@dataclass(frozen=True)
class StyleEntry:
    name: str  # what load_style() takes
    label: str  # what a dropdown shows
    kind: str  # "pretrained", "trained" or "test"
    available: bool  # usable without a download
    source: str  # repository, file or "random weights"


# ---------------------------------------------------------------------------------------------- folders
def pretrained_dir() -> Path:
    return settings.cache_dir() / "styles"


def user_styles_dir() -> Path:
    return settings.outputs_dir() / "styles"


def pretrained_path(name: str) -> Path:
    return pretrained_dir() / f"{name}.safetensors"


def user_style_path(name: str) -> Path:
    return user_styles_dir() / f"{name}.safetensors"


def user_style_names() -> list[str]:
    folder = settings.outputs_dir() / "styles"
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.glob("*.safetensors") if _NAME.match(path.stem))


def _file_test_note(path: Path) -> str | None:
    """Why the style file at `path` is a test model (its metadata says so), or None."""
    metadata = check_safetensors(path).get("__metadata__") or {}
    marked = str(metadata.get("test_model", "")).lower() in ("true", "1", "yes")
    if marked or str(metadata.get("vgg_weights", "")).startswith("random"):
        return str(metadata.get("test_note") or TEST_STYLE_NOTE)
    return None


def style_test_note(name_or_path: str | os.PathLike) -> str | None:
    """Why a style's output is not real (the tiny style, a style trained against a random VGG16), or None.
    Everything such a style makes is labelled with this: the dropdown, PNG metadata, run records, the page."""
    text = str(name_or_path).strip()
    if text == TINY_STYLE:
        return TINY_STYLE_NOTE
    if text in PRETRAINED:
        return None
    path = user_style_path(text) if _NAME.match(text) and user_style_path(text).exists() else Path(text)
    try:
        return _file_test_note(path) if path.is_file() else None
    except ValueError:
        return None


def _user_label(name: str) -> str:
    try:
        note = _file_test_note(user_style_path(name))
    except ValueError:
        return f"{name} (yours — unreadable file)"
    if note:
        return f"{name} (yours — trained with a random-weight VGG: test only)"
    return f"{name} (yours)"


# What a pretrained style that is not on this machine says in the dropdown: the truth as known without a network call.
NOT_DOWNLOADED = "(downloads on first use)"
CANNOT_DOWNLOAD = "(not here — cannot be downloaded offline)"


def _not_downloaded_note() -> str:
    """Offline (switched off, or a probe already failed) a missing style cannot be fetched: the label says so."""
    from pipelines.core import network

    status = network.known_offline()  # never probes: the dropdown is built at page load
    return CANNOT_DOWNLOAD if status is not None and status.offline else NOT_DOWNLOADED


def list_styles() -> list[StyleEntry]:
    """Every style a user can pick: pretrained (downloaded or not), trained/added ones, then the test style."""
    entries = []
    for style in PRETRAINED.values():
        downloaded = pretrained_path(style.name).exists()
        label = style.label if downloaded else f"{style.label} {_not_downloaded_note()}"
        entries.append(StyleEntry(style.name, label, "pretrained", downloaded, style.source))
    for name in user_style_names():
        entries.append(StyleEntry(name, _user_label(name), "trained", True, str(user_style_path(name))))
    entries.append(StyleEntry(TINY_STYLE, TINY_LABEL, "test", True, "random weights"))
    return entries


def available_names() -> list[str]:
    return [entry.name for entry in list_styles()]


def clean_style_name(name: str) -> str:
    """A name for a new style: letters, digits, '_' and '-', up to 64; not a pretrained style's name."""
    cleaned = re.sub(r"\s+", "_", (name or "").strip())
    if not _NAME.match(cleaned):
        raise ValueError(f"{name!r} cannot be a style name: use 1–64 letters, digits, '_' or '-', "
                         "starting with a letter or digit.")
    if cleaned in PRETRAINED or cleaned.startswith("tiny"):
        raise ValueError(f"{cleaned!r} is the name of a built-in style; choose another name.")
    return cleaned


# ---------------------------------------------------------------------------------------------- resolving
@dataclass(frozen=True)
class ResolvedStyle:
    name: str
    source: str  # what loader.load_model("torch_module", ...) is given
    kind: str  # "pretrained", "trained", "file" or "test"


def resolve(name_or_path: str | os.PathLike, callback: ProgressCallback | None = None) -> ResolvedStyle:
    """Where a style's weights are, downloading a pretrained one on first use (progress through `callback`).

    Raises ValueError for unknown names (listing the available ones), UnsafeWeightsError for a file that is
    not safetensors by content, StyleUnavailableError when a download is needed and impossible.
    """
    text = str(name_or_path).strip()
    if text == TINY_STYLE:
        return ResolvedStyle(TINY_STYLE, TINY_STYLE, "test")
    if text in PRETRAINED:
        return ResolvedStyle(text, str(ensure_pretrained(text, callback)), "pretrained")
    if _NAME.match(text) and user_style_path(text).exists():
        path = user_style_path(text)
        check_safetensors(path)
        return ResolvedStyle(text, str(path.resolve()), "trained")
    path = Path(text).expanduser()
    if text and path.is_file():
        check_safetensors(path)  # by content: a pickle renamed .safetensors stops here
        return ResolvedStyle(path.stem, str(path.resolve()), "file")
    known = ", ".join(available_names())
    raise ValueError(f"Unknown style {text!r}. Available styles: {known}. A path to a .safetensors style file "
                     "also works.")


def import_style(path: str | os.PathLike, name: str) -> str:
    """Copy a user's safetensors style into the styles folder (checked by content and by loading it)."""
    from pipelines.core.safeweights import load_safetensors

    from .network import build_transformer_net

    name = clean_style_name(name)
    source = Path(path)
    check_safetensors(source)
    state_dict, metadata = load_safetensors(source)
    build_transformer_net(metadata, state_dict)  # raises a plain ValueError when the tensors do not fit
    target = user_style_path(name)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return name


# ---------------------------------------------------------------------------------------------- downloads
def convert_pth(data: bytes, style: PretrainedStyle, target: Path) -> Path:
    """Convert a downloaded .pth to safetensors with the architecture and layout in its metadata."""
    from .network import build_transformer_net, clean_state_dict, detect_layout, layout_metadata, make_network

    state = read_pth_state_dict(data)
    layout = detect_layout(state)
    if layout != style.layout:
        raise ValueError(f"{style.name}: expected the {style.layout} layout, the file is {layout}")
    state = clean_state_dict(state, make_network(layout))  # drops the stale inN.running_mean/var entries
    build_transformer_net({"layout": layout}, state)  # the weights must fit before they are kept
    from pipelines.core.safeweights import save_safetensors

    metadata = layout_metadata(layout, style=style.name, source=style.url)
    return save_safetensors({key: value.contiguous() for key, value in state.items()}, target, metadata)


def _download_progress(name: str, callback: ProgressCallback | None):
    """A download_file progress hook that reports "Downloading style …: 12 of 80 MB" through a job callback."""
    if callback is None:
        return None

    def report(done: int, expected: int | None) -> None:
        mb = done / 2**20
        if expected:
            callback(done, expected, f"Downloading style {name!r} (first use only): {mb:.1f} of "
                                     f"{expected / 2**20:.1f} MB")
        else:
            callback(0, 0, f"Downloading style {name!r} (first use only): {mb:.1f} MB")

    return report


def ensure_pretrained(name: str, callback: ProgressCallback | None = None) -> Path:
    """The converted safetensors of pretrained style `name`, downloading and converting it on first use; the
    download reports its progress through `callback(step, total, message)` (bytes)."""
    style = PRETRAINED[name]
    target = pretrained_path(name)
    if target.exists():
        return target
    reason = offline_reason(style.url)
    if reason:
        raise StyleUnavailableError(
            f"Style {name!r} is not downloaded yet and the Hub/internet cannot be reached ({reason}). Connect to "
            f"the internet once to fetch it, or pick a style you trained or the tiny test style.")
    downloads = settings.cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads) as folder:
        archive = Path(folder) / "download"
        try:
            download_file(style.url, archive, MAX_DOWNLOAD_BYTES, progress=_download_progress(name, callback))
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
            raise StyleUnavailableError(f"Style {name!r} could not be downloaded from {style.url} ({err}).") from err
        try:
            if style.member is None:
                convert_pth(archive.read_bytes(), style, target)
            else:  # one zip holds several styles: convert all of them while it is here
                with zipfile.ZipFile(archive) as bundle:
                    members = set(bundle.namelist())
                    for other in PRETRAINED.values():
                        if other.url == style.url and other.member in members:
                            convert_pth(bundle.read(other.member), other, pretrained_path(other.name))
        except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError) as err:
            raise StyleUnavailableError(f"Style {name!r}: the download from {style.url} is not usable ({err}).") \
                from err
    if not target.exists():
        raise StyleUnavailableError(f"Style {name!r}: {style.member} is missing from {style.url}.")
    if callback is not None:
        callback(1, 1, f"Style {name!r} downloaded and converted")
    return target
