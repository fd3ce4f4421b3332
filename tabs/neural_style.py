"""Neural style tab: fast feed-forward style transfer, pretrained or your own styles, live webcam, training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.core.gpu import gpu_task

from .common import (
    LIVE_WORK,
    MODEL_WORK,
    file_input,
    file_paths,
    friendly_errors,
    image_input,
    keeps_results,
    progress_callback,
    test_model_note,
)

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "samples"
STYLE_SAMPLE = SAMPLES_DIR / "style_cel_ink.png"
LIVE_MAX_SIZE = 512

INTRO = ("**Repaint your photos in a painting's or a comic's style, in about a second each.** Upload one or more "
         "photos (or press *Use the sample photos*), pick a style and press **Stylize**: you get each photo "
         "repainted, saved with its settings in **History**. A small network trained on one style image does the "
         "work in a single pass (fast style transfer, Johnson et al. 2016). Below: try it live on your webcam, add a "
         "style file you have, or train a style from your own picture.")


def sample_photos() -> list[str]:
    return sorted(str(path) for path in SAMPLES_DIR.glob("*.jpg"))


def style_choices() -> list[tuple[str, str]]:
    """(label, value) for the style dropdown: pretrained, your trained/uploaded styles, the tiny test style."""
    from pipelines.neural_style import list_styles

    return [(entry.label, entry.name) for entry in list_styles()]


def _default_style() -> str:
    """The first real style on this machine; when offline with none downloaded, the first pretrained one
    (it downloads on first use) unless the hub is known to be unreachable, then the labelled test style."""
    from pipelines.core.network import known_offline
    from pipelines.neural_style import TINY_STYLE, list_styles

    entries = list_styles()
    real = [entry for entry in entries if entry.kind != "test"]
    ready = [entry.name for entry in real if entry.available]
    if ready:
        return ready[0]
    status = known_offline()
    return TINY_STYLE if (status and status.offline) or not real else real[0].name


def style_note(style: str | None) -> str:
    """What the picked style will do, in plain words: nothing to say when it is ready, else whether it downloads
    or cannot be had (offline). Shown beside the dropdown, so a pick never touches the results."""
    from pipelines.neural_style import CANNOT_DOWNLOAD, list_styles

    entry = next((entry for entry in list_styles() if entry.name == style), None)
    if entry is None or entry.available and entry.kind != "test":
        return ""
    if entry.kind == "test":
        return "⚠️ The test style has random weights: its output is noise. It only checks that the app works."
    if entry.label.endswith(CANNOT_DOWNLOAD):
        return ("⚠️ This style is not on this machine and cannot be downloaded while the app is offline. "
                "Pick one marked *(yours)* or the test style, or connect to the internet.")
    return "This style is downloaded the first time you use it (a few MB)."


def checked_style(style: str) -> str:
    """Browser and API users pick from the styles list; a file path on the server is not a style name here."""
    from pipelines.neural_style import available_names

    names = available_names()
    if style not in names:
        raise ValueError(f"Unknown style {style!r}. Available styles: {', '.join(names)}.")
    return style


LOSS_NETWORKS = [("VGG16 with ImageNet weights (a real style)", "imagenet"),
                 ("VGG16 with random weights (test only: the style is not real; runs offline)", "random")]


def _job_id(kind: str, request: gr.Request | None) -> str:
    """Jobs are keyed by kind and session: a page's (or an API client's) Cancel reaches its own job only."""
    return f"{kind}:{getattr(request, 'session_hash', None) or 'no-session'}"


@gpu_task
def stylize_files(files: Any, style: str, strength: float, preserve_color: bool, max_size: int,
                  request: gr.Request = None, progress=gr.Progress()):
    """Stylize every uploaded image; returns (output PNG paths, latency readout). Cancel keeps finished images."""
    from pipelines.core.jobs import JOBS
    from pipelines.neural_style import run_stylize

    paths = file_paths(files)
    if not paths:
        raise ValueError("Add at least one image, or press “Use the sample photos”.")
    if not style:
        raise ValueError("Pick a style first.")
    job_id, token = JOBS.start(_job_id("stylize", request))
    try:
        record = run_stylize(paths, checked_style(style), float(strength), bool(preserve_color), int(max_size),
                             callback=progress_callback(progress), cancel=token)
    finally:
        JOBS.finish(job_id, token)
    count, seconds = len(record.outputs), record.timings.get("stylize", 0.0)
    readout = (f"**{count} image{'s' * (count != 1)} in {seconds:.2f} s** "
               f"({seconds / max(count, 1) * 1000:.0f} ms per image, {record.device}) · run `{record.id}`")
    tests = [model for model in record.models if model.get("test_model")]
    notes = [readout, test_model_note(bool(tests), tests[0].get("test_note") if tests else None)]
    skipped = record.params.get("skipped") or []
    if skipped:
        notes.append("Skipped: " + "; ".join(skipped))
    return record.outputs, "\n\n".join(note for note in notes if note)


@gpu_task
def live_frame(frame, style: str, strength: float, preserve_color: bool):
    """One webcam frame through the style network (small size keeps it real-time on modest hardware)."""
    from PIL import Image

    from pipelines.neural_style import load_style, stylize

    if frame is None or not style:
        return None
    result = stylize([Image.fromarray(frame)], load_style(checked_style(style)), strength=float(strength),
                     preserve_color=bool(preserve_color), max_size=LIVE_MAX_SIZE)
    return result.images[0]


def add_uploaded_style(file: Any, name: str):
    """Copy a user's .safetensors style (checked by content, never unpickled) into the styles folder."""
    from pipelines.neural_style import import_style

    paths = file_paths(file)
    if not paths:
        raise ValueError("Choose a .safetensors style file to upload.")
    style_name = import_style(paths[0], name or Path(paths[0]).stem)
    return gr.Dropdown(choices=style_choices(), value=style_name), f"Added style **{style_name}**."


def _cancel(kind: str, request: gr.Request | None, what: str) -> str:
    from pipelines.core.jobs import JOBS

    return f"Cancelling {what}…" if JOBS.cancel(_job_id(kind, request)) else "Nothing is running."


def cancel_stylize(request: gr.Request = None) -> str:
    return _cancel("stylize", request, "after the current image")


def cancel_training(request: gr.Request = None) -> str:
    return _cancel("train", request, "after the current step; the checkpoint is kept")


def _training_content(zip_file: Any) -> list[str]:
    """The uploaded zip (the pipeline unpacks it, and removes what it unpacked if the run fails), or the samples."""
    return file_paths(zip_file)[:1] or sample_photos()


@gpu_task(duration=600)
def train_new_style(style_image: str | None, content_zip: Any, name: str, steps: int, image_size: int,
                    content_weight: float, style_weight: float, loss_network: str | None = "imagenet",
                    request: gr.Request = None, progress=gr.Progress()):
    """Train a style network on the style image + content photos; resumes from its last checkpoint."""
    from pipelines.core.jobs import JOBS
    from pipelines.neural_style import clean_style_name, run_train_style

    if not style_image:
        raise ValueError("Upload a style image (or press “Use the sample style image”).")
    vgg_weights = loss_network or "imagenet"
    if vgg_weights not in dict((value, label) for label, value in LOSS_NETWORKS):
        raise ValueError(f"Unknown loss network {loss_network!r}: choose "
                         + " or ".join(repr(value) for _, value in LOSS_NETWORKS) + ".")
    name = clean_style_name(name)
    job_id, token = JOBS.start(_job_id("train", request))
    try:
        record, result = run_train_style(style_image, _training_content(content_zip), name=name,
                                         steps=int(steps), image_size=int(image_size),
                                         content_weight=float(content_weight), style_weight=float(style_weight),
                                         vgg_weights=vgg_weights, callback=progress_callback(progress), cancel=token)
    finally:
        JOBS.finish(job_id, token)
    return gr.Dropdown(choices=style_choices(), value=result.name), f"{result.summary}\n\nRun `{record.id}`."


def build(tab: gr.Tab | None = None) -> None:
    choices = style_choices()
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1):
            files = file_input("Your photos (one or more)", ("image",), multiple=True, elem_id="ns-files")
            samples = gr.Button("Use the sample photos", size="sm", elem_id="ns-samples")
            default_style = _default_style()
            style = gr.Dropdown(choices=choices, value=default_style, label="Style", elem_id="ns-style",
                                info="The look to paint your photos in: styles that come with the app, styles you "
                                     "trained or added, and a test style (noise)",
                                allow_custom_value=True)  # styles trained after start-up; the pipeline checks names
            chosen = gr.Markdown(style_note(default_style), elem_id="ns-style-note")
            strength = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength (0 = the original image)",
                                 info="How much of the style to apply: 1 is the full style, 0.5 half-way")
            preserve = gr.Checkbox(False, label="Preserve colours (keep the photo's colours, take the style's "
                                               "brightness and strokes)")
            max_size = gr.Slider(64, 2048, value=1024, step=32, label="Maximum size (long side, px)",
                                 info="Bigger photos are shrunk to this first; smaller is faster")
            with gr.Row():
                run = gr.Button("Stylize", variant="primary", elem_id="ns-run", scale=3)
                stop = gr.Button("Cancel", variant="stop", elem_id="ns-cancel", scale=1)
        with gr.Column(scale=1):
            gallery = gr.Gallery(label="Stylized", columns=2, height=420, elem_id="ns-gallery")
            readout = gr.Markdown(elem_id="ns-readout")

    with gr.Accordion("Live webcam", open=False):
        with gr.Row():
            webcam = image_input("Webcam", type="numpy", sources=("webcam",), streaming=True)
            live = gr.Image(label=f"Stylized live (long side {LIVE_MAX_SIZE} px)", streaming=True)
        webcam.stream(friendly_errors(live_frame), inputs=[webcam, style, strength, preserve], outputs=live,
                      stream_every=0.2, time_limit=120, api_name="stylize_frame", **LIVE_WORK)

    with gr.Accordion("Add a style you have (.safetensors)", open=False):
        with gr.Row():
            upload = file_input("Style weights (.safetensors only)", ("safetensors",))
            upload_name = gr.Textbox(label="Name for it", info="How it will appear in the Style list")
        upload_button = gr.Button("Add style")
        upload_status = gr.Markdown()

    with gr.Accordion("Train your own style", open=False):
        gr.Markdown("One picture whose look you want (the style image) plus photos to practise on (a zip, or the "
                    "bundled sample photos when no zip is given). A network that knows images (VGG16) judges how "
                    "close each result is to the style; training saves checkpoints as it goes, so pressing Train "
                    "again after a cancel or crash resumes where it stopped. Training takes minutes to hours.")
        with gr.Row():
            style_image = image_input("Style image", type="filepath", sources=("upload",), height=220)
            with gr.Column():
                content_zip = file_input("Content photos (.zip, optional)", ("zip",))
                style_sample = gr.Button("Use the sample style image", size="sm")
                train_name = gr.Textbox(value="my_style", label="Name of the new style",
                                        info="Letters, digits, _ and -; it appears in the Style list when done")
        with gr.Row():
            steps = gr.Slider(10, 20000, value=2000, step=10, label="Steps",
                              info="Training rounds; more is closer to the style but slower")
            image_size = gr.Slider(64, 512, value=256, step=32, label="Training size (px)",
                                   info="Photos are cut to this size while training; smaller is faster")
            content_weight = gr.Number(1e5, label="Content weight",
                                       info="How much the result must keep the photo's shapes")
            style_weight = gr.Number(1e10, label="Style weight",
                                     info="How much it must match the style's colours and strokes; raise it for a "
                                          "stronger style")
        loss_network = gr.Dropdown(LOSS_NETWORKS, value="imagenet", label="Loss network (what judges the style)",
                                   info="The real one needs its weights (downloaded once); the random one is for tests")
        with gr.Row():
            train = gr.Button("Train", variant="primary")
            cancel = gr.Button("Cancel", variant="stop")
        train_status = gr.Markdown()

    samples.click(sample_photos, outputs=files, api_visibility="private")
    style_sample.click(lambda: str(STYLE_SAMPLE), outputs=style_image, api_visibility="private")
    # Progress and any error show on the readout only: an error shown on the gallery covers the images made
    # before (Gradio paints its error state over every output it tracks), and a failed pick must not hide them.
    run.click(friendly_errors(stylize_files), inputs=[files, style, strength, preserve, max_size],
              outputs=[gallery, readout], api_name="stylize", **keeps_results(readout), **MODEL_WORK)
    style.change(style_note, inputs=style, outputs=chosen, api_visibility="private")
    stop.click(cancel_stylize, outputs=readout, concurrency_limit=None, api_name="cancel_stylize")
    upload_button.click(friendly_errors(add_uploaded_style), inputs=[upload, upload_name],
                        outputs=[style, upload_status], api_name="add_style")
    train.click(friendly_errors(train_new_style),
                inputs=[style_image, content_zip, train_name, steps, image_size, content_weight, style_weight,
                        loss_network],
                outputs=[style, train_status], api_name="train_style", **MODEL_WORK)
    cancel.click(cancel_training, outputs=train_status, concurrency_limit=None, api_name="cancel_training")
    if tab is not None:  # styles trained or added elsewhere show up when the tab is opened
        tab.select(lambda value: gr.Dropdown(choices=style_choices(), value=value), inputs=style, outputs=style,
                   api_visibility="private")
    from .start import offer_example  # the Start page fills in the samples (and presses Stylize with a real style)

    offer_example(tab, "ns-run", files=files)
