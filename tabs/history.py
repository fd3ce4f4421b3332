"""History: past runs as a gallery and table, filtered by tab, with parameters and re-run; and "Read a PNG":
the generation parameters of any image made here, by A1111 or by ComfyUI."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.core.gpu import gpu_task

from .common import MODEL_WORK, file_input, file_paths, friendly_errors, keeps_results, progress_callback

ALL = "All tabs"
# The run id stays the last column: a click on a row reads it from there.
TABLE_HEADERS = ["Made", "What it was", "When", "Tab", "Status", "Seconds", "Run id"]
TABLE_TYPES = ["markdown", "str", "str", "str", "str", "number", "str"]
THUMB_PX = 64
SUMMARY_CHARS = 140
# Runs made outside the tabs' own buttons: "Generate again" under Read a PNG, the API and the command line.
EXTRA_TABS = [("Generate again (Read a PNG, API)", "Generate")]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
READ_HEADERS = ["Setting", "Value"]
SOURCE_LABELS = {"anime-style-lab": "Anime Style Lab", "a1111": "A1111 / Forge (infotext)",
                 "comfyui": "ComfyUI graph"}


def _store():
    from pipelines.core.records import default_store

    return default_store()


def _when(created: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _files(value: Any) -> str:
    """A set of images as recorded ("5 arrays", a list of paths or names): how many, and the first name."""
    if isinstance(value, list) and value:
        first = Path(str(value[0])).name
        return f"{len(value)} file{'s' * (len(value) != 1)} ({first}{', …' if len(value) > 1 else ''})"
    return _short(value or "none", 30)


def run_summary(record: Any) -> str:
    """What a run was, in one line a visitor recognises: its kind, its prompt(s) or style or name, what it made."""
    params = record.params or {}
    nested = params.get("train") or params.get("config") or {}
    nested = nested if isinstance(nested, dict) else {}
    kind = params.get("task") or params.get("action") or params.get("kind") or ("train" if "train" in params else "")
    if params.get("path") == "train":
        kind = "train"
    kinds = {"train": "Training", "judging": "Judging study", "sweep": "L × S sweep (memory from layer L / step S)"}
    parts = [kinds.get(str(kind), str(kind).capitalize())] if kind else []
    prompts = [text for text in params.get("prompts") or [] if isinstance(text, str) and text.strip()]
    if isinstance(params.get("prompt"), str) and params["prompt"].strip():
        parts.append(f"“{_short(params['prompt'])}”")
    elif prompts:
        parts.append(" / ".join(f"“{_short(text, 40)}”" for text in prompts[:3]) + (" …" if len(prompts) > 3 else ""))
    board = params.get("storyboard")
    if isinstance(board, dict) and isinstance(board.get("memory_settings"), dict):
        parts.append("memory " + ("on" if board["memory_settings"].get("enabled") else "off"))
    if params.get("style"):
        parts.append(f"style {params['style']}")
    name = params.get("name") or nested.get("name")
    if name:
        parts.append(f"named {name}")
    if "set_a" in params:
        parts.append(f"A: {_files(params.get('set_a'))} vs B: {_files(params.get('set_b'))}")
    images = [path for path in record.outputs if str(path).lower().endswith(IMAGE_SUFFIXES)]
    if images:
        parts.append(f"→ {len(images)} image{'s' * (len(images) != 1)}")
    elif record.status == "failed":
        parts.append("→ failed")
    return _short(" · ".join(parts).replace(" · →", " →") or record.tab, SUMMARY_CHARS)


def _first_image(record: Any) -> str | None:
    return next((str(path) for path in record.outputs
                 if str(path).lower().endswith(IMAGE_SUFFIXES) and Path(path).is_file()), None)


@functools.lru_cache(maxsize=512)
def _thumbnail_uri(path: str, modified: float) -> str:
    """A small JPEG of an output as a data: URI. The outputs folder is never served by URL (it holds every
    visitor's work), so the table carries its thumbnails inline; `modified` keys the cache to the file's version."""
    import base64
    import io

    from PIL import Image

    with Image.open(path) as image:
        image.thumbnail((THUMB_PX, THUMB_PX))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def run_thumbnail(record: Any) -> str:
    """The table's "Made" cell: a thumbnail of the run's first image (markdown), or "—" when it made none."""
    path = _first_image(record)
    if path is None:
        return "—"
    try:
        return f"![{record.tab}]({_thumbnail_uri(path, Path(path).stat().st_mtime)})"
    except (OSError, ValueError):  # an unreadable or vanished file: the row still lists the run
        return "—"


def list_runs(tab: str | None = ALL) -> tuple[list[tuple[str, str]], list[list[Any]]]:
    """Gallery items (image, caption) and table rows of recent runs, newest first."""
    records = _store().list(tab=None if tab in (None, "", ALL) else tab, limit=200)
    gallery, rows = [], []
    for record in records:
        rows.append([run_thumbnail(record), run_summary(record), _when(record.created), record.tab, record.status,
                     round(sum(record.timings.values()), 2), record.id])
        gallery += [(path, f"{record.tab} · {record.id}") for path in record.outputs[:4] if Path(path).exists()]
    return gallery, rows


def show_run(run_id: str) -> dict[str, Any]:
    if not (run_id or "").strip():
        return {}
    record = _store().get(run_id.strip())
    if record is None:
        raise KeyError(f"No run with id {run_id!r}. Pick one from the table.")
    return {"id": record.id, "tab": record.tab, "status": record.status, "when": _when(record.created),
            "seed": record.seed, "params": record.params, "models": record.models, "device": record.device,
            "attention": record.attention, "seconds per stage": record.timings, "outputs": record.outputs,
            "error": record.error}


def settings_rows(details: dict[str, Any] | None) -> list[list[str]]:
    """A run's record as (setting, value) rows a person reads: nested settings spelled out as "train › steps",
    lists written out (a JSON viewer shows them folded, as "Array(2)")."""
    if not details:
        return []
    rows: list[list[str]] = []

    def add(key: str, value: Any) -> None:
        key = key.replace("_", " ")  # "preserve color", not "preserve_color"
        if isinstance(value, dict) and value:
            for inner, item in value.items():
                add(f"{key} › {inner}", item)
        elif isinstance(value, list):
            if value and all(isinstance(item, dict) for item in value):
                for index, item in enumerate(value, 1):
                    add(f"{key} {index}", item)
            else:
                rows.append([key, "; ".join(_cell(item) for item in value) if value else "—"])
        else:
            rows.append([key, "—" if value in (None, "", {}) else _cell(value)])

    for key in ("tab", "status", "when", "seed", "params", "models", "device", "attention", "seconds per stage",
                "outputs", "error"):
        if key in details:
            add("settings" if key == "params" else key, details[key])
    return rows


@gpu_task
def rerun_run(run_id: str) -> tuple[list[str], str]:
    from pipelines.core.runs import rerun

    record = rerun((run_id or "").strip())
    return record.outputs, record.id


def delete_run(run_id: str, tab: str | None = ALL) -> tuple[str, list[tuple[str, str]], list[list[Any]]]:
    """Delete one of the visitor's runs and its images (frees their storage on a shared server)."""
    record = _store().delete((run_id or "").strip())
    if record is None:
        raise KeyError(f"No run with id {run_id!r}. Pick one from the table.")
    return "", *list_runs(tab)


def share_run(run_id: str) -> str:
    from pipelines.core.sharing import share_run as publish

    token = publish((run_id or "").strip())
    return (f"Shared. Anyone you give this code can open the run's images and settings under **Open a shared "
            f"run**: `{token}`")


def open_shared_run(token: str) -> tuple[list[str], dict[str, Any]]:
    from pipelines.core.sharing import open_shared

    shared = open_shared(token)
    return [str(path) for path in shared.images], shared.record


def dropped_image(file: Any) -> str | None:
    """Read a PNG's thumbnail: the dropped file itself (already checked as an image by its input)."""
    paths = file_paths(file)
    return paths[0] if paths else None


def read_png(file: str | None) -> tuple[list[list[str]], str, str, dict[str, Any], dict[str, Any] | None]:
    """Table rows, prompt, negative prompt, raw metadata and the normalised parameters of a dropped image.

    Loads no model (it only reads the file's text chunks), so it runs outside the model slot.
    """
    if not file:
        return [], "", "", {}, None
    from pipelines.core.pngmeta import read_generation_parameters

    params = read_generation_parameters(str(file))
    rows = [["Made with", SOURCE_LABELS.get(params["source"], params["source"])]]
    rows += [[str(key), _cell(value)] for key, value in params["settings"].items()]
    return rows, params["prompt"], params["negative_prompt"], params.get("raw", {}), params


@gpu_task
def generate_from_png(prompt: str, negative_prompt: str, table: Any, model: str,
                      progress: gr.Progress = gr.Progress()) -> tuple[list[str], str, str]:
    """Generate again with a read PNG's settings (as shown, after any edits) on the chosen model.

    Returns the images, the first image's parameters text and notes (what could not be repeated, test models)."""
    from pipelines.core.loader import TEST_MODEL_LABEL
    from pipelines.core.pngmeta import format_a1111
    from pipelines.diffusion.generate import request_from_infotext
    from pipelines.diffusion.runs import run_generate

    settings = _settings_from_table(table)
    if not settings:
        raise gr.Error("Read a PNG first: its settings fill the table above.")
    request, notes = request_from_infotext(prompt, negative_prompt, settings, (model or "").strip())
    record, output = run_generate(request, callback=progress_callback(progress))
    notes = [*notes, *output.notes] + ([f"⚠️ Made with a {TEST_MODEL_LABEL}."] if output.test_model else [])
    text = format_a1111(output.prompt, output.negative_prompt, output.infotexts[0])
    return record.outputs, text, "\n".join(f"- {note}" for note in notes)


def _settings_from_table(table: Any) -> dict[str, str]:
    """The table's (setting, value) rows, as a DataFrame (UI) or {"headers", "data"} / a list (API)."""
    if hasattr(table, "values"):
        rows = table.values.tolist()
    elif isinstance(table, dict):
        rows = table.get("data") or []
    else:
        rows = table or []
    return {str(key): str(value) for key, value in rows if key and key != "Made with"}


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _select_from_table(rows: Any, evt: gr.SelectData) -> str:
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    values = rows.values.tolist() if hasattr(rows, "values") else rows
    return str(values[row][-1])


def _select_from_gallery(evt: gr.SelectData) -> str:
    caption = (evt.value or {}).get("caption") or ""
    return caption.rsplit("· ", 1)[-1].strip()


def build(tab: gr.Tab | None = None) -> None:
    from . import TABS

    titles = [spec.title for spec in TABS if spec.pipeline]
    gr.Markdown("Everything you made here, newest first, with the settings it was made with. Click a row to see "
                "its settings, make it again, share it or delete it. **Read a PNG** (at the bottom) reads the "
                "settings stored in any image made here, in A1111/Forge or in ComfyUI.")
    with gr.Row():
        tab_filter = gr.Dropdown([ALL, *titles, *EXTRA_TABS], value=ALL, label="Show runs of", scale=3,
                                 info="One tab's runs, or all of them")
        refresh = gr.Button("Refresh", scale=1)
    gallery = gr.Gallery(label="Recent images", columns=6, height=260, allow_preview=False)
    table = gr.Dataframe(headers=TABLE_HEADERS, datatype=TABLE_TYPES, label="Runs (click a row)", interactive=False,
                         wrap=True)
    with gr.Row():
        run_id = gr.Textbox(label="Run id", scale=3, info="Filled in when you click a row or an image above")
        rerun_button = gr.Button("Re-run with the same settings", variant="primary", scale=1)
    with gr.Row():
        share_button = gr.Button("Share this run (gives a code)", scale=1)
        delete_button = gr.Button("Delete this run", variant="stop", scale=1)
    share_note = gr.Markdown()
    settings_table = gr.Dataframe(headers=["Setting", "Value"], label="Settings of the run", interactive=False,
                                  wrap=True)
    with gr.Accordion("The run's record as stored (JSON)", open=False):
        details = gr.JSON(label="Record of the run")
    rerun_gallery = gr.Gallery(label="Re-run result", columns=4, height=260)
    with gr.Accordion("Open a shared run", open=False):
        with gr.Row():
            shared_code = gr.Textbox(label="Code someone shared with you", scale=3,
                                     info="Paste the code that Share this run gave them")
            open_button = gr.Button("Open", scale=1)
        shared_gallery = gr.Gallery(label="Shared images", columns=4, height=260)
        shared_details = gr.JSON(label="Its settings")

    list_event = dict(fn=friendly_errors(list_runs), inputs=tab_filter, outputs=[gallery, table])
    refresh.click(**list_event, api_name="history_list")
    tab_filter.change(**list_event, api_visibility="private")
    if tab is not None:  # refresh whenever the History tab is opened
        tab.select(**list_event, api_visibility="private")
    table.select(_select_from_table, inputs=table, outputs=run_id, api_visibility="private")
    gallery.select(_select_from_gallery, outputs=run_id, api_visibility="private")
    run_id.change(friendly_errors(show_run), inputs=run_id, outputs=details, api_name="history_show") \
        .then(settings_rows, inputs=details, outputs=settings_table, api_visibility="private")
    # The new run joins the table (it is the newest), and its id fills the box: the settings show the new run.
    rerun_button.click(friendly_errors(rerun_run), inputs=run_id, outputs=[rerun_gallery, run_id],
                       api_name="history_rerun", **keeps_results(run_id), **MODEL_WORK) \
        .success(**list_event, api_visibility="private")

    share_button.click(friendly_errors(share_run), inputs=run_id, outputs=share_note, api_name="history_share")
    delete_button.click(friendly_errors(delete_run), inputs=[run_id, tab_filter], outputs=[run_id, gallery, table],
                        api_name="history_delete", **keeps_results(run_id))
    open_button.click(friendly_errors(open_shared_run), inputs=shared_code, outputs=[shared_gallery, shared_details],
                      api_name="history_open_shared", **keeps_results(shared_details))

    with gr.Accordion("Read a PNG (made here, in A1111 / Forge, or in ComfyUI)", open=False):
        with gr.Row():
            png_file = file_input("Drop an image with generation parameters", ("image",), scale=3)
            png_preview = gr.Image(label="The image you dropped", type="filepath", interactive=False, height=200,
                                   scale=1)
        with gr.Row():
            read_prompt = gr.Textbox(label="Prompt (edit before generating again)",
                                     info="The prompt stored in the image",
                                     lines=3, buttons=["copy"])
            read_negative = gr.Textbox(label="Negative prompt",
                                       info="What you do not want in the picture, e.g. lowres, bad anatomy",
                                       lines=3, buttons=["copy"])
        read_table = gr.Dataframe(headers=READ_HEADERS, label="Parameters (edit a value before generating again)",
                                  interactive=True, wrap=True)
        read_raw = gr.JSON(label="Raw metadata, as stored in the file", open=False)
        # The normalised parameters ({"source", "prompt", "negative_prompt", "settings", ...}) of the image read
        # last. RESERVED for the coming "Open in a generating tab" button: it takes its inputs from this state.
        read_parameters = gr.State(None)
        with gr.Row():
            from pipelines.diffusion.models import default_model, model_choices

            again_model = gr.Dropdown(model_choices(), value=default_model(), allow_custom_value=True, scale=3,
                                      label="Model to generate with (a hub id, folder or .safetensors path works too)",
                                      info="The image model to make the picture again with")
            again_button = gr.Button("Generate again with these settings", variant="primary", scale=1)
        again_gallery = gr.Gallery(label="Generated again", columns=4, height=260)
        again_text = gr.Textbox(label="Parameters of the new image (A1111 format)",
                                info="The new picture's settings as text other tools (A1111, Forge) read",
                                lines=3, buttons=["copy"])
        again_notes = gr.Markdown()
    # No MODEL_WORK: reading text chunks loads no model, so it never waits behind a generation.
    png_file.change(dropped_image, inputs=png_file, outputs=png_preview, api_visibility="private")
    png_file.change(friendly_errors(read_png), inputs=png_file,
                    outputs=[read_table, read_prompt, read_negative, read_raw, read_parameters], api_name="read_png")
    again_button.click(friendly_errors(generate_from_png), inputs=[read_prompt, read_negative, read_table, again_model],
                       outputs=[again_gallery, again_text, again_notes], api_name="generate_from_png",
                       **keeps_results(again_notes), **MODEL_WORK)
