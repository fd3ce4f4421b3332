"""History: past runs as a gallery and table, filtered by tab, with parameters and re-run; and "Read a PNG":
the generation parameters of any image made here, by A1111 or by ComfyUI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.core.gpu import gpu_task

from .common import MODEL_WORK, file_input, friendly_errors, progress_callback

ALL = "All tabs"
TABLE_HEADERS = ["When", "Tab", "Status", "Seconds", "Run id"]
READ_HEADERS = ["Setting", "Value"]
SOURCE_LABELS = {"anime-style-lab": "Anime Style Lab", "a1111": "A1111 / Forge (infotext)",
                 "comfyui": "ComfyUI graph"}


def _store():
    from pipelines.core.records import default_store

    return default_store()


def _when(created: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")


def list_runs(tab: str | None = ALL) -> tuple[list[tuple[str, str]], list[list[Any]]]:
    """Gallery items (image, caption) and table rows of recent runs, newest first."""
    records = _store().list(tab=None if tab in (None, "", ALL) else tab, limit=200)
    gallery, rows = [], []
    for record in records:
        rows.append([_when(record.created), record.tab, record.status, round(sum(record.timings.values()), 2),
                     record.id])
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
    with gr.Row():
        tab_filter = gr.Dropdown([ALL, *titles], value=ALL, label="Show runs of", scale=3)
        refresh = gr.Button("Refresh", scale=1)
    gallery = gr.Gallery(label="Recent images", columns=6, height=260, allow_preview=False)
    table = gr.Dataframe(headers=TABLE_HEADERS, label="Runs (click a row)", interactive=False, wrap=True)
    with gr.Row():
        run_id = gr.Textbox(label="Run id", scale=3)
        rerun_button = gr.Button("Re-run with the same settings", variant="primary", scale=1)
    with gr.Row():
        share_button = gr.Button("Share this run (gives a code)", scale=1)
        delete_button = gr.Button("Delete this run", variant="stop", scale=1)
    share_note = gr.Markdown()
    details = gr.JSON(label="Parameters of the run")
    rerun_gallery = gr.Gallery(label="Re-run result", columns=4, height=260)
    with gr.Accordion("Open a shared run", open=False):
        with gr.Row():
            shared_code = gr.Textbox(label="Code someone shared with you", scale=3)
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
    run_id.change(friendly_errors(show_run), inputs=run_id, outputs=details, api_name="history_show")
    rerun_button.click(friendly_errors(rerun_run), inputs=run_id, outputs=[rerun_gallery, run_id],
                       api_name="history_rerun", **MODEL_WORK)

    share_button.click(friendly_errors(share_run), inputs=run_id, outputs=share_note, api_name="history_share")
    delete_button.click(friendly_errors(delete_run), inputs=[run_id, tab_filter], outputs=[run_id, gallery, table],
                        api_name="history_delete")
    open_button.click(friendly_errors(open_shared_run), inputs=shared_code, outputs=[shared_gallery, shared_details],
                      api_name="history_open_shared")

    with gr.Accordion("Read a PNG (made here, in A1111 / Forge, or in ComfyUI)", open=False):
        png_file = file_input("Drop an image with generation parameters", ("image",))
        with gr.Row():
            read_prompt = gr.Textbox(label="Prompt (edit before generating again)", lines=3, buttons=["copy"])
            read_negative = gr.Textbox(label="Negative prompt", lines=3, buttons=["copy"])
        read_table = gr.Dataframe(headers=READ_HEADERS, label="Parameters (edit a value before generating again)",
                                  interactive=True, wrap=True)
        read_raw = gr.JSON(label="Raw metadata, as stored in the file", open=False)
        # The normalised parameters ({"source", "prompt", "negative_prompt", "settings", ...}) of the image read
        # last. RESERVED for the coming "Open in a generating tab" button: it takes its inputs from this state.
        read_parameters = gr.State(None)
        with gr.Row():
            from pipelines.diffusion.models import default_model, model_choices

            again_model = gr.Dropdown(model_choices(), value=default_model(), allow_custom_value=True, scale=3,
                                      label="Model to generate with (a hub id, folder or .safetensors path works too)")
            again_button = gr.Button("Generate again with these settings", variant="primary", scale=1)
        again_gallery = gr.Gallery(label="Generated again", columns=4, height=260)
        again_text = gr.Textbox(label="Parameters of the new image (A1111 format)", lines=3, buttons=["copy"])
        again_notes = gr.Markdown()
    # No MODEL_WORK: reading text chunks loads no model, so it never waits behind a generation.
    png_file.change(friendly_errors(read_png), inputs=png_file,
                    outputs=[read_table, read_prompt, read_negative, read_raw, read_parameters], api_name="read_png")
    again_button.click(friendly_errors(generate_from_png), inputs=[read_prompt, read_negative, read_table, again_model],
                       outputs=[again_gallery, again_text, again_notes], api_name="generate_from_png", **MODEL_WORK)
