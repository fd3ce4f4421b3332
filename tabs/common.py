"""UI helpers shared by every tab: plain error messages, file and image inputs, the status banner, model labels.

Inputs that take files — use these, never bare gr.Image / gr.File
-----------------------------------------------------------------
Whatever a browser or an API client sends to a file input (an empty file, text named `.png`, a truncated PNG,
a header that claims 20000×20000, a pickle named `.safetensors`, a zip bomb) must be answered in plain words
that name the file and the problem, and the server must keep serving. Gradio's own preprocessing opens images
before a handler runs and fails with a bare "Error", so every tab builds its file inputs here:

* ``image_input(label, type=..., sources=..., streaming=...)`` — a gr.Image (upload, webcam, webcam stream)
  whose preprocessing opens each file or frame with ``pipelines.core.images.load_image``, the app's one image
  reader, *before* anything else: unusable files become ``gr.Error`` with that reader's message ("cat.png is
  not an image we can read …", "… is too large to open safely …", "… is 1×1 pixels …"). The handler gets a
  path (type="filepath"), a PIL image ("pil") or an H×W×3 uint8 array ("numpy"), always 8-bit RGB (CMYK,
  16-bit, palette and alpha images converted as load_image does).
* ``image_editor_input(label, ...)`` — a gr.ImageEditor whose background, layers and composite are checked
  the same way.
* ``file_input(label, kinds, multiple=...)`` — a gr.File(type="filepath") for images, zips, weights …
  (`kinds` from FILE_KINDS). A file of another type is refused with its name. The handler turns the value
  into paths with ``file_paths(value)`` and passes them to its ONE pipeline function, which opens them with
  the core readers, each raising a UserError that names the file: images with ``core.images.load_image``,
  zips with ``core.archives.extract_images`` (bomb, zip-slip and size checks), weights with
  ``core.safeweights`` (safetensors by content; never unpickled). Several images in one input: unreadable ones
  are skipped with their reason, and the run says which.

The coming tabs (style fine-tuning, storyboard, landmark faces, single-image) get this for free by building
their inputs with these functions; tests/test_bad_files.py sends its corpus of broken files to every file
input of every tab (it finds them in the built app), so a new input is covered the day it is added.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import functools
import importlib
import logging
import threading
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.core.errors import UserError
from pipelines.core.images import ImageInputError, load_image, to_array
from pipelines.core.jobs import JobCancelled

log = logging.getLogger(__name__)

# Every event that runs a model shares this concurrency slot: one model job at a time on the device.
MODEL_WORK = {"concurrency_id": "model", "concurrency_limit": 1}
# Live streams (the webcam) get slots of their own. A Gradio stream event holds its slot for the whole stream
# (up to its time limit, minutes), so in MODEL_WORK one user's open webcam blocked everyone's jobs. Here each
# frame is short work (a small image through a small network) that runs beside the model job, costing it about
# one frame's time per frame; bench/bench_live.py measures it. At most LIVE_STREAMS webcams stream at once.
LIVE_STREAMS = 4
LIVE_WORK = {"concurrency_id": "live", "concurrency_limit": LIVE_STREAMS}

# Errors whose text is for the user (the pipelines' own and the plain ones raised for bad input); any other is
# logged and summarised.
USER_ERRORS = (UserError, ValueError, KeyError, FileNotFoundError)

# What every tab's random "Seed" setting does, in one place (About's glossary says the same).
SEED_INFO = "The same seed with the same settings gives the same result again; change it for a different one"


def _meant_for_user(err: BaseException) -> bool:
    """The pipelines' own errors and plain ValueError/KeyError/FileNotFoundError; subclasses of those from
    libraries (numpy's LinAlgError, JSONDecodeError, …) are bugs to log even though their text is shown."""
    return isinstance(err, UserError) or type(err) in USER_ERRORS


def user_message(err: BaseException) -> str:
    if isinstance(err, USER_ERRORS):
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        return str(text)
    return (f"Something went wrong ({type(err).__name__}: {err}). The app is still running; "
            "the details are in the server log.")


def friendly_errors(fn: Callable) -> Callable:
    """Turn exceptions into a gr.Error with a plain message (never a stack trace in the page)."""

    def handle(err: Exception) -> None:
        if isinstance(err, JobCancelled):
            raise gr.Error(f"{err} Work done so far is kept.", print_exception=False)
        if isinstance(err, gr.Error):
            raise err
        if not _meant_for_user(err):
            log.exception("Unexpected error in %s", fn.__name__)
        raise gr.Error(user_message(err)) from err

    if _is_generator(fn):
        @functools.wraps(fn)
        def generator_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - every error must reach the user as text
                handle(err)

        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            handle(err)

    return wrapper


def keeps_results(status: gr.components.Component) -> dict[str, Any]:
    """Event options for a handler whose outputs hold earlier results (images, tables, plots): progress and any
    error show on `status` (one of its outputs, a line of text) only. Gradio paints an event's error state over
    every output that shows its progress, so a failed pick would hide the images made before; the handler still
    raises the plain error (API clients and the toast get it). Use: `button.click(..., **keeps_results(note))`."""
    return {"show_progress_on": [status]}


def _is_generator(fn: Callable) -> bool:
    import inspect

    return inspect.isgeneratorfunction(fn)


def status_banner_markdown() -> str:
    """The status banner: one line a visitor reads at a glance, the details (why, which models) behind a click.

    Which models cannot be had and why (offline hub, missing downloads); empty when all is well.
    Each method pipeline may declare `unavailable_models() -> list[tuple[str, str]]` (name, reason).
    The details keep the developer facts (environment variables, hub ids); the summary line never does.
    """
    from pipelines.core import network

    from . import method_pipelines
    from .visitors import banner_lines

    status = network.known_offline()
    details = banner_lines()
    # Warnings about the visitor's work (a damaged database set aside, no persistent storage) lead the line; the
    # privacy note waits behind the click unless it is all there is to say.
    summary = [line for line in details if line.startswith("⚠️") or "persistent storage" in line]
    offline = status is not None and status.offline
    if offline:
        details.append(f"**Offline:** {status.reason}. Only models already on this machine can be used; "
                       "the *tiny (test, random weights)* models always work but produce noise.")
    missing = []
    for module_name in method_pipelines():
        module = importlib.import_module(module_name)
        for name, reason in getattr(module, "unavailable_models", lambda: [])():
            missing.append(name)
            details.append(f"- **{name}** cannot be used: {reason}")
    if offline:
        summary.append("Offline")
    if missing:
        summary.append(f"{len(missing)} kind{'s' * (len(missing) != 1)} of model missing; test models (output: "
                       "noise) stand in")
    if not details:
        return ""
    line = " — ".join(summary or details[:1])
    return (f"<details class=\"asl-banner\"><summary>ℹ️ {_plain(line)} — <u>details</u></summary>\n\n"
            + "\n\n".join(details) + "\n\n</details>")


def _plain(text: str) -> str:
    """One line of banner text without markdown that would break the <summary> element."""
    return " ".join(text.replace("**", "").replace("*", "").split())


def app_theme() -> gr.themes.Base:
    """Gradio's default look, with one fix: its bundled Source Sans Pro *SemiBold* file holds only the glyphs
    "A" and "B", so in bold text (weight 600) those two letters came from Source Sans Pro and every other letter
    from the fallback font. Declaring the regular (400) and complete Bold (700) files instead makes bold text
    use the Bold file for every letter (tests/test_tabs.py checks the files' glyphs)."""
    from gradio.themes.utils import fonts

    return gr.themes.Default(
        font=(fonts.LocalFont("Source Sans Pro", weights=(400, 700)), "ui-sans-serif", "system-ui", "sans-serif"),
        font_mono=(fonts.LocalFont("IBM Plex Mono", weights=(400, 700)), "ui-monospace", "Consolas", "monospace"))


def progress_callback(progress: Any) -> Callable[[int, int, str], None]:
    """A pipeline callback(step, total, message) that drives the page's gr.Progress bar (no total: a spinner)."""

    from pipelines.core.downloads import report_downloads_to

    def report(step: int, total: int, message: str) -> None:
        progress((step, total) if total else None, desc=message)

    report_downloads_to(report)  # a catalog model downloaded during this request fills the same bar
    return report


def start_worker(work: Callable[[], None], name: str | None = None) -> threading.Thread:
    """A daemon thread running `work` in a copy of this request's context: gr.Progress finds its event through
    context variables, which a plain new thread does not inherit, so its progress would never reach the page."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,), name=name, daemon=True)
    thread.start()
    return thread


def stop_worker(thread: threading.Thread, token: Any, timeout: float = 120.0) -> None:
    """When the page that started a training goes away (closed, or the request cancelled), cancel the worker —
    it writes its checkpoint first — so that no orphan run goes on that nobody can stop."""
    if thread.is_alive():
        token.cancel()
        thread.join(timeout)


_STREAM_END = object()


def worker_stream(work: Callable[[Callable[[Any], None]], Any], present: Callable[[Any], Any], *, job_id: str,
                  token: Any, name: str) -> Generator[Any, None, Any]:
    """Run `work(put)` in a worker thread (start_worker) and yield `present(value)` — a page update — for each value
    it puts; `result = yield from worker_stream(...)` then gets what `work` returned, or its error raised here.
    However the stream ends (done, failed, page gone), the worker is stopped (stop_worker) and the job finished."""
    import queue

    from pipelines.core.jobs import JOBS

    updates: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work(updates.put)
        except BaseException as err:  # noqa: BLE001 - handed to the request thread, which raises it
            outcome["error"] = err
        finally:
            updates.put(_STREAM_END)

    thread = start_worker(run, name=name)
    try:
        while (item := updates.get()) is not _STREAM_END:
            yield present(item)
    finally:
        stop_worker(thread, token)
        JOBS.finish(job_id, token)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_model_note(is_test: bool, reason: str | None = None) -> str:
    """The warning every result made with a test model carries on the page ("" for real models)."""
    from pipelines.core.loader import TEST_MODEL_LABEL

    if not is_test:
        return ""
    return f"⚠️ This used a test model — {reason}." if reason else f"⚠️ This used a {TEST_MODEL_LABEL}."


# ---------------------------------------------------------------------------------------------- file inputs
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"]
FILE_KINDS: dict[str, list[str]] = {"image": IMAGE_TYPES, "zip": [".zip"], "safetensors": [".safetensors"],
                                   "json": [".json"]}


def _upload_name(payload: Any, fallback: str) -> str:
    name = getattr(payload, "orig_name", None) or (Path(payload.path).name if getattr(payload, "path", None) else "")
    return name or fallback


def _checked_image(component: gr.Image, payload: Any) -> Any:
    """Preprocessing of an image_input(): the app's image reader opens the file first (see the module docstring)."""
    if payload is None:
        return None
    fallback = "The webcam frame" if "webcam" in (component.sources or []) else "The image"
    url = getattr(payload, "url", None) or ""
    if url.startswith("data:"):  # a base64 frame
        try:
            source: Any = base64.b64decode(url.split(",", 1)[1], validate=False)
        except (IndexError, binascii.Error, ValueError) as err:
            raise gr.Error(f"{fallback} is not an image we can read (bad base64 data).",
                           print_exception=False) from err
        name = fallback
    elif getattr(payload, "path", None):
        source, name = payload.path, _upload_name(payload, fallback)
    else:
        raise gr.Error(f"{fallback}: no file arrived.", print_exception=False)
    try:
        image = load_image(source, name=name)
    except ImageInputError as err:
        raise gr.Error(str(err), print_exception=False) from err
    if component.type == "filepath":
        return str(source) if not isinstance(source, bytes) else _cache_png(image, component.GRADIO_CACHE)
    return image if component.type == "pil" else to_array(image)


def _cache_png(image: Any, cache_dir: str) -> str:
    import tempfile

    handle = tempfile.NamedTemporaryFile(suffix=".png", dir=cache_dir, delete=False)  # noqa: SIM115
    with handle:
        image.save(handle, format="PNG")
    return handle.name


def _checked_file(component: gr.File, process: Callable[[Any], Any], f: Any) -> Any:
    """gr.File's per-file step for a file_input(): a file of another type is refused with its name."""
    name = _upload_name(f, "The file")
    if component.file_types and Path(name).suffix.lower() not in {kind.lower() for kind in component.file_types}:
        allowed, suffix = ", ".join(component.file_types), Path(name).suffix or "a file without an extension"
        raise gr.Error(f"{name}: this input takes {allowed} files, not {suffix}.", print_exception=False)
    return process(f)


# The checks are set on the component instances (not in subclasses: gradio would write a .pyi stub for a
# component subclass into the source tree, and the browser would need a new frontend component).
CHECKED_INPUT = "asl_checked_input"  # marks the inputs built here; tests/test_bad_files.py looks for it


def image_input(label: str, *, type: str = "filepath", sources: Sequence[str] = ("upload",),
                streaming: bool = False, **options: Any) -> gr.Image:
    """An image input whose files are checked by the app's image reader before the handler runs."""
    component = gr.Image(label=label, type=type, sources=list(sources), streaming=streaming, **options)
    component.preprocess = functools.partial(_checked_image, component)  # type: ignore[method-assign]
    setattr(component, CHECKED_INPUT, True)
    return component


def file_input(label: str, kinds: Sequence[str] = ("image",), *, multiple: bool = False,
               **options: Any) -> gr.File:
    """A file input taking `kinds` (keys of FILE_KINDS); values reach the handler as paths (file_paths)."""
    types = [suffix for kind in kinds for suffix in FILE_KINDS[kind]]
    component = gr.File(label=label, file_types=types, type="filepath",
                        file_count="multiple" if multiple else "single", **options)
    component._process_single_file = functools.partial(  # type: ignore[method-assign]
        _checked_file, component, component._process_single_file)
    setattr(component, CHECKED_INPUT, True)
    return component


def _checked_editor_image(component: gr.ImageEditor, convert: Callable[..., Any], file: Any,
                          flatten_on_white: bool = False) -> Any:
    """gr.ImageEditor's per-image step (background, layers, composite) for an image_editor_input()."""
    if file is not None:
        fallback = f"The image in {component.label or 'the editor'}"
        source = bytes(file) if isinstance(file, (bytes, bytearray, memoryview)) else file.path
        try:
            load_image(source, name=fallback if isinstance(source, bytes) else _upload_name(file, fallback))
        except ImageInputError as err:
            raise gr.Error(str(err), print_exception=False) from err
    return convert(file, flatten_on_white=flatten_on_white)


def image_editor_input(label: str, **options: Any) -> gr.ImageEditor:
    """A gr.ImageEditor (sketch over an uploaded image) whose images are checked like image_input()'s."""
    component = gr.ImageEditor(label=label, **options)
    component.convert_and_format_image = functools.partial(  # type: ignore[method-assign]
        _checked_editor_image, component, component.convert_and_format_image)
    setattr(component, CHECKED_INPUT, True)
    return component


def file_paths(value: Any) -> list[str]:
    """The paths of a file input's value (one file, a list, gradio's file objects or None) as a list."""
    if not value:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [getattr(item, "name", None) or str(item) for item in items]

