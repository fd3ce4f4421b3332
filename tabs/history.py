"""History: past runs as a gallery and table, filtered by tab, with parameters and re-run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.core.gpu import gpu_task

from .common import MODEL_WORK, friendly_errors

ALL = "All tabs"
TABLE_HEADERS = ["When", "Tab", "Status", "Seconds", "Run id"]


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
    details = gr.JSON(label="Parameters of the run")
    rerun_gallery = gr.Gallery(label="Re-run result", columns=4, height=260)

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
